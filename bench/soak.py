"""Soak: rooms that keep coming and going for a long time; does anything drift?

    python bench/soak.py                                  # 10 min, 200 rooms churning
    python bench/soak.py --duration 120 --rooms 50        # a short run

Starts ``voice-trio serve`` (VOICE_BRAIN=echo) on a free loopback port under
the garbage-collector probe of ``bench/churn.py`` and ends it by its PID
(SIGTERM, SIGKILL after a bound) whatever happens; the run stops by itself
after ``--duration`` s. ``--rooms`` slots each run one room after another:
connect (a fresh session id, offering permessage-deflate like a browser),
talk for ``--min-life``..``--max-life`` s (the standard room's 100 ms PCM16
frames at 10/s, echoed back and read; a text turn every ``--text-every`` s;
an ``interrupt`` every ``--interrupt-every`` s), leave (close 1000), and
again. The slots start spread over the first ``--min-life`` s.

/metrics is sampled every ``--period`` s: RSS, open fds, Trio tasks, rooms,
loop lag, ``voice_trio_gc_pause_seconds``. The report gives the slope of RSS
(KB/min), fds and tasks (per min) by least squares over the samples after
the warm-up (``--warmup`` s, default the larger of 60 s and a fifth of the
run), their first and last values, the loop lag (worst p99 and max seen),
the GC pauses, the rooms served, and once every room has left, the probe's
census (frozen objects included): what a full collection then frees, and the
tracked objects alive against the server before any room. Flat is the bar.

Output in ``bench/results/<stamp>-soak/`` (or ``--out``): ``results.json``,
``report.md``, ``soak.png`` (RSS, fds, tasks, lag over time), ``server.log``.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio
from churn import (
    HOST,
    ProbedServer,
    Sampler,
    census_left,
    make_out_dir,
    next_events,
    raise_file_limit,
    wait_for,
)
from wsclient import HandshakeError, WSClient, connect
from wsproto.events import BytesMessage, TextMessage
from wsproto.utilities import LocalProtocolError

FRAME_BYTES = 4800  # 100 ms of PCM16 mono at 24 kHz
FRAME_PERIOD_S = 0.1
ROOM_ERRORS = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    OSError,
    LocalProtocolError,
    HandshakeError,
)


class Totals:
    """What the clients did and saw, all slots together."""

    def __init__(self) -> None:
        self.rooms_opened = 0
        self.rooms_closed = 0
        self.frames_sent = 0
        self.audio_bytes_received = 0
        self.texts_sent = 0
        self.interrupts_sent = 0
        self.events: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.closed_by_server: collections.Counter[str] = collections.Counter()


async def read_room(ws: WSClient, totals: Totals) -> None:
    while not ws.closed:
        for event in await next_events(ws):
            if isinstance(event, BytesMessage):
                totals.audio_bytes_received += len(event.data)
            elif isinstance(event, TextMessage):
                kind = event.data[9 : event.data.find('"', 9)]  # {"type":"<kind>",...
                totals.events[kind] += 1
    totals.closed_by_server[str(ws.close_code)] += 1


async def talk(ws: WSClient, args: argparse.Namespace, life: float, totals: Totals) -> None:
    frame = b"\x01\x00" * (FRAME_BYTES // 2)
    text_every = max(1, round(args.text_every / FRAME_PERIOD_S))
    interrupt_every = max(1, round(args.interrupt_every / FRAME_PERIOD_S))
    t0 = trio.current_time()
    frames = int(life / FRAME_PERIOD_S)
    for k in range(frames):
        await trio.sleep_until(t0 + k * FRAME_PERIOD_S)
        await ws.send_bytes(frame)
        totals.frames_sent += 1
        if k % text_every == text_every - 1:
            await ws.send_text(f'{{"type":"text","text":"xin chao {k}"}}')
            totals.texts_sent += 1
        if k % interrupt_every == interrupt_every // 2:
            await ws.send_text('{"type":"interrupt"}')
            totals.interrupts_sent += 1


async def run_slot(
    slot: int, args: argparse.Namespace, port: int, stop_at: float, totals: Totals
) -> None:
    rng = random.Random(slot)
    await trio.sleep(rng.uniform(0, args.min_life))
    n = 0
    while stop_at - trio.current_time() >= args.min_life:  # no stub rooms at the end
        life = min(rng.uniform(args.min_life, args.max_life), stop_at - trio.current_time())
        session_id = f"soak-{slot}-{n}"
        n += 1
        try:
            ws = await connect(HOST, port, f"/ws/{session_id}", offer_deflate=True)
        except ROOM_ERRORS as exc:
            totals.errors[f"connect {type(exc).__name__}"] += 1
            await trio.sleep(1.0)
            continue
        totals.rooms_opened += 1
        try:
            await wait_for(ws, "session.ready")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_room, ws, totals)
                await talk(ws, args, life, totals)
                nursery.cancel_scope.cancel()
            totals.rooms_closed += 1
        except ROOM_ERRORS as exc:
            totals.errors[type(exc).__name__] += 1
        finally:
            with trio.CancelScope(shield=True):
                await ws.aclose()


def slope_per_min(samples: list[dict[str, float]], key: str, scale: float = 1.0) -> float:
    """Least-squares slope of ``key`` per minute."""
    if len(samples) < 3:
        return float("nan")
    t = np.array([s["t"] for s in samples]) / 60.0
    y = np.array([s[key] for s in samples]) * scale
    return float(np.polyfit(t, y, 1)[0])


def median_slope_per_min(samples: list[dict[str, float]], key: str, scale: float = 1.0) -> float:
    """Theil-Sen slope (median of the pairwise slopes) per minute: one step (a burst of
    buffers during a stall) moves it little, a drift moves it fully."""
    if len(samples) < 3:
        return float("nan")
    t = np.array([s["t"] for s in samples]) / 60.0
    y = np.array([s[key] for s in samples]) * scale
    i, j = np.triu_indices(len(t), k=1)
    return float(np.median((y[j] - y[i]) / (t[j] - t[i])))


def summarise(
    args: argparse.Namespace, samples: list[dict[str, float]], totals: Totals
) -> dict[str, Any]:
    warmup = args.warmup if args.warmup is not None else max(60.0, args.duration / 5)
    # The last ``min_life`` s are the wind-down (no new rooms start): not steady either.
    steady = [s for s in samples if warmup <= s["t"] <= args.duration - args.min_life]
    first, last = (steady[0], steady[-1]) if steady else ({}, {})
    gc_count = (last.get("gc_count", 0.0) - first.get("gc_count", 0.0)) if steady else 0.0
    return {
        "warmup_s": warmup,
        "steady_samples": len(steady),
        "rss_slope_kb_per_min": slope_per_min(steady, "rss_mb", 1e3),
        "rss_median_slope_kb_per_min": median_slope_per_min(steady, "rss_mb", 1e3),
        "rss_mb_before_rooms": samples[0]["rss_mb"] if samples else None,
        "rss_mb_all_left": samples[-1]["rss_mb"] if samples else None,
        "other_cpu_pct_max": max((s.get("other_cpu_pct", 0.0) for s in steady), default=None),
        "fds_slope_per_min": slope_per_min(steady, "fds"),
        "tasks_slope_per_min": slope_per_min(steady, "tasks"),
        "rss_mb_first_last": [first.get("rss_mb"), last.get("rss_mb")],
        "rss_mb_min_max": [
            min((s["rss_mb"] for s in steady), default=None),
            max((s["rss_mb"] for s in steady), default=None),
        ],
        "fds_first_last_max": [
            first.get("fds"),
            last.get("fds"),
            max((s["fds"] for s in steady), default=None),
        ],
        "tasks_first_last_max": [
            first.get("tasks"),
            last.get("tasks"),
            max((s["tasks"] for s in steady), default=None),
        ],
        "rooms_mean": float(np.mean([s["rooms"] for s in steady])) if steady else None,
        "lag_p99_ms_worst": max((s["lag_p99_ms"] for s in steady), default=None),
        "lag_max_ms": max((s["lag_max_ms"] for s in steady), default=None),
        "gc_pauses": gc_count,
        "gc_pause_ms_total": (last.get("gc_sum_ms", 0.0) - first.get("gc_sum_ms", 0.0))
        if steady
        else 0.0,
        "gc_pauses_over_50ms": (last.get("gc_over_50ms", 0.0) - first.get("gc_over_50ms", 0.0))
        if steady
        else 0.0,
        "server_cpu_pct": 100.0
        * (last.get("cpu_s", 0.0) - first.get("cpu_s", 0.0))
        / max(1e-9, last.get("t", 0.0) - first.get("t", 0.0))
        if steady
        else None,
        "rooms_opened": totals.rooms_opened,
        "rooms_closed_cleanly": totals.rooms_closed,
        "frames_sent": totals.frames_sent,
        "audio_bytes_received": totals.audio_bytes_received,
        "texts_sent": totals.texts_sent,
        "interrupts_sent": totals.interrupts_sent,
        "events": dict(totals.events),
        "errors": dict(totals.errors),
        "closed_by_server": dict(totals.closed_by_server),
    }


def report(args: argparse.Namespace, s: dict[str, Any], census: dict[str, Any] | None) -> str:
    def f(x: Any, spec: str = ".1f") -> str:
        return "-" if x is None else format(x, spec)

    env = " ".join(args.env) or "(defaults)"
    lines = [
        f"# soak: {args.rooms} rooms churning for {args.duration:g} s (env {env})",
        "",
        f"Steady window: {s['warmup_s']:g} s to {args.duration - args.min_life:g} s "
        f"({s['steady_samples']} samples, every "
        f"{args.period:g} s). Rooms live {args.min_life:g}-{args.max_life:g} s: audio at 10 "
        f"frames/s, a text turn every {args.text_every:g} s, an interrupt every "
        f"{args.interrupt_every:g} s.",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| RSS slope: least squares / median (Theil-Sen) | **{f(s['rss_slope_kb_per_min'])}"
        f" / {f(s['rss_median_slope_kb_per_min'])} KB/min** (first -> last "
        f"{f(s['rss_mb_first_last'][0])} -> {f(s['rss_mb_first_last'][1])} MB, min / max "
        f"{f(s['rss_mb_min_max'][0])} / {f(s['rss_mb_min_max'][1])} MB) |",
        f"| RSS before any room -> once every room left | {f(s['rss_mb_before_rooms'])} -> "
        f"{f(s['rss_mb_all_left'])} MB |",
        f"| open fds: slope, first / last / max | {f(s['fds_slope_per_min'], '.2f')}/min, "
        f"{f(s['fds_first_last_max'][0], '.0f')} / {f(s['fds_first_last_max'][1], '.0f')} / "
        f"{f(s['fds_first_last_max'][2], '.0f')} |",
        f"| Trio tasks: slope, first / last / max | {f(s['tasks_slope_per_min'], '.2f')}/min, "
        f"{f(s['tasks_first_last_max'][0], '.0f')} / {f(s['tasks_first_last_max'][1], '.0f')} / "
        f"{f(s['tasks_first_last_max'][2], '.0f')} |",
        f"| rooms open (mean) | {f(s['rooms_mean'])} |",
        f"| loop lag: worst p99 / max (60 s windows) | {f(s['lag_p99_ms_worst'])} / "
        f"{f(s['lag_max_ms'])} ms |",
        f"| GC pauses: count, total, over 50 ms | {f(s['gc_pauses'], '.0f')}, "
        f"{f(s['gc_pause_ms_total'])} ms, {f(s['gc_pauses_over_50ms'], '.0f')} |",
        f"| server CPU (100 % = one core); the machine's other load, max | "
        f"{f(s['server_cpu_pct'], '.0f')} %; {f(s['other_cpu_pct_max'], '.0f')} % |",
        f"| rooms opened / closed cleanly | {s['rooms_opened']} / {s['rooms_closed_cleanly']} |",
        f"| frames sent / audio bytes back | {s['frames_sent']} / {s['audio_bytes_received']} |",
        f"| texts / interrupts sent; `interrupted` back | {s['texts_sent']} / "
        f"{s['interrupts_sent']}; {s['events'].get('interrupted', 0)} |",
        f"| client errors; closes by the server | {s['errors'] or 0}; {s['closed_by_server']} |",
    ]
    if census is not None:
        freed = ", ".join(f"{k} {v}" for k, v in list(census["freed_types"].items())[:8])
        grown = ", ".join(f"{k} {v:+d}" for k, v in census["grown_types"].items())
        lines += [
            "| once every room left: objects a full collection frees (frozen included) | "
            f"{census['tracked'] - census['alive']}{': ' + freed if freed else ''} |",
            "| tracked objects alive then, against the server before any room | "
            f"{census['alive'] - census['alive_at_start']:+d}{': ' + grown if grown else ''} |",
        ]
    return "\n".join(lines) + "\n"


def plot(samples: list[dict[str, float]], path: Path, warmup: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 9), sharex=True)
    for ax, key, label in zip(
        axes,
        ("rss_mb", "fds", "tasks", "lag_max_ms"),
        ("RSS (MB)", "open fds", "Trio tasks", "loop lag max, 60 s (ms)"),
        strict=True,
    ):
        ax.plot(t, [s[key] for s in samples])
        ax.set_ylabel(label)
        ax.axvline(warmup / 60, color="grey", linestyle=":")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


async def soak(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    server = ProbedServer(out / "server.log", env=args.env, server_path=args.server_path)
    totals = Totals()
    census: dict[str, Any] | None = None
    await server.start()
    try:
        start_census = await server.census()
        t0 = time.monotonic()
        sampler = Sampler(server, t0, period=args.period)
        stop_at = trio.current_time() + args.duration
        with trio.move_on_after(args.duration + 60):  # the bound on everything below
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sampler.run)

                async def progress() -> None:
                    while True:
                        await trio.sleep(30)
                        row = sampler.samples[-1] if sampler.samples else {}
                        print(
                            f"  t={row.get('t', 0):.0f} s rooms {row.get('rooms', 0):.0f} "
                            f"RSS {row.get('rss_mb', 0):.1f} MB fds {row.get('fds', 0):.0f} "
                            f"tasks {row.get('tasks', 0):.0f} lag p99/max "
                            f"{row.get('lag_p99_ms', 0):.1f}/{row.get('lag_max_ms', 0):.1f} ms; "
                            f"rooms served {totals.rooms_opened}, "
                            f"errors {sum(totals.errors.values())}",
                            flush=True,
                        )

                nursery.start_soon(progress)
                async with trio.open_nursery() as slots:
                    for slot in range(args.rooms):
                        slots.start_soon(run_slot, slot, args, server.port, stop_at, totals)
                await trio.sleep(2)
                await sampler.sample()  # every room has left
                nursery.cancel_scope.cancel()
            end = await server.census()
            census = {k: v for k, v in end.items() if k != "alive_types"}
            census["alive_at_start"] = start_census["alive"]
            census["grown_types"] = census_left(start_census, end)
    finally:
        await server.stop()
    summary = summarise(args, sampler.samples, totals)
    return {
        "args": vars(args),
        "summary": summary,
        "census": census,
        "after_all_left": sampler.samples[-1] if sampler.samples else None,
        "samples": sampler.samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description="voice-trio soak",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of churn")
    parser.add_argument("--rooms", type=int, default=200, help="room slots churning at once")
    parser.add_argument("--min-life", type=float, default=5.0, help="shortest room, seconds")
    parser.add_argument("--max-life", type=float, default=20.0, help="longest room, seconds")
    parser.add_argument("--text-every", type=float, default=2.0)
    parser.add_argument("--interrupt-every", type=float, default=3.0)
    parser.add_argument("--period", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=None, help="seconds left out of slopes")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--server-path", default=None, help="PYTHONPATH of the server")
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()
    if args.rooms + 100 > raise_file_limit():
        raise SystemExit("not enough file descriptors for that many rooms")
    out = make_out_dir(args, "soak")
    print(f"soak: {args.rooms} rooms for {args.duration:g} s; files in {out}", flush=True)
    try:
        result = trio.run(soak, args, out)
    except KeyboardInterrupt:
        print("interrupted; the server was ended by its PID", file=sys.stderr)
        sys.exit(130)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    text = report(args, result["summary"], result["census"])
    (out / "report.md").write_text(text)
    if not args.no_plot:
        plot(result["samples"], out / "soak.png", result["summary"]["warmup_s"])
    print(text)


if __name__ == "__main__":
    main()
