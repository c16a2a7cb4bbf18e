#!/usr/bin/env bash
# Create bench/.venv-pipecat: a SEPARATE virtualenv for the Pipecat comparison
# target (bench/pipecat_server.py). It never touches the project's .venv.
#
#   bash bench/setup_pipecat.sh            # pipecat-ai (latest on PyPI)
#   PIPECAT_VERSION=1.14.0 bash bench/setup_pipecat.sh
#
# Installs from PyPI by name only: pipecat-ai with the extra its FastAPI
# WebSocket transport needs ("websocket": fastapi + websockets), uvicorn, and
# psutil (for the /metrics RSS figure).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-pipecat"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

spec="pipecat-ai[websocket]"
if [ -n "${PIPECAT_VERSION:-}" ]; then
    spec="pipecat-ai[websocket]==${PIPECAT_VERSION}"
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "$spec" fastapi "uvicorn[standard]" psutil
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("pipecat-ai", "fastapi", "uvicorn", "websockets", "starlette", "psutil"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (not installed)")
PY
echo "pipecat venv ready: $venv"
