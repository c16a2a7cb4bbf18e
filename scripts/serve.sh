#!/usr/bin/env bash
# Serve the demo: sets up .venv, then `voice-trio serve` (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh runtime
exec .venv/bin/voice-trio serve "$@"
