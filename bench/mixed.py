"""Speech recognition for a few rooms must not stall the event loop for the others.

One voice-trio process serves two kinds of room at once (a comparison set-up
for this bench only, see ``MixedApp``): rooms whose id starts with ``echo``
get the echo brain, the others the embedded local brain. ``--echo-rooms``
standard echo rooms (bench/loadgen.py, DESIGN.md 6a) run while
``--speaking-rooms`` local rooms speak Vietnamese turn after turn, so that
Whisper is busy the whole time. The figure is the server's loop lag
(p50/p99/max over the last 60 s, from /metrics) against a run with the echo
rooms alone.

    .venv/bin/python bench/mixed.py [--echo-rooms 100] [--speaking-rooms 4] [--duration 60]

Everything runs on 127.0.0.1; every process is ended by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from local_latency import UTTERANCES, free_port, one_room, wait_healthy  # noqa: E402


def serve_mixed(port: int) -> None:
    """The server process: a VoiceTrioApp whose ``echo*`` rooms get the echo brain."""
    from voice_trio.app import VoiceTrioApp
    from voice_trio.config import Settings
    from voice_trio.providers import EchoBrain
    from voice_trio.server import serve

    class MixedApp(VoiceTrioApp):
        def make_brain(self, room: Any) -> Any:
            if room.session_id.startswith("echo"):
                return EchoBrain(room.options)
            return super().make_brain(room)

        def make_voice(self, room: Any) -> Any:
            if room.session_id.startswith("echo"):
                return None
            return super().make_voice(room)

    app = MixedApp(Settings.from_env())
    trio.run(partial(serve, app, host="127.0.0.1", port=port))


async def lag(port: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    out = {}
    for line in text.splitlines():
        if line.startswith("voice_trio_loop_lag_seconds{"):
            quantile = line.split('"')[1]
            out[f"lag_{quantile}_ms"] = round(float(line.split()[-1]) * 1000, 2)
        elif line.startswith(("voice_trio_rooms_open ", "voice_trio_incoming_audio_dropped_total")):
            out[line.split()[0]] = float(line.split()[-1])
    return out


async def run_level(args: argparse.Namespace, speaking: int) -> dict[str, Any]:
    from voice_trio.speech.tts import EspeakTts

    tts = EspeakTts()
    clips = [await tts.synthesize(text) for text in UTTERANCES]
    port = free_port()
    env = {**os.environ, "VOICE_BRAIN": "local", "AGENT_GREETING": "false"}
    env["AGENT_DB_PATH"] = f"/tmp/voice-trio-mixed-{port}.sqlite3"
    server = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--serve", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    load = None
    try:
        await wait_healthy(port, server)
        load = await trio.lowlevel.open_process(
            [
                sys.executable,
                str(HERE / "loadgen.py"),
                "--port",
                str(port),
                "--rooms",
                str(args.echo_rooms),
                "--profile",
                "active",
                "--session-prefix",
                "echo",
                "--duration",
                str(args.duration + 10),
                "--no-stdin",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await trio.sleep(8)  # the echo rooms open and settle
        turns: list[dict[str, Any]] = []
        worst_p99 = 0.0
        with trio.move_on_after(args.duration):
            async with trio.open_nursery() as nursery:
                for i in range(speaking):
                    nursery.start_soon(one_room, port, i, clips, 1000, turns)

                async def watch() -> None:
                    nonlocal worst_p99
                    while True:
                        await trio.sleep(5)
                        worst_p99 = max(worst_p99, (await lag(port))["lag_0.99_ms"])

                nursery.start_soon(watch)
        figures = await lag(port)
        figures["worst_p99_seen_ms"] = max(worst_p99, figures["lag_0.99_ms"])
        figures["speaking_rooms"] = speaking
        figures["echo_rooms"] = args.echo_rooms
        figures["turns_answered"] = len(turns)
        waits = sorted(t["to_first_audio_s"] for t in turns)
        figures["to_first_audio_p50_s"] = waits[len(waits) // 2] if waits else None
        return figures
    finally:
        with trio.CancelScope(shield=True):
            for proc in (load, server):
                if proc is not None and proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                    with trio.move_on_after(20):
                        await proc.wait()
                    if proc.returncode is None:
                        proc.kill()


async def main(args: argparse.Namespace) -> None:
    results = []
    for speaking in (0, args.speaking_rooms):
        print(f"level: {args.echo_rooms} echo rooms + {speaking} speaking rooms ...", flush=True)
        figures = await run_level(args, speaking)
        print(json.dumps(figures, ensure_ascii=False), flush=True)
        results.append(figures)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve_mixed(int(sys.argv[2]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--echo-rooms", type=int, default=100)
    parser.add_argument("--speaking-rooms", type=int, default=4)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per level [60]")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    trio.run(main, parser.parse_args())
