"""End of user speech -> first assistant audio byte, with the embedded brain.

Starts ``voice-trio serve`` (VOICE_BRAIN=local, no greeting) on a free port,
speaks Vietnamese utterances of 2-4 s (synthesised with the embedded voice)
into rooms at real-time pace with silence around them, and times, per turn,
the moment the last speech frame was sent to the moment the first byte of the
reply's audio arrived. Rooms speak one at a time (``--rooms 1``) or together.
It also reports the server's own stages of each reply (``stages_ms`` on its
``response.done``: end_of_turn, asr, brain, tts, total), p50 and p90.

    .venv/bin/python bench/local_latency.py [--turns 12] [--rooms 1] [--out FILE]

Everything runs on 127.0.0.1; the server is ended by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import trio
import trio_websocket

from voice_trio.speech.tts import EspeakTts

ROOT = Path(__file__).resolve().parent.parent
FRAME = 4800  # 100 ms at 24 kHz PCM16
UTTERANCES = [
    "Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ.",
    "Cảm ơn bạn, hẹn gặp lại vào ngày mai.",
    "Số điện thoại của tôi là không chín tám.",
    "Cho tôi hỏi bây giờ là mấy giờ rồi?",
    "Tôi muốn xem lại lịch hẹn của tôi.",
    "Tôi tên là Lan, tôi muốn đặt lịch hẹn.",
]


def last_voiced_s(pcm: bytes, threshold: int = 300) -> float:
    """Seconds from the clip's start to its last sample louder than ``threshold``."""
    samples = np.abs(np.frombuffer(pcm, dtype="<i2").astype(np.int32))
    loud = np.nonzero(samples > threshold)[0]
    return float(loud[-1] + 1) / 24_000 if len(loud) else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(port: int, proc: trio.Process) -> None:
    with trio.fail_after(120):
        while True:
            if proc.returncode is not None:
                raise RuntimeError("the server exited during start-up")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.aclose()
                return
            except OSError:
                await trio.sleep(0.2)


async def one_room(port: int, index: int, clips: list[bytes], turns: int, out: list[dict]) -> None:
    url = f"ws://127.0.0.1:{port}/ws/latency-{index}"
    async with trio_websocket.open_websocket_url(url, message_queue_size=64) as ws:
        json.loads(await ws.get_message())  # session.ready
        first_audio = trio.Event()
        state: dict[str, float] = {}

        async def reader() -> None:
            nonlocal first_audio
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    if "audio_at" not in state:
                        state["audio_at"] = time.perf_counter()
                        first_audio.set()
                else:
                    event = json.loads(message)
                    if event["type"] == "input.transcript" and event["final"]:
                        state["final_at"] = time.perf_counter()
                        state["text"] = event["text"]  # type: ignore[assignment]
                    elif event["type"] == "input.speech_stopped":
                        state["stopped_at"] = time.perf_counter()
                    elif event["type"] == "response.done" and event.get("stages_ms"):
                        state["stages"] = event["stages_ms"]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            for turn in range(turns):
                pcm = clips[(index + turn) % len(clips)]
                audio = bytes(5 * FRAME) + pcm
                audio += bytes(-len(audio) % FRAME)
                tail = bytes(20 * FRAME)
                state.clear()
                first_audio = trio.Event()
                start = trio.current_time()
                start_perf = time.perf_counter()
                frames = [audio[i : i + FRAME] for i in range(0, len(audio), FRAME)]
                for k, frame in enumerate(frames):
                    await trio.sleep_until(start + k * 0.1)
                    await ws.send_message(frame)
                # The user stops speaking at the clip's last voiced sample (eSpeak's
                # own trailing silence is not speech), when that frame was sent.
                voiced_s = last_voiced_s(pcm)
                last_frame = int((0.5 + voiced_s) * 10)
                speech_end = start_perf + last_frame * 0.1
                await trio.sleep_until(start + len(frames) * 0.1)
                with trio.move_on_after(15):
                    for k in range(0, len(tail), FRAME):
                        if first_audio.is_set():
                            break
                        await trio.sleep_until(start + (len(frames) + k // FRAME) * 0.1)
                        await ws.send_message(tail[k : k + FRAME])
                    await first_audio.wait()
                if "audio_at" in state:
                    out.append(
                        {
                            "room": index,
                            "speech_s": round(len(pcm) / 48_000, 2),
                            "to_first_audio_s": round(state["audio_at"] - speech_end, 3),
                            "to_speech_stopped_s": round(
                                state.get("stopped_at", 0) - speech_end, 3
                            ),
                            "to_final_transcript_s": round(
                                state.get("final_at", 0) - speech_end, 3
                            ),
                            "heard": state.get("text", ""),
                        }
                    )
                # Let the reply play out before the next turn (as a listener would).
                await trio.sleep(3.0)
                if out and out[-1]["room"] == index and "stages" in state:
                    out[-1]["stages_ms"] = state["stages"]
            nursery.cancel_scope.cancel()


STAGES = ("end_of_turn", "asr", "brain", "tts", "total")


def stage_quantiles(results: list[dict]) -> dict[str, dict[str, float | int | None]]:
    """p50 / p90 (ms) of each server-side stage over the turns that had it."""
    table: dict[str, dict[str, float | int | None]] = {}
    for stage in STAGES:
        values = sorted(
            r["stages_ms"][stage]
            for r in results
            if r.get("stages_ms") and r["stages_ms"].get(stage) is not None
        )
        table[stage] = {
            "p50": round(statistics.median(values), 1) if values else None,
            "p90": round(values[int(0.9 * (len(values) - 1))], 1) if values else None,
            "n": len(values),
        }
    return table


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=12, help="turns per room [12]")
    parser.add_argument("--rooms", type=int, default=1, help="rooms speaking at once [1]")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE server settings")
    args = parser.parse_args()

    tts = EspeakTts()
    clips = [await tts.synthesize(text) for text in UTTERANCES]
    port = free_port()
    env = {**os.environ, "VOICE_BRAIN": "local", "AGENT_GREETING": "false"}
    env["AGENT_DB_PATH"] = str(Path("/tmp") / f"voice-trio-bench-{port}.sqlite3")
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    proc = await trio.lowlevel.open_process(
        [str(Path(sys.executable).parent / "voice-trio"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: list[dict] = []
    try:
        await wait_healthy(port, proc)
        with trio.fail_after(60 + args.turns * 25):
            async with trio.open_nursery() as nursery:
                for i in range(args.rooms):
                    nursery.start_soon(one_room, port, i, clips, args.turns, results)
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(30) as waited:
                await proc.wait()
            if waited.cancelled_caught:
                proc.kill()
    waits = sorted(r["to_first_audio_s"] for r in results)
    summary = {
        "rooms": args.rooms,
        "turns": len(results),
        "to_first_audio_p50_s": round(statistics.median(waits), 3) if waits else None,
        "to_first_audio_p90_s": round(waits[int(0.9 * (len(waits) - 1))], 3) if waits else None,
        "to_first_audio_max_s": waits[-1] if waits else None,
        "to_speech_stopped_p50_s": round(
            statistics.median(r["to_speech_stopped_s"] for r in results), 3
        )
        if results
        else None,
        "to_final_transcript_p50_s": round(
            statistics.median(r["to_final_transcript_s"] for r in results), 3
        )
        if results
        else None,
        "stages_ms": stage_quantiles(results),
        "settings": args.env,
    }
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    print("\n| stage | p50 ms | p90 ms | turns |\n| --- | --- | --- | --- |")
    for stage, q in summary["stages_ms"].items():
        print(f"| {stage} | {q['p50']} | {q['p90']} | {q['n']} |")
    if args.out:
        args.out.write_text(
            json.dumps({"summary": summary, "turns": results}, indent=2, ensure_ascii=False)
        )


if __name__ == "__main__":
    trio.run(main)
