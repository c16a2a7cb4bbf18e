"""One room = one WebSocket connection = one Trio nursery (DESIGN.md section 1).

Tasks of a room:

- the reader (the connection's handler task itself): receives, decodes,
  dispatches; it never awaits on audio (a full inbound queue drops the frame);
- the writer: the only sender on the connection; drains the bounded outbox,
  discards audio queued before an interrupt (by epoch), and sends everything
  that is waiting in one batch (one system call on ``voice-trio serve``);
- the upstream, started lazily on the first audio frame or text: the brain
  session and the pump that feeds it; torn down when idle;
- turn scopes: each response's work runs in its own cancel scope, which an
  interrupt cancels.

Idle deadlines and per-room ``metrics`` events are driven by the app's one
process-wide sweeper (:meth:`Room.tick`), so an idle room has no timer of its
own and is never woken.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from . import protocol as p
from .audio import Chunker, InputResampler, pcm16_from_ints
from .config import OUTPUT_SAMPLE_RATE, SUPPORTED_INPUT_RATES, Settings
from .errors import ProviderError, leaves
from .providers.base import Brain, SessionOptions, Voice
from .security import TokenBucket
from .transport import Transport

if TYPE_CHECKING:
    from .metrics import ServerMetrics

__all__ = ["Room", "RoomTurn", "CloseCode"]

log = logging.getLogger("voice_trio.room")

BrainFactory = Callable[["Room"], Brain]
VoiceFactory = Callable[["Room"], "Voice | None"]


class CloseCode:
    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    REPLACED = 4000


# Inbound items for the upstream pump: (kind, payload, received_at).
_AUDIO, _TEXT, _COMMIT = 0, 1, 2
_InboxItem = tuple[int, Any, float]
_Inbox = tuple[trio.MemorySendChannel[_InboxItem], trio.MemoryReceiveChannel[_InboxItem]]
# Room for a few text/commit items beyond the audio bound, so that a turn is
# not refused just because audio filled the queue.
_CONTROL_HEADROOM = 8
# Text deltas waiting for the voice of one turn.
_VOICE_TEXT_MAX = 256
# Outbox items: (epoch, message(s), the turn of an audio chunk or None). A
# tuple of texts is several events sent back to back.
_Outbound = tuple[int, "bytes | str | tuple[str, ...]", "RoomTurn | None"]
# Most messages the writer sends in one batch.
_WRITE_BATCH = 64


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
        "chunker",
        "text",
        "queued_bytes",
        "sent_bytes",
        "closed_flag",
        "interrupted",
        "reply_to",
        "completed",
        "first_sent_at",
        "_voice_tx",
        "voice_done",
        "_status",
    )

    def __init__(self, room: Room, response_id: str, reply_to: float | None) -> None:
        self.room = room
        self.response_id = response_id
        self.epoch = room.epoch
        self.scope = trio.CancelScope()
        self.chunker = Chunker(room.settings.ws_tts_chunk_bytes)
        self.text: list[str] = []
        self.queued_bytes = 0
        self.sent_bytes = 0
        self.closed_flag = False
        self.interrupted = False
        # When the user's turn this response answers ended (for time to first audio).
        self.reply_to = reply_to
        #: ``response.done`` has been queued (completed or interrupted).
        self.completed = False
        #: When the client starts playing this response's audio (by the clock): when its
        #: first audio was sent, or when the audio of responses before it ends.
        self.first_sent_at: float | None = None
        self._voice_tx: trio.MemorySendChannel[str] | None = None
        #: Set once the voice has finished with this turn (None: no voice yet).
        self.voice_done: trio.Event | None = None
        # The status its response.done will carry.
        self._status = "completed"

    @property
    def closed(self) -> bool:
        return self.closed_flag

    @property
    def sent_ms(self) -> int:
        return self.sent_bytes * 1000 // (2 * OUTPUT_SAMPLE_RATE)

    @property
    def speaking(self) -> bool:
        """Open, voicing, with audio still queued, or (by the clock) still playing."""
        return not self.interrupted and (
            not self.closed_flag
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

    async def text_delta(self, delta: str) -> None:
        if self.closed_flag or not delta:
            return
        self.text.append(delta)
        room = self.room
        room.touch()
        room.put_droppable(p.ResponseTextDelta(response_id=self.response_id, delta=delta))
        if room.voice is not None:
            if self._voice_tx is None:
                self._start_voice(room.voice)
            assert self._voice_tx is not None
            with contextlib.suppress(trio.BrokenResourceError):  # cut by an interrupt
                await self._voice_tx.send(delta)

    def _start_voice(self, voice: Voice) -> None:
        send, receive = trio.open_memory_channel[str](_VOICE_TEXT_MAX)
        self._voice_tx = send
        self.voice_done = trio.Event()
        self.room.upstream_nursery().start_soon(self._run_voice, voice, receive)

    async def _run_voice(self, voice: Voice, text: trio.MemoryReceiveChannel[str]) -> None:
        assert self.voice_done is not None
        try:
            with self.scope, text:
                await voice.speak(text, self._voice_audio)
                await self._complete()
        finally:
            self.voice_done.set()

    async def _voice_audio(self, pcm: bytes) -> None:
        if self.interrupted:
            return
        self.room.touch()
        for chunk in self.chunker.push(pcm):
            await self._queue_audio(chunk)

    async def audio(self, pcm: bytes) -> None:
        """The brain's own audio (used when the room has no voice)."""
        if self.closed_flag or self.room.voice is not None:
            return
        self.room.touch()
        for chunk in self.chunker.push(pcm):
            await self._queue_audio(chunk)

    async def _queue_audio(self, chunk: bytes) -> None:
        self.queued_bytes += len(chunk)
        await self.room.put_audio(chunk, self)

    async def finish(self) -> None:
        """No more text or audio from the brain; completes once it is all spoken."""
        if self.closed_flag:
            return
        self.closed_flag = True
        if self._voice_tx is not None:
            self._voice_tx.close()  # the voice completes the response when it is done
            return
        await self._complete()

    async def abort(self) -> None:
        """The brain lost the rest of this response (its provider dropped or stalled).

        What was said still goes out (queued audio plays, the voice speaks the
        text so far), and the response ends with status ``interrupted``.
        """
        self._status = "interrupted"
        await self.finish()

    async def _complete(self) -> None:
        self.completed = True
        rest = self.chunker.flush()
        if rest:
            await self._queue_audio(rest)
        events: list[Any] = []
        if self.text:
            events.append(p.ResponseTextDone(response_id=self.response_id, text="".join(self.text)))
        events.append(p.ResponseDone(response_id=self.response_id, status=self._status))
        await self.room.put_together(*events)


class Room:
    """The state and tasks of one connection; :meth:`serve` runs it."""

    # Slots, not a __dict__: about 1.3 KB less for each of thousands of idle rooms.
    __slots__ = (
        "_active_since_metrics",
        "_inbox_pair",
        "_last_metrics_at",
        "_last_words",
        "_limits",
        "_make_brain",
        "_make_voice",
        "_nursery",
        "_outbox_rx",
        "_outbox_tx",
        "_playback_until",
        "_resampler",
        "_responses",
        "_room_scope",
        "_transport",
        "_upstream_nursery",
        "_upstream_scope",
        "_user_turn_ended_at",
        "brain",
        "close_code",
        "close_reason",
        "closed",
        "conversation",
        "disconnected",
        "draining",
        "epoch",
        "incoming_audio_dropped",
        "input_rate",
        "last_activity",
        "last_ttfa_ms",
        "messages_in",
        "messages_out",
        "metrics",
        "options",
        "outbox_dropped",
        "session_id",
        "settings",
        "stale_audio_dropped",
        "turn",
        "voice",
    )

    def __init__(
        self,
        *,
        session_id: str,
        settings: Settings,
        metrics: ServerMetrics,
        make_brain: BrainFactory,
        make_voice: VoiceFactory,
        transport: Transport,
    ) -> None:
        self.session_id = session_id
        self.settings = settings
        self.metrics = metrics
        self._make_brain = make_brain
        self._make_voice = make_voice
        #: The voice of the live upstream (None: the brain's own audio).
        self.voice: Voice | None = None
        #: Per-room state a brain keeps across upstream restarts (the agent conversation).
        self.conversation: Any = None
        self._upstream_nursery: trio.Nursery | None = None
        self._nursery: trio.Nursery | None = None
        self._transport = transport
        self._outbox_tx, self._outbox_rx = trio.open_memory_channel[_Outbound](
            settings.ws_outgoing_max
        )
        # Audio and turns on their way to the brain; made with the first of them
        # (an idle room never needs it).
        self._inbox_pair: _Inbox | None = None
        self.options = SessionOptions(language=settings.voice_language)
        self.input_rate = OUTPUT_SAMPLE_RATE
        self._resampler: InputResampler | None = None
        # Interrupt generation: audio queued under an older epoch is stale.
        self.epoch = 0
        self.turn: RoomTurn | None = None
        self._responses = 0
        self.brain: Brain | None = None
        self._upstream_scope: trio.CancelScope | None = None
        self._room_scope: trio.CancelScope | None = None
        self.closed = trio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self._last_words: list[str] = []
        # The room's inbound rate limits, made with its first message.
        self._limits: _Limits | None = None
        # When the client's playback of everything sent ends, by the clock.
        self._playback_until = 0.0
        self.disconnected = False
        self.draining = False
        now = trio.current_time()
        self.last_activity = now
        self._last_metrics_at = now
        self._active_since_metrics = False
        self._user_turn_ended_at: float | None = None
        # Per-room figures (also summed into the process metrics).
        self.outbox_dropped = 0
        self.incoming_audio_dropped = 0
        self.stale_audio_dropped = 0
        self.messages_in = 0
        self.messages_out = 0
        self.last_ttfa_ms: float | None = None

    # ------------------------------------------------------------------ life

    async def serve(self) -> None:
        """Run the room until the socket closes or the room is closed.

        The connection must already be accepted. Sends the close frame (when
        the server ends the room) before returning.
        """
        try:
            if self.close_code is None:  # not closed before it started (replaced, shutdown)
                async with trio.open_nursery() as nursery:
                    self._room_scope = nursery.cancel_scope
                    self._nursery = nursery
                    nursery.start_soon(self._writer)
                    await self.put(self._ready_event())
                    await self._read_loop()
                    nursery.cancel_scope.cancel()
        except trio.Cancelled:
            # Cancelled from outside (the server is going away without a drain).
            self.close(CloseCode.GOING_AWAY, "going away")
            await self._send_close(flush=False)
            self._outbox_rx.close()
            raise
        finally:
            self.closed.set()
            # The turn points back at the room, and so does audio left in the outbox
            # (each chunk names its turn): let go of both, so that a closed room is
            # freed by reference counting, not left for a full collection (issue #10).
            self.turn = None
        await self._send_close(flush=self.close_code != CloseCode.TRY_AGAIN_LATER)
        self._outbox_rx.close()  # what was never sent is dropped

    def close(self, code: int, reason: str) -> None:
        """End the room: its tasks are cancelled, the client gets ``code``."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._room_scope is not None:
            self._room_scope.cancel()

    async def _send_close(self, *, flush: bool) -> None:
        if self.disconnected or self.close_code is None:
            return
        self.disconnected = True
        transport = self._transport
        with trio.CancelScope(shield=True), trio.move_on_after(2.0):
            try:
                if flush:
                    while batch := self._take_batch():
                        await transport.send(batch)
                if self._last_words:
                    await transport.send(self._last_words)
                await transport.close(self.close_code, self.close_reason)
            except trio.BrokenResourceError:
                pass  # the client went away first

    def touch(self) -> None:
        self.last_activity = trio.current_time()
        self._active_since_metrics = True

    def tick(self, now: float) -> None:
        """Called by the app's sweeper about once a second: idle deadlines, metrics."""
        settings = self.settings
        idle = now - self.last_activity
        if idle >= settings.session_idle_s:
            self.close(CloseCode.NORMAL, f"idle for {settings.session_idle_s:g} s")
            return
        speaking = self.turn is not None and self.turn.speaking
        if self._upstream_scope is not None and idle >= settings.upstream_idle_s and not speaking:
            self._upstream_scope.cancel()
            self._upstream_scope = None  # the next activity starts a fresh upstream at once
        if (
            self._active_since_metrics
            and now - self._last_metrics_at >= settings.room_metrics_interval_s
        ):
            self._last_metrics_at = now
            self._active_since_metrics = False
            self.put_droppable(self.statistics())

    def statistics(self) -> p.Metrics:
        return p.Metrics(
            outbox_depth=self.outbox_depth,
            outbox_dropped=self.outbox_dropped,
            incoming_audio_dropped=self.incoming_audio_dropped,
            stale_audio_dropped=self.stale_audio_dropped,
            messages_in=self.messages_in,
            messages_out=self.messages_out,
            ttfa_ms=self.last_ttfa_ms,
            upstream_live=self.brain is not None,
        )

    @property
    def outbox_depth(self) -> int:
        return self._outbox_tx.statistics().current_buffer_used

    @property
    def upstream_live(self) -> bool:
        return self.brain is not None

    async def drain(self, deadline: float) -> None:
        """Graceful shutdown: no new turns; let the current one end; close 1001."""
        self.draining = True
        with trio.move_on_at(deadline):
            # Polls, but only while shutting down.
            while (self.turn is not None and self.turn.speaking) or self.outbox_depth:  # noqa: ASYNC110
                await trio.sleep(0.05)
        self.close(CloseCode.GOING_AWAY, "server shutting down")

    def _ready_event(self) -> p.SessionReady:
        return p.SessionReady(
            session_id=self.session_id,
            input_sample_rate=self.input_rate,
            output_sample_rate=OUTPUT_SAMPLE_RATE,
            brain=self.settings.brain,
            voice=self.settings.voice,
            instance_id=self.settings.instance_id if self.settings.redis_url else None,
        )

    # ---------------------------------------------------------------- outbox

    async def put(self, event: Any) -> None:
        """Queue a control event; waits while the outbox is full."""
        await self._put((self.epoch, p.encode(event), None))

    async def put_together(self, *events: Any) -> None:
        """Queue control events as one outbox item: nothing can come between them."""
        await self._put((self.epoch, tuple(p.encode(e) for e in events), None))

    async def put_audio(self, chunk: bytes, turn: RoomTurn) -> None:
        await self._put((turn.epoch, chunk, turn))

    def put_droppable(self, event: Any) -> None:
        """Queue a delta or metrics event, or drop and count it if the outbox is full."""
        try:
            self._outbox_tx.send_nowait((self.epoch, p.encode(event), None))
        except trio.WouldBlock:
            self.outbox_dropped += 1
            self.metrics.outbox_dropped[event.__struct_config__.tag] += 1

    async def _put(self, item: _Outbound) -> None:
        try:
            self._outbox_tx.send_nowait(item)
            return
        except trio.WouldBlock:
            pass
        with trio.move_on_after(self.settings.slow_client_timeout_s):
            await self._outbox_tx.send(item)
            return
        self.metrics.slow_consumer_closes += 1
        self.close(
            CloseCode.TRY_AGAIN_LATER,
            f"slow consumer: outbox full for {self.settings.slow_client_timeout_s:g} s",
        )
        await trio.lowlevel.checkpoint()  # raises Cancelled: the room is closing

    async def _writer(self) -> None:
        transport = self._transport
        metrics = self.metrics
        receive = self._outbox_rx.receive
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
                self.close(CloseCode.GOING_AWAY, "connection lost")
                return
            self.messages_out += len(batch)
            metrics.messages_out += len(batch)

    def _take_batch(self, first: _Outbound | None = None) -> list[bytes | str]:
        """What is queued now (after ``first``), in order, without stale audio."""
        batch: list[bytes | str] = []
        item = first
        receive_nowait = self._outbox_rx.receive_nowait
        while True:
            if item is not None:
                epoch, message, turn = item
                if turn is not None:
                    if epoch != self.epoch:
                        self.stale_audio_dropped += 1
                    else:
                        assert isinstance(message, bytes)
                        self._audio_leaving(turn, len(message))
                        batch.append(message)
                elif isinstance(message, tuple):
                    batch.extend(message)
                else:
                    batch.append(message)
            if len(batch) >= _WRITE_BATCH:
                return batch
            try:
                item = receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return batch

    def _audio_leaving(self, turn: RoomTurn, size: int) -> None:
        """Book a chunk of ``turn``'s audio as sent: playback clock, time to first audio."""
        now = trio.current_time()
        if turn.first_sent_at is None:
            # The client plays it after whatever it still holds of earlier ones.
            turn.first_sent_at = max(now, self._playback_until)
        if turn.sent_bytes == 0 and turn.reply_to is not None:
            ttfa = now - turn.reply_to
            self.last_ttfa_ms = round(ttfa * 1000, 1)
            self.metrics.time_to_first_audio.observe(ttfa)
        turn.sent_bytes += size
        self._playback_until = turn.first_sent_at + turn.sent_ms / 1000

    # ---------------------------------------------------------------- reader

    async def _read_loop(self) -> None:
        receive = self._transport.receive
        max_bytes = self.settings.ws_max_message_bytes
        metrics = self.metrics
        while True:
            message = await receive()
            if message is None:
                self.disconnected = True
                return
            self.messages_in += 1
            metrics.messages_in += 1
            self.touch()
            now = self.last_activity  # touch() just read the clock
            limits = self._limits
            if limits is None:
                limits = self._limits = _Limits(self.settings, now)
            if not limits.messages.take(now):
                if not self._over_limit(limits, "messages"):
                    return
                continue
            if isinstance(message, bytes):
                if len(message) > max_bytes:
                    self.close(CloseCode.MESSAGE_TOO_BIG, f"message over {max_bytes} bytes")
                    return
                await self._on_audio(message)
                continue
            text = message
            if len(text) * 4 > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes:
                self.close(CloseCode.MESSAGE_TOO_BIG, f"message over {max_bytes} bytes")
                return
            try:
                msg = p.decode_client(text)
            except p.ProtocolError as exc:
                await self.refuse(exc.code, exc.message)
                continue
            await self._on_message(msg)

    def _over_limit(self, limits: _Limits, kind: str) -> bool:
        """A message dropped over a rate limit: count it, say so (once a second); False: close.

        The ``rate_limited`` error is droppable, so a flood never makes the reader wait.
        """
        self.metrics.rate_limited[kind] += 1
        now = trio.current_time()
        second = int(now)
        if second != limits.last_drop_second:
            limits.streak = limits.streak + 1 if second == limits.last_drop_second + 1 else 1
            limits.last_drop_second = second
            if limits.streak > self.settings.rate_limit_close_s:
                self.close(
                    CloseCode.POLICY_VIOLATION,
                    f"over the rate limits for {self.settings.rate_limit_close_s} s",
                )
                return False
            self.put_droppable(
                p.Error(
                    code="rate_limited",
                    message=f"too many {kind}: the excess is dropped; slow down",
                    fatal=False,
                )
            )
        return True

    async def refuse(self, code: str, message: str) -> None:
        """The client's message was bad: tell it (an ``error`` event), count it, go on.

        Logged at INFO, a few lines per code a minute: bad input is the client's
        bug, not the server's, and must not flood the log.
        """
        metrics = self.metrics
        metrics.input_errors[code] += 1
        metrics.input_error_log.log(code, "room %s: %s: %s", self.session_id, code, message)
        await self.put(p.Error(code=code, message=message, fatal=False))

    async def error(self, code: str, message: str, *, fatal: bool = False) -> None:
        event = p.Error(code=code, message=message, fatal=fatal)
        if not fatal:
            await self.put(event)
            return
        # The room is closing: the event goes out with the close frame, after
        # whatever was queued, not through the writer that is being cancelled.
        self._last_words.append(p.encode(event))
        self.close(CloseCode.INTERNAL_ERROR, message[:120])

    async def _on_audio(self, data: bytes) -> None:
        size = len(data)
        if size % 2:
            await self.refuse("invalid_audio", f"audio frames are PCM16: {size} bytes is odd")
            return
        if size > self.settings.ws_max_audio_frame_bytes:
            await self.refuse(
                "invalid_audio",
                f"audio frame of {size} bytes is over the limit of "
                f"{self.settings.ws_max_audio_frame_bytes}",
            )
            return
        if size == 0 or self.draining:
            return
        limits = self._limits
        seconds = size / (2 * self.input_rate)
        if limits is not None and not limits.audio.take(trio.current_time(), seconds):
            self._over_limit(limits, "audio")  # the room may be closing: the reader stops
            return
        if self._resampler is not None:
            data = self._resampler.convert(data)
        inbox = self._inbox()[0]
        if inbox.statistics().current_buffer_used >= self.settings.ws_incoming_audio_max:
            self.incoming_audio_dropped += 1
            self.metrics.incoming_audio_dropped += 1
            return
        self._ensure_upstream()
        inbox.send_nowait((_AUDIO, data, 0.0))

    async def _on_message(self, msg: p.ClientMessage) -> None:
        if isinstance(msg, p.AudioIn):
            await self._on_audio(pcm16_from_ints(msg.audio))
        elif isinstance(msg, p.TextIn):
            await self._on_text(msg.text)
        elif isinstance(msg, p.CommitAudio):
            if self._resampler is not None:
                tail = self._resampler.flush()
                if tail and not self.draining:
                    self._ensure_upstream()
                    with contextlib.suppress(trio.WouldBlock):
                        self._inbox()[0].send_nowait((_AUDIO, tail, 0.0))
            await self._queue_control(_COMMIT, None)
        elif isinstance(msg, p.Interrupt):
            await self.interrupt(msg.played_ms)
        elif isinstance(msg, p.ClientVadSpeechStart):
            if self.turn is not None and self.turn.speaking:
                await self.interrupt(None)
        elif isinstance(msg, p.SessionConfig):
            await self._configure(msg)
        elif isinstance(msg, p.Ping):
            await self.put(p.Pong())

    async def _on_text(self, text: str) -> None:
        limit = self.settings.ws_max_text_chars
        if len(text) > limit:
            await self.refuse(
                "text_too_long", f"text of {len(text)} characters; the limit is {limit}"
            )
            return
        if not text.strip():
            await self.refuse("invalid_message", "text turn is empty")
            return
        if self.draining:
            await self.error("shutting_down", "the server is shutting down; no new turns")
            return
        await self._queue_control(_TEXT, text)

    async def _queue_control(self, kind: int, payload: Any) -> None:
        self._ensure_upstream()
        try:
            self._inbox()[0].send_nowait((kind, payload, trio.current_time()))
        except trio.WouldBlock:
            await self.error("busy", "too many turns waiting for the brain; try again shortly")

    async def _configure(self, msg: p.SessionConfig) -> None:
        if msg.input_sample_rate is not None:
            if msg.input_sample_rate not in SUPPORTED_INPUT_RATES:
                rates = ", ".join(str(r) for r in SUPPORTED_INPUT_RATES)
                await self.refuse(
                    "unsupported_sample_rate",
                    f"input_sample_rate {msg.input_sample_rate} is not supported; "
                    f"use one of {rates}",
                )
                return
            self.input_rate = msg.input_sample_rate
            self._resampler = (
                None if self.input_rate == OUTPUT_SAMPLE_RATE else InputResampler(self.input_rate)
            )
        changes = {
            k: v
            for k, v in (
                ("language", msg.language),
                ("voice", msg.voice),
                ("instructions", msg.instructions),
            )
            if v is not None
        }
        if changes:
            self.options = SessionOptions(**{**_options_dict(self.options), **changes})
            if self.brain is not None:
                self.brain.configure(self.options)
        await self.put(self._ready_event())

    # ------------------------------------------------------------- interrupt

    async def interrupt(self, played_ms: int | None) -> None:
        """Barge-in: cut the response the user is hearing (DESIGN.md section 1)."""
        turn = self.turn
        if turn is None or turn.interrupted:
            return
        if not turn.speaking and (played_ms is None or played_ms >= turn.sent_ms):
            return  # nothing left to cut
        was_open = not turn.completed
        turn.completed = True
        self.epoch += 1
        self._playback_until = 0.0  # `interrupted` makes the client drop what it holds
        turn.interrupted = True
        turn.closed_flag = True
        turn.scope.cancel()
        turn.chunker.clear()
        self.metrics.interrupts += 1
        # Without the client's word (server VAD), what it has played by the clock.
        heard = turn.played_ms_estimate() if played_ms is None else min(played_ms, turn.sent_ms)
        events: list[Any] = [p.Interrupted(response_id=turn.response_id)]
        if was_open:
            if turn.text:
                events.append(
                    p.ResponseTextDone(response_id=turn.response_id, text="".join(turn.text))
                )
            events.append(p.ResponseDone(response_id=turn.response_id, status="interrupted"))
        await self.put_together(*events)
        if self.brain is not None:
            await self.brain.cancel_response(turn.response_id, played_ms=heard)

    # -------------------------------------------------------------- upstream

    def _inbox(self) -> _Inbox:
        if self._inbox_pair is None:
            self._inbox_pair = trio.open_memory_channel[_InboxItem](
                self.settings.ws_incoming_audio_max + _CONTROL_HEADROOM
            )
        return self._inbox_pair

    def _ensure_upstream(self) -> None:
        if self._upstream_scope is None and self._nursery is not None:
            self._upstream_scope = trio.CancelScope()
            self._nursery.start_soon(self._run_upstream, self._upstream_scope)

    async def _run_upstream(self, scope: trio.CancelScope) -> None:
        brain = self._make_brain(self)
        events = _RoomEvents(self)
        nursery: trio.Nursery | None = None
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    self._upstream_nursery = nursery
                    self.voice = self._make_voice(self)
                    await nursery.start(brain.run, events)
                    self.brain = brain
                    nursery.start_soon(self._pump, brain)
        except* ProviderError as group:
            for exc in leaves(group, ProviderError) or ():
                await self.error(exc.code, exc.message, fatal=exc.fatal)
        finally:
            # A newer upstream may already run (the idle sweeper let go of this
            # one): clear only what is still this one's.
            if self._upstream_nursery is nursery:
                self._upstream_nursery = None
                self.voice = None
            if self.brain is brain:
                self.brain = None
            if self._upstream_scope is scope:
                self._upstream_scope = None
        if self._upstream_scope is not None:
            return  # the newer upstream owns the room's turns now
        # The brain is gone (idle teardown or a provider failure) and the room
        # goes on: a response it left open ends here, so the client is not left waiting.
        turn = self.turn
        if turn is not None and not turn.completed:
            turn.closed_flag = turn.completed = turn.interrupted = True
            turn.scope.cancel()
            ending: list[Any] = []
            if turn.text:
                ending.append(
                    p.ResponseTextDone(response_id=turn.response_id, text="".join(turn.text))
                )
            ending.append(p.ResponseDone(response_id=turn.response_id, status="interrupted"))
            await self.put_together(*ending)

    async def _pump(self, brain: Brain) -> None:
        receive = self._inbox()[1].receive
        while True:
            kind, payload, received_at = await receive()
            if kind == _AUDIO:
                await brain.send_audio(payload)
            elif kind == _TEXT:
                self._user_turn_ended_at = received_at
                await brain.send_text(payload)
            else:
                self._user_turn_ended_at = received_at
                await brain.commit_audio()

    def upstream_nursery(self) -> trio.Nursery:
        if self._upstream_nursery is None:
            raise RuntimeError("the room's upstream is not running")
        return self._upstream_nursery

    async def start_response(self, *, reply: bool = True) -> RoomTurn:
        turn = self.turn
        if turn is not None:
            if not turn.closed_flag:
                await turn.finish()
            if turn.voice_done is not None:
                await turn.voice_done.wait()  # responses are spoken one after another
        self._responses += 1
        reply_to, self._user_turn_ended_at = self._user_turn_ended_at, None
        turn = self.turn = RoomTurn(self, f"resp_{self._responses}", reply_to if reply else None)
        self.touch()
        await self.put(p.ResponseStarted(response_id=turn.response_id))
        return turn


class _Limits:
    """A room's inbound rate limits (DESIGN.md section 9) and its run of seconds over them."""

    __slots__ = ("messages", "audio", "last_drop_second", "streak")

    def __init__(self, settings: Settings, now: float) -> None:
        rate = settings.room_message_rate
        self.messages = TokenBucket(rate, 2 * rate, now)
        #: In seconds of audio: room_audio_rate of them a second, twice that in a burst.
        self.audio = TokenBucket(settings.room_audio_rate, 2 * settings.room_audio_rate, now)
        self.last_drop_second = -2
        #: Seconds running (whole clock seconds) with a message dropped in each.
        self.streak = 0


def _options_dict(options: SessionOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in options.__struct_fields__}


class _RoomEvents:
    """The room as a brain sees it (``providers.BrainEvents``)."""

    __slots__ = ("_room",)

    def __init__(self, room: Room) -> None:
        self._room = room

    async def speech_started(self) -> None:
        await self._room.put(p.InputSpeechStarted())

    async def speech_stopped(self) -> None:
        self._room._user_turn_ended_at = trio.current_time()
        await self._room.put(p.InputSpeechStopped())

    async def transcript(self, text: str, *, final: bool) -> None:
        await self._room.put(p.InputTranscript(text=text, final=final))

    async def start_response(self, *, reply: bool = True) -> RoomTurn:
        return await self._room.start_response(reply=reply)

    async def barge_in(self) -> None:
        turn = self._room.turn
        if turn is not None and turn.speaking:
            await self._room.interrupt(None)

    async def error(self, code: str, message: str, *, fatal: bool = False) -> None:
        await self._room.error(code, message, fatal=fatal)
