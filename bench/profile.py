"""Profile a server under the standard room with py-spy: where does its CPU go?

    .venv/bin/python bench/profile.py --target voice-trio --rooms 250
    .venv/bin/python bench/profile.py --target voice-trio-asgi --rooms 250

Starts the target (as bench/run.py does), opens ``--rooms`` standard echo
rooms with one load generator, waits ``--settle`` seconds, then samples the
server with py-spy for ``--seconds`` twice: once as collapsed stacks (summed
here by layer and by function: ``profile.md``) and once as a flame graph
(``flame.svg``). Every process started is ended by its PID.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
from run import BENCH_DIR, HOST, REPO_DIR, VENV_BIN, free_port, server_command

LAYERS = [
    # (layer, pattern on "function (file:line)"), first match wins
    ("system calls (socket reads and writes)", r"_nonblocking_helper|os\.read|os\.writev|posix"),
    ("voice_trio", r"voice_trio/"),
    ("hypercorn", r"hypercorn/"),
    ("wsproto + h11", r"wsproto/|h11/"),
    ("trio: event loop, epoll", r"trio/_core/_run|trio/_core/_io_epoll|trio/_core/_traps"),
    ("trio: channels, locks, timeouts, sockets", r"trio/"),
    ("msgspec / json", r"msgspec|json/"),
    (
        "stdlib (contextlib, abc, dataclasses), outcome, attrs",
        r"contextlib|abc|<string>|outcome/|attrs",
    ),
]


def layer_of(frame: str) -> str:
    for name, pattern in LAYERS:
        if re.search(pattern, frame):
            return name
    return "other"


def summarise(raw: Path, top: int = 25) -> str:
    by_layer: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        by_layer[layer_of(frames[-1])] += n
        by_function[re.sub(r":\d+\)$", ")", frames[-1])] += n
        for frame in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            inclusive[frame] += n
    lines = [f"samples: {total}", "", "| layer (self time) | % of samples |", "| --- | --- |"]
    lines += [f"| {k} | {100 * v / total:.1f} |" for k, v in by_layer.most_common()]
    lines += ["", "| function (self time) | % |", "| --- | --- |"]
    lines += [f"| `{k}` | {100 * v / total:.1f} |" for k, v in by_function.most_common(top)]
    lines += ["", "| function (inclusive) | % |", "| --- | --- |"]
    lines += [f"| `{k}` | {100 * v / total:.1f} |" for k, v in inclusive.most_common(top + 15)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target",
        choices=["voice-trio", "voice-trio-asgi", "floor", "pipecat"],
        default="voice-trio",
    )
    parser.add_argument("--rooms", type=int, default=250)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after the rooms open")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per py-spy record")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.server_cmd, args.env = None, []
    py_spy = shutil.which("py-spy", path=str(VENV_BIN)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy missing: .venv/bin/pip install -e '.[bench]'")
    out = args.out or BENCH_DIR / "results" / f"profile-{args.target}-{args.rooms}"
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd, env = server_command(args, port)
    started: list[subprocess.Popen[bytes]] = []
    try:
        with open(out / "server.log", "wb") as log:
            server = subprocess.Popen(cmd, env=env, cwd=REPO_DIR, stdout=log, stderr=log)
        started.append(server)
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server not healthy; see {out / 'server.log'}")
            try:
                conn = http.client.HTTPConnection(HOST, port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        # Hypercorn's own command runs the app in a child process: profile the one serving.
        children = psutil.Process(server.pid).children(recursive=True)
        pid = children[-1].pid if children else server.pid
        duration = args.settle + 2 * args.seconds + 15
        with open(out / "loadgen.log", "wb") as log:
            loadgen = subprocess.Popen(
                [
                    sys.executable,
                    str(BENCH_DIR / "loadgen.py"),
                    "--port",
                    str(port),
                    "--rooms",
                    str(args.rooms),
                    "--profile",
                    "active",
                    "--duration",
                    str(duration),
                    "--max-seconds",
                    str(duration + 30),
                    "--no-stdin",
                ],
                stdout=log,
                stderr=log,
            )
        started.append(loadgen)
        time.sleep(args.rooms / 100 + 2 + args.settle)
        cpu_before = psutil.Process(pid).cpu_times()
        t0 = time.monotonic()
        record = [py_spy, "record", "--pid", str(pid), "--rate", str(args.rate)]
        subprocess.run(
            [
                *record,
                "--duration",
                str(int(args.seconds)),
                "--format",
                "raw",
                "-o",
                str(out / "stacks.txt"),
            ],
            check=True,
            timeout=args.seconds + 60,
        )
        cpu_after = psutil.Process(pid).cpu_times()
        cpu_pct = (
            100
            * ((cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system))
            / (time.monotonic() - t0)
        )
        subprocess.run(
            [
                *record,
                "--duration",
                str(int(args.seconds)),
                "--format",
                "flamegraph",
                "-o",
                str(out / "flame.svg"),
            ],
            check=True,
            timeout=args.seconds + 60,
        )
        header = (
            f"# py-spy profile: {args.target}, {args.rooms} standard echo rooms\n\n"
            f"Server CPU while sampled: {cpu_pct:.0f} % of one core (py-spy's own "
            f"sampling included). Command: `.venv/bin/python bench/profile.py --target "
            f"{args.target} --rooms {args.rooms}`. Flame graph: `flame.svg`.\n\n"
        )
        (out / "profile.md").write_text(header + summarise(out / "stacks.txt"))
        (out / "profile.json").write_text(
            json.dumps({"target": args.target, "rooms": args.rooms, "server_cpu_pct": cpu_pct})
        )
        print((out / "profile.md").read_text())
    finally:
        for proc in reversed(started):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


if __name__ == "__main__":
    main()
