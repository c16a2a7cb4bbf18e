"""The standard room's CPU with every out-of-band sink on vs off, in one run (issue #14).

Starts one redis-server on a free loopback port, then runs ``bench/run.py
active`` (fresh server per run, the standard echo room) alternately with the
sinks off (``TRANSCRIPTS=false``: no store, no jobs, no events) and on (the
SQLite transcript store, Celery jobs on that Redis, ``ANALYTICS_SINK=redis``
to a stream on it; ``--on`` picks fewer), ``--rounds`` times in alternating order (off/on, on/off,
...) so that drift in the machine's other load falls on both. For each run it
prints the server's CPU in the steady window, loop lag, time to first audio,
the drop counters, and what reached the sinks (stream entries, jobs queued,
transcript rows). Every process it starts is ended by PID; outputs in
``bench/results/<stamp>-sinks-<on>/`` (each run's results.json and report.md).

    .venv/bin/python bench/sinks.py --rooms 250 --duration 30 --rounds 2
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
STREAM = "voice-trio:events"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_command(port: int, *args: str) -> str:
    """One command over a plain socket; the reply's first line (RESP2)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        parts = "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        sock.sendall(f"*{len(args)}\r\n{parts}".encode())
        return sock.recv(65536).decode().split("\r\n", 1)[0]


def start_redis(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while True:
        try:
            if redis_command(port, "PING") == "+PONG":
                return proc, port
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            proc.wait()
            raise RuntimeError("redis-server did not start")
        time.sleep(0.02)


def run_level(args: argparse.Namespace, out: Path, env: dict[str, str]) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH_DIR / "run.py"), "active", "--levels", str(args.rooms),
            "--duration", str(args.duration), "--quiet-pct", str(args.quiet_pct), "--no-plots",
            "--out", str(out)]  # fmt: skip
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=1800)
    level: dict[str, Any] = json.loads((out / "results.json").read_text())["levels"][0]
    return level


def figures(level: dict[str, Any]) -> dict[str, Any]:
    server, metrics = level["server"], level["metrics_end"]
    return {
        "server_cpu_pct": level["server_cpu_pct"],
        "other_cpu_pct": level["other_cpu_pct"],
        "lag_p50_ms": 1000 * server["loop_lag_p50_s"],
        "lag_p99_ms": 1000 * server["loop_lag_p99_s"],
        "ttfa_p50_ms": 1000 * (server.get("ttfa_p50_s") or 0.0),
        "dropped": {
            name: metrics.get(f"voice_trio_{name}_dropped_total", 0.0)
            for name in ("transcript", "jobs", "events")
        },
        "verdict": level.get("verdict"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=250)
    parser.add_argument("--duration", type=float, default=30.0, help="steady seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs")
    parser.add_argument(
        "--on",
        choices=["all", "store", "store+events", "store+jobs"],
        default="all",
        help="the sinks of the 'on' runs (default: the store, jobs and events)",
    )
    parser.add_argument("--quiet-pct", type=float, default=0.0, help="passed to run.py")
    args = parser.parse_args()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = BENCH_DIR / "results" / f"{stamp}-sinks-{args.on}"
    out_dir.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="sinks-bench-"))
    redis, port = start_redis(work)
    rows: list[dict[str, Any]] = []
    try:
        url = f"redis://127.0.0.1:{port}"
        for i in range(args.rounds):
            for config in ("off", "on") if i % 2 == 0 else ("on", "off"):
                run = f"{i + 1}-{config}"
                db = work / f"{run}.sqlite3"
                if config == "off":
                    env = {"TRANSCRIPTS": "false"}
                else:
                    env = {"TRANSCRIPT_DB_PATH": str(db)}
                    if args.on in ("all", "store+jobs"):
                        env["CELERY_BROKER_URL"] = url
                    if args.on in ("all", "store+events"):
                        env |= {"ANALYTICS_SINK": "redis", "ANALYTICS_REDIS_URL": url}
                    redis_command(port, "FLUSHALL")
                row = {"run": run, **figures(run_level(args, out_dir / run, env))}
                if config == "on":
                    row["stream_entries"] = int(redis_command(port, "XLEN", STREAM)[1:])
                    # No worker runs: the jobs wait in Celery's queue (a Redis list).
                    row["jobs_queued"] = int(redis_command(port, "LLEN", "celery")[1:])
                    with sqlite3.connect(db) as conn:
                        (row["transcript_rows"],) = conn.execute(
                            "SELECT count(*) FROM turns"
                        ).fetchone()
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        redis.kill()
        redis.wait()
        shutil.rmtree(work, ignore_errors=True)
    summary = {"command": " ".join(sys.argv), "runs": rows}
    (out_dir / "sinks.json").write_text(json.dumps(summary, indent=1))
    for config in ("off", "on"):
        cpu = [r["server_cpu_pct"] for r in rows if r["run"].endswith(config)]
        print(f"{config:3s}: server CPU {', '.join(f'{c:.1f}' for c in cpu)} % "
              f"(mean {sum(cpu) / len(cpu):.1f} %)")  # fmt: skip


if __name__ == "__main__":
    main()
