"""scripts/setup.sh and the packaging (#18): quiet, honest set-up.

The script runs for real in a temporary copy of the project, with stand-in
Python interpreters (no network): one line per step with its time, the tools'
output only in the log it names, the log's tail when a step fails. The package
is built for real, offline (the test extras' setuptools, no build isolation),
and setuptools must not warn about the project's own metadata.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: A stand-in for the virtual environment's python: says what it was asked, noisily.
STUB_PYTHON = """#!/bin/sh
echo "stub python: $*"
echo "a warning nobody needs to see" >&2
"""

#: A stand-in for the system python whose `-m venv .venv` makes that stub.
FAKE_SYSTEM_PYTHON = """#!/bin/sh
[ "$1 $2 $3" = "-m venv .venv" ] || exit 64
mkdir -p .venv/bin
cat >.venv/bin/python <<'STUB'
{stub}
STUB
chmod +x .venv/bin/python
echo "created a virtual environment"
"""

#: One that fails after 100 lines of output.
FAILING_SYSTEM_PYTHON = """#!/bin/sh
i=1
while [ $i -le 100 ]; do echo "venv line $i"; i=$((i + 1)); done
exit 3
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of what setup.sh reads: the script and pyproject.toml (no .venv)."""
    if (
        shutil.which("dpkg") is None
        or subprocess.run(["dpkg", "-s", "espeak-ng"], capture_output=True).returncode
    ):
        pytest.fail("espeak-ng is not installed (scripts/setup.sh installs it)")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def run_setup(project: Path, system_python: str) -> subprocess.CompletedProcess[str]:
    fake = project / "system-python"
    fake.write_text(system_python)
    fake.chmod(0o755)
    env = {**os.environ, "PYTHON": str(fake)}
    return subprocess.run(
        ["bash", str(project / "scripts" / "setup.sh"), "runtime"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


STEP = re.compile(r"^setup: (.+) \.\.\. ok \((\d+\.\d) s\)$")


def test_a_fresh_set_up_prints_one_timed_line_per_step_and_names_its_log(project: Path) -> None:
    done = run_setup(project, FAKE_SYSTEM_PYTHON.format(stub=STUB_PYTHON))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    steps = [STEP.match(line) for line in lines[:-1]]
    assert all(steps), lines
    assert [m.group(1) for m in steps if m] == [
        "virtual environment in .venv",
        "pip",
        "Python packages (voice-trio)",
        "embedded models (Whisper base, Silero VAD)",
    ]
    assert lines[-1] == "setup: ready (.venv; the whole output of this set-up: .venv-setup.log)"
    assert done.stderr == ""
    # The tools' output is in the log, each step headed, and nowhere on the screen.
    log = (project / ".venv-setup.log").read_text()
    assert "created a virtual environment" in log
    assert "stub python: -m pip install -q -e ." in log
    assert log.count("a warning nobody needs to see") == 3
    assert "==== Python packages (voice-trio): .venv/bin/python -m pip install -q -e ." in log
    assert "stub python" not in done.stdout
    # Set up already: nothing to do but say so.
    again = run_setup(project, FAKE_SYSTEM_PYTHON.format(stub=STUB_PYTHON))
    assert again.returncode == 0 and again.stdout.splitlines() == lines[-1:]


def test_a_failed_step_shows_the_logs_tail_and_names_the_log(project: Path) -> None:
    done = run_setup(project, FAILING_SYSTEM_PYTHON)
    assert done.returncode == 1
    assert re.fullmatch(
        r"setup: virtual environment in \.venv \.\.\. failed \(\d+\.\d s, exit 3\)\n", done.stdout
    ), done.stdout
    log_path = project / ".venv-setup.log"
    shown = done.stderr.splitlines()
    assert shown[0] == f"---- last lines of {log_path} ----"
    assert shown[-1] == f"---- the whole output: {log_path} ----"
    # The tail: the last 40 lines of the log, not the rest.
    assert shown[1:-1] == [f"venv line {i}" for i in range(61, 101)]
    assert "venv line 1\n" in log_path.read_text()


def test_the_package_builds_offline_without_a_deprecation_warning(tmp_path: Path) -> None:
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "voice_trio", src / "voice_trio", ignore=skip)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    for warning in ("Deprecat", "BuildBackendWarning", "SetuptoolsWarning", "License classifier"):
        assert warning.lower() not in output.lower(), output
    (wheel,) = (tmp_path / "dist").glob("voice_trio-*.whl")
    with zipfile.ZipFile(wheel) as z:
        metadata = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        head = z.read(metadata).decode().split("\n\n", 1)[0]
    assert "License-Expression: Apache-2.0" in head.splitlines()
    assert "License-File: LICENSE" in head.splitlines()


def test_ci_leaves_log_format_unset_so_logs_are_json() -> None:
    # voice_trio/logs.py writes JSON lines when stderr is not a terminal (tested
    # in tests/test_logs.py): CI's scripts must not choose the text format.
    for script in (".ci/run", "scripts/test.sh", "scripts/setup.sh"):
        assert "LOG_FORMAT" not in (ROOT / script).read_text(), script
    assert "bash ./scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
