"""The Cartesia voice on its shared pool, in real rooms whose brain is Azure (text out).

Both providers are fakes on loopback that check every message against the
providers' own pydantic types (tests/fakes/).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import trio

from voice_trio.app import VoiceTrioApp
from voice_trio.providers.azure_realtime import AzureRealtimeBrain
from voice_trio.providers.cartesia import CartesiaPool, CartesiaVoice, _cut, tts_url

from .fakes.azure_realtime import open_fake_azure
from .fakes.cartesia import CLIENT, FakeCartesia, audio_for, open_fake_cartesia
from .support import running_server


def reply_to(text: str) -> str:
    return f"Dạ, bạn vừa nói: {text}"


@asynccontextmanager
async def voiced_server(pool_options: Any = None, cartesia_options: Any = None, **fields: Any):
    """A server whose rooms think with the Azure fake and speak with the Cartesia fake."""
    async with (
        open_fake_azure() as azure,
        open_fake_cartesia(**(cartesia_options or {})) as cartesia,
        trio.open_nursery() as nursery,
    ):
        pool = CartesiaPool(
            api_key=cartesia.api_key, base_url=cartesia.base_url, **(pool_options or {})
        )
        await nursery.start(pool.run)

        class VoicedApp(VoiceTrioApp):
            def make_brain(self, room: Any) -> AzureRealtimeBrain:
                return AzureRealtimeBrain(
                    room.options,
                    endpoint=azure.endpoint,
                    api_key=azure.api_key,
                    deployment="gpt-realtime",
                    output="text",
                    turn_detection="none",
                )

            def make_voice(self, room: Any) -> CartesiaVoice:
                return CartesiaVoice(pool, room.options, voice_id=cartesia.voice_id)

        async with running_server(app_class=VoicedApp, **fields) as server:
            yield azure, cartesia, pool, server
        nursery.cancel_scope.cancel()


def test_text_is_cut_at_clause_then_word_boundaries() -> None:
    assert _cut("Dạ, bạn") == ("Dạ,", " bạn")
    assert _cut("10:30 sáng") == ("", "10:30 sáng")
    assert _cut("Xin chào. Tôi là") == ("Xin chào.", " Tôi là")
    long = "một hai ba bốn năm sáu bảy tám chín mười mười một"
    sent, kept = _cut(long)
    assert sent + kept == long and sent.endswith(" ") and kept == "một"
    assert tts_url("https://api.cartesia.ai") == "wss://api.cartesia.ai/tts/websocket"
    assert tts_url("http://127.0.0.1:81/") == "ws://127.0.0.1:81/tts/websocket"


async def test_azure_text_spoken_by_cartesia_reaches_the_client_as_audio() -> None:
    async with voiced_server(ws_tts_chunk_bytes=4800) as (azure, cartesia, pool, server):
        async with server.connect("voiced") as client:
            await client.send_json(type="text", text="xin chào")
            events, audio = await client.until("response.done")
            text = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
            assert text == reply_to("xin chào")
            assert events[-1]["status"] == "completed"
            assert audio == audio_for(text)
        update = azure.sessions[0].of_type("session.update")[0]["session"]
        assert update["output_modalities"] == ["text"] and "output" not in update["audio"]
        (context,) = cartesia.contexts.values()
        assert context.text == text and context.done and not context.cancelled
        requests = context.requests
        assert all(r["continue"] for r in requests[:-1]) and len(requests) >= 2
        assert requests[-1]["transcript"] == "" and requests[-1]["continue"] is False
        assert {(r["model_id"], r["language"]) for r in requests} == {("sonic-3", "vi")}
        assert pool.statistics().contexts == 0


async def test_interrupt_cancels_the_cartesia_context() -> None:
    slow = {"chunk_delay_s": 0.05, "chars_per_chunk": 2}
    async with voiced_server(cartesia_options=slow, ws_tts_chunk_bytes=960) as (
        azure,
        cartesia,
        pool,
        server,
    ):
        async with server.connect("cut") as client:
            await client.send_json(type="text", text="kể một câu chuyện thật là dài nhé")
            rid = (await client.expect("response.started"))["response_id"]
            received = 0
            while received < 3 * 960:
                message = await client.recv()
                if isinstance(message, bytes):
                    received += len(message)
            await client.send_json(type="interrupt", played_ms=20)
            events, stale = await client.until("response.done")
            assert events[-1].pop("stages_ms")["tts"] > 0  # the typed turn's reply was voiced
            assert events[-1] == {
                "type": "response.done",
                "response_id": rid,
                "status": "interrupted",
            }
            await trio.sleep(0.3)
            await client.ping()
            assert stale == b""
            (context,) = cartesia.contexts.values()
            assert context.cancelled and not context.done
            # The next response gets a new context on the same socket.
            cartesia.chunk_delay_s = 0.0
            await client.send_json(type="text", text="thôi")
            events, audio = await client.until("response.done")
            assert events[-1]["status"] == "completed" and audio == audio_for(reply_to("thôi"))
        assert cartesia.connections == 1 and len(cartesia.contexts) == 2


async def test_fifty_rooms_share_a_few_sockets_and_never_get_each_others_audio() -> None:
    pool_options = {"max_sockets": 4, "contexts_per_socket": 16}
    async with voiced_server(pool_options=pool_options, ws_outgoing_max=256) as (
        azure,
        cartesia,
        pool,
        server,
    ):
        results: dict[int, tuple[str, bytes]] = {}

        async def room(i: int) -> None:
            async with server.connect(f"room{i}") as client:
                await client.send_json(type="text", text=f"phòng số {i}")
                events, audio = await client.until("response.done")
                assert events[-1]["status"] == "completed", events
                text = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
                results[i] = (text, audio)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(room, i)
        assert len(results) == 50
        for i, (text, audio) in results.items():
            assert text == reply_to(f"phòng số {i}")
            assert audio == audio_for(text), f"room {i} got audio that is not its own"
        assert cartesia.connections <= 4 and len(cartesia.contexts) == 50
        stats = pool.statistics()
        assert stats.contexts_opened == 50 and stats.contexts_failed == 0


async def test_a_failed_socket_fails_only_its_rooms_and_the_next_reply_uses_a_fresh_one() -> None:
    pool_options = {"max_sockets": 2, "contexts_per_socket": 1}
    slow = {"chunk_delay_s": 0.03}
    async with voiced_server(pool_options=pool_options, cartesia_options=slow) as (
        azure,
        cartesia,
        pool,
        server,
    ):
        cartesia.drop_on_word = "hỏng"
        async with server.connect("broken") as broken, server.connect("fine") as fine:
            await fine.send_json(type="text", text="bình thường")
            await fine.expect("response.started")
            await broken.send_json(type="text", text="hỏng")
            events, _ = await broken.until("response.done")
            errors = [e for e in events if e["type"] == "error"]
            assert [e["code"] for e in errors] == ["tts_failed"] and not errors[0]["fatal"]
            assert events[-1]["status"] == "interrupted"
            # The other room's reply, on the other socket, is whole.
            events, audio = await fine.until("response.done")
            assert events[-1]["status"] == "completed"
            assert audio == audio_for(reply_to("bình thường"))
            # The broken room's next reply gets a fresh socket.
            await broken.send_json(type="text", text="lại nào")
            events, audio = await broken.until("response.done")
            assert events[-1]["status"] == "completed"
            assert audio == audio_for(reply_to("lại nào"))
        by_text = {c.text: c for c in cartesia.contexts.values()}
        dropped = [c for t, c in by_text.items() if "hỏng" in t][0]
        assert by_text[reply_to("lại nào")].connection != dropped.connection
        assert by_text[reply_to("bình thường")].connection != dropped.connection
        assert pool.statistics().sockets_failed == 1


def test_the_fake_refuses_requests_outside_the_schema() -> None:
    fake = FakeCartesia()
    request = {
        "context_id": "c",
        "transcript": "x",
        "model_id": "sonic-3",
        "voice": {"mode": "id", "id": "v"},
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
        "speed_up": True,
    }
    fake._check(CLIENT, request, "client")
    fake._check(CLIENT, {"context_id": "c", "cancel": False}, "client")
    assert len(fake.invalid) == 2 and "speed_up" in fake.invalid[0]


def test_the_words_heard_follow_the_voices_word_ends_not_the_share_of_audio() -> None:
    """A voice that says when each word ends (Cartesia's timestamps) decides what a cut
    reply's listener heard: a long pause after the first word is not half the text."""
    from types import SimpleNamespace

    from voice_trio.room.minutes import text_heard

    text = "Vâng, phòng khám mở cửa từ tám giờ sáng đến năm giờ chiều."
    # 4 s of audio: "Vâng," ends at 0.4 s, then a pause; the other words from 1.6 s on.
    ends = [400, 1600, 1800, 2000, 2200, 2400, 2600, 2800, 3000, 3200, 3400, 3600, 4000]
    assert len(ends) == len(text.split())
    turn = SimpleNamespace(word_ends=ends, queued_bytes=4 * 48_000, sent_ms=4000)
    assert text_heard(text, 1500, turn) == "Vâng,"  # the share of audio would say 5 words
    assert text_heard(text, 2000, turn) == "Vâng, phòng khám mở"
    assert text_heard(text, 4000, turn) == text
    assert text_heard(text, 300, turn) == ""
    # Without word ends: the share of the audio made, cut at a word.
    turn = SimpleNamespace(word_ends=None, queued_bytes=4 * 48_000, sent_ms=4000)
    assert text_heard(text, 2000, turn) == text[: text.rfind(" ", 0, len(text) // 2 + 1)]
