"""What nginx in front adds: the standard room's transit, direct against through nginx.

Starts ``--instances`` ``voice-trio serve`` processes (echo brain) and nginx
running ``voice-trio nginx-config`` for them, then runs ``bench/loadgen.py``
(the standard room of DESIGN.md 6a: a 100 ms PCM16 frame every 100 ms, one JSON
event a second) at ``--rooms`` rooms, alternately straight at the instances
(rooms split evenly over them) and through nginx, ``--rounds`` times each.
Reports per mode the audio transit (send of a chunk's newest frame -> echoed
back at the client: the server's and now the proxy's delay) over the steady
window, and the ``ping`` -> ``pong`` round trip; the difference is what the
proxy adds.

    .venv/bin/python bench/cluster.py --rooms 200 --duration 20

Everything is on 127.0.0.1; every process started here is ended by its PID
(SIGTERM, then SIGKILL after a bound), on errors and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
#: Seconds after the rooms opened before samples count (connections settle).
WARMUP_S = 2.0
#: A chunk this late is counted apart (nginx's default 4 KB room buffer made some
#: ~100 ms late: voice_trio.deploy.ROOM_BUFFER_KB).
LATE_S = 0.050
#: Bound on any process's start-up.
START_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {START_S} s")


def pcts(values: np.ndarray) -> dict[str, Any]:
    if not values.size:
        nan = float("nan")
        return {"n": 0, "over_50ms": 0, "p50_ms": nan, "p99_ms": nan, "max_ms": nan}
    return {
        "n": int(values.size),
        "over_50ms": int((values > LATE_S).sum()),
        "p50_ms": float(np.percentile(values, 50) * 1e3),
        "p99_ms": float(np.percentile(values, 99) * 1e3),
        "max_ms": float(values.max() * 1e3),
    }


def cpu_seconds(pids: list[int]) -> float:
    """CPU time so far of these processes and their children (nginx's workers)."""
    import psutil

    total = 0.0
    for pid in pids:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
    return total


def run_load(
    ports: list[int], rooms: int, duration: float, out: Path, tag: str
) -> tuple[list[dict[str, Any]], list[Path]]:
    """One loadgen process per port (rooms split evenly), all at once; their results."""
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    prefixes = []
    try:
        for i, port in enumerate(ports):
            share = rooms // len(ports) + (1 if i < rooms % len(ports) else 0)
            prefix = out / f"{tag}-{i}"
            prefixes.append(prefix)
            argv = [sys.executable, str(HERE / "loadgen.py"), "--port", str(port)]
            argv += ["--rooms", str(share), "--duration", str(duration), "--no-stdin"]
            argv += ["--max-seconds", str(duration + 60), "--out-prefix", str(prefix)]
            argv += ["--session-prefix", f"{tag}-{i}"]
            stdout = (out / f"{tag}-{i}.out").open("wb")
            procs.append((subprocess.Popen(argv, stdout=stdout, cwd=HERE), prefix))
            stdout.close()
        results = []
        for proc, prefix in procs:
            proc.wait(timeout=duration + 90)
            lines = [ln for ln in prefix.with_suffix(".out").read_text().splitlines() if ln]
            results.append(json.loads(lines[-1]))
        return results, prefixes
    finally:
        for proc, _ in procs:
            stop(proc)


def figures(results: list[dict[str, Any]], prefixes: list[Path]) -> dict[str, Any]:
    t_from = max(r["t_opened"] or 0.0 for r in results) + WARMUP_S
    transit, pong = [], []
    for prefix in prefixes:
        with np.load(prefix.with_suffix(".npz")) as data:
            keep = data["transit_send_t"] >= t_from
            transit.append(data["transit"][keep])
            pong.append(data["pong_rtt"])
    return {
        "rooms_opened": sum(r["rooms_opened"] for r in results),
        "rooms_failed": sum(r["rooms_failed"] for r in results),
        "transit": pcts(np.concatenate(transit)),
        "pong_rtt": pcts(np.concatenate(pong)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    work = Path(tempfile.mkdtemp(prefix="voice-trio-cluster-"))
    env = {
        **os.environ,
        "VOICE_BRAIN": "echo",
        "TRUSTED_PROXIES": "127.0.0.1",
        # Every bench client is 127.0.0.1: the per-address limits are lifted.
        "MAX_ROOMS_PER_IP": "100000",
        "MAX_CONNECTIONS_PER_IP": "100000",
        "HANDSHAKE_BURST_PER_IP": "100000",
        "HANDSHAKE_RATE_PER_IP": "100000",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = [free_port() for _ in range(args.instances)]
        for i, port in enumerate(ports):
            log = (work / f"instance-{i}.log").open("wb")
            argv = [str(BIN / "voice-trio"), "serve", "--host", "127.0.0.1", "--port", str(port)]
            procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
            log.close()
        nginx_port = free_port()
        config = subprocess.run(
            [str(BIN / "voice-trio"), "nginx-config", "--listen", f"127.0.0.1:{nginx_port}"]
            + [a for p in ports for a in ("--backend", f"127.0.0.1:{p}")]
            + ["--prefix", str(work)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        (work / "nginx.conf").write_text(config)
        log = (work / "nginx.log").open("wb")
        nginx = subprocess.Popen(
            [nginx_bin, "-p", f"{work}/", "-c", str(work / "nginx.conf"), "-e", "stderr"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        procs.append(nginx)
        for proc, port in zip(procs, ports + [nginx_port], strict=True):
            wait_http(f"http://127.0.0.1:{port}/healthz", proc)
        rows: dict[str, list[dict[str, Any]]] = {"direct": [], "nginx": []}
        for n in range(args.rounds):
            for mode, targets in (("direct", ports), ("nginx", [nginx_port] * len(ports))):
                import psutil

                servers = [p.pid for p in procs[:-1]]
                before = cpu_seconds(servers), cpu_seconds([nginx.pid]), time.monotonic()
                psutil.cpu_percent(interval=None)
                results, prefixes = run_load(targets, args.rooms, args.duration, work, f"{mode}{n}")
                machine = psutil.cpu_percent(interval=None)
                wall = time.monotonic() - before[2]
                row = figures(results, prefixes)
                row["server_cpu_pct"] = (cpu_seconds(servers) - before[0]) / wall * 100
                row["nginx_cpu_pct"] = (cpu_seconds([nginx.pid]) - before[1]) / wall * 100
                row["machine_busy_pct"] = machine
                rows[mode].append(row)
                t, p = row["transit"], row["pong_rtt"]
                print(
                    f"round {n} {mode:6}: {row['rooms_opened']} rooms "
                    f"({row['rooms_failed']} failed); transit p50 {t['p50_ms']:.2f} ms, "
                    f"p99 {t['p99_ms']:.2f} ms, max {t['max_ms']:.1f} ms, "
                    f"{t['over_50ms']} of {t['n']} over 50 ms; "
                    f"ping rtt p50 {p['p50_ms']:.2f} ms, p99 {p['p99_ms']:.2f} ms; CPU % of a "
                    f"core: servers {row['server_cpu_pct']:.0f}, nginx {row['nginx_cpu_pct']:.0f}; "
                    f"machine busy {row['machine_busy_pct']:.0f} %",
                    flush=True,
                )
        summary = {
            mode: {
                key: float(np.median([r["transit"][key] for r in rs]))
                for key in ("p50_ms", "p99_ms")
            }
            for mode, rs in rows.items()
        }
        added = {k: summary["nginx"][k] - summary["direct"][k] for k in ("p50_ms", "p99_ms")}
        print(
            f"median over {args.rounds} rounds, {args.rooms} standard rooms, "
            f"{args.instances} instance(s): transit direct p50 {summary['direct']['p50_ms']:.2f} "
            f"/ p99 {summary['direct']['p99_ms']:.2f} ms, through nginx p50 "
            f"{summary['nginx']['p50_ms']:.2f} / p99 {summary['nginx']['p99_ms']:.2f} ms: "
            f"nginx adds {added['p50_ms']:+.2f} ms at p50, {added['p99_ms']:+.2f} ms at p99"
        )
        (work / "cluster.json").write_text(json.dumps({"rows": rows, "added": added}, indent=1))
    finally:
        for proc in reversed(procs):
            stop(proc)
        if args.keep:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
