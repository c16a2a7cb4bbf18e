#!/usr/bin/env bash
# Run the whole test suite: sets up .venv with the test extras, lints, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
.venv/bin/ruff check voice_trio tests
node --test tests/js/
.venv/bin/python -m pytest "$@"
