"""A room's bounded outbox and its writer, the only sender on the connection.

What waits in the outbox is one of four things (:data:`Outgoing`): an encoded
event (``str``), events that go out back to back (``tuple[str, ...]``), an
:class:`AudioChunk` of a turn, or :class:`Later`: events made when the writer
reaches them (a response's end, whose stages are known once its first audio left).
The writer sends everything waiting in one batch (one system call on
``voice-trio serve``), drops audio queued before an interrupt
(by epoch), and keeps the playback clock: when the client will have played what
it was sent, if it plays in real time in order.

Backpressure by kind (DESIGN.md section 1): deltas and metrics are dropped and
counted when the outbox is full; control events and audio wait, and a client
that takes nothing for ``SLOW_CLIENT_TIMEOUT_S`` is closed with 1013.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from .. import protocol as p
from ..config import Settings
from ..transport import Transport
from .minutes import turn_stages

if TYPE_CHECKING:
    from ..metrics import ServerMetrics
    from .turn import RoomTurn

__all__ = ["AudioChunk", "Later", "Outbox", "Outgoing"]

# Most messages the writer sends in one batch.
_WRITE_BATCH = 64
_TRY_AGAIN_LATER = 1013
_GOING_AWAY = 1001


def _closed(code: int, reason: str) -> None:
    pass


class AudioChunk(msgspec.Struct):
    """A chunk of a turn's audio, queued under the epoch it was made in."""

    epoch: int
    data: bytes
    turn: RoomTurn


class Later(msgspec.Struct):
    """Events made (and encoded) when the writer reaches them, back to back."""

    make: Callable[[], list[Any]]


Outgoing = str | tuple[str, ...] | AudioChunk | Later


class Outbox:
    """The bounded queue of what a room sends, and the writer that sends it."""

    __slots__ = (
        "_tx",
        "_rx",
        "_transport",
        "_settings",
        "_metrics",
        "_close_room",
        "epoch",
        "disconnected",
        "playback_until",
        "last_words",
        "dropped",
        "stale_audio_dropped",
        "messages_out",
        "last_ttfa_ms",
        "audio_out_bytes",
    )

    def __init__(
        self,
        transport: Transport,
        settings: Settings,
        metrics: ServerMetrics,
        close_room: Callable[[int, str], None],
    ) -> None:
        self._tx, self._rx = trio.open_memory_channel[Outgoing](settings.ws_outgoing_max)
        self._transport = transport
        self._settings = settings
        self._metrics = metrics
        self._close_room = close_room
        #: Interrupt generation: audio queued under an older epoch is stale.
        self.epoch = 0
        #: The connection is gone: nothing more can be sent.
        self.disconnected = False
        #: When the client's playback of everything sent ends, by the clock.
        self.playback_until = 0.0
        #: Encoded events that go out with the close frame (a fatal error).
        self.last_words: list[str] = []
        self.dropped = 0
        self.stale_audio_dropped = 0
        self.messages_out = 0
        self.last_ttfa_ms: float | None = None
        self.audio_out_bytes = 0

    @property
    def depth(self) -> int:
        return self._tx.statistics().current_buffer_used

    # ------------------------------------------------------------------ putting

    async def put(self, event: Any) -> None:
        """Queue a control event; waits while the outbox is full."""
        await self._put(p.encode(event))

    async def put_together(self, *events: Any) -> None:
        """Queue control events as one item: nothing can come between them."""
        await self._put(tuple(p.encode(e) for e in events))

    async def put_later(self, make: Callable[[], list[Any]]) -> None:
        """Queue events that ``make`` builds as the writer reaches them (after what is
        queued before them has left): a response's end carries what its audio's leaving
        measured."""
        await self._put(Later(make))

    async def put_audio(self, chunk: bytes, turn: RoomTurn) -> None:
        await self._put(AudioChunk(turn.epoch, chunk, turn))

    def put_audio_nowait(self, chunk: bytes, turn: RoomTurn) -> bool:
        """Queue audio if there is room now (False: the outbox is full)."""
        try:
            self._tx.send_nowait(AudioChunk(turn.epoch, chunk, turn))
        except trio.WouldBlock:
            return False
        return True

    def put_droppable(self, event: Any) -> None:
        """Queue a delta or metrics event, or drop and count it if the outbox is full."""
        try:
            self._tx.send_nowait(p.encode(event))
        except trio.WouldBlock:
            self.dropped += 1
            self._metrics.outbox_dropped[event.__struct_config__.tag] += 1

    def cut(self) -> None:
        """An interrupt: audio queued so far is stale; the client drops what it holds."""
        self.epoch += 1
        self.playback_until = 0.0

    async def _put(self, item: Outgoing) -> None:
        try:
            self._tx.send_nowait(item)
            return
        except trio.WouldBlock:
            pass
        timeout = self._settings.slow_client_timeout_s
        with trio.move_on_after(timeout):
            await self._tx.send(item)
            return
        self._metrics.slow_consumer_closes += 1
        self._close_room(_TRY_AGAIN_LATER, f"slow consumer: outbox full for {timeout:g} s")
        await trio.lowlevel.checkpoint()  # raises Cancelled: the room is closing

    # ------------------------------------------------------------------ sending

    async def run(self) -> None:
        """The writer: send what is queued, in batches, until cancelled or the peer is gone."""
        transport = self._transport
        metrics = self._metrics
        receive = self._rx.receive
        while True:
            first = await receive()
            batch = self._take_batch(first)
            if not batch:
                continue
            try:
                await transport.send(batch)
            except trio.BrokenResourceError:
                # The connection is gone; the reader sees it too and ends the room.
                self.disconnected = True
                self._close_room(_GOING_AWAY, "connection lost")
                return
            self.messages_out += len(batch)
            metrics.messages_out += len(batch)

    async def send_close(self, code: int, reason: str, *, flush: bool) -> None:
        """The close frame (after what is queued, when ``flush``), at most 2 s; then shut."""
        if not self.disconnected:
            self.disconnected = True
            transport = self._transport
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                try:
                    if flush:
                        while batch := self._take_batch():
                            await transport.send(batch)
                    if self.last_words:
                        await transport.send(self.last_words)
                    await transport.close(code, reason)
                except trio.BrokenResourceError:
                    pass  # the client went away first
        self.shut()

    def settle(self) -> None:
        """Make now what waits to be made as it leaves (a response's end records it), so
        that a room's close is recorded after it; it stays queued, made again if it goes
        out (a response is recorded once however often its end is made)."""
        for item in self._drain():
            self._tx.send_nowait(item)  # the room's tasks are over: nothing else sends

    def shut(self) -> None:
        """Drop what was never sent (each chunk names its turn) and let go of the room.

        What waited to be made as it left is made still (a response's end: it is
        recorded), only not sent.
        """
        self._drain()
        self._rx.close()
        self._close_room = _closed  # no cycle left: a closed room is freed by refcount

    def _drain(self) -> list[Outgoing]:
        """Take everything queued, making each :class:`Later` (its events not sent)."""
        items: list[Outgoing] = []
        while True:
            try:
                item = self._rx.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return items
            if isinstance(item, Later):
                item.make()
            items.append(item)

    def _take_batch(self, first: Outgoing | None = None) -> list[bytes | str]:
        """What is queued now (after ``first``), in order, without stale audio."""
        batch: list[bytes | str] = []
        item = first
        receive_nowait = self._rx.receive_nowait
        while True:
            match item:
                case str():
                    batch.append(item)
                case AudioChunk(epoch, data, turn):
                    if epoch != self.epoch:
                        self.stale_audio_dropped += 1
                    else:
                        self._audio_leaving(turn, len(data))
                        batch.append(data)
                case tuple():
                    batch.extend(item)
                case Later(make):
                    batch.extend(p.encode(e) for e in make())
            if len(batch) >= _WRITE_BATCH:
                return batch
            try:
                item = receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return batch

    def _audio_leaving(self, turn: RoomTurn, size: int) -> None:
        """Book a chunk of ``turn``'s audio as sent: playback clock, time to first audio."""
        now = trio.current_time()
        if turn.first_sent_at is None:
            # The client plays it after whatever it still holds of earlier ones.
            turn.first_sent_at = max(now, self.playback_until)
        if turn.sent_bytes == 0 and turn.reply_to is not None:
            ttfa = now - turn.reply_to
            turn.ttfa_ms = self.last_ttfa_ms = round(ttfa * 1000, 1)
            self._metrics.time_to_first_audio.observe(ttfa)
            turn.stages = turn_stages(turn, now, self._metrics)
        turn.sent_bytes += size
        self.audio_out_bytes += size
        self.playback_until = turn.first_sent_at + turn.sent_ms / 1000
