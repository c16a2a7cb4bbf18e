"""The room's parts as a client and a brain see them (issue #11).

- no audio waits in a turn's chunker longer than a chunk's duration;
- a brain gets the client's audio at the client's rate when it takes that rate
  (the local brain does: a 16 kHz client is not resampled twice), else at 24 kHz;
- the records a room hands to the app's Recorder: the user's turns, each response
  as the user heard it (cut at the interrupt), the room's opening and its usage.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from voice_trio.app import VoiceTrioApp
from voice_trio.providers import BrainEvents, SessionOptions, Turn
from voice_trio.record import AssistantTurn, RoomClosed, RoomOpened, UserTurn
from voice_trio.room import TurnState
from voice_trio.session import Session

from .support import RawClient, RunningServer, running_server, tone


async def test_a_partial_chunk_is_sent_after_a_chunks_duration() -> None:
    # The echo brain answers audio with the same audio, re-cut into 9,600-byte chunks.
    async with running_server(ws_tts_chunk_bytes=9600) as server:
        async with server.connect("partial") as client:
            sent = tone(2400, seed=3)  # 4,800 bytes: half a chunk, and no commit
            await client.send_audio(sent)
            await client.expect("response.started")
            assert await client.recv() == sent
            more = tone(7200, seed=4)  # 14,400 bytes: a chunk and a half
            await client.send_audio(more)
            received = b""
            while len(received) < len(more):
                message = await client.recv()
                assert isinstance(message, bytes), message
                received += message
            assert received == more


class RateBrain:
    """Takes 16 and 24 kHz as they are, and keeps what it was given."""

    name = "rates"
    input_rates = frozenset({16000, 24000})
    heard: list[tuple[bytes, int]] = []  # (the class's: nothing yet)
    committed = False

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.heard: list[tuple[bytes, int]] = []

    async def run(
        self, events: BrainEvents, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await trio.sleep_forever()

    async def send_audio(self, pcm: bytes, *, rate: int = 24000) -> None:
        self.heard.append((pcm, rate))

    async def commit_audio(self) -> None:
        self.committed = True

    async def send_text(self, text: str) -> None:
        pass

    async def cancel_response(self, response_id: str, *, played_ms: int) -> None:
        pass

    def configure(self, options: SessionOptions) -> None:
        self.options = options


class RateApp(VoiceTrioApp):
    rates = RateBrain.input_rates

    def make_brain(self, session: Session) -> RateBrain:
        self.brain = RateBrain(session.options)
        return self.brain

    @property
    def brain_input_rates(self) -> frozenset[int]:
        return self.rates


async def _audio_heard(
    server: RunningServer, rate: int, frames: list[bytes]
) -> list[tuple[bytes, int]]:
    """What the brain was given of ``frames`` sent at ``rate``, and a commit."""
    app: Any = server.app
    async with server.connect(f"rate{rate}") as client:
        await client.send_json(type="session.config", input_sample_rate=rate)
        assert (await client.expect("session.ready"))["input_sample_rate"] == rate
        for frame in frames:
            await client.send_audio(frame)
        await client.send_json(type="commit_audio")  # the resampler's tail goes too
        with trio.fail_after(10):  # the commit comes after all of the audio
            while not getattr(app, "brain", RateBrain).committed:
                await trio.sleep(0.01)
        heard: list[tuple[bytes, int]] = app.brain.heard
        return heard


async def test_a_brain_gets_the_clients_rate_when_it_takes_it() -> None:
    frames = [tone(320, seed=i) for i in range(10)]  # 20 ms frames at 16 kHz
    async with running_server(app_class=RateApp) as server:
        heard = await _audio_heard(server, 16000, frames)
    # Not resampled at all: the same bytes, at 16 kHz.
    assert {rate for _, rate in heard} == {16000}
    assert b"".join(pcm for pcm, _ in heard) == b"".join(frames)


async def test_other_rates_reach_the_brain_resampled_once_to_24_khz() -> None:
    frames = [tone(160, seed=i) for i in range(25)]  # 20 ms frames at 8 kHz
    async with running_server(app_class=RateApp) as server:
        heard = await _audio_heard(server, 8000, frames)
    assert {rate for _, rate in heard} == {24000}
    got = sum(len(pcm) for pcm, _ in heard)
    assert abs(got - 3 * 160 * 2 * 25) <= 2 * 8  # three times the samples, give or take a few


class ListRecorder:
    def __init__(self) -> None:
        self.records: list[Any] = []

    def room_opened(self, record: RoomOpened) -> None:
        self.records.append(record)

    def user_turn(self, record: UserTurn) -> None:
        self.records.append(record)

    def assistant_turn(self, record: AssistantTurn) -> None:
        self.records.append(record)

    def error(self, record: Any) -> None:
        self.records.append(record)

    def room_closed(self, record: RoomClosed) -> None:
        self.records.append(record)


PIECE = tone(2400, seed=5)  # 100 ms


class StoryBrain:
    """Answers a text turn with words and 3 s of audio, 100 ms at a time."""

    name = "story"
    input_rates = frozenset({24000})

    def __init__(self, options: SessionOptions) -> None:
        self.options = options

    async def run(
        self, events: BrainEvents, *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._events = events
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def send_audio(self, pcm: bytes, *, rate: int = 24000) -> None:
        pass

    async def commit_audio(self) -> None:
        pass

    async def send_text(self, text: str) -> None:
        turn = await self._events.start_response()
        for word in (
            "một ",
            "hai ",
            "ba ",
            "bốn ",
            "năm ",
            "sáu ",
            "bảy ",
            "tám ",
            "chín ",
            "mười",
        ):
            await turn.text_delta(word)
        self._nursery.start_soon(self._speak, turn)

    async def _speak(self, turn: Turn) -> None:
        with turn.scope:
            for _ in range(30):
                await turn.audio(PIECE)
                await trio.sleep(0.1)
            await turn.finish()

    async def cancel_response(self, response_id: str, *, played_ms: int) -> None:
        pass

    def configure(self, options: SessionOptions) -> None:
        self.options = options


class StoryApp(VoiceTrioApp):
    async def _start_recorders(self, settings: Any, nursery: trio.Nursery) -> None:
        self.recorder = ListRecorder()  # instead of the out-of-band sinks

    def make_brain(self, session: Session) -> StoryBrain:
        return StoryBrain(session.options)


@asynccontextmanager
async def story_server() -> AsyncIterator[RunningServer]:
    async with running_server(app_class=StoryApp, ws_tts_chunk_bytes=4800) as server:
        yield server


async def test_the_recorder_gets_each_turn_as_heard_and_the_rooms_usage() -> None:
    async with story_server() as server:
        recorder: ListRecorder = server.app.recorder  # type: ignore[assignment]
        async with server.connect("story") as client:
            await client.send_json(type="text", text="kể đi")
            await client.expect("response.started")
            received = 0
            while received < 5 * 4800:  # half a second of it
                message = await client.recv()
                if isinstance(message, bytes):
                    received += len(message)
            await client.send_json(type="interrupt", played_ms=300)
            events, _ = await client.until("response.done")
            assert events[-1]["status"] == "interrupted"
        with trio.fail_after(10):
            while not any(isinstance(r, RoomClosed) for r in recorder.records):
                await trio.sleep(0.01)
    kinds = [type(r).__name__ for r in recorder.records]
    assert kinds == ["RoomOpened", "UserTurn", "AssistantTurn", "RoomClosed"], kinds
    opened, user, assistant, closed = recorder.records
    assert opened.session_id == user.session_id == assistant.session_id == "story"
    assert (user.text, user.source) == ("kể đi", "text")
    assert assistant.status == "interrupted"
    assert assistant.heard_ms == 300
    assert assistant.full_text == "một hai ba bốn năm sáu bảy tám chín mười"
    # Heard: the words of the first 300 ms of the audio made so far, not all of them.
    assert assistant.text and assistant.full_text.startswith(assistant.text)
    assert len(assistant.text.split()) < 10
    assert assistant.started_at <= assistant.ended_at
    usage = closed.usage
    assert (usage.user_turns, usage.responses, usage.interrupts) == (1, 1, 1)
    assert 0.4 <= usage.audio_out_s <= 3.0
    assert closed.close_code == 1005  # the client closed it


async def test_a_completed_response_is_recorded_whole() -> None:
    async with running_server(app_class=StoryApp, voice_brain="echo") as server:
        recorder: ListRecorder = server.app.recorder  # type: ignore[assignment]
        server.app.make_brain = VoiceTrioApp.make_brain.__get__(server.app)  # type: ignore[method-assign]
        async with server.connect("echo-text") as client:
            await client.send_json(type="text", text="xin chào bạn")
            await client.until("response.done")
        with trio.fail_after(10):
            while not any(isinstance(r, RoomClosed) for r in recorder.records):
                await trio.sleep(0.01)
    assistant = next(r for r in recorder.records if isinstance(r, AssistantTurn))
    assert (assistant.status, assistant.text, assistant.full_text) == (
        "completed",
        "xin chào bạn",
        "xin chào bạn",
    )


class LongAtOnceBrain(StoryBrain):
    """Makes a reply's 200 s of audio at once (as a fast voice does), then finishes it:
    its end waits in the outbox behind audio a client that stops reading never takes."""

    async def _speak(self, turn: Turn) -> None:
        for _ in range(100):
            await turn.audio(bytes(96_000))
        await turn.finish()


class LongAtOnceApp(StoryApp):
    def make_brain(self, session: Session) -> StoryBrain:
        return LongAtOnceBrain(session.options)


async def test_a_response_whose_end_waits_unsent_at_the_rooms_end_is_in_its_usage() -> None:
    """The client stops reading mid-reply and goes away: the response is recorded once,
    before the room's close, and counted in its usage."""
    async with running_server(
        app_class=LongAtOnceApp, ws_tts_chunk_bytes=96_000, ws_outgoing_max=256
    ) as server:
        recorder: ListRecorder = server.app.recorder  # type: ignore[assignment]
        raw = await RawClient.handshake(server.port, "/ws/long-at-once")
        assert (await raw.read_event())["type"] == "session.ready"
        await raw.send_frame(0x1, json.dumps({"type": "text", "text": "kể đi"}).encode())
        assert (await raw.read_event())["type"] == "response.started"
        with trio.fail_after(10):  # all of it made; nearly all still waits in the room
            while server.app.rooms["long-at-once"].turn.state is not TurnState.DONE:  # type: ignore[union-attr]
                await trio.sleep(0.01)
        await raw.stream.aclose()  # it never read the rest
        with trio.fail_after(10):
            while not any(isinstance(r, RoomClosed) for r in recorder.records):
                await trio.sleep(0.01)
            await trio.sleep(0.2)  # anything recorded after the close comes by now
    kinds = [type(r).__name__ for r in recorder.records]
    assert kinds == ["RoomOpened", "UserTurn", "AssistantTurn", "RoomClosed"], kinds
    assistant, closed = recorder.records[2], recorder.records[3]
    assert assistant.full_text == "một hai ba bốn năm sáu bảy tám chín mười"
    assert (closed.usage.user_turns, closed.usage.responses) == (1, 1)


class HearingAtOnceBrain(LongAtOnceBrain):
    """As LongAtOnceBrain, and says when it hears the user's audio (an event it waits
    to queue, as the embedded brain's VAD events are)."""

    async def send_audio(self, pcm: bytes, *, rate: int = 24000) -> None:
        await self._events.speech_started()


class HearingAtOnceApp(StoryApp):
    def make_brain(self, session: Session) -> StoryBrain:
        return HearingAtOnceBrain(session.options)


async def test_an_interrupt_waiting_for_room_in_a_full_outbox_is_recorded_once() -> None:
    """A slow client cuts a reply whose end still waits in its full outbox, while the
    brain too waits to queue an event: the reply is recorded once, cut where the
    client said (not first as cut but heard whole, then amended: two interrupts)."""
    from voice_trio.analytics import event_of

    limit = 200
    async with running_server(
        app_class=HearingAtOnceApp, ws_tts_chunk_bytes=96_000, ws_outgoing_max=limit
    ) as server:
        recorder: ListRecorder = server.app.recorder  # type: ignore[assignment]
        raw = await RawClient.handshake(server.port, "/ws/slow-cut")
        assert (await raw.read_event())["type"] == "session.ready"
        await raw.send_frame(0x1, json.dumps({"type": "text", "text": "kể đi"}).encode())
        assert (await raw.read_event())["type"] == "response.started"
        room = server.app.rooms["slow-cut"]
        waiting = room.outbox._tx.statistics
        with trio.fail_after(10):  # all of it made, its end queued behind its audio
            while room.turn.state is not TurnState.DONE:  # type: ignore[union-attr]
                await trio.sleep(0.01)
        with trio.fail_after(20):  # errors fill the outbox to its bound, one at a time
            while room.outbox.depth < limit:
                await raw.send_frame(0x1, b'{"type":"nope"}')
                await trio.testing.wait_all_tasks_blocked(0.01)
        await raw.send_frame(0x2, bytes(4800))  # the brain waits to say it heard it
        with trio.fail_after(10):
            while waiting().tasks_waiting_send < 1:
                await trio.sleep(0.01)
        await raw.send_frame(0x1, json.dumps({"type": "interrupt", "played_ms": 300}).encode())
        with trio.fail_after(10):  # and the reader, to queue `interrupted`
            while waiting().tasks_waiting_send < 2:
                await trio.sleep(0.01)
        kinds: list[str] = []
        with trio.fail_after(30):  # now the client reads it all
            while "interrupted" not in kinds:
                kinds.append((await raw.read_event())["type"])
        await raw.stream.aclose()
        with trio.fail_after(10):
            while not any(isinstance(r, RoomClosed) for r in recorder.records):
                await trio.sleep(0.01)
    replies = [r for r in recorder.records if isinstance(r, AssistantTurn)]
    assert [(r.status, r.heard_ms) for r in replies] == [("interrupted", 300)], replies
    events = [e for r in recorder.records for e in event_of(r, "test:1")]
    assert [e["heard_ms"] for e in events if e["type"] == "interrupt"] == [300]
    closed = recorder.records[-1]
    assert (closed.usage.responses, closed.usage.interrupts) == (1, 1)
