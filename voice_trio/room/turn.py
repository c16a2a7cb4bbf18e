"""One assistant response in a room: its state, its audio's bookkeeping, its voice.

A turn goes ``OPEN`` (the brain is still producing it) -> ``FINISHING`` (the brain
is done; its voice is still speaking the text) -> ``DONE`` (``response.done`` is
queued), or from either of the first two to ``CUT`` (interrupted, or its upstream
went away). :meth:`RoomTurn.cut` is the one way to cut it, and it returns the
events that close it; the turn owns its byte counters (queued, sent) and its
clock (when the client started playing it).
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import trio

from .. import protocol as p
from ..audio import Chunker
from ..config import OUTPUT_SAMPLE_RATE
from ..providers.base import Voice
from ..record import TurnStages

if TYPE_CHECKING:
    from .room import Room

__all__ = ["RoomTurn", "TurnState"]

# Text deltas waiting for the voice of one turn.
_VOICE_TEXT_MAX = 256
# Word end times kept of one turn (a reply's words; more are not needed to cut it).
_WORD_ENDS_MAX = 4096


class TurnState(enum.Enum):
    OPEN = "open"
    FINISHING = "finishing"
    DONE = "done"
    CUT = "cut"


class RoomTurn:
    """One assistant response. Brains and voices see it as ``providers.Turn``.

    With a voice, the text deltas stream into the voice inside this turn's cancel
    scope, and the response completes when the voice has spoken the last of it.
    """

    __slots__ = (
        "room",
        "response_id",
        "epoch",
        "scope",
        "state",
        "status",
        "chunker",
        "text",
        "queued_bytes",
        "sent_bytes",
        "reply_to",
        "speech_end",
        "started_at",
        "first_sent_at",
        "ttfa_ms",
        "heard_at",
        "first_text_at",
        "stages",
        "voice_done",
        "recorded",
        "word_ends",
        "_voice_tx",
        "_held_since",
    )

    def __init__(
        self,
        room: Room,
        response_id: str,
        reply_to: float | None,
        speech_end: float | None = None,
    ) -> None:
        self.room = room
        self.response_id = response_id
        self.epoch = room.outbox.epoch
        self.scope = trio.CancelScope()
        self.state = TurnState.OPEN
        #: The status its ``response.done`` carries.
        self.status: Literal["completed", "interrupted"] = "completed"
        self.chunker = Chunker(room.settings.ws_tts_chunk_bytes)
        self.text: list[str] = []
        self.queued_bytes = 0
        self.sent_bytes = 0
        #: When the user's turn this response answers ended (for time to first audio).
        self.reply_to = reply_to
        #: When the user's speech in that turn ended, if the brain said (its stages).
        self.speech_end = speech_end
        self.started_at = trio.current_time()
        #: When the client starts playing this response's audio (by the clock): when its
        #: first audio was sent, or when the audio of responses before it ends.
        self.first_sent_at: float | None = None
        self.ttfa_ms: float | None = None
        #: Its stages' marks (minutes.turn_stages): the last final transcript, its first text.
        self.heard_at = room.minutes.heard_at
        self.first_text_at: float | None = None
        self.stages: TurnStages | None = None
        #: Set once the voice has finished with this turn (None: no voice yet).
        self.voice_done: trio.Event | None = None
        #: Handed to the minutes (once, as heard: see record()).
        self.recorded = False
        #: When each of its words ends in its audio (ms), from a voice that says so.
        self.word_ends: list[int] | None = None
        self._voice_tx: trio.MemorySendChannel[str] | None = None
        self._held_since = 0.0

    @property
    def closed(self) -> bool:
        """The brain may add nothing more to it."""
        return self.state is not TurnState.OPEN

    @property
    def ended(self) -> bool:
        """Its closing events are queued (done or cut)."""
        return self.state is TurnState.DONE or self.state is TurnState.CUT

    @property
    def sent_ms(self) -> int:
        return self.sent_bytes * 1000 // (2 * OUTPUT_SAMPLE_RATE)

    @property
    def speaking(self) -> bool:
        """Open, voicing, with audio still queued, or (by the clock) still playing."""
        state = self.state
        if state is TurnState.CUT:
            return False
        return (
            state is TurnState.OPEN
            or (self.voice_done is not None and not self.voice_done.is_set())
            or self.sent_bytes < self.queued_bytes
            or self.played_ms_estimate() < self.sent_ms
        )

    def played_ms_estimate(self) -> int:
        """What the client has played of it so far, if it plays in real time in order."""
        if self.first_sent_at is None:
            return 0
        elapsed = int((trio.current_time() - self.first_sent_at) * 1000)
        return max(0, min(elapsed, self.sent_ms))

    # ------------------------------------------------------------ the brain's side

    async def text_delta(self, delta: str) -> None:
        if self.state is not TurnState.OPEN or not delta:
            return
        if not self.text:
            self.first_text_at = trio.current_time()
        self.text.append(delta)
        room = self.room
        room.touch()
        room.outbox.put_droppable(p.ResponseTextDelta(response_id=self.response_id, delta=delta))
        voice = room.upstream.voice
        if voice is not None:
            if self._voice_tx is None:
                self._start_voice(voice)
            assert self._voice_tx is not None
            with contextlib.suppress(trio.BrokenResourceError):  # cut by an interrupt
                await self._voice_tx.send(delta)

    async def audio(self, pcm: bytes) -> None:
        """The brain's own audio (used when the room has no voice)."""
        if self.state is not TurnState.OPEN or self.room.upstream.voice is not None:
            return
        await self._push_audio(pcm)

    async def finish(self) -> None:
        """No more text or audio from the brain; completes once it is all spoken."""
        if self.state is not TurnState.OPEN:
            return
        self.state = TurnState.FINISHING
        if self._voice_tx is not None:
            self._voice_tx.close()  # the voice completes the response when it is done
            return
        await self._complete()

    async def abort(self) -> None:
        """The brain lost the rest of this response (its provider dropped or stalled).

        What was said still goes out (queued audio plays, the voice speaks the
        text so far), and the response ends with status ``interrupted``.
        """
        self.status = "interrupted"
        await self.finish()

    # ------------------------------------------------------------------ cutting

    def cut(self) -> list[Any]:
        """Cut it now: its work is cancelled, its audio dropped. The events that close it.

        Empty when it had already ended; else ``response.text.done`` (if it has text)
        and ``response.done`` with status ``interrupted``.
        """
        was_ended = self.ended
        self.state = TurnState.CUT
        self.status = "interrupted"
        self.scope.cancel()
        self.chunker.clear()
        return [] if was_ended else self._closing_events()

    def record(self, heard_ms: int | None = None) -> None:
        """Hand it to the room's minutes as the user heard it: whole (``heard_ms`` None)
        or cut at ``heard_ms``.

        A response is recorded once, when it is done or cut. One done (all its audio
        made) and then cut while its audio still played is recorded again as cut,
        amending the first record, not as a second response.
        """
        if not self.recorded:
            self.recorded = True
            self.room.minutes.response(self, heard_ms)
        elif heard_ms is not None:
            self.room.minutes.response(self, heard_ms, amends=True)

    # ------------------------------------------------------------------ private

    def _closing_events(self) -> list[Any]:
        events: list[Any] = []
        if self.text:
            events.append(p.ResponseTextDone(response_id=self.response_id, text="".join(self.text)))
        events.append(
            p.ResponseDone(response_id=self.response_id, status=self.status, stages_ms=self.stages)
        )
        return events

    async def _complete(self) -> None:
        if self.state is TurnState.CUT:
            return
        rest = self.chunker.flush()
        if rest:
            await self._queue_audio(rest)
        self.state = TurnState.DONE
        # Made as they leave, after its first audio: response.done and the record carry
        # the reply's stages.
        await self.room.outbox.put_later(self._done)

    def _done(self) -> list[Any]:
        self.record()
        return self._closing_events()

    def _start_voice(self, voice: Voice) -> None:
        send, receive = trio.open_memory_channel[str](_VOICE_TEXT_MAX)
        self._voice_tx = send
        self.voice_done = trio.Event()
        self.room.upstream.nursery().start_soon(self._run_voice, voice, receive)

    async def _run_voice(self, voice: Voice, text: trio.MemoryReceiveChannel[str]) -> None:
        assert self.voice_done is not None
        try:
            with self.scope, text:
                if getattr(voice, "word_times", False):  # Cartesia's word timestamps
                    await voice.speak(text, self._voice_audio, timed=self._word_times)  # type: ignore[call-arg]
                else:
                    await voice.speak(text, self._voice_audio)
                await self._complete()
        finally:
            self.voice_done.set()

    def _word_times(self, ends_s: Sequence[float]) -> None:
        """The voice says when more of its words end (s into this response's audio)."""
        ends = self.word_ends
        if ends is None:
            ends = self.word_ends = []
        room = _WORD_ENDS_MAX - len(ends)
        ends.extend(round(end * 1000) for end in ends_s[: max(room, 0)])

    async def _voice_audio(self, pcm: bytes) -> None:
        if self.state is not TurnState.CUT:
            await self._push_audio(pcm)

    async def _push_audio(self, pcm: bytes) -> None:
        room = self.room
        room.touch()
        chunker = self.chunker
        held = chunker.pending
        chunks = chunker.push(pcm)
        for chunk in chunks:
            await self._queue_audio(chunk)
        if chunker.pending and (chunks or not held):
            self._held_since = room.last_activity  # what is held now arrived now

    def flush_stale(self, now: float) -> None:
        """No audio waits in the chunker for more than a chunk's duration (the sweeper's call).

        A partial chunk held that long (nothing came to fill it) is sent as it is.
        """
        chunker = self.chunker
        if not chunker.pending or self.ended:
            return
        if now - self._held_since < chunker.size / (2 * OUTPUT_SAMPLE_RATE):
            return
        rest = chunker.flush()
        if self.room.outbox.put_audio_nowait(rest, self):
            self.queued_bytes += len(rest)
        else:
            chunker.push(rest)  # the outbox is full: at the next sweep

    async def _queue_audio(self, chunk: bytes) -> None:
        self.queued_bytes += len(chunk)
        await self.room.outbox.put_audio(chunk, self)
