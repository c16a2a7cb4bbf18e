"""Bench driver: start the server, run levels of load against it, report.

    python bench/run.py quick        # headline figures: idle KB/room, 100 active rooms
    python bench/run.py idle --levels 2000          # RSS per idle room
    python bench/run.py active --levels 100 --duration 30
    python bench/run.py sweep        # max active rooms at lag p99 < 20 ms, no drops/growth
    python bench/run.py interrupt --levels 100
    python bench/run.py latency --levels 1,10

``--target voice-trio`` (default; ``.venv/bin/voice-trio serve`` with
VOICE_BRAIN=echo), ``--target voice-trio-asgi`` (the same app under plain
``hypercorn``: rooms over ASGI and Hypercorn's WebSocket), ``--target floor``
(bench/floor_server.py, the comparison floor), ``--target floor-deflate``
(the floor accepting permessage-deflate), ``--target pipecat``
(bench/pipecat_server.py, the Pipecat comparison target, in its own venv made
by bench/setup_pipecat.sh), or ``--server-cmd 'any command with {port}'``.

The driver owns every process it starts (the server, the load generators) and
ends each by its PID (SIGTERM, then SIGKILL after a bound), on errors and
Ctrl-C too. Everything runs on 127.0.0.1. Every wait has a bound.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import psutil
import report
import trio
from promtext import Metrics, histogram_quantile, http_get, scrape
from wsclient import connect, room_token_query
from wsproto.events import TextMessage

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
VENV_BIN = REPO_DIR / ".venv" / "bin"
PIPECAT_PYTHON = BENCH_DIR / ".venv-pipecat" / "bin" / "python"
HOST = "127.0.0.1"

LAG_P99_LIMIT_S = 0.020
GROWTH_LIMIT_S = 0.025
LATE_CLIENT_LIMIT_S = 0.050
ROOMS_PER_PROC = {"idle": 5000, "active": 250, "interrupt": 250, "latency": 250}


# --------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def raise_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def end_process(process: trio.Process, *, grace: float = 10.0) -> None:
    """End one process we started, by its PID: SIGTERM, then SIGKILL after ``grace``."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            with trio.move_on_after(grace):
                await process.wait()
            if process.returncode is None:
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                with trio.move_on_after(5):
                    await process.wait()


def append_log(path: Path) -> BinaryIO:
    """A log file for a child process's output (opened once per process start)."""
    return open(path, "ab")  # noqa: SIM115 - the caller closes it


def host_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, all processes)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def own_cpu_seconds() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


async def wait_until_quiet(limit_pct: float, max_wait_s: float, calm_readings: int = 3) -> float:
    """Wait (bounded) until ``calm_readings`` 2-s readings in a row of the machine's busy
    CPU are below ``limit_pct`` (100 = one core); return the last reading."""
    deadline = trio.current_time() + max_wait_s
    calm = 0
    while True:
        before, t0 = host_busy_seconds(), time.perf_counter()
        await trio.sleep(2.0)
        busy = 100.0 * (host_busy_seconds() - before) / (time.perf_counter() - t0)
        calm = calm + 1 if busy < limit_pct else 0
        if calm >= calm_readings:
            return busy
        if trio.current_time() >= deadline:
            print(
                f"  machine still busy ({busy:.0f}% CPU) after {max_wait_s:.0f} s: running anyway",
                flush=True,
            )
            return busy
        if not calm:
            print(f"  waiting for a quiet machine: {busy:.0f}% CPU busy elsewhere", flush=True)


#: The bench's thousands of rooms all come from 127.0.0.1: lift the per-address limits
#: (a production server keeps them; they are checked once per connection).
LOOPBACK_LOAD_ENV = {
    "MAX_CONNECTIONS_PER_IP": "100000",
    "MAX_ROOMS_PER_IP": "100000",
    "HANDSHAKE_RATE_PER_IP": "100000",
    "HANDSHAKE_BURST_PER_IP": "100000",
}


def server_command(args: argparse.Namespace, port: int) -> tuple[list[str], dict[str, str]]:
    env = {**LOOPBACK_LOAD_ENV, **os.environ}
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    if args.server_cmd:
        return shlex.split(args.server_cmd.replace("{port}", str(port))), env
    if args.target == "voice-trio":
        env.setdefault("VOICE_BRAIN", "echo")
        return [str(VENV_BIN / "voice-trio"), "serve", "--host", HOST, "--port", str(port)], env
    if args.target == "voice-trio-asgi":
        # The same app under Hypercorn's own server: rooms over ASGI (Hypercorn's WebSocket).
        env.setdefault("VOICE_BRAIN", "echo")
        bind = f"{HOST}:{port}"
        return [
            str(VENV_BIN / "hypercorn"),
            "--worker-class",
            "trio",
            "--bind",
            bind,
            "voice_trio.app:app",
        ], env
    if args.target == "pipecat":
        if not PIPECAT_PYTHON.exists():
            raise SystemExit(f"{PIPECAT_PYTHON} missing: run `bash bench/setup_pipecat.sh` first")
        cmd = [str(PIPECAT_PYTHON), str(BENCH_DIR / "pipecat_server.py"), "--port", str(port)]
        return cmd, env
    cmd = [sys.executable, str(BENCH_DIR / "floor_server.py"), "--host", HOST, "--port", str(port)]
    if args.target == "floor-deflate":
        cmd.append("--allow-deflate")
    return cmd, env


class Server:
    """The server under test: started here, watched with psutil, ended by PID."""

    def __init__(self, args: argparse.Namespace, log_path: Path) -> None:
        self.args = args
        self.port = free_port()
        self.cmd, self.env = server_command(args, self.port)
        self.log_path = log_path
        self.process: trio.Process | None = None
        self.ps: psutil.Process | None = None

    async def start(self) -> None:
        with append_log(self.log_path) as log:
            self.process = await trio.lowlevel.open_process(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=str(REPO_DIR),
            )
        self.ps = psutil.Process(self.process.pid)
        with trio.move_on_after(60) as waiting:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(
                        f"server exited with {self.process.returncode}; see {self.log_path}"
                    )
                try:
                    status, _ = await http_get(HOST, self.port, "/healthz", timeout=2)
                    if status == 200:
                        break
                except (OSError, trio.TooSlowError):
                    pass
                await trio.sleep(0.1)
        if waiting.cancelled_caught:
            raise RuntimeError(f"server not healthy after 60 s; see {self.log_path}")

    async def stop(self) -> None:
        if self.process is not None:
            await end_process(self.process)

    def processes(self) -> list[psutil.Process]:
        assert self.ps is not None
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss(self) -> int:
        total = 0
        for p in self.processes():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def num_fds(self) -> int:
        try:
            return sum(p.num_fds() for p in self.processes())
        except psutil.NoSuchProcess:
            return 0


class Worker:
    """One load-generator process (bench/loadgen.py)."""

    def __init__(self, index: int, argv: list[str], out_prefix: Path) -> None:
        self.index = index
        self.argv = argv
        self.out_prefix = out_prefix
        self.process: trio.Process | None = None
        self.ps: psutil.Process | None = None
        self.opened: dict[str, Any] | None = None
        self.opened_event = trio.Event()
        self.result: dict[str, Any] | None = None
        self.done = trio.Event()

    async def run(
        self, stderr_path: Path, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with append_log(stderr_path) as err:
            self.process = await trio.lowlevel.open_process(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=str(REPO_DIR),
            )
        self.ps = psutil.Process(self.process.pid)
        task_status.started()
        try:
            assert self.process.stdout is not None
            buffer = b""
            while True:
                data = await self.process.stdout.receive_some(1 << 20)
                if not data:
                    break
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        message = json.loads(line)
                    except ValueError:
                        continue
                    if message.get("event") == "opened":
                        self.opened = message
                        self.opened_event.set()
                    elif message.get("event") == "result":
                        self.result = message
            await self.process.wait()
        finally:
            self.opened_event.set()
            self.done.set()
            await end_process(self.process, grace=5)

    async def stop(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            try:
                await self.process.stdin.send_all(b"stop\n")
                await self.process.stdin.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def cpu_seconds(self) -> float:
        try:
            assert self.ps is not None
            t = self.ps.cpu_times()
            return t.user + t.system
        except (psutil.NoSuchProcess, AssertionError):
            return 0.0


# --------------------------------------------------------------------------- figures
def summary(values: np.ndarray) -> dict[str, float | int]:
    if values.size == 0:
        return {"n": 0}
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
        "p99": float(np.percentile(values, 99)),
        "max": float(values.max()),
    }


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum counters of all workers; summaries are recomputed from the npz samples elsewhere."""
    merged: dict[str, Any] = {}
    for r in results:
        for key, value in r.items():
            if isinstance(value, bool) or key in ("event", "profile", "t_opened"):
                merged[key] = value
            elif isinstance(value, (int, float)) and not key.endswith("_s"):
                merged[key] = merged.get(key, 0) + value
            elif isinstance(value, dict) and "n" not in value:
                target = merged.setdefault(key, {})
                for k, v in value.items():
                    target[k] = target.get(k, 0) + v
            elif isinstance(value, dict):
                merged.setdefault(key + "_by_worker", []).append(value)
    return merged


def worst_of(summaries: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in summaries if s.get("n")]
    return max(values) if values else None


def delay_figures(
    prefixes: list[Path], t_from: float, t_to: float
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Delay figures over the steady window [t_from, t_to] (perf_counter, shared by all processes).

    ``delay_s``: per 100 ms frame, send -> the frame complete at the client (what a
    listener gets; includes the wait for the chunk's second frame, ~100 ms for half
    of the frames). ``transit_s``: per received chunk, send of its newest frame ->
    received (the server's own delay). Growth and slope use transit (unimodal).
    """
    keys = ("send_t", "delay", "transit_send_t", "transit", "open_s", "text_rtt", "pong_rtt")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for prefix in prefixes:
        path = prefix.with_suffix(".npz")
        if not path.exists():
            continue
        with np.load(path) as data:
            for k in keys:
                parts[k].append(data[k])
    cat = {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in parts.items()}
    mask = (cat["send_t"] >= t_from) & (cat["send_t"] <= t_to)
    st, d = cat["send_t"][mask], cat["delay"][mask]
    tmask = (cat["transit_send_t"] >= t_from) & (cat["transit_send_t"] <= t_to)
    tt, tr = cat["transit_send_t"][tmask], cat["transit"][tmask]
    figures: dict[str, Any] = {
        "delay_s": summary(d),
        "transit_s": summary(tr),
        "open_s": summary(cat["open_s"]),
        "text_rtt_s": summary(cat["text_rtt"]),
        "pong_rtt_s": summary(cat["pong_rtt"]),
    }
    if tr.size > 20 and tt.max() - tt.min() > 1:
        x = tt - tt.min()
        slope = float(np.polyfit(x, tr, 1)[0])
        span = float(x.max())
        first = tr[x <= span * 0.2]
        last = tr[x >= span * 0.8]
        figures["delay_slope_ms_per_min"] = slope * 60_000
        figures["delay_growth_s"] = (
            float(np.median(last) - np.median(first)) if first.size and last.size else None
        )
        figures["delay_span_s"] = span
    return figures, st, d


def metric_delta(before: Metrics | None, after: Metrics | None, name: str) -> float | None:
    if after is None:
        return None
    a = after.total(name)
    if a is None:
        return None
    b = before.total(name) if before is not None else None
    return a - (b or 0.0)


def server_figures(
    before: Metrics | None, end: Metrics | None, samples: list[dict[str, Any]]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if end is not None:
        out["rooms_open"] = end.get("voice_trio_rooms_open")
        out["upstreams_live"] = end.get("voice_trio_upstreams_live")
        out["loop_lag_p50_s"] = end.get("voice_trio_loop_lag_seconds", quantile="0.5")
        out["loop_lag_p99_s"] = end.get("voice_trio_loop_lag_seconds", quantile="0.99")
        out["loop_lag_max_s"] = end.get("voice_trio_loop_lag_seconds", quantile="1")
        out["outbox_depth_max"] = end.get("voice_trio_outbox_depth_max")
        out["process_resident_memory_bytes"] = end.get("process_resident_memory_bytes")
        out["metric_names_missing"] = sorted(
            n
            for n in (
                "voice_trio_rooms_open",
                "voice_trio_upstreams_live",
                "voice_trio_loop_lag_seconds",
                "voice_trio_outbox_depth_max",
                "voice_trio_outbox_dropped_total",
                "voice_trio_incoming_audio_dropped_total",
                "voice_trio_slow_consumer_closes_total",
                "voice_trio_interrupts_total",
                "voice_trio_messages_total",
                "voice_trio_time_to_first_audio_seconds_bucket",
                "process_resident_memory_bytes",
            )
            if n not in end.names()
        )
        dropped_after = end.by_label("voice_trio_outbox_dropped_total", "kind")
        dropped_before = (
            before.by_label("voice_trio_outbox_dropped_total", "kind") if before else {}
        )
        out["outbox_dropped"] = {
            k: v - dropped_before.get(k, 0.0) for k, v in dropped_after.items()
        }
        out["incoming_audio_dropped"] = metric_delta(
            before, end, "voice_trio_incoming_audio_dropped_total"
        )
        out["slow_consumer_closes"] = metric_delta(
            before, end, "voice_trio_slow_consumer_closes_total"
        )
        out["interrupts"] = metric_delta(before, end, "voice_trio_interrupts_total")
        msgs_after = end.by_label("voice_trio_messages_total", "direction")
        msgs_before = before.by_label("voice_trio_messages_total", "direction") if before else {}
        out["messages"] = {k: v - msgs_before.get(k, 0.0) for k, v in msgs_after.items()}
        hist_before = (
            before.histogram_buckets("voice_trio_time_to_first_audio_seconds") if before else []
        )
        hist_after = end.histogram_buckets("voice_trio_time_to_first_audio_seconds")
        if hist_after:
            out["ttfa_p50_s"] = histogram_quantile(0.5, hist_before, hist_after)
            out["ttfa_p99_s"] = histogram_quantile(0.99, hist_before, hist_after)
    steady = [s for s in samples if s.get("steady")]
    p99s = [s["lag_p99"] for s in steady if s.get("lag_p99") is not None]
    out["loop_lag_p99_max_over_samples_s"] = max(p99s) if p99s else None
    depths = [s["outbox_depth_max"] for s in steady if s.get("outbox_depth_max") is not None]
    out["outbox_depth_max_over_samples"] = max(depths) if depths else None
    cpus = [s["cpu_pct"] for s in steady if s.get("cpu_pct") is not None]
    out["cpu_pct_max_1s"] = max(cpus) if cpus else None
    return out


# --------------------------------------------------------------------------- one level
class Level:
    def __init__(
        self, args: argparse.Namespace, out_dir: Path, mode: str, rooms: int, server: Server
    ) -> None:
        self.args = args
        self.out_dir = out_dir
        self.mode = mode
        self.rooms = rooms
        self.server = server
        self.samples: list[dict[str, Any]] = []
        self.steady = False
        self.workers: list[Worker] = []
        self.last_cpu: tuple[float, float, float] | None = None

    def profile(self) -> str:
        return {
            "idle": "idle",
            "active": "active",
            "sweep": "active",
            "interrupt": "interrupt",
            "latency": "active",
        }[self.mode]

    def procs(self) -> int:
        if self.args.procs:
            return max(1, min(self.args.procs, self.rooms))
        return max(
            1,
            math.ceil(
                self.rooms / ROOMS_PER_PROC[self.profile() if self.mode != "latency" else "latency"]
            ),
        )

    async def sample_forever(self, t0: float) -> None:
        """Scrape /metrics and CPU once a second (until cancelled); a progress line every 5 s."""
        last_print = 0.0
        while True:
            now = time.perf_counter()
            cpu = self.server.cpu_seconds()
            host = host_busy_seconds()
            cpu_pct = host_pct = None
            if self.last_cpu is not None and now > self.last_cpu[0]:
                cpu_pct = 100.0 * (cpu - self.last_cpu[1]) / (now - self.last_cpu[0])
                host_pct = 100.0 * (host - self.last_cpu[2]) / (now - self.last_cpu[0])
            self.last_cpu = (now, cpu, host)
            sample: dict[str, Any] = {
                "t": now - t0,
                "steady": self.steady,
                "cpu_pct": cpu_pct,
                "host_cpu_pct": host_pct,
                "rss": self.server.rss(),
            }
            sample["client_cpu_s"] = sum(w.cpu_seconds() for w in self.workers)
            try:
                m = await scrape(HOST, self.server.port)
                sample.update(
                    rooms_open=m.get("voice_trio_rooms_open"),
                    upstreams_live=m.get("voice_trio_upstreams_live"),
                    lag_p50=m.get("voice_trio_loop_lag_seconds", quantile="0.5"),
                    lag_p99=m.get("voice_trio_loop_lag_seconds", quantile="0.99"),
                    lag_max=m.get("voice_trio_loop_lag_seconds", quantile="1"),
                    outbox_depth_max=m.get("voice_trio_outbox_depth_max"),
                )
            except (OSError, trio.TooSlowError, RuntimeError, ValueError, IndexError) as exc:
                sample["scrape_error"] = f"{type(exc).__name__}: {exc}"
            self.samples.append(sample)
            if now - last_print >= 5:
                last_print = now
                fmt = lambda v, k=1e3: "-" if v is None else f"{v * k:.1f}"  # noqa: E731
                lags = "/".join(fmt(sample.get(k)) for k in ("lag_p50", "lag_p99", "lag_max"))
                pct = lambda v: "-" if v is None else f"{v:.0f}"  # noqa: E731
                print(
                    f"  [{self.mode} {self.rooms}] t={sample['t']:5.0f}s "
                    f"rooms={sample.get('rooms_open')} lag p50/p99/max={lags} ms "
                    f"cpu={pct(cpu_pct)}% host={pct(host_pct)}% "
                    f"rss={sample['rss'] / 2**20:.0f} MB" + (" steady" if self.steady else " ramp"),
                    flush=True,
                )
            await trio.sleep(1.0)

    async def wait_rss_settled(self, max_s: float = 30.0) -> int:
        """RSS once three 1-s samples in a row agree within 0.5% (bounded)."""
        history: list[int] = []
        deadline = trio.current_time() + max_s
        while trio.current_time() < deadline:
            history.append(self.server.rss())
            if len(history) >= 3 and (max(history[-3:]) - min(history[-3:])) <= 0.005 * history[-1]:
                break
            await trio.sleep(1.0)
        return history[-1]

    def worker_argv(self, index: int, rooms: int, first: int, prefix: Path) -> list[str]:
        args = self.args
        ramp = self.args.ramp or (500.0 if self.profile() == "idle" else 100.0)
        max_seconds = (
            rooms / (ramp / self.procs())
            + args.duration
            + 120
            + (60 if self.profile() == "idle" else 0)
        )
        argv = [
            sys.executable,
            str(BENCH_DIR / "loadgen.py"),
            "--port",
            str(self.server.port),
            "--rooms",
            str(rooms),
            "--first-index",
            str(first),
            "--session-prefix",
            f"b{os.getpid()}-{self.mode}-{self.rooms}",
            "--profile",
            self.profile(),
            "--ramp",
            str(ramp / self.procs()),
            "--max-seconds",
            str(max_seconds),
            "--events",
            args.events if self.mode != "latency" else "text",
            "--interrupt-every",
            str(args.interrupt_every),
            "--out-prefix",
            str(prefix),
        ]
        if args.no_deflate_offer:
            argv.append("--no-deflate-offer")
        return argv

    async def warm_up(self) -> None:
        """One room through the code paths (connect, ping): lazy imports are not room cost."""
        with trio.move_on_after(10):
            path = "/ws/bench-warmup" + room_token_query("bench-warmup")
            ws = await connect(HOST, self.server.port, path)
            await ws.send_text('{"type":"ping"}')
            with trio.move_on_after(2):
                got_pong = False
                while not got_pong and not ws.closed:
                    for ev in await ws.receive_events():
                        if isinstance(ev, TextMessage) and '"pong"' in ev.data:
                            got_pong = True
            await ws.aclose()

    async def run(self) -> dict[str, Any]:
        args = self.args
        tag = f"{self.mode}-{self.rooms}"
        t0 = time.perf_counter()
        record: dict[str, Any] = {
            "mode": self.mode,
            "profile": self.profile(),
            "rooms": self.rooms,
            "procs": self.procs(),
        }
        await self.warm_up()
        await trio.sleep(1.0)
        if self.profile() == "idle":
            record["rss_before"] = await self.wait_rss_settled()
        else:
            record["rss_before"] = self.server.rss()
        record["fds_before"] = self.server.num_fds()
        metrics_before = await scrape(HOST, self.server.port)
        cpu_before = None
        n = self.procs()
        counts = [self.rooms // n + (1 if i < self.rooms % n else 0) for i in range(n)]
        firsts = [sum(counts[:i]) for i in range(n)]
        prefixes = [self.out_dir / f"samples-{tag}-w{i}" for i in range(n)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.sample_forever, t0)
            try:
                for i in range(n):
                    w = Worker(
                        i, self.worker_argv(i, counts[i], firsts[i], prefixes[i]), prefixes[i]
                    )
                    self.workers.append(w)
                    await nursery.start(w.run, self.out_dir / f"loadgen-{tag}-w{i}.log")
                ramp = self.args.ramp or (500.0 if self.profile() == "idle" else 100.0)
                with trio.move_on_after(self.rooms / ramp + 90) as opening:
                    for w in self.workers:
                        await w.opened_event.wait()
                record["open_timed_out"] = opening.cancelled_caught
                record["ramp_s"] = time.perf_counter() - t0
                self.steady = True
                t_steady = time.perf_counter()
                client_cpu_before = sum(w.cpu_seconds() for w in self.workers)
                cpu_before = self.server.cpu_seconds()
                host_before, own_before = host_busy_seconds(), own_cpu_seconds()
                if self.profile() == "idle":
                    await trio.sleep(min(5.0, args.duration))
                    record["rss_after"] = await self.wait_rss_settled()
                    held = time.perf_counter() - t_steady
                    if held < args.duration:
                        await trio.sleep(args.duration - held)
                else:
                    await trio.sleep(args.duration)
                t_end = time.perf_counter()
                cpu_after = self.server.cpu_seconds()
                client_cpu_after = sum(w.cpu_seconds() for w in self.workers)
                host_after, own_after = host_busy_seconds(), own_cpu_seconds()
                metrics_end = await scrape(HOST, self.server.port)
                record["rss_end"] = self.server.rss()
                record["fds_end"] = self.server.num_fds()
                record["steady_s"] = t_end - t_steady
                record["server_cpu_pct"] = 100.0 * (cpu_after - cpu_before) / (t_end - t_steady)
                record["client_cpu_pct"] = (
                    100.0 * (client_cpu_after - client_cpu_before) / (t_end - t_steady)
                )
                record["driver_cpu_pct"] = 100.0 * (own_after - own_before) / (t_end - t_steady)
                record["host_cpu_pct"] = 100.0 * (host_after - host_before) / (t_end - t_steady)
                record["other_cpu_pct"] = (
                    record["host_cpu_pct"]
                    - record["server_cpu_pct"]
                    - record["client_cpu_pct"]
                    - record["driver_cpu_pct"]
                )
                record["loadavg_end"] = os.getloadavg()
                self.steady = False
                for w in self.workers:
                    await w.stop()
                with trio.move_on_after(60) as finishing:
                    for w in self.workers:
                        await w.done.wait()
                record["workers_timed_out"] = finishing.cancelled_caught
            finally:
                with trio.CancelScope(shield=True):
                    for w in self.workers:
                        if w.process is not None:
                            await end_process(w.process, grace=5)
                nursery.cancel_scope.cancel()
        results = [w.result for w in self.workers if w.result is not None]
        record["workers_reporting"] = len(results)
        client = merge_results(results)
        client["send_lateness_p99_worst_s"] = worst_of(
            client.get("send_lateness_s_by_worker", []), "p99"
        )
        client["interrupt_to_interrupted_s"] = self._merge_lists(
            "interrupt_to_interrupted_s", results
        )
        for key in [k for k in client if k.endswith("_by_worker")]:
            del client[key]
        figures, st, d = delay_figures(prefixes, t_steady, t_end)
        client.update(figures)
        sent = client.get("audio_bytes_sent", 0)
        client["received_over_expected"] = (
            client.get("audio_bytes_received", 0) / sent if sent else None
        )
        record["client"] = client
        record["server"] = server_figures(metrics_before, metrics_end, self.samples)
        record["metrics_end"] = metrics_end.as_dict()
        record["samples"] = self.samples
        if self.profile() == "idle" and "rss_after" in record:
            opened = client.get("rooms_opened", 0) or 1
            record["kb_per_idle_room"] = (
                (record["rss_after"] - record["rss_before"]) / opened / 1024
            )
        record["verdict"] = verdict(record)
        np.savez(
            self.out_dir / f"delays-{tag}.npz", send_t=st - t_steady if st.size else st, delay=d
        )
        for prefix in prefixes:
            prefix.with_suffix(".npz").unlink(missing_ok=True)
        return record

    @staticmethod
    def _merge_lists(key: str, results: list[dict[str, Any]]) -> dict[str, Any]:
        # worker summaries cannot be merged exactly; report the worst worker's figures
        parts = [r[key] for r in results if r.get(key, {}).get("n")]
        if not parts:
            return {"n": 0}
        return {
            "n": sum(p["n"] for p in parts),
            "p50": max(p["p50"] for p in parts),
            "p99": max(p["p99"] for p in parts),
            "max": max(p["max"] for p in parts),
            "note": "p50/p99 = worst worker",
        }


def verdict(record: dict[str, Any]) -> dict[str, Any]:
    """Did the level meet the bar? (lag p99 < 20 ms, no drops or growth, all rooms and audio)."""
    c, s = record["client"], record["server"]
    reasons = []
    if c.get("rooms_opened", 0) < record["rooms"]:
        reasons.append(f"only {c.get('rooms_opened', 0)}/{record['rooms']} rooms opened")
    if c.get("closed_by_server"):
        reasons.append(f"server closed rooms: {c['closed_by_server']}")
    if c.get("deflate_accepted"):
        reasons.append(f"permessage-deflate accepted on {c['deflate_accepted']} rooms")
    lag = s.get("loop_lag_p99_s")
    if lag is None:
        reasons.append("no loop-lag metric")
    elif lag >= LAG_P99_LIMIT_S:
        reasons.append(f"loop lag p99 {lag * 1e3:.1f} ms >= {LAG_P99_LIMIT_S * 1e3:.0f} ms")
    if record["profile"] != "idle":
        dropped = sum((s.get("outbox_dropped") or {}).values()) + (
            s.get("incoming_audio_dropped") or 0
        )
        if dropped:
            reasons.append(f"server dropped {dropped:.0f} messages/frames")
        if s.get("slow_consumer_closes"):
            reasons.append(f"{s['slow_consumer_closes']:.0f} slow-consumer closes")
        ratio = c.get("received_over_expected")
        allowance = 1 - (c.get("rooms_opened", 0) * 4800) / max(1, c.get("audio_bytes_sent", 1))
        if record["profile"] == "active" and (ratio is None or ratio < min(0.999, allowance)):
            reasons.append(f"received/expected audio {ratio}")
        if record["profile"] == "active" and c.get("seq_gaps"):
            reasons.append(f"{c['seq_gaps']} audio frames missing in the echo")
        growth = c.get("delay_growth_s")
        if growth is not None and growth > GROWTH_LIMIT_S:
            reasons.append(f"delivery delay grew {growth * 1e3:.0f} ms over the level")
        if record["profile"] == "interrupt" and c.get("frames_after_interrupted_before_started"):
            reasons.append(
                f"{c['frames_after_interrupted_before_started']} audio frames after `interrupted`"
            )
    late = c.get("send_lateness_p99_worst_s")
    client_limited = late is not None and late > LATE_CLIENT_LIMIT_S
    return {"pass": not reasons, "reasons": reasons, "client_limited": client_limited}


# --------------------------------------------------------------------------- modes
async def run_levels(
    args: argparse.Namespace,
    out_dir: Path,
    mode: str,
    levels: list[int],
    all_records: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    records = []
    for rooms in levels:
        quiet = None
        if args.quiet_pct > 0:
            quiet = await wait_until_quiet(args.quiet_pct, args.quiet_wait)
        server = Server(args, out_dir / "server.log")
        print(f"level {mode} {rooms} rooms: starting server {' '.join(server.cmd)}", flush=True)
        try:
            await server.start()
            record = await Level(args, out_dir, mode, rooms, server).run()
        finally:
            await server.stop()
        record["target"] = args.server_cmd or args.target
        record["host_busy_before_pct"] = quiet
        record["server_returncode"] = server.process.returncode if server.process else None
        records.append(record)
        all_records.append(record)
        print(report.progress_line(record), flush=True)
        write_outputs(args, out_dir, all_records)
    return records


async def sweep(args: argparse.Namespace, out_dir: Path, all_records: list[dict[str, Any]]) -> None:
    """Grow the level until it fails, then bisect between the last pass and the first fail."""
    good, bad = 0, None
    rooms = args.start
    for _ in range(args.max_levels):
        (record,) = await run_levels(args, out_dir, "sweep", [rooms], all_records)
        ok = record["verdict"]["pass"]
        if record["verdict"]["client_limited"]:
            print(
                "  note: the load generator fell behind its schedule at this level (use --procs)",
                flush=True,
            )
        if ok:
            good = rooms
        else:
            bad = rooms
        if bad is None:
            rooms = int(rooms * args.factor)
        else:
            if bad - good <= args.resolution:
                break
            rooms = (good + bad) // 2
        if rooms > args.max_rooms:
            break
    print(f"sweep: max active rooms passing = {good} (first failing level: {bad})", flush=True)
    all_records.append(
        {"mode": "sweep-result", "max_passing_rooms": good, "first_failing_rooms": bad}
    )


def source_fingerprint(package: Path) -> str | None:
    """sha256 over the package's .py files: which server code was measured (no commit yet)."""
    if not package.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def write_outputs(args: argparse.Namespace, out_dir: Path, records: list[dict[str, Any]]) -> None:
    meta = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "mem_total_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        },
        "command": " ".join(sys.argv),
        "target": args.server_cmd or args.target,
        "voice_trio_source_sha256": source_fingerprint(REPO_DIR / "voice_trio"),
    }
    (out_dir / "results.json").write_text(
        json.dumps({"meta": meta, "levels": records}, indent=1, default=str)
    )
    (out_dir / "report.md").write_text(report.markdown(meta, records))


async def main_async(args: argparse.Namespace) -> None:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = "custom" if args.server_cmd else args.target
    out_dir = (
        Path(args.out) if args.out else BENCH_DIR / "results" / f"{stamp}-{args.mode}-{target}"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"results -> {out_dir}", flush=True)
    records: list[dict[str, Any]] = []
    if args.mode == "quick":
        await run_levels(args, out_dir, "idle", [args.idle_rooms], records)
        await run_levels(args, out_dir, "active", [args.active_rooms], records)
    elif args.mode == "sweep":
        await sweep(args, out_dir, records)
    else:
        await run_levels(args, out_dir, args.mode, args.levels, records)
    write_outputs(args, out_dir, records)
    if not args.no_plots:
        report.plots(out_dir, records)
    print()
    print((out_dir / "report.md").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description="voice-trio bench driver",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "mode", choices=["quick", "idle", "active", "sweep", "interrupt", "latency"]
    )
    parser.add_argument(
        "--target",
        choices=["voice-trio", "voice-trio-asgi", "floor", "floor-deflate", "pipecat"],
        default="voice-trio",
    )
    parser.add_argument("--server-cmd", default=None, help="any server command; {port} is replaced")
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the server (repeatable)"
    )
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--duration", type=float, default=None, help="steady seconds per level")
    parser.add_argument("--procs", type=int, default=0, help="load-generator processes (0 = auto)")
    parser.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        help="rooms opened per second (0 = 100 active / 500 idle)",
    )
    parser.add_argument("--events", choices=["mixed", "ping", "text", "none"], default="mixed")
    parser.add_argument("--interrupt-every", type=float, default=3.0)
    parser.add_argument(
        "--no-deflate-offer",
        action="store_true",
        help="do not offer permessage-deflate (not what browsers do)",
    )
    parser.add_argument("--idle-rooms", type=int, default=2000, help="quick: idle level")
    parser.add_argument("--active-rooms", type=int, default=100, help="quick: active level")
    parser.add_argument("--start", type=int, default=100, help="sweep: first level")
    parser.add_argument("--factor", type=float, default=1.5, help="sweep: growth while passing")
    parser.add_argument(
        "--resolution", type=int, default=25, help="sweep: stop bisecting at this gap"
    )
    parser.add_argument("--max-levels", type=int, default=8, help="sweep: bound on levels")
    parser.add_argument("--max-rooms", type=int, default=3000, help="sweep: bound on rooms")
    parser.add_argument(
        "--quiet-pct",
        type=float,
        default=30.0,
        help="before each level wait until the machine is below this busy CPU %% (0 = do not wait)",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=180.0, help="bound on that wait, seconds"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (default bench/results/<stamp>-<mode>-<target>)",
    )
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args()
    defaults = {
        "idle": [2000],
        "active": [100],
        "interrupt": [100],
        "latency": [1, 10],
        "quick": [],
        "sweep": [],
    }
    if args.levels is None:
        args.levels = defaults[args.mode]
    if args.duration is None:
        args.duration = {"idle": 10.0, "latency": 20.0}.get(args.mode, 30.0)
    soft = raise_file_limit()
    biggest = max(
        args.levels
        + [
            args.idle_rooms if args.mode == "quick" else 0,
            args.max_rooms if args.mode == "sweep" else 0,
        ]
    )
    if biggest + 100 > soft:
        print(
            f"warning: {biggest} rooms need {biggest + 100}+ descriptors in the server; "
            f"the limit is {soft}",
            file=sys.stderr,
        )
    try:
        trio.run(main_async, args)
    except KeyboardInterrupt:
        print("interrupted; every process started here was ended by PID", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
