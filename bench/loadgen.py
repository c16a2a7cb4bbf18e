"""Load-generator worker: one Trio process driving many rooms against a running server.

Normally started by ``bench/run.py`` (which starts the server, several of
these processes, samples /metrics and writes the report), but it runs alone:

    python bench/loadgen.py --port 8765 --rooms 100 --profile active --max-seconds 40

Profiles
- ``idle``: connect, send one ``ping``, then a ``ping`` every ``--idle-ping`` s.
- ``active``: the standard room of DESIGN.md 6a: a 4800-byte PCM16 24 kHz
  frame every 100 ms on a fixed schedule (frame k is due at t0 + k * 0.1 s,
  never sleep-after-send), one JSON event a second (``ping`` and ``text``
  alternating by default), the echoed audio read back and timed.
- ``interrupt``: ``active`` plus an ``interrupt`` every ``--interrupt-every`` s.

Each audio frame carries ``<send perf_counter as float64 LE><seq uint32><magic uint32>``
in its first 16 bytes; the echoed byte stream is cut at 4800-byte boundaries
(resynchronising on the magic if the server dropped part of a frame) to get
each frame's delivery delay. ``time.perf_counter`` is CLOCK_MONOTONIC on
Linux, so the driver can line the samples of all workers up.

Talks to the driver by lines on stdout (JSON): ``{"event": "opened", ...}``
once every room tried to connect, ``{"event": "result", ...}`` at the end.
It stops on a ``stop`` line or EOF on stdin, or at ``--max-seconds``.
Per-frame samples go to ``<out-prefix>.npz`` when ``--out-prefix`` is given.
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio
from wsclient import HandshakeError, WSClient, connect, room_token_query
from wsproto.events import BytesMessage, TextMessage
from wsproto.utilities import LocalProtocolError

FRAME_BYTES = 4800  # 100 ms of PCM16 mono at 24 kHz
FRAME_PERIOD_S = 0.1
HEADER = struct.Struct("<dII")
MAGIC = 0x56545242
MAGIC_BYTES = struct.pack("<I", MAGIC)
DRAIN_TIMEOUT_S = 3.0
ROOM_ERRORS = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
    LocalProtocolError,
    HandshakeError,
    trio.TooSlowError,
)


def raise_file_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


SPEECH_FRAMES = 50  # 5 s of distinct audio, so deflate (if accepted) never sees a repeat


def speechlike_frames(seed: int = 7, count: int = SPEECH_FRAMES) -> list[bytes]:
    """``count`` distinct 100 ms frames of a synthetic voiced sound, PCM16 LE.

    Gliding pitch, syllable-rate envelope and noise: about as (in)compressible
    as speech, and no two frames alike within deflate's 32 KB window.
    """
    rng = np.random.default_rng(seed)
    n = FRAME_BYTES // 2 * count
    t = np.arange(n) / 24000.0
    f0 = 120.0 + 40.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 24000.0
    wave = sum((0.5 / k) * np.sin(k * phase + rng.uniform(0, 6.28)) for k in range(1, 12))
    wave = wave * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t)) + rng.normal(0, 0.05, n)
    pcm = np.clip(wave * 6000, -32768, 32767).astype("<i2").tobytes()
    return [pcm[i * FRAME_BYTES : (i + 1) * FRAME_BYTES] for i in range(count)]


@dataclass
class Totals:
    """Everything one worker measured (all rooms together)."""

    rooms_wanted: int = 0
    rooms_opened: int = 0
    rooms_failed: int = 0
    open_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    deflate_accepted: int = 0
    extension_headers: collections.Counter[str] = field(default_factory=collections.Counter)
    open_s: list[float] = field(default_factory=list)
    ready_s: list[float] = field(default_factory=list)  # connect start -> session.ready
    frames_sent: int = 0
    audio_bytes_sent: int = 0
    audio_bytes_received: int = 0
    binary_messages_received: int = 0
    binary_message_sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    frames_parsed: int = 0
    misaligned_bytes: int = 0
    seq_gaps: int = 0  # frames missing inside the echoed stream
    seq_reorders: int = 0
    send_lateness: list[float] = field(default_factory=list)  # sampled: schedule slip of the sender
    events: collections.Counter[str] = field(default_factory=collections.Counter)
    error_codes: collections.Counter[str] = field(default_factory=collections.Counter)
    pong_rtt_s: list[float] = field(default_factory=list)
    text_rtt_s: list[float] = field(default_factory=list)  # text sent -> response.text.done
    text_first_delta_s: list[float] = field(default_factory=list)
    texts_sent: int = 0
    texts_done: int = 0
    pings_sent: int = 0
    interrupts_sent: int = 0
    interrupt_to_interrupted_s: list[float] = field(default_factory=list)
    frames_after_interrupted_before_started: int = 0
    stale_frames_after_interrupted: int = (
        0  # frames sent before the interrupt, received after `interrupted`
    )
    closed_by_server: collections.Counter[str] = field(default_factory=collections.Counter)
    room_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    drain_incomplete_rooms: int = 0
    delay_send_t: list[float] = field(default_factory=list)
    delay_s: list[float] = field(default_factory=list)
    # per received message: now - send time of the newest frame it completed
    # (the server's transit, without the wait for the chunk's second frame)
    transit_send_t: list[float] = field(default_factory=list)
    transit_s: list[float] = field(default_factory=list)


def summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    a = np.asarray(values)
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
    }


class Room:
    def __init__(self, worker: Worker, index: int) -> None:
        self.worker = worker
        self.index = index
        self.session_id = f"{worker.args.session_prefix}-{index}"
        self.ws: WSClient | None = None
        self.stream = bytearray()
        self.last_seq = -1
        self.frames_sent = 0
        self.frames_received = 0
        self.pings: collections.deque[float] = collections.deque()
        self.texts: dict[str, float] = {}
        self.text_first_delta_seen: set[str] = set()
        self.ready = trio.Event()
        self.started = 0.0
        self.interrupt_sent_at: float | None = None
        self.after_interrupted = False
        self.interrupted_at_send_t = 0.0
        self.drained: trio.Event | None = None  # set once every sent frame came back

    # -- receiving ---------------------------------------------------------
    def on_audio(self, data: bytes | bytearray) -> None:
        tot = self.worker.totals
        tot.audio_bytes_received += len(data)
        tot.binary_messages_received += 1
        tot.binary_message_sizes[len(data)] += 1
        if self.after_interrupted:
            tot.frames_after_interrupted_before_started += 1
        buf = self.stream
        buf += data
        now = time.perf_counter()
        newest = -1.0
        while len(buf) >= FRAME_BYTES:
            send_t, seq, magic = HEADER.unpack_from(buf, 0)
            if magic != MAGIC:
                idx = buf.find(MAGIC_BYTES, 13)
                skip = idx - 12 if idx >= 12 else len(buf) - 15
                tot.misaligned_bytes += skip
                del buf[:skip]
                continue
            del buf[:FRAME_BYTES]
            self.frames_received += 1
            tot.frames_parsed += 1
            if seq > self.last_seq + 1:
                tot.seq_gaps += seq - self.last_seq - 1
            elif seq <= self.last_seq:
                tot.seq_reorders += 1
            self.last_seq = max(self.last_seq, seq)
            if (
                self.interrupt_sent_at is not None
                and self.after_interrupted
                and send_t < self.interrupted_at_send_t
            ):
                tot.stale_frames_after_interrupted += 1
            tot.delay_send_t.append(send_t)
            tot.delay_s.append(now - send_t)
            newest = max(newest, send_t)
        if newest > 0:
            tot.transit_send_t.append(newest)
            tot.transit_s.append(now - newest)
            self.check_drained()

    def on_text(self, text: str) -> None:
        tot = self.worker.totals
        now = time.perf_counter()
        try:
            event = json.loads(text)
            kind = str(event.get("type"))
        except (ValueError, AttributeError):
            tot.events["<bad json>"] += 1
            return
        tot.events[kind] += 1
        if kind == "pong":
            if self.pings:
                tot.pong_rtt_s.append(now - self.pings.popleft())
            if not self.ready.is_set() and self.worker.args.profile == "idle":
                self.ready.set()
        elif kind == "session.ready":
            tot.ready_s.append(now - self.started)
        elif kind == "response.text.delta":
            rid = event.get("response_id")
            if rid not in self.text_first_delta_seen:
                self.text_first_delta_seen.add(rid)
                sent = self.texts.get(str(event.get("delta", "")).strip())
                if sent is not None:
                    tot.text_first_delta_s.append(now - sent)
        elif kind == "response.text.done":
            sent = self.texts.pop(str(event.get("text", "")).strip(), None)
            if sent is not None:
                tot.texts_done += 1
                tot.text_rtt_s.append(now - sent)
        elif kind == "interrupted":
            if self.interrupt_sent_at is not None and not self.after_interrupted:
                tot.interrupt_to_interrupted_s.append(now - self.interrupt_sent_at)
                self.interrupted_at_send_t = self.interrupt_sent_at
            self.after_interrupted = True
        elif kind == "response.started":
            self.after_interrupted = False
        elif kind == "error":
            tot.error_codes[str(event.get("code"))] += 1

    async def reader(self) -> None:
        ws = self.ws
        assert ws is not None
        while not ws.closed:
            for event in await ws.receive_events():
                if isinstance(event, BytesMessage):
                    self.on_audio(event.data)
                elif isinstance(event, TextMessage):
                    self.on_text(event.data)
        self.check_drained()
        if ws.close_code is not None and not self.worker.stopping:
            self.worker.totals.closed_by_server[
                f"{ws.close_code} {ws.close_reason or ''}".strip()
            ] += 1
        elif not self.worker.stopping:
            self.worker.totals.closed_by_server["eof"] += 1

    # -- sending -----------------------------------------------------------
    async def send_ping(self) -> None:
        assert self.ws is not None
        self.pings.append(time.perf_counter())
        self.worker.totals.pings_sent += 1
        await self.ws.send_text('{"type":"ping"}')

    async def send_text_turn(self, n: int) -> None:
        assert self.ws is not None
        text = f"xin chào {self.index} {n}"
        self.texts[text] = time.perf_counter()
        self.worker.totals.texts_sent += 1
        await self.ws.send_text(json.dumps({"type": "text", "text": text}, ensure_ascii=False))

    async def idle_loop(self) -> None:
        args = self.worker.args
        await self.send_ping()
        with trio.move_on_after(10):
            await self.ready.wait()
        self.ready.set()
        phase = (self.index * 0.6180339) % 1.0 * args.idle_ping
        next_ping = trio.current_time() + phase
        while not self.worker.stop.is_set():
            with trio.move_on_at(next_ping):
                await self.worker.stop.wait()
            if self.worker.stop.is_set():
                break
            await self.send_ping()
            next_ping += args.idle_ping

    async def active_loop(self) -> None:
        args = self.worker.args
        ws = self.ws
        assert ws is not None
        self.ready.set()
        tot = self.worker.totals
        templates = self.worker.templates
        frames_per_event = max(1, round(args.json_every / FRAME_PERIOD_S))
        frames_per_interrupt = max(1, round(args.interrupt_every / FRAME_PERIOD_S))
        interrupt_phase = self.index % frames_per_interrupt
        t0 = trio.current_time()
        k = 0
        events_sent = 0
        while not self.worker.stop.is_set() and not ws.closed:
            due = t0 + k * FRAME_PERIOD_S
            await trio.sleep_until(due)
            late = trio.current_time() - due
            if k % 10 == 0:
                tot.send_lateness.append(late)
            frame = bytearray(templates[(k + self.index) % len(templates)])
            HEADER.pack_into(frame, 0, time.perf_counter(), k, MAGIC)
            await ws.send_bytes(frame)
            self.frames_sent += 1
            tot.frames_sent += 1
            tot.audio_bytes_sent += FRAME_BYTES
            if k % frames_per_event == frames_per_event - 1:
                kind = args.events
                if kind == "mixed":
                    kind = "text" if events_sent % 2 else "ping"
                if kind == "text":
                    await self.send_text_turn(events_sent)
                elif kind == "ping":
                    await self.send_ping()
                events_sent += 1
            if (
                args.profile == "interrupt"
                and k % frames_per_interrupt == interrupt_phase
                and k > 0
            ):
                self.interrupt_sent_at = time.perf_counter()
                self.after_interrupted = False
                tot.interrupts_sent += 1
                await ws.send_text(json.dumps({"type": "interrupt", "played_ms": 0}))
            k += 1
            if late > FRAME_PERIOD_S * 50:  # the client itself is hopelessly behind: re-anchor
                tot.room_errors["sender_reanchored"] += 1
                t0 = trio.current_time() - k * FRAME_PERIOD_S

    async def drain(self) -> bool:
        """Wait (bounded) until every sent frame came back; True if it did."""
        ws = self.ws
        assert ws is not None
        self.drained = trio.Event()
        self.check_drained()
        with trio.move_on_after(DRAIN_TIMEOUT_S):
            await self.drained.wait()
            return True
        return ws.closed

    def check_drained(self) -> None:
        if self.drained is not None and (
            self.ws is None
            or self.ws.closed
            or self.frames_received + self.worker.totals_gap_allowance >= self.frames_sent
        ):
            self.drained.set()

    async def run(self, start_at: float) -> None:
        worker = self.worker
        tot = worker.totals
        args = worker.args
        await trio.sleep_until(start_at)
        try:
            async with worker.connect_limit:
                self.started = time.perf_counter()
                self.ws = await connect(
                    args.host,
                    args.port,
                    f"{args.path_prefix}{self.session_id}{room_token_query(self.session_id)}",
                    offer_deflate=not args.no_deflate_offer,
                    timeout=args.connect_timeout,
                )
        except ROOM_ERRORS as exc:
            tot.rooms_failed += 1
            tot.open_errors[
                type(exc).__name__ + (f": {exc}" if isinstance(exc, HandshakeError) else "")
            ] += 1
            worker.room_open_done()
            return
        ws = self.ws
        tot.open_s.append(time.perf_counter() - self.started)
        tot.rooms_opened += 1
        if ws.deflate:
            tot.deflate_accepted += 1
        tot.extension_headers[ws.extension_header or "<none>"] += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.reader)
                try:
                    if args.profile == "idle":
                        nursery.start_soon(self.idle_loop)
                        with trio.move_on_after(15):
                            await self.ready.wait()
                        worker.room_open_done()
                        await worker.stop.wait()
                    else:
                        worker.room_open_done()
                        await self.active_loop()
                        if not ws.closed and not worker.hard_stop.is_set():
                            if not await self.drain():
                                tot.drain_incomplete_rooms += 1
                except ROOM_ERRORS as exc:
                    tot.room_errors[type(exc).__name__] += 1
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await ws.aclose()


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.totals = Totals(rooms_wanted=args.rooms)
        self.totals_gap_allowance = 1  # an odd last frame may wait in the server's chunker
        self.templates = speechlike_frames()
        self.connect_limit = trio.Semaphore(args.connect_concurrency)
        self.stop = trio.Event()
        self.hard_stop = trio.Event()
        self.stopping = False
        self.rooms_done_opening = 0
        self.all_open = trio.Event()
        self.t_opened = 0.0

    def room_open_done(self) -> None:
        self.rooms_done_opening += 1
        if self.rooms_done_opening >= self.args.rooms:
            self.all_open.set()

    async def watch_stdin(self) -> None:
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        buffer = b""
        while True:
            data = await stdin.receive_some(1024)
            buffer += data
            if not data or b"stop" in buffer:
                break
        self.request_stop()

    async def stop_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        self.request_stop()

    def request_stop(self) -> None:
        self.stopping = True
        self.stop.set()

    async def announce_opened(self) -> None:
        await self.all_open.wait()
        self.t_opened = time.perf_counter()
        t = self.totals
        emit(
            {
                "event": "opened",
                "rooms": t.rooms_opened,
                "failed": t.rooms_failed,
                "deflate_accepted": t.deflate_accepted,
                "t": self.t_opened,
            }
        )

    async def main(self) -> None:
        args = self.args
        with trio.move_on_after(args.max_seconds) as deadline:
            async with trio.open_nursery() as nursery:
                if not args.no_stdin:
                    nursery.start_soon(self.watch_stdin)
                nursery.start_soon(self.announce_opened)
                if args.duration is not None:
                    nursery.start_soon(self.stop_after, args.duration)
                rooms_nursery_done = trio.Event()

                async def run_rooms() -> None:
                    start = trio.current_time()
                    async with trio.open_nursery() as rooms:
                        for i in range(args.rooms):
                            room = Room(self, args.first_index + i)
                            rooms.start_soon(room.run, start + i / args.ramp)
                    rooms_nursery_done.set()

                nursery.start_soon(run_rooms)
                await self.stop.wait()
                self.stopping = True
                # rooms drain (bounded) and close; then everything ends
                with trio.move_on_after(DRAIN_TIMEOUT_S + 5):
                    await rooms_nursery_done.wait()
                nursery.cancel_scope.cancel()
        if deadline.cancelled_caught:
            self.totals.room_errors["worker_max_seconds_reached"] += 1


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def result_of(worker: Worker, wall_s: float) -> dict[str, Any]:
    t = worker.totals
    return {
        "event": "result",
        "profile": worker.args.profile,
        "rooms_wanted": t.rooms_wanted,
        "rooms_opened": t.rooms_opened,
        "rooms_failed": t.rooms_failed,
        "open_errors": dict(t.open_errors),
        "deflate_accepted": t.deflate_accepted,
        "extension_headers": dict(t.extension_headers),
        "open_s": summary(t.open_s),
        "ready_s": summary(t.ready_s),
        "frames_sent": t.frames_sent,
        "audio_bytes_sent": t.audio_bytes_sent,
        "audio_bytes_received": t.audio_bytes_received,
        "binary_messages_received": t.binary_messages_received,
        "binary_message_sizes": {str(k): v for k, v in t.binary_message_sizes.most_common(5)},
        "frames_parsed": t.frames_parsed,
        "misaligned_bytes": t.misaligned_bytes,
        "seq_gaps": t.seq_gaps,
        "seq_reorders": t.seq_reorders,
        "send_lateness_s": summary(t.send_lateness),
        "events": dict(t.events),
        "error_codes": dict(t.error_codes),
        "pings_sent": t.pings_sent,
        "pong_rtt_s": summary(t.pong_rtt_s),
        "texts_sent": t.texts_sent,
        "texts_done": t.texts_done,
        "text_rtt_s": summary(t.text_rtt_s),
        "text_first_delta_s": summary(t.text_first_delta_s),
        "interrupts_sent": t.interrupts_sent,
        "interrupt_to_interrupted_s": summary(t.interrupt_to_interrupted_s),
        "interrupts_answered": len(t.interrupt_to_interrupted_s),
        "frames_after_interrupted_before_started": t.frames_after_interrupted_before_started,
        "stale_frames_after_interrupted": t.stale_frames_after_interrupted,
        "closed_by_server": dict(t.closed_by_server),
        "room_errors": dict(t.room_errors),
        "drain_incomplete_rooms": t.drain_incomplete_rooms,
        "t_opened": worker.t_opened,
        "wall_s": wall_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="voice-trio bench load generator (one process)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path-prefix", default="/ws/")
    parser.add_argument("--session-prefix", default="bench")
    parser.add_argument("--rooms", type=int, required=True)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--profile", choices=["idle", "active", "interrupt"], default="active")
    parser.add_argument("--ramp", type=float, default=100.0, help="rooms opened per second")
    parser.add_argument("--connect-concurrency", type=int, default=64)
    parser.add_argument("--connect-timeout", type=float, default=15.0)
    parser.add_argument("--events", choices=["mixed", "ping", "text", "none"], default="mixed")
    parser.add_argument("--json-every", type=float, default=1.0)
    parser.add_argument("--idle-ping", type=float, default=20.0)
    parser.add_argument("--interrupt-every", type=float, default=3.0)
    parser.add_argument("--no-deflate-offer", action="store_true")
    parser.add_argument(
        "--max-seconds", type=float, default=120.0, help="hard bound on the whole run"
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="stop gracefully after this many seconds"
    )
    parser.add_argument(
        "--no-stdin", action="store_true", help="do not watch stdin; run to --max-seconds"
    )
    parser.add_argument(
        "--out-prefix", default=None, help="write per-frame samples to <prefix>.npz"
    )
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the bench only runs against loopback")
    soft, hard = raise_file_limit()
    if args.rooms + 64 > soft:
        parser.error(f"{args.rooms} rooms need more than the file limit {soft}; use more --procs")
    worker = Worker(args)
    t0 = time.perf_counter()
    try:
        trio.run(worker.main)
    except KeyboardInterrupt:
        pass
    wall = time.perf_counter() - t0
    if args.out_prefix:
        np.savez(
            args.out_prefix,
            send_t=np.asarray(worker.totals.delay_send_t),
            delay=np.asarray(worker.totals.delay_s),
            transit_send_t=np.asarray(worker.totals.transit_send_t),
            transit=np.asarray(worker.totals.transit_s),
            open_s=np.asarray(worker.totals.open_s),
            text_rtt=np.asarray(worker.totals.text_rtt_s),
            pong_rtt=np.asarray(worker.totals.pong_rtt_s),
        )
    emit(result_of(worker, wall))


if __name__ == "__main__":
    main()
