"""Churn: rooms that come and go, and what they leave behind (issue #10).

    python bench/churn.py cycles --cycles 20000        # connect, ping, close; N times
    python bench/churn.py cycles --cycles 5000 --talk  # + audio, a text turn, an interrupt
    python bench/churn.py idle --rooms 10000           # a full collection's pause at N rooms

Both start ``voice-trio serve`` (VOICE_BRAIN=echo) on a free loopback port,
under a small garbage-collector probe (``churn.py child``, below), and end it
by its PID (SIGTERM, SIGKILL after a bound) whatever happens.

``cycles``: a warm-up, a forced full collection, the baseline RSS; then N
connect/close cycles (``--concurrency`` at a time, each a fresh session id,
offering permessage-deflate like a browser); then RSS again before any forced
collection, a census (every tracked object, frozen ones too, counted by
type before and after a full collection: what the rooms left as garbage, and
what stays alive against the baseline), and RSS after it. /metrics is sampled
every second (RSS, fds, Trio tasks, loop lag, ``voice_trio_gc_pause_seconds``;
the machine's other CPU load beside it). The bar: RSS after ~ baseline, the
census ~0 objects per cycle, no loop stall (loop-lag max, longest collection)
over 50 ms.

``idle``: opens ``--rooms`` idle rooms (one ``ping`` each), holds them, then
forces ``--full-collections`` full collections a few seconds apart and
reports each one's pause (the loop is stopped for exactly that long), the
tracked objects it walked, and the objects frozen out of it (``gc.freeze``).

``child``: runs the voice-trio command line given after it, plus a probe that
writes one ``gcprobe`` line to stderr per collection over ``GCPROBE_MS``
(default 1 ms) or of the oldest generation; SIGUSR1 makes it do a timed full
collection, SIGUSR2 the census (written to ``GCPROBE_DIR/census-N.json``).
Diagnosis only: the probe costs a little CPU.

``--env KEY=VALUE`` sets server settings (e.g. ``--env GC_THRESHOLDS=off``);
``--server-path DIR`` runs another checkout's ``voice_trio`` (PYTHONPATH=DIR)
to measure before and after a change. Output: ``results.json`` and
``report.md`` in ``bench/results/<stamp>-churn-<mode>/`` (or ``--out``), and
``server.log``.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
STALL_LIMIT_S = 0.050


# ------------------------------------------------------------------ the server's probe
def _type_name(o: object) -> str:
    return f"{type(o).__module__}.{type(o).__qualname__}"


def child_main(argv: list[str]) -> int:
    """``churn.py child ARGS``: ``voice-trio ARGS`` with the garbage-collector probe."""
    threshold_ms = float(os.environ.get("GCPROBE_MS", "1"))
    started = [0.0]

    def log(line: str) -> None:
        sys.stderr.write(f"gcprobe t={time.monotonic():.3f} {line}\n")
        sys.stderr.flush()

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1e3
        if ms >= threshold_ms or info["generation"] == 2:
            log(f"gen={info['generation']} ms={ms:.2f} collected={info['collected']}")

    def forced_full(signum: int, frame: Any) -> None:
        t0 = time.perf_counter()
        collected = gc.collect()
        ms = (time.perf_counter() - t0) * 1e3
        tracked, frozen = len(gc.get_objects()), gc.get_freeze_count()
        log(f"forced ms={ms:.2f} collected={collected} tracked={tracked} frozen={frozen}")

    censuses = [0]

    def census(signum: int, frame: Any) -> None:
        # Every tracked object, frozen ones too, counted by type before and after a full
        # collection. Counting, not gc.DEBUG_SAVEALL: a cycle through a generator or a
        # coroutine is broken by the generator's finalizer during the collection and
        # never reaches gc.garbage, nor the collection's own count.
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        before = collections.Counter(_type_name(o) for o in gc.get_objects())
        collected = gc.collect()
        after = collections.Counter(_type_name(o) for o in gc.get_objects())
        if frozen:
            gc.freeze()
        censuses[0] += 1
        freed = before - after
        record = {
            "tracked": sum(before.values()),
            "alive": sum(after.values()),
            "collected": collected,
            "freed_types": dict(freed.most_common(40)),
            "alive_types": dict(after),
        }
        path = Path(os.environ.get("GCPROBE_DIR", ".")) / f"census-{censuses[0]}.json"
        path.write_text(json.dumps(record))
        log(
            f"census n={censuses[0]} tracked={record['tracked']} alive={record['alive']} "
            f"freed={sum(freed.values())} path={path}"
        )

    gc.callbacks.append(on_gc)
    signal.signal(signal.SIGUSR1, forced_full)
    signal.signal(signal.SIGUSR2, census)
    from voice_trio.cli import main as cli_main

    return int(cli_main(argv) or 0)


if __name__ == "__main__" and sys.argv[1:2] == ["child"]:
    # Before the bench's own imports: the server process needs none of them.
    sys.exit(child_main(sys.argv[2:]))

import psutil  # noqa: E402
import trio  # noqa: E402
from promtext import Metrics, scrape  # noqa: E402
from run import free_port, raise_file_limit  # noqa: E402
from wsclient import WSClient, connect  # noqa: E402
from wsproto.events import BytesMessage, TextMessage  # noqa: E402


# ------------------------------------------------------------------------- processes
def parse_probe_line(line: str) -> dict[str, Any] | None:
    """One ``gcprobe`` line of the server's log as a dict (None for other lines)."""
    if not line.startswith("gcprobe "):
        return None
    out: dict[str, Any] = {}
    for part in line.split()[1:]:
        key, _, value = part.partition("=")
        if key == "types":
            out[key] = dict(
                (name, int(n))
                for name, _, n in (kv.rpartition("=") for kv in value.split(";") if kv)
            )
            continue
        try:
            out[key] = float(value) if "." in value else int(value)
        except ValueError:
            out[key] = value
    return out


class ProbedServer:
    """``voice-trio serve`` under the probe: started here, ended by its PID."""

    def __init__(self, log_path: Path, *, env: list[str], server_path: str | None) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.env = dict(os.environ)
        self.env.setdefault("VOICE_BRAIN", "echo")
        # Every client of the bench is 127.0.0.1: lift the per-address limits (as run.py).
        for key in (
            "MAX_CONNECTIONS_PER_IP",
            "MAX_ROOMS_PER_IP",
            "HANDSHAKE_RATE_PER_IP",
            "HANDSHAKE_BURST_PER_IP",
        ):
            self.env.setdefault(key, "100000")
        self.env.setdefault("ALLOWED_ORIGINS", f"http://{HOST}:{self.port}")  # wsclient's Origin
        for item in env:
            key, _, value = item.partition("=")
            self.env[key] = value
        if server_path:
            self.env["PYTHONPATH"] = server_path
        self.env["GCPROBE_DIR"] = str(log_path.parent)
        self.cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "child",
            "serve",
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]
        self.process: trio.Process | None = None
        self._log_offset = 0

    async def start(self) -> None:
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230 - once, before the run
            self.process = await trio.lowlevel.open_process(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=str(REPO_DIR),
            )
        with trio.move_on_after(60) as waiting:
            while True:
                if self.process.returncode is not None:
                    raise RuntimeError(f"server exited; see {self.log_path}")
                try:
                    await scrape(HOST, self.port)
                    break
                except (OSError, RuntimeError, trio.TooSlowError):
                    await trio.sleep(0.2)
        if waiting.cancelled_caught:
            raise RuntimeError(f"server not up after 60 s; see {self.log_path}")

    async def stop(self) -> None:
        process = self.process
        if process is None:
            return
        with trio.CancelScope(shield=True):
            for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
                if process.returncode is not None:
                    return
                try:
                    os.kill(process.pid, sig)
                except ProcessLookupError:
                    return
                with trio.move_on_after(grace):
                    await process.wait()

    def cpu_seconds(self) -> float:
        assert self.process is not None
        try:
            t = psutil.Process(self.process.pid).cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return float(t.user + t.system)

    def probe_lines(self, *, since_mark: bool = True) -> list[dict[str, Any]]:
        """The probe's lines in the server log (since the last call with ``since_mark``)."""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset if since_mark else 0)
            data = f.read()
        if since_mark:
            self._log_offset += len(data)
        return [
            parsed
            for line in data.decode("utf-8", "replace").splitlines()
            if (parsed := parse_probe_line(line)) is not None
        ]

    async def signal_and_wait(
        self, signum: int, kind: str, timeout: float = 120.0
    ) -> dict[str, Any]:
        """Send ``signum`` (the probe's forced collection or census); its log line."""
        assert self.process is not None
        self.probe_lines()  # mark
        os.kill(self.process.pid, signum)
        with trio.fail_after(timeout):
            while True:
                await trio.sleep(0.2)
                for line in self.probe_lines():
                    if kind in line:
                        return line

    async def forced_full(self) -> dict[str, Any]:
        line = await self.signal_and_wait(signal.SIGUSR1, "forced")
        return {k: line[k] for k in ("ms", "collected", "tracked", "frozen")}

    async def census(self) -> dict[str, Any]:
        """Tracked objects by type before and after a full collection (frozen ones too)."""
        line = await self.signal_and_wait(signal.SIGUSR2, "census")
        record: dict[str, Any] = json.loads(await trio.Path(line["path"]).read_text())
        return record


# -------------------------------------------------------------------------- sampling
def figures(m: Metrics) -> dict[str, float]:
    """The /metrics figures a churn or soak follows over time."""
    gc_buckets = dict(m.histogram_buckets("voice_trio_gc_pause_seconds"))
    gc_count = m.get("voice_trio_gc_pause_seconds_count") or 0.0
    over_50ms = gc_count - gc_buckets.get(0.05, gc_count)
    return {
        "rss_mb": (m.get("process_resident_memory_bytes") or 0.0) / 1e6,
        "fds": m.get("process_open_fds") or -1.0,
        "tasks": m.get("voice_trio_tasks") or -1.0,
        "rooms": m.get("voice_trio_rooms_open") or 0.0,
        "upstreams": m.get("voice_trio_upstreams_live") or 0.0,
        "lag_p99_ms": 1e3 * (m.get("voice_trio_loop_lag_seconds", quantile="0.99") or 0.0),
        "lag_max_ms": 1e3 * (m.get("voice_trio_loop_lag_seconds", quantile="1") or 0.0),
        "gc_count": gc_count,
        "gc_sum_ms": 1e3 * (m.get("voice_trio_gc_pause_seconds_sum") or 0.0),
        "gc_over_50ms": over_50ms,
        "messages_in": m.get("voice_trio_messages_total", direction="in") or 0.0,
    }


class Sampler:
    """/metrics once a period, into ``samples`` (with the seconds since ``t0``)."""

    def __init__(self, server: ProbedServer, t0: float, period: float = 1.0) -> None:
        self.server = server
        self.t0 = t0
        self.period = period
        self.samples: list[dict[str, float]] = []
        self._last: tuple[float, float, float] | None = None  # wall, host busy, server CPU

    async def sample(self) -> dict[str, float]:
        row = figures(await scrape(HOST, self.server.port))
        now = time.monotonic()
        row["t"] = round(now - self.t0, 2)
        row["cpu_s"] = self.server.cpu_seconds()
        # The machine's other load (100 = one core): a stall with the server idle is theirs.
        times = psutil.cpu_times()
        busy = sum(times) - times.idle - getattr(times, "iowait", 0.0)
        if self._last is not None:
            wall = max(1e-6, now - self._last[0])
            row["other_cpu_pct"] = (
                100.0 * ((busy - self._last[1]) - (row["cpu_s"] - self._last[2])) / wall
            )
        self._last = (now, busy, row["cpu_s"])
        self.samples.append(row)
        return row

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except (OSError, RuntimeError, trio.TooSlowError, trio.BrokenResourceError):
                pass  # a busy server: the next sample will do
            await trio.sleep(self.period)


# ---------------------------------------------------------------------------- clients
PING = '{"type":"ping"}'
FRAME_BYTES = 4800


async def next_events(ws: WSClient) -> list[Any]:
    """Events already parsed (``session.ready`` may come in the handshake's read), else read."""
    pending = list(ws.conn.events())
    return pending or await ws.receive_events()


async def wait_for(ws: WSClient, kind: str, timeout: float = 10.0) -> None:
    """Read until a JSON event of ``kind`` arrives (bounded)."""
    needle = f'"type":"{kind}"'
    with trio.fail_after(timeout):
        while not ws.closed:
            for event in await next_events(ws):
                if isinstance(event, TextMessage) and needle in event.data:
                    return
    raise trio.BrokenResourceError(f"closed before {kind}")


async def read_until_quiet(ws: WSClient, seconds: float) -> int:
    """Read (and drop) what arrives for ``seconds``; the audio bytes seen."""
    got = 0
    with trio.move_on_after(seconds):
        while not ws.closed:
            for event in await next_events(ws):
                if isinstance(event, BytesMessage):
                    got += len(event.data)
    return got


async def one_cycle(port: int, session_id: str, *, talk: bool, deflate: bool) -> None:
    """Connect, a ``ping`` (and with ``talk`` audio, a text turn, an interrupt), close."""
    ws = await connect(HOST, port, f"/ws/{session_id}", offer_deflate=deflate)
    try:
        await wait_for(ws, "session.ready")
        if talk:
            for _ in range(3):
                await ws.send_bytes(b"\x01\x00" * (FRAME_BYTES // 2))
            await ws.send_text('{"type":"text","text":"xin chao ban"}')
            await wait_for(ws, "response.started")
            await ws.send_text('{"type":"interrupt"}')
        await ws.send_text(PING)
        await wait_for(ws, "pong")
    finally:
        await ws.aclose()


# ------------------------------------------------------------------------------ modes
async def run_cycles(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    server = ProbedServer(out / "server.log", env=args.env, server_path=args.server_path)
    result: dict[str, Any] = {"mode": "cycles", "args": vars(args)}
    errors: collections.Counter[str] = collections.Counter()
    await server.start()
    try:
        t0 = time.monotonic()
        sampler = Sampler(server, t0)

        async def cycles(count: int, prefix: str) -> None:
            done = [0]

            async def worker(w: int) -> None:
                for i in range(w, count, args.concurrency):
                    try:
                        await one_cycle(
                            server.port,
                            f"{prefix}-{i}",
                            talk=args.talk,
                            deflate=not args.no_deflate,
                        )
                    except Exception as exc:  # noqa: BLE001 - counted; the bench goes on
                        errors[type(exc).__name__] += 1
                    done[0] += 1

            async def progress() -> None:
                while True:
                    await trio.sleep(5)
                    row = sampler.samples[-1] if sampler.samples else {}
                    print(
                        f"  {prefix}: {done[0]}/{count} cycles, RSS {row.get('rss_mb', 0):.1f} MB, "
                        f"lag max {row.get('lag_max_ms', 0):.1f} ms, errors {sum(errors.values())}",
                        flush=True,
                    )

            async with trio.open_nursery() as inner:
                inner.start_soon(progress)
                async with trio.open_nursery() as workers:
                    for w in range(args.concurrency):
                        workers.start_soon(worker, w)
                inner.cancel_scope.cancel()

        print(f"warm-up: {args.warmup} cycles", flush=True)
        await cycles(args.warmup, "warm")
        await trio.sleep(2)
        result["baseline_forced_full"] = await server.forced_full()
        base_census = await server.census()
        await trio.sleep(1)
        base = await sampler.sample()
        server.probe_lines()
        print(f"baseline RSS {base['rss_mb']:.1f} MB; {args.cycles} cycles", flush=True)
        cpu0, wall0 = server.cpu_seconds(), time.monotonic()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler.run)
            await cycles(args.cycles, "churn")
            nursery.cancel_scope.cancel()
        wall = time.monotonic() - wall0
        cpu = server.cpu_seconds() - cpu0
        await trio.sleep(2)
        after = await sampler.sample()
        collections_seen = server.probe_lines()
        census = await server.census()
        result["final_forced_full"] = await server.forced_full()
        await trio.sleep(1)
        collected = await sampler.sample()
        during = [s for s in sampler.samples if s["t"] > base["t"]]
        longest_gc = max((line["ms"] for line in collections_seen if "gen" in line), default=0.0)
        result.update(
            {
                "cycles": args.cycles,
                "talk": args.talk,
                "errors": dict(errors),
                "seconds": wall,
                "cycles_per_s": args.cycles / wall,
                "server_cpu_pct": 100.0 * cpu / wall,
                "baseline": base,
                "after": after,
                "after_full_collection": collected,
                "rss_growth_kb_per_cycle": (after["rss_mb"] - base["rss_mb"]) * 1e3 / args.cycles,
                "census": {k: v for k, v in census.items() if k != "alive_types"},
                "left": census_left(base_census, census),
                "freed_per_cycle": (census["tracked"] - census["alive"]) / args.cycles,
                "alive_growth_per_cycle": (census["alive"] - base_census["alive"]) / args.cycles,
                "lag_max_ms": max((s["lag_max_ms"] for s in during), default=0.0),
                "gc_collections": collections_seen,
                "longest_gc_ms": longest_gc,
                "full_collections": sum(1 for line in collections_seen if line.get("gen") == 2),
                "samples": sampler.samples,
            }
        )
    finally:
        await server.stop()
    return result


async def open_idle_room(port: int, session_id: str, deflate: bool) -> WSClient:
    ws = await connect(HOST, port, f"/ws/{session_id}", offer_deflate=deflate)
    try:
        await wait_for(ws, "session.ready")
        await ws.send_text(PING)
        await wait_for(ws, "pong")
    except BaseException:
        await ws.aclose()
        raise
    return ws


async def run_idle(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    server = ProbedServer(out / "server.log", env=args.env, server_path=args.server_path)
    result: dict[str, Any] = {"mode": "idle", "args": vars(args)}
    rooms: list[WSClient] = []
    await server.start()
    try:
        t0 = time.monotonic()
        sampler = Sampler(server, t0)
        base = await sampler.sample()
        failed = 0
        limiter = trio.CapacityLimiter(args.concurrency)

        async def opener(i: int) -> None:
            nonlocal failed
            async with limiter:
                try:
                    rooms.append(
                        await open_idle_room(server.port, f"idle-{i}", not args.no_deflate)
                    )
                except Exception:  # noqa: BLE001 - counted
                    failed += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler.run)
            print(f"opening {args.rooms} idle rooms", flush=True)
            async with trio.open_nursery() as openers:
                for i in range(args.rooms):
                    openers.start_soon(opener, i)
                    if i % 200 == 199:
                        await trio.sleep(0.2)  # ~1,000 rooms/s: a bounded ramp
            opened_at = time.monotonic()
            print(f"  {len(rooms)} open ({failed} failed); holding {args.hold:g} s", flush=True)
            server.probe_lines()
            await trio.sleep(args.hold)
            natural = server.probe_lines()
            forced = []
            for k in range(args.full_collections):
                forced.append(await server.forced_full())
                print(f"  full collection {k + 1}: {forced[-1]}", flush=True)
                await trio.sleep(args.gap)
            held = await sampler.sample()
            nursery.cancel_scope.cancel()
        result.update(
            {
                "rooms": len(rooms),
                "failed": failed,
                "baseline": base,
                "held": held,
                "kb_per_room": (held["rss_mb"] - base["rss_mb"]) * 1e3 / max(1, len(rooms)),
                "natural_collections_while_held": natural,
                "forced_full": forced,
                "lag_max_ms_held": max(
                    (s["lag_max_ms"] for s in sampler.samples if s["t"] > opened_at - t0 + 60),
                    default=None,
                ),
                "samples": sampler.samples,
            }
        )
    finally:
        with trio.CancelScope(shield=True):
            for ws in rooms:
                with trio.move_on_after(0.5):
                    await ws.stream.aclose()
        await server.stop()
    return result


def census_left(base: dict[str, Any], end: dict[str, Any], top: int = 12) -> dict[str, int]:
    """Types with more objects alive at the end than at the baseline (the growth)."""
    grown = collections.Counter(end["alive_types"])
    grown.subtract(base["alive_types"])
    return {name: n for name, n in grown.most_common(top) if n > 0}


# ----------------------------------------------------------------------------- report
def report(result: dict[str, Any]) -> str:
    a = result["args"]
    env = " ".join(a.get("env") or []) or "(defaults)"
    lines = [f"# churn {result['mode']} ({dt.datetime.now():%Y-%m-%d %H:%M}, env {env})", ""]
    if result["mode"] == "cycles":
        b, af, fc = result["baseline"], result["after"], result["after_full_collection"]
        freed = result["census"]["freed_types"]
        lines += [
            "| figure | value |",
            "| --- | --- |",
            f"| cycles ({'talk' if result['talk'] else 'ping'}), concurrency | "
            f"{result['cycles']}, {a['concurrency']} ({result['cycles_per_s']:.0f}/s, "
            f"server CPU {result['server_cpu_pct']:.0f} %) |",
            f"| errors | {result['errors'] or 0} |",
            f"| RSS baseline -> after -> after a full collection | {b['rss_mb']:.1f} -> "
            f"{af['rss_mb']:.1f} -> {fc['rss_mb']:.1f} MB "
            f"({result['rss_growth_kb_per_cycle']:.3f} KB per cycle) |",
            "| objects a full collection then frees (frozen included) | "
            f"{result['census']['tracked'] - result['census']['alive']} "
            f"({result['freed_per_cycle']:.2f} per cycle) |",
            "| tracked objects alive after it, against the baseline | "
            f"{result['alive_growth_per_cycle'] * result['cycles']:+.0f} "
            f"({result['alive_growth_per_cycle']:+.3f} per cycle) |",
            f"| fds / tasks baseline -> after | {b['fds']:.0f} / {b['tasks']:.0f} -> "
            f"{af['fds']:.0f} / {af['tasks']:.0f} |",
            f"| collections over 1 ms (probe), full ones, longest | "
            f"{len(result['gc_collections'])}, {result['full_collections']}, "
            f"{result['longest_gc_ms']:.1f} ms |",
            "| gc pauses (/metrics): count, sum, over 50 ms | "
            f"{af['gc_count'] - b['gc_count']:.0f}, {af['gc_sum_ms'] - b['gc_sum_ms']:.0f} ms, "
            f"{af['gc_over_50ms'] - b['gc_over_50ms']:.0f} |",
            f"| loop-lag max during the cycles | {result['lag_max_ms']:.1f} ms |",
        ]
        for title, kinds in (("Freed by it, by type", freed), ("Grown, by type", result["left"])):
            if kinds:
                lines += ["", f"{title}: " + ", ".join(f"{k} {v}" for k, v in kinds.items())]
    else:
        lines += [
            "| figure | value |",
            "| --- | --- |",
            f"| idle rooms open (failed) | {result['rooms']} ({result['failed']}) |",
            f"| RSS baseline -> held | {result['baseline']['rss_mb']:.1f} -> "
            f"{result['held']['rss_mb']:.1f} MB ({result['kb_per_room']:.1f} KB per room) |",
            f"| collections over 1 ms while held ({a['hold']:g} s) | "
            + (
                ", ".join(
                    f"gen{c['gen']} {c['ms']:.1f} ms"
                    for c in result["natural_collections_while_held"]
                )
                or "none"
            )
            + " |",
        ]
        for k, f in enumerate(result["forced_full"]):
            lines.append(
                f"| forced full collection {k + 1}: pause, tracked, frozen, collected | "
                f"**{f['ms']:.1f} ms**, {f['tracked']}, {f['frozen']}, {f['collected']} |"
            )
        lines.append(
            f"| fds / tasks held | {result['held']['fds']:.0f} / {result['held']['tasks']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def make_out_dir(args: argparse.Namespace, name: str) -> Path:
    if args.out:
        out = Path(args.out)
    else:
        out = BENCH_DIR / "results" / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{name}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description="voice-trio churn bench",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("mode", choices=["cycles", "idle"])
    parser.add_argument("--cycles", type=int, default=20000, help="cycles: connect/close cycles")
    parser.add_argument("--warmup", type=int, default=500, help="cycles: warm-up cycles")
    parser.add_argument("--concurrency", type=int, default=16, help="cycles in flight / openers")
    parser.add_argument("--talk", action="store_true", help="cycles: audio, text, interrupt too")
    parser.add_argument("--rooms", type=int, default=10000, help="idle: rooms held")
    parser.add_argument("--hold", type=float, default=20.0, help="idle: seconds held first")
    parser.add_argument("--full-collections", type=int, default=3, help="idle: forced ones")
    parser.add_argument("--gap", type=float, default=3.0, help="idle: seconds between them")
    parser.add_argument("--no-deflate", action="store_true", help="do not offer deflate")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--server-path", default=None, help="PYTHONPATH of the server")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.mode == "idle":
        args.concurrency = max(args.concurrency, 64)
    soft = raise_file_limit()
    if args.mode == "idle" and args.rooms + 200 > soft:
        raise SystemExit(f"{args.rooms} rooms need more than {soft} file descriptors")
    out = make_out_dir(args, f"churn-{args.mode}")
    runner = run_cycles if args.mode == "cycles" else run_idle
    result = trio.run(runner, args, out)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    text = report(result)
    (out / "report.md").write_text(text)
    print(text)
    print(f"(files in {out})")


if __name__ == "__main__":
    main()
