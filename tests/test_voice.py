"""The embedded voice in a real room: the echo brain's text, spoken by eSpeak NG."""

from __future__ import annotations

import json

import numpy as np
import psutil
import trio

from .support import running_server


def _espeak_processes() -> int:
    return sum(1 for p in psutil.process_iter(["name"]) if p.info["name"] == "espeak-ng")


def assert_speech(pcm: bytes, *, min_seconds: float) -> None:
    """Real audio: long enough, loud enough, not a constant tone or clipping."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert len(samples) / 24_000 >= min_seconds, len(samples) / 24_000
    rms = np.sqrt(np.mean(samples**2))
    assert rms > 500, rms
    # Speech has loud and quiet stretches: the 100 ms frame energies vary a lot.
    frames = samples[: len(samples) // 2400 * 2400].reshape(-1, 2400)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    assert energy.max() > 4 * np.percentile(energy, 10) + 1
    assert np.mean(np.abs(samples) >= 32767) < 0.01


async def test_a_text_turn_is_spoken_and_completes_after_its_audio(local_speech) -> None:
    async with running_server(voice_tts="local", speech=local_speech) as server:
        async with server.connect("spoken") as client:
            ready_voice = server.app.settings.voice
            assert ready_voice == "local"
            await client.send_json(
                type="text", text="Xin chào, tôi là lễ tân. Tôi giúp gì được cho bạn?"
            )
            events, audio = await client.until("response.done")
            kinds = [e["type"] for e in events]
            assert kinds[0] == "response.started" and kinds[-2:] == [
                "response.text.done",
                "response.done",
            ]
            assert events[-1]["status"] == "completed"
            assert_speech(audio, min_seconds=1.5)
            assert len(audio) % 2 == 0
            assert await server.metric("voice_trio_time_to_first_audio_seconds_count") == 1


async def test_interrupt_stops_the_voice_mid_sentence(local_speech) -> None:
    long_text = " ".join(["Đây là một câu rất dài để thử ngắt lời giữa chừng."] * 12)
    async with running_server(voice_tts="local", speech=local_speech) as server:
        async with server.connect("cut") as client:
            await client.send_json(type="text", text=long_text)
            rid = (await client.expect("response.started"))["response_id"]
            heard = 0
            while heard < 3:
                message = await client.recv()
                if isinstance(message, bytes):
                    heard += 1
            await client.send_json(type="interrupt", played_ms=300)
            after = 0
            seen = False
            while True:
                message = await client.recv()
                if isinstance(message, bytes):
                    after += 1 if seen else 0
                    continue
                event = json.loads(message)
                if event["type"] == "interrupted":
                    seen = True
                if event["type"] == "response.done":
                    break
            assert after == 0
            assert event.pop("stages_ms")["tts"] > 0  # a typed turn's reply, spoken
            assert event == {"type": "response.done", "response_id": rid, "status": "interrupted"}
            with trio.fail_after(5):
                while _espeak_processes():
                    await trio.sleep(0.05)
