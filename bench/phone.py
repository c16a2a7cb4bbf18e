"""Phone rooms per core: Twilio Media Streams calls with the echo brain, next to the standard room.

    python bench/phone.py --levels 100,200 --duration 30             # phone rooms, then standard
    python bench/phone.py --levels 100 --no-standard                 # phone rooms only
    python bench/phone.py loadgen --port 8765 --rooms 50 --duration 20   # one generator, by hand

A phone room is what a carrier does to ``/telephony/twilio``: ``connected``,
``start``, then a ``media`` frame (160 bytes of mu-law, 20 ms) every 20 ms on a
fixed schedule, for the whole call; the agent's ``media`` played at real time
and each ``mark`` echoed once the audio before it has played (as Twilio does).
With the echo brain every frame comes back, so 50 messages a second go each
way per room, five times the standard room's 10 (DESIGN.md section 6a), and
the server also paces every outbound frame itself.

For each level: a fresh ``voice-trio serve`` (VOICE_BRAIN=echo) on a free port,
one load-generator process (this file, ``loadgen``), the server's CPU (psutil,
user+system over the steady window) and loop lag (``/metrics``), and from the
generator: frames received / expected, gaps on the line (a frame that arrived
after the line had played everything before it: the caller would hear a
click), and the lateness of its own schedule. Then the standard room at the
same level (``bench/loadgen.py``) on a fresh server, for the same figures.
``rooms per core`` = rooms / (server CPU % / 100). Every process started here
is ended by its PID.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import trio
from promtext import scrape
from run import LOOPBACK_LOAD_ENV, Server, append_log, end_process
from wsclient import WSClient
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
FRAME_S = 0.02
FRAME_BYTES = 160
#: A mu-law tone (not silence: the echo must carry real audio through both resamplers).
TONE = bytes((0x10 + (i * 37) % 96) for i in range(FRAME_BYTES))
TONE_B64 = base64.b64encode(TONE).decode()


# --------------------------------------------------------------------------- the carrier
async def connect_carrier(port: int, timeout: float = 15.0) -> WSClient:
    """The upgrade a carrier sends: no Origin, no extension offer."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(HOST, port)
        key = base64.b64encode(os.urandom(16))
        head = (
            f"GET /telephony/twilio HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\nUser-Agent: voice-trio-bench-carrier\r\n\r\n"
        )
        await stream.send_all(head.encode())
        buffer = bytearray()
        while b"\r\n\r\n" not in buffer:
            data = await stream.receive_some(4096)
            if not data:
                raise ConnectionError("closed during the handshake")
            buffer += data
        response, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        if b" 101 " not in response.split(b"\r\n", 1)[0] + b" ":
            raise ConnectionError(response.split(b"\r\n", 1)[0].decode("latin-1"))
        expected = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        if expected not in response:
            raise ConnectionError("bad Sec-WebSocket-Accept")
        conn = Connection(ConnectionType.CLIENT, trailing_data=rest)
    return WSClient(stream, conn, deflate=False, extension_header=None)


class Totals:
    def __init__(self) -> None:
        self.opened = 0
        self.failed = 0
        self.frames_sent = 0
        self.media_received = 0
        self.marks_received = 0
        self.marks_echoed = 0
        self.line_gaps = 0
        self.closed_by_server = 0
        self.lateness: list[float] = []
        self.steady_media = 0
        self.steady_sent = 0


class Call:
    def __init__(
        self, totals: Totals, index: int, port: int, steady: tuple[float, float], stop: trio.Event
    ) -> None:
        self.stop = stop
        self.totals = totals
        self.index = index
        self.port = port
        self.steady = steady
        self.sid = "MZ" + f"{index:032x}"
        self.played_until = 0.0
        self.due_marks: list[tuple[float, str]] = []

    async def run(self, start_at: float, stop: trio.Event) -> None:
        await trio.sleep_until(start_at)
        t = self.totals
        try:
            ws = await connect_carrier(self.port)
        except (OSError, ConnectionError, trio.TooSlowError):
            t.failed += 1
            return
        t.opened += 1
        call_sid = "CA" + f"{self.index:032x}"
        await ws.send_text(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        await ws.send_text(
            json.dumps(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "streamSid": self.sid,
                    "start": {
                        "streamSid": self.sid,
                        "accountSid": "AC" + "0" * 32,
                        "callSid": call_sid,
                        "tracks": ["inbound"],
                        "customParameters": {"session_id": call_sid},
                        "mediaFormat": {
                            "encoding": "audio/x-mulaw",
                            "sampleRate": 8000,
                            "channels": 1,
                        },
                    },
                }
            )
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._downlink, ws, nursery.cancel_scope)
            await self._uplink(ws, stop)
            nursery.cancel_scope.cancel()
        await ws.aclose()

    async def _uplink(self, ws: WSClient, stop: trio.Event) -> None:
        t = self.totals
        start = trio.current_time()
        head = '{"event":"media","sequenceNumber":"%d","streamSid":"' + self.sid + '","media":'
        k = 0
        while not stop.is_set() and not ws.closed:
            k += 1
            due = start + k * FRAME_S
            now = trio.current_time()
            if now < due:
                await trio.sleep_until(due)
                now = trio.current_time()
            t.lateness.append(now - due)
            body = (
                f'{{"track":"inbound","chunk":"{k}","timestamp":"{k * 20}",'
                f'"payload":"{TONE_B64}"}}}}'
            )
            await ws.send_text(head % k + body)
            t.frames_sent += 1
            wall = time.perf_counter()
            if self.steady[0] <= wall <= self.steady[1]:
                t.steady_sent += 1
            # Marks whose audio has played by now go back, as the carrier echoes them.
            while self.due_marks and self.due_marks[0][0] <= now:
                _, name = self.due_marks.pop(0)
                await ws.send_text(
                    json.dumps({"event": "mark", "streamSid": self.sid, "mark": {"name": name}})
                )
                t.marks_echoed += 1

    async def _downlink(self, ws: WSClient, scope: trio.CancelScope) -> None:
        t = self.totals
        while not ws.closed:
            for event in await ws.receive_events():
                if not isinstance(event, TextMessage):
                    continue
                now = trio.current_time()
                text = event.data
                if text.startswith('{"event":"media"'):
                    t.media_received += 1
                    if self.steady[0] <= time.perf_counter() <= self.steady[1]:
                        t.steady_media += 1
                        if self.played_until and now > self.played_until:
                            t.line_gaps += 1
                    self.played_until = max(self.played_until, now) + FRAME_S
                elif '"event":"mark"' in text:
                    t.marks_received += 1
                    name = json.loads(text)["mark"]["name"]
                    self.due_marks.append((max(self.played_until, now), name))
        if not self.stop.is_set():
            t.closed_by_server += 1
        scope.cancel()


async def loadgen(args: argparse.Namespace) -> None:
    totals = Totals()
    t0 = time.perf_counter()
    ramp_s = args.rooms / args.ramp
    steady = (t0 + ramp_s + 3.0, t0 + ramp_s + 3.0 + args.duration)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        for i in range(args.rooms):
            call = Call(totals, args.first_index + i, args.port, steady, stop)
            nursery.start_soon(call.run, start + i / args.ramp, stop)
        print(json.dumps({"event": "steady", "from": steady[0], "to": steady[1]}), flush=True)
        await trio.sleep_until(start + (steady[1] - t0) + 0.5)
        stop.set()
    late = np.array(totals.lateness) if totals.lateness else np.zeros(1)
    result = {
        "event": "result",
        "rooms_opened": totals.opened,
        "rooms_failed": totals.failed,
        "frames_sent": totals.frames_sent,
        "media_received": totals.media_received,
        "steady_sent": totals.steady_sent,
        "steady_media_received": totals.steady_media,
        "marks_received": totals.marks_received,
        "marks_echoed": totals.marks_echoed,
        "line_gaps": totals.line_gaps,
        "closed_by_server": totals.closed_by_server,
        "lateness_p99_s": float(np.percentile(late, 99)),
    }
    print(json.dumps(result), flush=True)


# --------------------------------------------------------------------------- the driver
def server_args(extra_env: list[str]) -> argparse.Namespace:
    cmd = f"{sys.executable} -m voice_trio serve --host {HOST} --port {{port}}"
    env = ["VOICE_BRAIN=echo", f"PYTHONPATH={REPO_DIR}", *extra_env]
    return argparse.Namespace(server_cmd=cmd, env=env, target="voice-trio")


async def measure(
    kind: str, rooms: int, duration: float, out: Path, env: list[str]
) -> dict[str, Any]:
    server = Server(server_args(env), out / f"server-{kind}-{rooms}.log")
    await server.start()
    try:
        if kind == "phone":
            argv = [
                sys.executable,
                str(BENCH_DIR / "phone.py"),
                "loadgen",
                "--port",
                str(server.port),
                "--rooms",
                str(rooms),
                "--duration",
                str(duration),
            ]
        else:
            argv = [
                sys.executable,
                str(BENCH_DIR / "loadgen.py"),
                "--port",
                str(server.port),
                "--rooms",
                str(rooms),
                "--duration",
                str(duration + rooms / 100 + 3),
                "--no-stdin",
                "--out-prefix",
                str(out / f"standard-{rooms}"),
            ]
        with append_log(out / f"loadgen-{kind}-{rooms}.log") as err:
            gen = await trio.lowlevel.open_process(
                argv,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=str(REPO_DIR),
                env={**os.environ, "PYTHONPATH": str(REPO_DIR)},
            )
        gen_ps = psutil.Process(gen.pid)
        lines: list[dict[str, Any]] = []
        try:
            ramp = rooms / 100 + 3.0
            samples: list[dict[str, float | None]] = []

            async def read() -> None:
                assert gen.stdout is not None
                buffer = b""
                while data := await gen.stdout.receive_some(1 << 16):
                    buffer += data
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        try:
                            lines.append(json.loads(line))
                        except ValueError:
                            pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await trio.sleep(ramp)
                cpu0, gen0, t0 = server.cpu_seconds(), gen_ps.cpu_times(), time.perf_counter()
                for _ in range(int(duration)):
                    await trio.sleep(1.0)
                    m = await scrape(HOST, server.port)
                    samples.append({"p99": m.get("voice_trio_loop_lag_seconds", quantile="0.99")})
                cpu1, gen1, t1 = server.cpu_seconds(), gen_ps.cpu_times(), time.perf_counter()
                end = await scrape(HOST, server.port)
                with trio.move_on_after(duration + 60):
                    await gen.wait()
        finally:
            await end_process(gen, grace=5)
        cpu_pct = 100 * (cpu1 - cpu0) / (t1 - t0)
        gen_pct = 100 * ((gen1.user + gen1.system) - (gen0.user + gen0.system)) / (t1 - t0)
        result = next((x for x in lines if x.get("event") == "result"), {})
        figures = {
            "kind": kind,
            "rooms": rooms,
            "server_cpu_pct": round(cpu_pct, 1),
            "loadgen_cpu_pct": round(gen_pct, 1),
            "rooms_per_core": round(rooms / (cpu_pct / 100), 0) if cpu_pct > 0 else None,
            "lag_p50_ms": 1000 * (end.get("voice_trio_loop_lag_seconds", quantile="0.5") or 0),
            "lag_p99_ms": 1000 * (end.get("voice_trio_loop_lag_seconds", quantile="0.99") or 0),
            "lag_max_ms": 1000 * (end.get("voice_trio_loop_lag_seconds", quantile="1") or 0),
            "lag_p99_worst_ms": 1000 * max((s["p99"] or 0) for s in samples) if samples else None,
            "messages_in": end.get("voice_trio_messages_total", direction="in"),
            "messages_out": end.get("voice_trio_messages_total", direction="out"),
            "incoming_dropped": end.get("voice_trio_incoming_audio_dropped_total"),
            "slow_consumer_closes": end.get("voice_trio_slow_consumer_closes_total"),
            "rss_mb": round(server.rss() / 1e6, 1),
            "generator": result,
        }
        return figures
    finally:
        await server.stop()


def row(f: dict[str, Any]) -> str:
    g = f["generator"]
    if f["kind"] == "phone":
        sent, got = g.get("steady_sent", 0), g.get("steady_media_received", 0)
        delivery = f"{100 * got / sent:.2f} % ({got}/{sent})" if sent else "-"
        extra = f"gaps {g.get('line_gaps')}, marks echoed {g.get('marks_echoed')}"
        opened = g.get("rooms_opened")
    else:
        sent, got = g.get("audio_bytes_sent", 0), g.get("audio_bytes_received", 0)
        delivery = f"{100 * got / sent:.2f} % of bytes" if sent else "-"
        extra = f"errors {g.get('error_codes')}"
        opened = g.get("rooms_opened")
    return (
        f"| {f['kind']} | {f['rooms']} ({opened} opened) | {f['server_cpu_pct']} | "
        f"**{f['rooms_per_core']:.0f}** | {f['lag_p50_ms']:.1f} / {f['lag_p99_ms']:.1f} / "
        f"{f['lag_max_ms']:.1f} | {f['loadgen_cpu_pct']} | {delivery} | {extra} |"
    )


async def drive(args: argparse.Namespace) -> None:
    out = Path(args.out)
    levels = [int(x) for x in args.levels.split(",")]
    kinds = ["phone"] if args.no_standard else ["phone", "standard"]
    all_figures = []
    for rooms in levels:
        for kind in kinds:
            print(f"{kind} rooms: {rooms} ...", flush=True)
            figures = await measure(kind, rooms, args.duration, out, args.env)
            all_figures.append(figures)
            print(row(figures), flush=True)
    header = (
        "| room | rooms | server CPU % | rooms per core | lag p50 / p99 / max ms | "
        "load generator CPU % | delivered (steady window) | other |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    table = header + "\n" + "\n".join(row(f) for f in all_figures)
    (out / "report.md").write_text(table + "\n")
    (out / "results.json").write_text(json.dumps(all_figures, indent=1))
    print(table)
    print(f"written to {out}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "loadgen":
        parser = argparse.ArgumentParser(prog="phone.py loadgen")
        parser.add_argument("loadgen")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--rooms", type=int, required=True)
        parser.add_argument("--first-index", type=int, default=0)
        parser.add_argument("--duration", type=float, default=20.0)
        parser.add_argument("--ramp", type=float, default=100.0, help="calls opened per second")
        trio.run(loadgen, parser.parse_args())
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--levels", default="100")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--no-standard", action="store_true", help="phone rooms only")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--out")
    args = parser.parse_args()
    os.environ.update({k: v for k, v in LOOPBACK_LOAD_ENV.items() if k not in os.environ})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.out = args.out or str(BENCH_DIR / "results" / f"{stamp}-phone")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    trio.run(drive, args)


if __name__ == "__main__":
    main()
