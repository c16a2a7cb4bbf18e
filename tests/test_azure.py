"""The Azure OpenAI Realtime brain in a real room, against the fake Azure server.

Every event the brain sends is checked against the openai package's types by
the fake (``tests/fakes/azure_realtime.py``); an invalid one fails the test.
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio_websocket

from voice_trio.agent import Graph
from voice_trio.app import VoiceTrioApp
from voice_trio.demo import VIETNAM, build_receptionist
from voice_trio.providers.azure_realtime import AzureRealtimeBrain, realtime_url

from .fakes.azure_realtime import FakeAzureRealtime, open_fake_azure, reply_audio
from .support import running_server, tone

FRAME = tone(2400, seed=3)  # 100 ms of 24 kHz PCM16
NOW = dt.datetime(2025, 11, 25, 10, 30, tzinfo=VIETNAM)  # a Tuesday


def azure_app(fake: FakeAzureRealtime, graph: Graph | None = None, **brain: Any) -> type:
    """A test app whose rooms talk to ``fake`` through the real brain."""

    class AzureApp(VoiceTrioApp):
        brains: list[AzureRealtimeBrain] = []

        def make_brain(self, room: Any) -> AzureRealtimeBrain:
            if graph is not None and room.conversation is None:
                room.conversation = graph.conversation(session_id=room.session_id)
            options = {
                "endpoint": fake.endpoint,
                "api_key": "test-key",
                "deployment": "gpt-realtime",
                "conversation": room.conversation,
                "output": "audio" if self.settings.voice == "none" else "text",
                "backoff_s": 0.01,
                **brain,
            }
            made = AzureRealtimeBrain(room.options, **options)
            self.brains.append(made)
            return made

    return AzureApp


@asynccontextmanager
async def azure_room(graph: Graph | None = None, fake_options: Any = None, **brain: Any):
    async with open_fake_azure(**(fake_options or {})) as fake:
        app_class = azure_app(fake, graph, **brain)
        async with running_server(app_class=app_class, ws_tts_chunk_bytes=4800) as server:
            async with server.connect("azure") as client:
                yield fake, server, client


def json_events(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == kind]


async def test_urls_ga_by_default_preview_with_an_api_version() -> None:
    assert (
        realtime_url("https://res.openai.azure.com/", "gpt-rt")
        == "wss://res.openai.azure.com/openai/v1/realtime?model=gpt-rt"
    )
    assert (
        realtime_url("http://127.0.0.1:9000", "d", "2025-04-01-preview")
        == "ws://127.0.0.1:9000/openai/realtime?api-version=2025-04-01-preview&deployment=d"
    )


async def test_spoken_turn_gives_transcript_text_and_the_models_audio() -> None:
    async with azure_room(turn_detection="none") as (fake, server, client):
        for _ in range(5):
            await client.send_audio(FRAME)
        await client.send_json(type="commit_audio")
        events, audio = await client.until("response.done")
        transcripts = json_events(events, "input.transcript")
        assert transcripts[-1] == {"type": "input.transcript", "text": "xin chào", "final": True}
        assert transcripts[0]["final"] is False
        text = "".join(e["delta"] for e in json_events(events, "response.text.delta"))
        assert text == "Dạ, bạn vừa nói: xin chào"
        assert events[-1]["status"] == "completed"
        n_words = len(text.split(" "))
        assert audio == b"".join(reply_audio(i, 4800) for i in range(n_words))

        session = fake.sessions[0]
        assert session.mode == "ga" and session.path == "/openai/v1/realtime?model=gpt-realtime"
        assert session.headers["api-key"] == "test-key"
        update = session.of_type("session.update")[0]["session"]
        assert update["type"] == "realtime" and update["output_modalities"] == ["audio"]
        assert update["audio"]["input"]["transcription"]["language"] == "vi"
        assert update["audio"]["input"]["turn_detection"] is None
        assert update["audio"]["output"]["voice"] == "alloy"
        assert bytes(session.appended) == FRAME * 5
        kinds = [e["type"] for e in session.events]
        assert kinds[-2:] == ["input_audio_buffer.commit", "response.create"]


async def test_preview_url_headers_and_event_names() -> None:
    async with azure_room(api_version="2025-04-01-preview", turn_detection="none") as (
        fake,
        server,
        client,
    ):
        await client.send_json(type="text", text="chào bạn")
        events, audio = await client.until("response.done")
        text = "".join(e["delta"] for e in json_events(events, "response.text.delta"))
        assert text == "Dạ, bạn vừa nói: chào bạn"
        assert len(audio) == len(text.split(" ")) * 4800
        session = fake.sessions[0]
        assert session.mode == "preview"
        assert session.headers["openai-beta"] == "realtime=v1"
        update = session.of_type("session.update")[0]["session"]
        assert update["modalities"] == ["audio", "text"]
        assert update["input_audio_transcription"]["language"] == "vi"
        item = session.created_items[-1]
        assert item["content"] == [{"type": "input_text", "text": "chào bạn"}]


async def test_server_vad_takes_the_turn() -> None:
    async with azure_room() as (fake, server, client):
        for _ in range(10):  # 1 s: the fake VAD hears speech from 0.2 s; the turn ends at 1 s
            await client.send_audio(FRAME)
        events, audio = await client.until("response.done")
        kinds = [e["type"] for e in events]
        assert kinds.index("input.speech_started") < kinds.index("input.speech_stopped")
        assert kinds.index("input.speech_stopped") < kinds.index("response.started")
        assert json_events(events, "input.transcript")[-1]["text"] == "xin chào"
        assert events[-1]["status"] == "completed" and audio
        detection = fake.sessions[0].turn_detection
        assert detection["type"] == "server_vad" and detection["interrupt_response"] is True
        assert not fake.sessions[0].of_type("input_audio_buffer.commit")


async def test_a_server_vad_turns_stages_count_from_where_azure_says_speech_ended() -> None:
    # The fake's VAD says the speech ended 400 ms before the end of what was appended
    # (audio_end_ms), as a real one does after its silence_duration_ms.
    async with azure_room(fake_options={"vad_silence_ms": 400}) as (fake, server, client):
        for _ in range(10):
            await client.send_audio(FRAME)
        events, audio = await client.until("response.done")
        stopped = json_events(events, "input.speech_stopped")
        assert stopped and audio
        stages = events[-1]["stages_ms"]
        # The end of the turn came at least the 400 ms after the end of the speech that
        # the audio already sent puts it at; the total counts from there.
        assert stages["end_of_turn"] >= 400, stages
        known = [stages[s] for s in ("end_of_turn", "asr", "brain", "tts") if stages[s]]
        assert abs(sum(known) - stages["total"]) <= 0.3


async def test_interrupt_cancels_and_truncates_at_what_was_played() -> None:
    fake_options = {"delta_delay_s": 0.05, "reply": lambda s: " ".join(["một"] * 40)}
    async with azure_room(fake_options=fake_options, turn_detection="none") as (
        fake,
        server,
        client,
    ):
        await client.send_json(type="text", text="kể chuyện đi")
        rid = (await client.expect("response.started"))["response_id"]
        received = 0
        while received < 3 * 4800:
            message = await client.recv()
            if isinstance(message, bytes):
                received += len(message)
        await client.send_json(type="interrupt", played_ms=150)
        events, stale = await client.until("response.done")
        assert [e["type"] for e in events if e["type"] != "response.text.delta"] == [
            "interrupted",
            "response.text.done",
            "response.done",
        ]
        # Its audio went out: the reply's stages come with it (from the typed turn's end).
        assert events[-1].pop("stages_ms")["total"] > 0
        assert events[-1] == {"type": "response.done", "response_id": rid, "status": "interrupted"}
        await trio.sleep(0.3)  # the model's remaining deltas would arrive in this time
        await client.ping()
        # Nothing of the cut response was sent after "interrupted".
        assert stale == b""
        session = fake.sessions[0]
        cancel = session.of_type("response.cancel")
        assert len(cancel) == 1 and cancel[0]["response_id"] == "resp_1"
        (truncate,) = session.of_type("conversation.item.truncate")
        assistant = [i for i in session.items if i.get("role") == "assistant"][0]
        assert truncate["item_id"] == assistant["id"]
        assert truncate["content_index"] == 0 and truncate["audio_end_ms"] == 150

        # A client that says it played more than it was sent is clamped.
        await client.send_json(type="text", text="lại nữa")
        await client.expect("response.started")
        received = 0
        while received < 2 * 4800:
            message = await client.recv()
            if isinstance(message, bytes):
                received += len(message)
        await client.send_json(type="interrupt", played_ms=60_000)
        _, more = await client.until("response.done")
        await client.ping()
        truncate = session.of_type("conversation.item.truncate")[-1]
        sent_ms = (received + len(more)) // 48
        assert truncate["audio_end_ms"] == sent_ms < 60_000


async def test_server_vad_barge_in_interrupts_the_reply() -> None:
    fake_options = {"delta_delay_s": 0.05, "reply": lambda s: " ".join(["hai"] * 60)}
    async with azure_room(fake_options=fake_options) as (fake, server, client):
        await client.send_json(type="text", text="nói dài nhé")
        await client.expect("response.started")
        received = 0
        while received < 3 * 4800:
            message = await client.recv()
            if isinstance(message, bytes):
                received += len(message)
        for _ in range(3):  # the fake's VAD hears speech after 0.2 s
            await client.send_audio(FRAME)
        events, _ = await client.until("interrupted")
        assert "input.speech_started" in [e["type"] for e in events]
        await client.until("response.done")
        await client.ping()
        session = fake.sessions[0]
        (truncate,) = session.of_type("conversation.item.truncate")
        assert 0 <= truncate["audio_end_ms"] <= 60 * 100


def conversation_hints(graph: Graph) -> tuple[str, ...]:
    return graph.conversation(session_id="hints").hints()


async def test_tool_call_round_trip_through_the_receptionist(tmp_path: Any) -> None:
    graph = build_receptionist(tmp_path / "agent.db", clock=lambda: NOW)
    arguments = {"name": "Nguyễn Văn An", "day": "2025-11-26", "time": "09:30"}
    async with azure_room(graph=graph, turn_detection="none") as (fake, server, client):
        fake.tool_calls.append(("book_appointment", arguments))
        await client.send_json(type="text", text="đặt lịch cho Nguyễn Văn An 9 giờ 30 sáng mai")
        events, _ = await client.until("response.done")  # the function call's response
        events, _ = await client.until("response.done")  # the answer with the result
        text = "".join(e["delta"] for e in json_events(events, "response.text.delta"))
        assert text.startswith("Kết quả: ") and "booked" in text
        session = fake.sessions[0]
        update = session.of_type("session.update")[0]["session"]
        assert {t["name"] for t in update["tools"]} >= {"get_time", "book_appointment"}
        assert "Phòng khám Bình An" in update["instructions"]
        # The graph's recognition hints for the node it is at, as the transcription prompt.
        prompt = update["audio"]["input"]["transcription"]["prompt"]
        assert prompt == ", ".join(conversation_hints(graph))
        outputs = [i for i in session.created_items if i["type"] == "function_call_output"]
        assert len(outputs) == 1
        call = [i for i in session.items if i.get("type") == "function_call"][0]
        assert outputs[0]["call_id"] == call["call_id"]
        booked = json.loads(outputs[0]["output"])["booked"]
        assert booked["name"] == "Nguyễn Văn An" and booked["day"] == "2025-11-26"
        kinds = [e["type"] for e in session.events]
        assert kinds.count("response.create") == 2
        assert kinds.index("conversation.item.create", kinds.index("response.create")) < (
            len(kinds) - 1 - kinds[::-1].index("response.create")
        )
        conversation = server.app.rooms["azure"].session.conversation
        assert conversation.statistics().tool_calls == 1


async def test_a_dropped_session_reconnects_with_the_conversation_restored() -> None:
    async with azure_room(turn_detection="none") as (fake, server, client):
        await client.send_json(type="text", text="một")
        await client.until("response.done")
        fake.drop_after_deltas = 2
        await client.send_json(type="text", text="hai")
        events, _ = await client.until("response.done")
        errors = json_events(events, "error")
        assert [e["code"] for e in errors] == ["upstream_interrupted"]
        assert errors[0]["fatal"] is False
        await client.send_json(type="text", text="ba")
        events, audio = await client.until("response.done")
        text = "".join(e["delta"] for e in json_events(events, "response.text.delta"))
        assert text == "Dạ, bạn vừa nói: ba" and events[-1]["status"] == "completed"
        assert len(fake.sessions) == 2 and fake.sessions[0].closed_by == "dropped"
        restored = [
            (i["role"], i["content"][0]["text"]) for i in fake.sessions[1].created_items[:-1]
        ]
        assert restored == [
            ("user", "một"),
            ("assistant", "Dạ, bạn vừa nói: một"),
            ("user", "hai"),
            ("assistant", "Dạ, bạn"),
        ]
        assert fake.sessions[1].of_type("session.update")
        brain = server.app.brains[0]
        assert brain.statistics().reconnects == 1 and brain.statistics().sessions_opened == 2


async def test_reconnection_gives_up_after_bounded_tries() -> None:
    async with azure_room(turn_detection="none", reconnect_tries=2) as (fake, server, client):
        await client.send_json(type="text", text="một")
        await client.until("response.done")
        fake.drop_after_deltas = 1
        fake.reject_status = 503
        await client.send_json(type="text", text="hai")
        events, _ = await client.until("response.done")
        while "upstream_unavailable" not in [e.get("code") for e in events]:
            events.append(await client.event())
        error = [e for e in events if e.get("code") == "upstream_unavailable"][0]
        assert error["fatal"] is False and "3 attempts" in error["message"]
        # The session that dropped before it was stable is the first failure of three.
        assert fake.rejected == 2
        assert "test-key" not in error["message"]
        # The room goes on: the next turn starts a fresh brain.
        fake.reject_status = None
        await client.send_json(type="text", text="ba")
        events, _ = await client.until("response.done")
        assert events[-1]["status"] == "completed"


async def test_refused_credentials_are_a_clear_fatal_error_not_retried() -> None:
    async with open_fake_azure() as fake:
        app_class = azure_app(fake, api_key="wrong-key")
        async with running_server(app_class=app_class) as server:
            async with server.connect("auth") as client:
                await client.send_json(type="text", text="xin chào")
                errors = []
                try:
                    while True:
                        message = await client.recv()
                        if isinstance(message, str) and json.loads(message)["type"] == "error":
                            errors.append(json.loads(message))
                except trio_websocket.ConnectionClosed as exc:
                    code, reason = exc.reason.code, exc.reason.reason
                assert code == 1011
                assert reason.startswith("Azure OpenAI refused the credentials (HTTP 401)")
                # The fatal error event goes out just before the close frame.
                assert len(errors) == 1
                assert errors[0]["code"] == "upstream_auth" and errors[0]["fatal"] is True
                assert "wrong-key" not in errors[0]["message"]
        assert fake.handshakes == 1 and fake.rejected == 1 and not fake.sessions


async def test_an_error_event_reaches_the_client_and_the_room_goes_on() -> None:
    async with azure_room(turn_detection="none") as (fake, server, client):
        fake.error_next_response = ("rate_limit_exceeded", "Rate limit reached; retry in 1s")
        await client.send_json(type="text", text="một")
        error = await client.expect("error")
        assert error == {
            "type": "error",
            "code": "upstream_rate_limit_exceeded",
            "message": "Rate limit reached; retry in 1s",
            "fatal": False,
        }
        await client.send_json(type="text", text="hai")
        events, _ = await client.until("response.done")
        assert events[-1]["status"] == "completed"


@pytest.mark.parametrize(
    "frame",
    ['{"type": "response.created", "resp', '{"type": "response.created", "response": "r1"}'],
    ids=["not-json", "wrong-shape"],
)
async def test_an_event_the_brain_cannot_read_is_an_error_and_the_room_goes_on(
    frame: str,
) -> None:
    async with azure_room(turn_detection="none") as (fake, server, client):
        fake.garble_next_response = frame
        await client.send_json(type="text", text="một")
        with trio.fail_after(10):  # a brain that skips the frame would leave the room waiting
            events, _ = await client.until("error")
        assert events[-1] == {
            "type": "error",
            "code": "upstream_protocol",
            "message": "Azure OpenAI sent an event this server cannot read",
            "fatal": False,
        }
        assert "response.started" not in [e["type"] for e in events]
        await client.send_json(type="text", text="hai")
        events, audio = await client.until("response.done")
        text = "".join(e["delta"] for e in json_events(events, "response.text.delta"))
        assert text == "Dạ, bạn vừa nói: hai" and events[-1]["status"] == "completed"
        assert audio and not json_events(events, "error")


async def test_a_rotation_waits_for_the_end_of_the_reply_under_way() -> None:
    reply = " ".join(["ba"] * 40)  # 2 s at 50 ms a word; the session's time is up at 0.5 s
    fake_options = {"delta_delay_s": 0.05, "reply": lambda s: reply}
    async with azure_room(fake_options=fake_options, turn_detection="none", session_max_s=0.5) as (
        fake,
        server,
        client,
    ):
        await client.send_json(type="text", text="kể đi")
        with trio.fail_after(20):
            events, audio = await client.until("response.done")
        # The fresh session opened while the reply went on, and took over only after it.
        assert len(fake.sessions) >= 2
        assert events[-1]["status"] == "completed" and not json_events(events, "error")
        text = "".join(e["delta"] for e in json_events(events, "response.text.delta"))
        assert text == reply and audio == b"".join(reply_audio(i, 4800) for i in range(40))
        with trio.fail_after(5):
            while fake.sessions[0].closed_by is None:
                await trio.sleep(0.02)
        assert fake.sessions[0].closed_by == "client"
        # What the fresh session was given: the whole reply, so it took over after its end.
        restored = [(i["role"], i["content"][0]["text"]) for i in fake.sessions[1].created_items]
        assert restored == [("user", "kể đi"), ("assistant", reply)]
        assert not fake.sessions[1].of_type("response.create")


async def test_the_session_is_rotated_before_azure_expires_it() -> None:
    async with azure_room(turn_detection="none", session_max_s=0.6) as (fake, server, client):
        fake.expire_after_s = 2.0
        await client.send_json(type="text", text="một")
        await client.until("response.done")
        with trio.fail_after(3):
            while len(fake.sessions) < 2 or fake.sessions[0].closed_by is None:
                await trio.sleep(0.05)
        assert fake.sessions[0].closed_by == "client"  # rotated, not expired
        await client.send_json(type="text", text="hai")
        events, _ = await client.until("response.done")
        assert not json_events(events, "error")
        text = "".join(e["delta"] for e in json_events(events, "response.text.delta"))
        assert text == "Dạ, bạn vừa nói: hai"
        second = fake.sessions[1]
        restored = [(i["role"], i["content"][0]["text"]) for i in second.created_items]
        assert restored[:2] == [("user", "một"), ("assistant", "Dạ, bạn vừa nói: một")]
        assert server.app.brains[0].statistics().rotations >= 1


async def test_an_expired_session_is_replaced_without_an_error() -> None:
    async with azure_room(turn_detection="none") as (fake, server, client):
        fake.expire_after_s = 0.3
        await client.send_json(type="text", text="một")
        await client.until("response.done")
        with trio.fail_after(3):
            while len(fake.sessions) < 2:
                await trio.sleep(0.05)
        fake.expire_after_s = None
        await client.send_json(type="text", text="hai")
        events, _ = await client.until("response.done")
        assert not json_events(events, "error")
        assert fake.sessions[0].closed_by == "expired"
        assert [i["role"] for i in fake.sessions[1].created_items[:2]] == ["user", "assistant"]


async def test_the_fake_refuses_events_outside_the_schema() -> None:
    fake = FakeAzureRealtime()
    async with trio.open_nursery() as nursery:
        endpoint = await nursery.start(fake.run)
        url = realtime_url(endpoint, "gpt-realtime")
        headers = [(b"api-key", b"test-key")]
        async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
            await ws.get_message()  # session.created
            bad = [
                {"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": 5},
                {"type": "response.create", "surprise": True},
                {"type": "session.update", "session": {"type": "realtime", "voice": "alloy"}},
                {"type": "input_audio_buffer.append", "audio": "AAE"},
            ]
            for event in bad:
                await ws.send_message(json.dumps(event))
                reply = json.loads(await ws.get_message())
                assert reply["type"] == "error", reply
        nursery.cancel_scope.cancel()
    assert len(fake.invalid) == 4, fake.invalid


def stand_in_settings(azure: Any, cartesia: Any) -> Any:
    """The settings a user gives to run on Azure and Cartesia: here, the stand-ins'."""
    from voice_trio.config import Settings

    return Settings.from_env(
        {
            "AZURE_OPENAI_ENDPOINT": azure.endpoint,
            "AZURE_OPENAI_API_KEY": azure.api_key,
            "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
            "CARTESIA_BASE_URL": cartesia.base_url,
            "CARTESIA_API_KEY": cartesia.api_key,
            "CARTESIA_VOICE_ID": cartesia.voice_id,
            "WS_TTS_CHUNK_BYTES": "4800",
        }
    )


async def test_the_unmodified_server_talks_to_azure_and_cartesia_from_settings_alone(
    tmp_path,
) -> None:
    # What a user does: AZURE_OPENAI_ENDPOINT / CARTESIA_BASE_URL pointing at the
    # stand-ins, no code of theirs. A spoken turn comes back as Cartesia's audio.
    from .fakes.cartesia import audio_for, open_fake_cartesia

    async with open_fake_azure() as azure, open_fake_cartesia() as cartesia:
        settings = stand_in_settings(azure, cartesia)
        assert (settings.brain, settings.voice) == ("azure", "cartesia")
        graph = build_receptionist(tmp_path / "appointments.sqlite3")
        async with running_server(settings, agent=graph) as server:
            async with server.connect("from-settings") as client:
                for _ in range(10):
                    await client.send_audio(bytes(4800))
                await client.send_json(type="commit_audio")
                events, audio = await client.until("response.done")
                assert events[-1]["status"] == "completed"
                text = next(e["text"] for e in events if e["type"] == "response.text.done")
                assert any(e["type"] == "input.transcript" and e["final"] for e in events)
                assert audio == audio_for(text)


async def test_a_cut_text_response_is_remembered_as_the_words_heard(tmp_path) -> None:
    """Azure text out + Cartesia: the cut item is deleted, one with the heard words made
    (the words Cartesia's timestamps say had ended in the audio the client played)."""
    from .fakes.cartesia import open_fake_cartesia, word_times

    words = " ".join(f"từ{i}" for i in range(40))
    async with open_fake_azure(delta_delay_s=0.0, reply=lambda s: words) as azure:
        async with open_fake_cartesia() as cartesia:
            settings = stand_in_settings(azure, cartesia)
            graph = build_receptionist(tmp_path / "appointments.sqlite3")
            async with running_server(settings, agent=graph) as server:
                async with server.connect("heard") as client:
                    await client.send_json(type="text", text="kể chuyện đi")
                    done_text = ""
                    received = 0
                    while True:
                        message = await client.recv()
                        if isinstance(message, bytes):
                            received += len(message)
                            continue
                        event = json.loads(message)
                        if event["type"] == "response.text.done":
                            done_text = event["text"]
                        if received >= 4 * 4800 and done_text:
                            break
                    played_ms = received // 96
                    await client.send_json(type="interrupt", played_ms=played_ms)
                    await client.until("response.done")
                    await client.ping()
                    session = azure.sessions[0]
                    with trio.fail_after(5):
                        while not session.of_type("conversation.item.create")[1:]:
                            await trio.sleep(0.02)
    (delete,) = session.of_type("conversation.item.delete")
    created = session.of_type("conversation.item.create")[-1]["item"]
    assert created["role"] == "assistant"
    heard = created["content"][0]["text"]
    assert created["content"][0]["type"] == "output_text"
    # Only a start of the answer: what the client had played, whole words.
    assert heard and words.startswith(heard) and len(heard) < len(words)
    assert heard.split()[-1] in words.split()
    ended = [word for word, _, end in word_times(words) if end * 1000 <= played_ms]
    assert heard == " ".join(ended), (heard, played_ms)
    # Cartesia was asked for them.
    assert all(r.get("add_timestamps") for c in cartesia.contexts.values() for r in c.requests)
    assistant = [i for i in session.items if i.get("role") == "assistant"]
    assert delete["item_id"] not in [i.get("id") for i in assistant]
