"""Diagnostic wrapper: run ``voice-trio`` with loop-stall probes (bench use only).

    python bench/diag_server.py serve --host 127.0.0.1 --port 8000
    python bench/run.py active \
        --server-cmd "python bench/diag_server.py serve --host 127.0.0.1 --port {port}"

Same server, plus two probes that write one line to stderr per event:
- ``gc``: every garbage collection that takes longer than ``DIAG_GC_MS``
  (default 5 ms), with its generation and how many objects it collected;
- ``step``: every Trio task step (one run of a task between two checkpoints)
  longer than ``DIAG_STEP_MS`` (default 10 ms), with the task's name.
A loop-lag spike in /metrics can then be traced to a GC pause or a task that
does too much between checkpoints. The probes cost a little CPU; do not use
this for the headline figures.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from typing import Any

import trio

GC_MS = float(os.environ.get("DIAG_GC_MS", "5"))
STEP_MS = float(os.environ.get("DIAG_STEP_MS", "10"))
_T0 = time.perf_counter()


def _log(line: str) -> None:
    sys.stderr.write(f"diag t={time.perf_counter() - _T0:8.3f} {line}\n")
    sys.stderr.flush()


_gc_start = 0.0


def _gc_callback(phase: str, info: dict[str, Any]) -> None:
    global _gc_start
    if phase == "start":
        _gc_start = time.perf_counter()
    else:
        ms = (time.perf_counter() - _gc_start) * 1e3
        if ms >= GC_MS:
            _log(
                f"gc gen={info['generation']} {ms:.1f} ms collected={info['collected']} "
                f"objects={len(gc.get_objects(info['generation']))}"
            )


class StepProbe(trio.abc.Instrument):
    def __init__(self) -> None:
        self.started = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        ms = (time.perf_counter() - self.started) * 1e3
        if ms >= STEP_MS:
            _log(f"step {ms:.1f} ms task={task.name}")


def main() -> int:
    gc.callbacks.append(_gc_callback)
    original_run = trio.run

    def run_with_probe(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("instruments", []).append(StepProbe())
        return original_run(*args, **kwargs)

    trio.run = run_with_probe  # type: ignore[assignment]
    from voice_trio.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
