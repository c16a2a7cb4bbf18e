"""The fragment attack of issue #10, measured on a ``voice-trio serve`` subprocess.

Attacking rooms send messages as tiny continuation frames; a neighbour room
meanwhile sends a 100 ms audio frame and a commit every 100 ms and times its
echo (the echo brain). Reported: the server's RSS before, at the peak and per
attacking connection, the neighbour's echo delay p50/p99/max, and how each
attacker's message ended (the close code).

Two attacks:

- ``crumbs``: a message under WS_MAX_MESSAGE_BYTES sent as 1-byte frames,
  as many as the attacker can (the server stops it at WS_MAX_FRAGMENTS);
- ``hold``: the most bytes a connection can make the server hold: a message
  just under WS_MAX_MESSAGE_BYTES in WS_MAX_FRAGMENTS - 1 frames, never
  finished, held open while RSS is read.

    .venv/bin/python bench/fragments.py [--rooms 10] [--attack crumbs|hold]
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import end_process, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEY = b"\x00\x00\x00\x00"  # a client must mask; an all-zero key leaves the bytes as they are


def _frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + KEY + payload


async def _open(port: int, session: str) -> tuple[trio.SocketStream, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        f"GET /ws/{session} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise RuntimeError("no handshake answer")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    return stream, rest


async def _close_code(stream: trio.SocketStream, data: bytes) -> int | None:
    """Read server frames up to its close frame; its code (None: TCP closed first)."""
    while True:
        while len(data) >= 2:
            size, offset = data[1] & 0x7F, 2
            if size == 126:
                size, offset = struct.unpack_from("!H", data, 2)[0], 4
            elif size == 127:
                size, offset = struct.unpack_from("!Q", data, 2)[0], 10
            if len(data) < offset + size:
                break
            opcode, payload = data[0] & 0x0F, data[offset : offset + size]
            data = data[offset + size :]
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0]) if payload else None
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk


async def _neighbour(port: int, delays: list[float], stop: trio.Event) -> None:
    stream, data = await _open(port, "neighbour")
    pcm = os.urandom(4800)
    commit = _frame(0x1, b'{"type":"commit_audio"}')
    while not stop.is_set():
        sent = time.perf_counter()
        await stream.send_all(_frame(0x2, pcm) + commit)
        got = 0
        while got < len(pcm):
            while len(data) < 4 or (data[1] & 0x7F == 126 and len(data) < 4):
                data += await stream.receive_some(65536)
            size, offset = data[1] & 0x7F, 2
            if size == 126:
                size, offset = struct.unpack_from("!H", data, 2)[0], 4
            while len(data) < offset + size:
                data += await stream.receive_some(65536)
            if data[0] & 0x0F == 0x2:
                got += size
            data = data[offset + size :]
        delays.append(time.perf_counter() - sent)
        await trio.sleep(0.1)
    await stream.aclose()


async def _attacker(
    port: int,
    index: int,
    attack: str,
    limit: int,
    fragments: int,
    codes: list[int | None],
    held: trio.Semaphore,
) -> None:
    stream, data = await _open(port, f"attacker-{index}")
    if attack == "crumbs":
        # 90,000 1-byte frames (under the message and audio-frame limits), then the
        # last one; the server refuses it at WS_MAX_FRAGMENTS, or takes it as audio.
        frames = [_frame(0x2, b"\x00", fin=False)]
        frames += [_frame(0x0, b"\x00", fin=False) for _ in range(89_998)]
        burst = b"".join(frames) + _frame(0x0, b"\x00")
        try:
            for i in range(0, len(burst), 65536):
                await stream.send_all(burst[i : i + 65536])
        except trio.BrokenResourceError:
            pass
        with trio.move_on_after(30):
            codes.append(await _close_code(stream, data))
        held.release()
        await trio.sleep_forever()  # stays connected while RSS is read
    # hold: fragments - 1 frames adding up to just under the limit, never finished.
    part = (limit - 1) // (fragments - 1)
    await stream.send_all(_frame(0x2, b"\x00" * part, fin=False))
    for _ in range(fragments - 2):
        await stream.send_all(_frame(0x0, b"\x00" * part, fin=False))
    held.release()
    await trio.sleep_forever()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--attack", choices=["crumbs", "hold"], default="crumbs")
    parser.add_argument("--seconds", type=float, default=5.0, help="neighbour timing after")
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "VOICE_BRAIN": "echo", "GC_THRESHOLDS": "off"}
    settings_limit = int(env.get("WS_MAX_MESSAGE_BYTES", 1_048_576))
    fragments = int(env.get("WS_MAX_FRAGMENTS", 1024))
    process = await trio.lowlevel.open_process(
        [str(ROOT / ".venv/bin/voice-trio"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proc = psutil.Process(process.pid)
    try:
        for _ in range(200):
            try:
                await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                break
            except OSError:
                await trio.sleep(0.1)
        await trio.sleep(1.0)
        rss_before = proc.memory_info().rss
        delays: list[float] = []
        codes: list[int | None] = []
        stop = trio.Event()
        held = trio.Semaphore(0)
        peak = rss_before
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_neighbour, port, delays, stop)
            await trio.sleep(1.0)
            calm = len(delays)
            for i in range(args.rooms):
                nursery.start_soon(
                    _attacker, port, i, args.attack, settings_limit, fragments, codes, held
                )
            for _ in range(args.rooms):
                await held.acquire()
                peak = max(peak, proc.memory_info().rss)
            end = trio.current_time() + args.seconds
            while trio.current_time() < end:
                peak = max(peak, proc.memory_info().rss)
                await trio.sleep(0.1)
            rss_end = proc.memory_info().rss
            stop.set()
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
        under = sorted(delays[calm:]) or [0.0]
        calm_delays = sorted(delays[:calm]) or [0.0]

        def q(values: list[float], f: float) -> float:
            return round(values[min(len(values) - 1, int(f * (len(values) - 1) + 0.5))] * 1000, 2)

        print(
            json.dumps(
                {
                    "attack": args.attack,
                    "rooms": args.rooms,
                    "ws_max_message_bytes": settings_limit,
                    "ws_max_fragments": fragments,
                    "rss_before_mb": round(rss_before / 2**20, 1),
                    "rss_peak_mb": round(peak / 2**20, 1),
                    "rss_end_mb": round(rss_end / 2**20, 1),
                    "rss_per_attacker_kb": round((peak - rss_before) / args.rooms / 1024, 1),
                    "close_codes": sorted({str(c) for c in codes}),
                    "neighbour_echo_ms_calm_p50": q(calm_delays, 0.5),
                    "neighbour_echo_ms_p50": q(under, 0.5),
                    "neighbour_echo_ms_p99": q(under, 0.99),
                    "neighbour_echo_ms_max": q(under, 1.0),
                },
                indent=1,
            )
        )
    finally:
        await end_process(process)


if __name__ == "__main__":
    trio.run(main)
