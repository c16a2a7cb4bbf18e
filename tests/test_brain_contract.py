"""The Brain protocol as a provider sees it: turns with audio, barge-in, failures.

`ToneBrain` is a small brain written against `voice_trio.providers.Brain`, the
way the Azure and local brains are: it answers a text turn with a spoken tone
streamed inside the turn's cancel scope.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from functools import partial

import trio

from voice_trio.app import VoiceTrioApp
from voice_trio.config import Settings
from voice_trio.providers import BrainEvents, ProviderError, SessionOptions, Turn
from voice_trio.server import serve

from .support import RunningServer, tone

PIECE = tone(2400, seed=11)  # 100 ms


class ToneBrain:
    name = "tone"
    input_rates = frozenset({24000})

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self.cancelled: list[tuple[str, int]] = []
        self.speaking_cancelled = 0
        self._fail = trio.Event()

    async def run(self, events: BrainEvents, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        self._events = events
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._fail.wait()
            raise ProviderError("provider_down", "the provider went away")

    async def send_audio(self, pcm: bytes, *, rate: int = 24000) -> None:
        pass

    async def commit_audio(self) -> None:
        pass

    async def send_text(self, text: str) -> None:
        turn = await self._events.start_response()
        await turn.text_delta(text)
        self._nursery.start_soon(self._speak, turn, text == "hỏng")

    async def _speak(self, turn: Turn, fail: bool) -> None:
        with turn.scope:
            try:
                for i in range(30):
                    await turn.audio(PIECE)
                    await trio.sleep(0.02)
                    if fail and i == 2:
                        self._fail.set()
            except trio.Cancelled:
                self.speaking_cancelled += 1
                raise
            await turn.finish()

    async def cancel_response(self, response_id: str, *, played_ms: int) -> None:
        self.cancelled.append((response_id, played_ms))

    def configure(self, options: SessionOptions) -> None:
        self.options = options


class ToneApp(VoiceTrioApp):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.brains: list[ToneBrain] = []

    def make_brain(self, room) -> ToneBrain:
        self.brains.append(ToneBrain(room.options))
        return self.brains[-1]


@asynccontextmanager
async def tone_server(**fields):
    app = ToneApp(Settings(voice_brain="echo", ws_tts_chunk_bytes=4800, **fields))
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(serve, app, host="127.0.0.1", port=0, shutdown_event=trio.Event())
        )
        yield app, RunningServer(app, urls[0], trio.Event())
        nursery.cancel_scope.cancel()


async def test_a_spoken_reply_is_timed_from_the_end_of_the_user_turn() -> None:
    async with tone_server() as (app, server):
        async with server.connect("ttfa") as client:
            await client.send_json(type="text", text="xin chào")
            events, audio = await client.until("response.done")
            assert audio == PIECE * 30
            assert [e["type"] for e in events] == [
                "response.started",
                "response.text.delta",
                "response.text.done",
                "response.done",
            ]
            assert await server.metric("voice_trio_time_to_first_audio_seconds_count") == 1
            assert 0 < await server.metric("voice_trio_time_to_first_audio_seconds_sum") < 5


async def test_barge_in_cancels_the_turn_scope_and_tells_the_brain_what_was_heard() -> None:
    async with tone_server() as (app, server):
        async with server.connect("barge") as client:
            await client.send_json(type="text", text="kể chuyện")
            rid = (await client.expect("response.started"))["response_id"]
            await client.expect("response.text.delta")
            received = bytearray()
            while len(received) < 3 * 4800:
                message = await client.recv()
                assert isinstance(message, bytes)
                received += message
            # The client claims more than it could have heard: clamped to what was sent.
            await client.send_json(type="interrupt", played_ms=60_000)
            events, more = await client.until("response.done")
            assert [e["type"] for e in events] == [
                "interrupted",
                "response.text.done",
                "response.done",
            ]
            assert events[-1]["status"] == "interrupted"
            await client.ping()
            brain = app.brains[0]
            assert brain.speaking_cancelled == 1
            sent_ms = (len(received) + len(more)) * 1000 // 48000
            assert brain.cancelled == [(rid, sent_ms)]
            # An honest played_ms is passed on as it is.
            await client.send_json(type="text", text="lại")
            rid2 = (await client.expect("response.started"))["response_id"]
            await client.expect("response.text.delta")
            await client.recv()
            await client.send_json(type="interrupt", played_ms=40)
            await client.until("response.done")
            await client.ping()
            assert brain.cancelled[-1] == (rid2, 40)


async def test_a_brain_failure_is_an_error_event_and_the_room_goes_on() -> None:
    async with tone_server() as (app, server):
        async with server.connect("fail") as client:
            await client.send_json(type="text", text="hỏng")
            events, _ = await client.until("response.done")
            kinds = [e["type"] for e in events]
            assert "error" in kinds
            error = events[kinds.index("error")]
            assert error["code"] == "provider_down" and error["fatal"] is False
            assert events[-1]["status"] == "interrupted"
            assert await server.metric("voice_trio_upstreams_live") == 0
            # The next turn starts a fresh brain session.
            await client.send_json(type="text", text="lại nào")
            events, audio = await client.until("response.done")
            assert events[-1]["status"] == "completed"
            assert audio == PIECE * 30
            assert len(app.brains) == 2
