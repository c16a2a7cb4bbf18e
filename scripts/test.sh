#!/usr/bin/env bash
# Run the whole test suite: sets up .venv with the test extras, lints (ruff),
# type-checks (mypy --strict), runs the JS unit tests (node) and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
printf 'ruff: '; .venv/bin/ruff check voice_trio tests bench
printf 'mypy: '; .venv/bin/mypy --strict voice_trio
# The browser demo's unit tests: the summary only, everything when one fails.
if ! node --test tests/js/ >.venv/node-test.log 2>&1; then
  cat .venv/node-test.log
  exit 1
fi
echo "node: $(grep -E '^# (pass|fail) ' .venv/node-test.log | tr -d '#' | paste -sd, -)"
.venv/bin/python -m pytest "$@"
