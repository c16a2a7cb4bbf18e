"""The embedded default brain in a real room: real models, real audio, no mocks.

Vietnamese sentences are synthesised with the embedded voice and sent into the
room as binary audio at real-time pace with silence around them. The last tests
drive the brain itself at each client rate and watch what its recognizer is handed.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
import trio

from voice_trio.config import SUPPORTED_INPUT_RATES
from voice_trio.demo import build_receptionist
from voice_trio.providers import SessionOptions
from voice_trio.providers.local import LocalBrain, LocalSpeech
from voice_trio.speech.tts import EspeakTts

from .speech.support import check_heard
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

    async def speak(
        self, pcm: bytes, *, before_s: float = 0.5, after_s: float = 1.0, rate: int = 24_000
    ) -> None:
        """Send speech (PCM16 at ``rate``) at real-time pace, with silence around it."""
        frame = rate // 10 * 2  # 100 ms
        audio = bytes(int(before_s * 10) * frame) + pcm + bytes(int(after_s * 10) * frame)
        audio += bytes(-len(audio) % frame)
        start = trio.current_time()
        for i in range(0, len(audio), frame):
            await trio.sleep_until(start + i / frame * 0.1)
            await self.client.send_audio(audio[i : i + frame])

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


async def test_a_16_khz_client_is_heard_and_answered(local_speech, tmp_path, tts) -> None:
    sentence = "Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ."
    speech = soxr.resample(
        np.frombuffer(await tts.synthesize(sentence), dtype="<i2"), 24_000, 16_000, quality="HQ"
    ).tobytes()
    with trio.fail_after(120):
        async with local_room(
            local_speech, tmp_path / "e.sqlite3", "narrowband", agent_greeting=False
        ) as (server, talk):
            await talk.client.send_json(type="session.config", input_sample_rate=16_000)
            ready = await talk.wait_for("session.ready", input_sample_rate=16_000)
            assert ready["brain"] == "local"
            await talk.speak(speech, before_s=1.0, after_s=1.5, rate=16_000)
            final = await talk.wait_for("input.transcript", final=True)
            check_heard(final["text"], sentence)
            done = await talk.wait_for("response.done", after=talk.events.index(final))
            assert done["status"] == "completed"
            assert_speech(bytes(talk.audio[done["response_id"]]), min_seconds=1)


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
    # Three turns ended at the same moment; one recognition runs at a time: every room
    # gets an answer (none stalls), one is heard, and a turn whose recognition waited
    # too long gets a clear error. (How many are heard depends on which of the early
    # recognitions, made 250 ms into the pause, got the model first.)
    assert len(outcomes) == 3 and set(outcomes) == {"asr_timeout", "heard"}, outcomes


# ------------------------------------------------------------------ the brain itself
# LocalBrain driven directly (no room): the client's rate goes in as it is, and what
# the recognizer is handed is observed on a real recognizer that records its input.

SENTENCE = "Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ."


class RecordingRecognizer:
    """The shared Whisper recognizer, keeping a copy of every clip it is handed."""

    def __init__(self, recognizer: Any) -> None:
        self._recognizer = recognizer
        self.heard: list[np.ndarray] = []

    def transcribe_sync(
        self, audio: np.ndarray, *, language: str = "vi", prompt: str | None = None
    ) -> str:
        self.heard.append(np.array(audio, dtype=np.float32, copy=True))
        return str(self._recognizer.transcribe_sync(audio, language=language, prompt=prompt))


class Listener:
    """The brain's events (a room's view of them), and the text its responder got."""

    def __init__(self) -> None:
        self.log: list[tuple[str, ...]] = []
        self.finals: list[str] = []
        self.asked: list[str] = []
        self._changed = trio.Event()

    def _note(self, *entry: str) -> None:
        self.log.append(entry)
        self._changed.set()
        self._changed = trio.Event()

    async def speech_started(self) -> None:
        self._note("speech_started")

    async def speech_stopped(self) -> None:
        self._note("speech_stopped")

    async def transcript(self, text: str, *, final: bool) -> None:
        if final:
            self.finals.append(text)
        self._note("transcript", text, "final" if final else "partial")

    async def barge_in(self) -> None:
        self._note("barge_in")

    async def start_response(self, *, reply: bool = True) -> Any:
        raise AssertionError("the responder answers nothing: no response is opened")

    async def error(self, code: str, message: str, *, fatal: bool = False) -> None:
        self._note("error", code, message)

    # Responder: the conversation the brain hands each final transcript to.
    async def respond(self, text: str) -> str:
        self.asked.append(text)
        self._note("asked", text)
        return ""

    def greeting(self) -> str:
        return ""

    async def wait_for_turns(self, n: int) -> None:
        while len(self.asked) + sum(1 for e in self.log if e[0] == "error") < n:
            await self._changed.wait()


@pytest.fixture(scope="module")
def espeak_clip() -> tuple[int, np.ndarray]:
    """The sentence as eSpeak NG says it: its own rate (22050 Hz) and int16 samples."""
    from voice_trio.speech.tts import parse_wav

    async def synth() -> bytes:
        return await EspeakTts().synthesize_wav(SENTENCE)

    return parse_wav(trio.run(synth))


def at_rate(clip: tuple[int, np.ndarray], rate: int, *, before_s=0.6, after_s=1.0) -> bytes:
    """The clip resampled to ``rate`` on its own (as a client at that rate would record
    it), with silence around it: PCM16 bytes."""
    source_rate, samples = clip
    audio = soxr.resample(samples, source_rate, rate, quality="HQ")
    silence = np.zeros(int(before_s * rate), np.int16), np.zeros(int(after_s * rate), np.int16)
    return np.concatenate([silence[0], audio, silence[1]]).astype("<i2").tobytes()


@asynccontextmanager
async def local_brain(
    local_speech: Any,
) -> AsyncIterator[tuple[Any, Listener, RecordingRecognizer]]:
    """A running LocalBrain on the shared models, its recognizer recording."""
    recognizer = RecordingRecognizer(local_speech.recognizer)
    speech = LocalSpeech(
        recognizer=recognizer, vad_model=local_speech.vad_model, tts=local_speech.tts
    )
    listener = Listener()
    brain = LocalBrain(
        SessionOptions(language="vi"),
        speech=speech,
        responder=listener,
        partial_interval_s=60.0,  # no partial transcripts: every clip handed over is a turn
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(speech.run)
        await nursery.start(brain.run, listener)
        yield brain, listener, recognizer
        nursery.cancel_scope.cancel()


async def say(brain: Any, pcm: bytes, rate: int) -> None:
    """Send PCM16 at ``rate`` in 100 ms frames, as fast as the brain takes them."""
    frame = rate // 10 * 2
    for i in range(0, len(pcm), frame):
        await brain.send_audio(pcm[i : i + frame], rate=rate)


def find_in(sent: np.ndarray, clip: np.ndarray) -> int | None:
    """Where ``clip`` is an exact, sample-for-sample slice of ``sent`` (None if nowhere)."""
    loud = int(np.flatnonzero(clip)[0])
    for start in np.flatnonzero(sent == clip[loud]) - loud:
        if 0 <= start <= len(sent) - len(clip) and np.array_equal(
            sent[start : start + len(clip)], clip
        ):
            return int(start)
    return None


def test_the_local_brain_takes_every_client_rate_as_it_is() -> None:
    assert LocalBrain.input_rates == frozenset(SUPPORTED_INPUT_RATES)


async def test_16_khz_audio_reaches_the_recognizer_sample_for_sample(
    local_speech, espeak_clip
) -> None:
    pcm = at_rate(espeak_clip, 16_000)
    with trio.fail_after(60):
        async with local_brain(local_speech) as (brain, listener, recognizer):
            await say(brain, pcm, 16_000)
            await listener.wait_for_turns(1)
    kinds = [e[0] for e in listener.log]
    assert kinds == ["speech_started", "barge_in", "speech_stopped", "transcript", "asked"]
    clip = recognizer.heard[-1]  # the end of the pause (an early recognition may come first)
    sent = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    start = find_in(sent, clip)
    assert start is not None, "the recognizer got audio that is not the client's samples"
    # The whole sentence, from its pre-roll to its end (eSpeak's speech, not its silence).
    loud = np.flatnonzero(np.abs(sent) > 0.01)
    assert start < loud[0] and start + len(clip) > loud[-1], (start, len(clip), loud[[0, -1]])
    check_heard(listener.finals[0], SENTENCE)
    assert listener.asked == listener.finals


def similarity(expected: np.ndarray, clip: np.ndarray) -> float:
    """Normalised correlation of ``clip`` with the stretch of ``expected`` it best lines
    up with (1.0: the same waveform; a clip at the wrong speed or pitch scores low)."""
    n = 1 << int(np.ceil(np.log2(len(expected) + len(clip))))
    xc = np.fft.irfft(np.fft.rfft(expected, n) * np.conj(np.fft.rfft(clip, n)), n)
    lag = int(np.argmax(xc[: len(expected)]))
    a = expected[lag : lag + len(clip)]
    b = clip[: len(a)]
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


@pytest.mark.parametrize("rate", [8000, 24_000, 48_000])
async def test_other_rates_are_resampled_to_16_khz_once_and_heard(
    local_speech, espeak_clip, rate
) -> None:
    pcm = at_rate(espeak_clip, rate)
    with trio.fail_after(60):
        async with local_brain(local_speech) as (brain, listener, recognizer):
            await say(brain, pcm, rate)
            await listener.wait_for_turns(1)
    clip = recognizer.heard[-1]  # the end of the pause (an early recognition may come first)
    # What the recognizer got is the client's audio at 16 kHz: the same waveform as
    # the whole recording resampled in one go, at the right speed and pitch.
    sent = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    expected = soxr.resample(sent, rate, 16_000, quality="HQ")
    assert similarity(expected, clip) > 0.99
    assert 2.5 < len(clip) / 16_000 < len(expected) / 16_000
    # Whisper base changes a word or two of eSpeak's voice for the smallest change in
    # the audio (even 16-bit rounding), so each rate is checked against the sentence.
    check_heard(listener.finals[0], SENTENCE)


async def test_a_rate_change_mid_session_starts_a_fresh_resampler(
    local_speech, espeak_clip
) -> None:
    pcm16 = at_rate(espeak_clip, 16_000)
    with trio.fail_after(90):
        async with local_brain(local_speech) as (brain, listener, recognizer):
            ends: list[int] = []  # each turn's last recognition ends its pause (an early
            for n, rate in enumerate((48_000, 16_000, 24_000, 48_000), start=1):  # may come first)
                await say(brain, pcm16 if rate == 16_000 else at_rate(espeak_clip, rate), rate)
                await listener.wait_for_turns(n)
                ends.append(len(recognizer.heard) - 1)
    assert len(listener.finals) == 4
    heard = [recognizer.heard[i] for i in ends]
    for text in listener.finals:
        check_heard(text, SENTENCE)
    # The 16 kHz turn, between two resampled ones, is still the client's own samples;
    # each resampled turn is its own rate's waveform (no filter left from another rate).
    sent = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768
    assert find_in(sent, heard[1]) is not None
    for rate, clip in ((48_000, heard[0]), (24_000, heard[2]), (48_000, heard[3])):
        sent = np.frombuffer(at_rate(espeak_clip, rate), dtype="<i2").astype(np.float32) / 32768
        assert similarity(soxr.resample(sent, rate, 16_000, quality="HQ"), clip) > 0.99
