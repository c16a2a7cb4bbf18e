"""The embedded default brain in a real room: real models, real audio, no mocks.

Vietnamese sentences are synthesised with the embedded voice and sent into the
room as binary audio at real-time pace with silence around them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from voice_trio.demo import build_receptionist
from voice_trio.speech.tts import EspeakTts

from .support import Client, running_server
from .test_voice import assert_speech

FRAME = 4800  # 100 ms of 24 kHz PCM16


class Conversation:
    """Reads everything the room sends, in the background, for spoken tests."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[dict[str, Any]] = []
        self.audio: dict[str, bytearray] = {}
        self._current: str | None = None
        self._changed = trio.Event()

    async def read(self) -> None:
        while True:
            message = await self.client.recv()
            if isinstance(message, bytes):
                assert self._current is not None, "audio outside a response"
                self.audio[self._current] += message
            else:
                event = json.loads(message)
                if event["type"] == "response.started":
                    self._current = event["response_id"]
                    self.audio[self._current] = bytearray()
                self.events.append(event)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, kind: str, *, after: int = 0, **fields: Any) -> dict[str, Any]:
        """The first event of ``kind`` at index >= ``after`` (waiting for it)."""
        while True:
            for event in self.events[after:]:
                if event["type"] == kind and all(event.get(k) == v for k, v in fields.items()):
                    return event
            await self._changed.wait()

    async def speak(self, pcm: bytes, *, before_s: float = 0.5, after_s: float = 1.0) -> None:
        """Send speech at real-time pace, with silence before and after."""
        audio = bytes(int(before_s * 10) * FRAME) + pcm + bytes(int(after_s * 10) * FRAME)
        audio += bytes(-len(audio) % FRAME)
        start = trio.current_time()
        for i in range(0, len(audio), FRAME):
            await trio.sleep_until(start + i / FRAME * 0.1)
            await self.client.send_audio(audio[i : i + FRAME])

    def kinds(self, after: int = 0) -> list[str]:
        return [e["type"] for e in self.events[after:] if e["type"] != "metrics"]


@asynccontextmanager
async def local_room(
    local_speech: Any, db: Path, session_id: str, **fields: Any
) -> AsyncIterator[tuple[Any, Conversation]]:
    graph = build_receptionist(db)
    async with running_server(
        voice_brain="local", speech=local_speech, agent=graph, **fields
    ) as server:
        async with server.connect(session_id) as client:
            talk = Conversation(client)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(talk.read)
                yield server, talk
                nursery.cancel_scope.cancel()


@pytest.fixture
async def tts() -> EspeakTts:
    return EspeakTts()


async def test_typed_booking_is_answered_in_speech_and_stored(local_speech, tmp_path, tts) -> None:
    db = tmp_path / "appointments.sqlite3"
    with trio.fail_after(120):
        async with local_room(local_speech, db, "typed") as (server, talk):
            await talk.client.send_json(type="text", text="Xin chào, tôi muốn đặt lịch hẹn")
            # The first activity opens the conversation: the greeting, then the answer.
            greeting = await talk.wait_for("response.done")
            assert greeting["status"] == "completed"
            greeting_text = (await talk.wait_for("response.text.done"))["text"]
            assert "Xin chào" in greeting_text
            assert_speech(bytes(talk.audio[greeting["response_id"]]), min_seconds=2)
            turns = [
                ("Tôi muốn đặt lịch hẹn", "tên"),
                ("Tên tôi là Nguyễn Văn An", "ngày nào"),
                ("thứ sáu", "mấy giờ"),
                ("mười giờ sáng", "xác nhận"),
                ("đúng rồi", "đã đặt lịch hẹn"),
            ]
            # The typed "Xin chào, tôi muốn đặt lịch hẹn" already asked for the name.
            reply = await talk.wait_for("response.text.done", after=3)
            assert "tên" in reply["text"]
            for text, expected in turns[1:]:
                mark = len(talk.events)
                await talk.client.send_json(type="text", text=text)
                done = await talk.wait_for("response.done", after=mark)
                reply = await talk.wait_for("response.text.done", after=mark)
                assert expected in reply["text"].lower(), (text, reply["text"])
                assert_speech(bytes(talk.audio[done["response_id"]]), min_seconds=1)
    rows = (
        sqlite3.connect(db)
        .execute("select name, time, status, session_id from appointments")
        .fetchall()
    )
    assert rows == [("Nguyễn Văn An", "10:00", "booked", "typed")]


async def test_spoken_turn_is_heard_transcribed_and_answered(local_speech, tmp_path, tts) -> None:
    sentence = "Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ."
    speech = await tts.synthesize(sentence)
    with trio.fail_after(120):
        async with local_room(
            local_speech, tmp_path / "a.sqlite3", "spoken", agent_greeting=False
        ) as (
            server,
            talk,
        ):
            await talk.speak(speech, before_s=1.0, after_s=1.5)
            started = await talk.wait_for("input.speech_started")
            stopped = await talk.wait_for("input.speech_stopped")
            final = await talk.wait_for("input.transcript", final=True)
            assert (
                talk.events.index(started) < talk.events.index(stopped) < talk.events.index(final)
            )
            # Whisper base hears eSpeak's robotic voice only roughly: the greeting
            # words are the part it gets in every trial.
            heard = final["text"].lower()
            assert "xin chào" in heard, heard
            done = await talk.wait_for("response.done", after=talk.events.index(final))
            reply = await talk.wait_for("response.text.done", after=talk.events.index(final))
            assert reply["text"]
            assert done["status"] == "completed"
            assert_speech(bytes(talk.audio[done["response_id"]]), min_seconds=1)
            # The reply is timed from the end of the user's turn.
            assert await server.metric("voice_trio_time_to_first_audio_seconds_count") == 1


async def test_speaking_over_the_agent_interrupts_it(local_speech, tmp_path, tts) -> None:
    speech = await tts.synthesize("Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ.")
    with trio.fail_after(120):
        async with local_room(local_speech, tmp_path / "b.sqlite3", "barge") as (server, talk):
            await talk.client.send_audio(bytes(FRAME))  # wakes the room: the greeting starts
            started = await talk.wait_for("response.started")
            while len(talk.audio[started["response_id"]]) < 5 * 9600:
                await talk.wait_for("response.text.delta")
                await trio.sleep(0.05)
            await talk.speak(speech, before_s=0.2, after_s=1.0)
            # The greeting's audio is all sent (the response may be complete), but the
            # client is still playing it: the user's speech cuts it.
            cut = await talk.wait_for("interrupted", response_id=started["response_id"])
            assert talk.events.index(
                await talk.wait_for("input.speech_started")
            ) < talk.events.index(cut)
            # Nothing of the greeting after `interrupted`: its audio stops where it was cut.
            greeting_audio = len(talk.audio[started["response_id"]])
            await talk.wait_for("input.transcript", final=True)
            assert len(talk.audio[started["response_id"]]) == greeting_audio
            assert await server.metric("voice_trio_interrupts_total") == 1


async def test_a_client_that_commits_its_turn_is_answered_without_waiting_for_silence(
    local_speech, tmp_path, tts
) -> None:
    speech = await tts.synthesize("Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ.")
    with trio.fail_after(60):
        async with local_room(
            local_speech,
            tmp_path / "c.sqlite3",
            "commits",
            agent_greeting=False,
            vad_end_silence_ms=3000,
        ) as (server, talk):
            # The server's VAD would wait 3 s of silence; the client says the turn is over.
            await talk.speak(speech, before_s=0.5, after_s=0.3)
            mark = len(talk.events)
            await talk.client.send_json(type="commit_audio")
            final = await talk.wait_for("input.transcript", final=True)
            assert "xin chào" in final["text"].lower()
            await talk.wait_for("response.done", after=mark)
            # The VAD's own end of turn came later and found nothing left to transcribe.
            assert [e for e in talk.events if e["type"] == "input.transcript" and e["final"]] == [
                final
            ]


async def test_saturated_recognition_says_so_instead_of_stalling(
    local_speech, tmp_path, tts
) -> None:
    speech = await tts.synthesize("Cảm ơn bạn, hẹn gặp lại vào ngày mai.")
    graph = build_receptionist(tmp_path / "d.sqlite3")
    with trio.fail_after(90):
        async with running_server(
            voice_brain="local", speech=local_speech, agent=graph, agent_greeting=False
        ) as server:
            # The models are shared by the test run: ASR_MAX_WAIT_S=0.01 for this one.
            usual_wait = local_speech.asr_max_wait_s
            local_speech.asr_max_wait_s = 0.01
            outcomes: list[str] = []
            try:

                async def room(i: int) -> None:
                    async with server.connect(f"busy-{i}") as client:
                        talk = Conversation(client)
                        async with trio.open_nursery() as nursery:
                            nursery.start_soon(talk.read)
                            await talk.speak(speech, before_s=0.3, after_s=0.2)
                            await client.send_json(type="commit_audio")
                            while True:
                                for event in talk.events:
                                    if event["type"] == "error":
                                        outcomes.append(event["code"])
                                        nursery.cancel_scope.cancel()
                                        return
                                    if event["type"] == "input.transcript" and event["final"]:
                                        outcomes.append("heard")
                                        nursery.cancel_scope.cancel()
                                        return
                                await talk._changed.wait()

                async with trio.open_nursery() as nursery:
                    for i in range(3):
                        nursery.start_soon(room, i)
            finally:
                local_speech.asr_max_wait_s = usual_wait
    # Three turns ended at the same moment; one recognition runs at a time: the
    # first is heard, the ones that waited too long get a clear error.
    assert sorted(outcomes) == ["asr_timeout", "asr_timeout", "heard"], outcomes
