#!/usr/bin/env bash
# Run the whole test suite: sets up .venv with the test extras, lints (ruff),
# type-checks (mypy --strict), runs the JS unit tests (node) and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check voice_trio tests bench
.venv/bin/mypy --strict voice_trio
node --test tests/js/
.venv/bin/python -m pytest "$@"
