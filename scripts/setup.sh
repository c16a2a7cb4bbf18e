#!/usr/bin/env bash
# Shared set-up for scripts/serve.sh and scripts/test.sh: Debian packages the
# project needs, a virtual environment in .venv, and the package installed into it.
# Usage: scripts/setup.sh [runtime|test]
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-runtime}

# eSpeak NG speaks for the embedded voice (GPL-3.0+, run as a separate program).
apt_packages=(espeak-ng)
if [ "$want" = test ]; then
  # node's built-in test runner runs the browser demo's unit tests (tests/js).
  command -v node >/dev/null 2>&1 || apt_packages+=(nodejs)
  # The browser demo's end-to-end tests drive Debian's Chromium (no browser download).
  apt_packages+=(chromium)
fi
missing=()
for pkg in "${apt_packages[@]+"${apt_packages[@]}"}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.voice-trio-$want
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  if [ "$want" = test ]; then
    .venv/bin/python -m pip install -q -e '.[test]'
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$stamp"
fi
