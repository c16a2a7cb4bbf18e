"""The echo brain (DESIGN.md section 6a): a real diagnostic mode.

Each inbound audio frame goes straight back out as assistant audio (through
the room's outbox and chunking) in one response that lasts until the client
commits the turn or interrupts; each text turn is answered with the same text,
streamed as one ``response.text.delta`` per word.
"""

from __future__ import annotations

import re

import trio

from ..config import OUTPUT_SAMPLE_RATE
from .base import BrainEvents, SessionOptions, Turn

__all__ = ["EchoBrain"]

_WORD_START = re.compile(r"(?<=\s)(?=\S)")


class EchoBrain:
    name = "echo"
    input_rates = frozenset({OUTPUT_SAMPLE_RATE})

    def __init__(self, options: SessionOptions) -> None:
        self.options = options
        self._events: BrainEvents | None = None
        self._turn: Turn | None = None

    async def run(
        self, events: BrainEvents, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._events = events
        task_status.started()
        await trio.sleep_forever()

    def _require_events(self) -> BrainEvents:
        if self._events is None:
            raise RuntimeError("EchoBrain used before run() started")
        return self._events

    async def send_audio(self, pcm: bytes, *, rate: int = OUTPUT_SAMPLE_RATE) -> None:
        turn = self._turn
        if turn is None or turn.closed:
            # Echoed audio answers no user turn: it is not timed as a reply.
            turn = self._turn = await self._require_events().start_response(reply=False)
        await turn.audio(pcm)

    async def commit_audio(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None and not turn.closed:
            await turn.finish()

    async def send_text(self, text: str) -> None:
        await self.commit_audio()
        turn = await self._require_events().start_response()
        for word in _WORD_START.split(text):
            await turn.text_delta(word)
        await turn.finish()

    async def cancel_response(self, response_id: str, *, played_ms: int) -> None:
        if self._turn is not None and self._turn.response_id == response_id:
            self._turn = None

    def configure(self, options: SessionOptions) -> None:
        self.options = options
