"""Every client message kind, end to end through a real server and the echo brain."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trio
import trio_websocket

from .support import BOTH_PATHS, running_server, tone


async def test_session_ready_ping_and_healthz() -> None:
    async with running_server() as server:
        async with trio_websocket.open_websocket_url(f"{server.ws_base}/ws/room-1") as ws:
            ready = json.loads(await ws.get_message())
            assert ready == {
                "type": "session.ready",
                "session_id": "room-1",
                "input_sample_rate": 24000,
                "output_sample_rate": 24000,
                "brain": "echo",
                "voice": "none",
            }
            await ws.send_message('{"type":"ping"}')
            assert json.loads(await ws.get_message()) == {"type": "pong"}
            health = await server.get("/healthz")
            assert health.status_code == 200
            assert health.json()["status"] == "ok"
            assert health.json()["rooms"] == 1


@BOTH_PATHS
async def test_binary_audio_is_echoed_in_chunks_and_commit_ends_the_response(asgi: bool) -> None:
    async with running_server(asgi=asgi, ws_tts_chunk_bytes=9600) as server:
        async with server.connect("echo") as client:
            frames = [tone(2400, seed=i) for i in range(5)]  # 5 x 100 ms
            for frame in frames:
                await client.send_audio(frame)
            await client.send_json(type="commit_audio")
            events, audio = await client.until("response.done")
            assert [e["type"] for e in events] == ["response.started", "response.done"]
            assert events[1] == {
                "type": "response.done",
                "response_id": events[0]["response_id"],
                "status": "completed",
            }
            assert audio == b"".join(frames)


async def test_binary_frames_are_cut_to_the_chunk_size() -> None:
    async with running_server(ws_tts_chunk_bytes=9600) as server:
        async with server.connect("chunks") as client:
            for i in range(4):
                await client.send_audio(tone(2400, seed=i))
            await client.send_json(type="commit_audio")
            sizes = []
            while True:
                message = await client.recv()
                if isinstance(message, bytes):
                    sizes.append(len(message))
                elif json.loads(message)["type"] == "response.done":
                    break
            assert sizes == [9600, 9600]


async def test_json_audio_works_like_binary_audio() -> None:
    async with running_server() as server:
        async with server.connect("json-audio") as client:
            samples = np.frombuffer(tone(2400, seed=3), dtype="<i2")
            await client.send_json(type="audio", audio=samples.tolist())
            await client.send_json(type="commit_audio")
            _, audio = await client.until("response.done")
            assert audio == samples.tobytes()


@BOTH_PATHS
async def test_text_turn_is_answered_with_the_same_text(asgi: bool) -> None:
    async with running_server(asgi=asgi) as server:
        async with server.connect("text") as client:
            await client.send_json(type="text", text="Xin chào, tôi muốn đặt lịch.")
            started = await client.expect("response.started")
            rid = started["response_id"]
            events, _ = await client.until("response.text.done")
            deltas = [e["delta"] for e in events[:-1]]
            assert all(
                e["type"] == "response.text.delta" and e["response_id"] == rid for e in events[:-1]
            )
            assert deltas == ["Xin ", "chào, ", "tôi ", "muốn ", "đặt ", "lịch."]
            assert events[-1]["text"] == "Xin chào, tôi muốn đặt lịch."
            await client.expect("response.done", response_id=rid, status="completed")


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
async def test_session_config_input_rate_is_resampled_to_24k(rate: int) -> None:
    async with running_server() as server:
        async with server.connect(f"rate{rate}") as client:
            await client.send_json(
                type="session.config",
                input_sample_rate=rate,
                language="vi",
                voice="v1",
                instructions="Bạn là lễ tân.",
            )
            ready = await client.expect("session.ready", input_sample_rate=rate)
            assert ready["output_sample_rate"] == 24000
            t = np.arange(rate) / rate  # one second of a 440 Hz sine
            sine = (np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2")
            for frame in np.split(sine, 10):
                await client.send_audio(frame.tobytes())
            await client.send_json(type="commit_audio")
            _, audio = await client.until("response.done")
            out = np.frombuffer(audio, dtype="<i2").astype(np.float64)
            # One second of audio in at `rate` is one second out at 24 kHz.
            assert abs(len(out) - 24000) <= 48
            # Still a 440 Hz tone: the strongest frequency bin of the middle part.
            middle = out[2400:-2400]
            spectrum = np.abs(np.fft.rfft(middle))
            peak_hz = np.argmax(spectrum) * 24000 / len(middle)
            assert abs(peak_hz - 440) < 5
            assert np.sqrt(np.mean(middle**2)) > 12000 * 0.6


async def test_client_vad_speech_start_when_nothing_is_playing_does_nothing() -> None:
    async with running_server() as server:
        async with server.connect("vad-idle") as client:
            await client.send_json(type="client_vad_speech_start")
            await client.send_json(type="interrupt", played_ms=100)
            await client.send_json(type="ping")
            assert await client.event() == {"type": "pong"}
            assert await server.metric("voice_trio_interrupts_total") == 0


@BOTH_PATHS
async def test_two_rooms_do_not_share_anything(asgi: bool) -> None:
    async with running_server(asgi=asgi) as server:
        async with server.connect("a") as a, server.connect("b") as b:
            await a.send_audio(tone(2400, seed=1))
            await b.send_audio(tone(2400, seed=2))
            await a.send_json(type="commit_audio")
            await b.send_json(type="commit_audio")
            (_, audio_a), (_, audio_b) = (
                await a.until("response.done"),
                await b.until("response.done"),
            )
            assert audio_a == tone(2400, seed=1)
            assert audio_b == tone(2400, seed=2)
            with trio.fail_after(5):
                assert await server.metric("voice_trio_rooms_open") == 2
