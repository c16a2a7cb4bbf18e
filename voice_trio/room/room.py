"""One room = one WebSocket connection = one Trio nursery (DESIGN.md section 1).

:meth:`Room.serve` is the room's whole life: it opens the nursery, starts the
writer (:class:`~.outbox.Outbox`), greets the client with ``session.ready``,
and reads until the socket closes or the room is closed. The reader (the
connection's own task) decodes and dispatches; it never awaits on audio (a full
inbox drops the frame). The brain and voice (:class:`~.upstream.Upstream`)
start on the first audio or turn; each response is a :class:`~.turn.RoomTurn`,
cut by :meth:`Room.interrupt`.

Idle deadlines and per-room ``metrics`` events are driven by the app's one
process-wide sweeper (:meth:`Room.tick`), so an idle room has no timer of its
own and is never woken.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from .. import protocol as p
from ..audio import InputResampler, pcm16_from_ints
from ..config import OUTPUT_SAMPLE_RATE, Settings
from ..errors import ProtocolError
from ..record import NullRecorder, Recorder
from ..resume import SessionKeeper
from ..session import Session
from ..transport import PlaybackReport, Transport
from .limits import RoomLimits
from .minutes import Minutes
from .outbox import Outbox
from .turn import RoomTurn, TurnState
from .upstream import AudioFrame, BrainFactory, Commit, Inbound, TextTurn, Upstream, VoiceFactory

if TYPE_CHECKING:
    from ..metrics import ServerMetrics

__all__ = ["CloseCode", "Room"]

log = logging.getLogger("voice_trio.room")


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


class Room:
    """The state and tasks of one connection; :meth:`serve` runs it."""

    # Slots, not a __dict__: less memory for each of thousands of idle rooms.
    __slots__ = (
        "session", "settings", "metrics", "minutes", "outbox", "upstream", "turn",
        "brain_rates", "closed", "close_code", "close_reason", "draining",
        "last_activity", "messages_in", "incoming_audio_dropped", "_transport", "_nursery",
        "_limits", "_resampler", "_responses", "_last_metrics_at", "_active_since_metrics",
        "_played_hint",
    )  # fmt: skip

    def __init__(
        self,
        *,
        session: Session,
        settings: Settings,
        metrics: ServerMetrics,
        make_brain: BrainFactory,
        make_voice: VoiceFactory,
        transport: Transport,
        brain_rates: frozenset[int] = frozenset({OUTPUT_SAMPLE_RATE}),
        recorder: Recorder | None = None,
        keeper: SessionKeeper | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.metrics = metrics
        #: What the room hands the app's recorder (transcripts, usage).
        self.minutes = Minutes(session, settings, recorder or NullRecorder(), keeper)
        self.outbox = Outbox(transport, settings, metrics, self.close)
        self.upstream = Upstream(self, make_brain, make_voice)
        self.turn: RoomTurn | None = None
        #: The input rates the brain takes as they are (others are resampled to 24 kHz).
        self.brain_rates = brain_rates
        self.closed = trio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.draining = False
        self._transport = transport
        self._nursery: trio.Nursery | None = None
        self._limits: RoomLimits | None = None  # made with the first message
        self._resampler: InputResampler | None = None
        # The client's last client_vad_speech_start with played_ms: (response, ms, when).
        self._played_hint: tuple[str, int, float] | None = None
        self._responses = 0
        self.last_activity = self._last_metrics_at = trio.current_time()
        self._active_since_metrics = False
        # Per-room figures (also summed into the process metrics).
        self.messages_in = self.incoming_audio_dropped = 0

    @property
    def session_id(self) -> str:
        return self.session.session_id

    def resume(self, session: Session) -> None:
        """Go on with ``session`` (kept from a room before this one), before serving."""
        self.session = self.minutes.session = session

    # ------------------------------------------------------------------ life

    async def serve(self) -> None:
        """Run the room until the socket closes or the room is closed.

        The connection must already be accepted. Sends the close frame (when the
        server ends the room) before returning.
        """
        opened = self.close_code is None  # not closed before it started (replaced, shutdown)
        if opened:
            self.minutes.opened()
        try:
            if opened:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self.outbox.run)
                    await self.outbox.put(self.ready_event())
                    await self._read_loop()
                    nursery.cancel_scope.cancel()
        except trio.Cancelled:
            # Cancelled from outside (the server is going away without a drain).
            self.close(CloseCode.GOING_AWAY, "going away")
            code = self.close_code or CloseCode.GOING_AWAY
            await self.outbox.send_close(code, self.close_reason, flush=False)
            raise
        finally:
            self.closed.set()
            # The turn points back at the room: let go of it, so that a closed room is
            # freed by reference counting, not left for a full collection (issue #10).
            self.turn = None
            self.upstream.detach()
            if opened:
                self.outbox.settle()  # the responses whose end had not left come first
                self.minutes.closed(self.close_code, self.close_reason, self.outbox.audio_out_bytes)
        if self.close_code is None:
            self.outbox.shut()
        else:
            await self.outbox.send_close(
                self.close_code,
                self.close_reason,
                flush=self.close_code != CloseCode.TRY_AGAIN_LATER,
            )

    def close(self, code: int, reason: str) -> None:
        """End the room: its tasks are cancelled, the client gets ``code``."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

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
        turn = self.turn
        if turn is not None:
            turn.flush_stale(now)
        if idle >= settings.upstream_idle_s and not (turn and turn.speaking):
            self.upstream.stop()
        if (
            self._active_since_metrics
            and now - self._last_metrics_at >= settings.room_metrics_interval_s
        ):
            self._last_metrics_at = now
            self._active_since_metrics = False
            self.outbox.put_droppable(self.statistics())

    async def drain(self, deadline: float) -> None:
        """Graceful shutdown: no new turns; let the current one end; close 1001."""
        self.draining = True
        with trio.move_on_at(deadline):
            # Polls, but only while shutting down.
            while (self.turn is not None and self.turn.speaking) or self.outbox.depth:  # noqa: ASYNC110
                await trio.sleep(0.05)
        self.close(CloseCode.GOING_AWAY, "server shutting down")

    def statistics(self) -> p.Metrics:
        outbox = self.outbox
        return p.Metrics(
            outbox_depth=outbox.depth,
            outbox_dropped=outbox.dropped,
            incoming_audio_dropped=self.incoming_audio_dropped,
            stale_audio_dropped=outbox.stale_audio_dropped,
            messages_in=self.messages_in,
            messages_out=outbox.messages_out,
            ttfa_ms=outbox.last_ttfa_ms,
            upstream_live=self.upstream.live,
        )

    def ready_event(self) -> p.SessionReady:
        settings = self.settings
        return p.SessionReady(
            session_id=self.session_id,
            input_sample_rate=self.session.input_rate,
            output_sample_rate=OUTPUT_SAMPLE_RATE,
            brain=settings.brain,
            voice=settings.voice,
            instance_id=settings.instance_id if settings.redis_url else None,
            resumed=True if self.session.resumed else None,
            turns_restored=len(self.session.heard or ()) if self.session.resumed else None,
        )

    # ---------------------------------------------------------------- reader

    async def _read_loop(self) -> None:
        receive = self._transport.receive
        max_bytes = self.settings.ws_max_message_bytes
        metrics = self.metrics
        while True:
            message = await receive()
            if message is None:
                self.outbox.disconnected = True
                return
            self.messages_in += 1
            metrics.messages_in += 1
            self.touch()
            now = self.last_activity  # touch() just read the clock
            limits = self._limits
            if limits is None:
                limits = self._limits = RoomLimits(self.settings, now)
            if not limits.messages.take(now):
                if not self._over_limit(limits, "messages", now):
                    return
                continue
            if isinstance(message, bytes):
                if len(message) > max_bytes:
                    self.close(CloseCode.MESSAGE_TOO_BIG, f"message over {max_bytes} bytes")
                    return
                await self._on_audio(message, limits, now)
                continue
            if (
                len(message) * 4 > max_bytes
                and len(message.encode("utf-8", "surrogatepass")) > max_bytes
            ):
                self.close(CloseCode.MESSAGE_TOO_BIG, f"message over {max_bytes} bytes")
                return
            try:
                await self._dispatch(p.decode_client(message), limits, now)
            except ProtocolError as exc:
                await self.refuse(exc.code, exc.message)

    async def _dispatch(self, msg: p.ClientMessage, limits: RoomLimits, now: float) -> None:
        match msg:
            case p.AudioIn(audio=samples):
                await self._on_audio(pcm16_from_ints(samples), limits, now)
            case p.TextIn(text=text):
                await self._on_text(text)
            case p.CommitAudio():
                if self._resampler is not None and (tail := self._resampler.flush()):
                    if not self.draining:
                        self._to_brain(AudioFrame(tail, OUTPUT_SAMPLE_RATE))
                if not self._to_brain(Commit(trio.current_time())):
                    await self.error(
                        "busy", "too many turns waiting for the brain; try again shortly"
                    )
            case p.Interrupt(played_ms=played_ms):
                await self.interrupt(played_ms)
            case p.ClientVadSpeechStart(played_ms=played_ms):
                # A hint only when the brain hears the audio and confirms barge-ins
                # itself (the local brain: words, not a cough or a "dạ"); what the
                # client had played is kept for the barge-in the brain may confirm.
                turn = self.turn
                brain = self.upstream.brain
                if getattr(brain, "confirms_barge_in", False):
                    if turn is not None and played_ms is not None:
                        self._played_hint = (turn.response_id, played_ms, trio.current_time())
                    return
                if turn is not None and (turn.speaking or played_ms is not None):
                    await self.interrupt(played_ms)
            case p.SessionConfig():
                await self._configure(msg)
            case p.Ping():
                await self.outbox.put(p.Pong())

    def _over_limit(self, limits: RoomLimits, kind: str, now: float) -> bool:
        """A message dropped over a rate limit: count it, say so once a second. False: closed."""
        self.metrics.rate_limited[kind] += 1
        verdict = limits.dropped(now)
        if verdict == "close":
            self.close(
                CloseCode.POLICY_VIOLATION,
                f"over the rate limits for {self.settings.rate_limit_close_s} s",
            )
            return False
        if verdict == "tell":
            message = f"too many {kind}: the excess is dropped; slow down"
            self.outbox.put_droppable(p.Error(code="rate_limited", message=message, fatal=False))
        return True

    async def refuse(self, code: str, message: str) -> None:
        """The client's message was bad: tell it (an ``error`` event), count it, go on.

        Logged at INFO, a few lines per code a minute: bad input is the client's
        bug, not the server's, and must not flood the log.
        """
        metrics = self.metrics
        metrics.input_errors[code] += 1
        metrics.input_error_log.log(code, "room %s: %s: %s", self.session_id, code, message)
        await self.outbox.put(p.Error(code=code, message=message, fatal=False))

    async def error(self, code: str, message: str, *, fatal: bool = False) -> None:
        """A server-side error (a provider's): an ``error`` event; ``fatal`` closes the room."""
        self.minutes.error(code, fatal=fatal)
        event = p.Error(code=code, message=message, fatal=fatal)
        if not fatal:
            await self.outbox.put(event)
            return
        log.warning("room %s closed by a provider error: %s", self.session_id, code)
        # The room is closing: the event goes out with the close frame, after
        # whatever was queued, not through the writer that is being cancelled.
        self.outbox.last_words.append(p.encode(event))
        self.close(CloseCode.INTERNAL_ERROR, message[:120])

    async def _on_audio(self, data: bytes, limits: RoomLimits, now: float) -> None:
        size = len(data)
        limit = self.settings.ws_max_audio_frame_bytes
        if size % 2:
            await self.refuse("invalid_audio", f"audio frames are PCM16: {size} bytes is odd")
            return
        if size > limit:
            await self.refuse(
                "invalid_audio", f"audio frame of {size} bytes is over the limit of {limit}"
            )
            return
        if size == 0 or self.draining:
            return
        rate = self.session.input_rate
        if not limits.audio.take(now, size / (2 * rate)):
            self._over_limit(limits, "audio", now)  # the room may be closing: the reader stops
            return
        if self.upstream.audio_backlog() >= self.settings.ws_incoming_audio_max:
            self.incoming_audio_dropped += 1
            self.metrics.incoming_audio_dropped += 1
            return
        self.minutes.audio_in_s += size / (2 * rate)
        if self._resampler is not None:
            data, rate = self._resampler.convert(data), OUTPUT_SAMPLE_RATE
        self._to_brain(AudioFrame(data, rate))

    async def _on_text(self, text: str) -> None:
        limit = self.settings.ws_max_text_chars
        if len(text) > limit:
            await self.refuse(
                "text_too_long", f"text of {len(text)} characters; the limit is {limit}"
            )
        elif not text.strip():
            await self.refuse("invalid_message", "text turn is empty")
        elif self.draining:
            await self.error("shutting_down", "the server is shutting down; no new turns")
        elif not self._to_brain(TextTurn(text, trio.current_time())):
            await self.error("busy", "too many turns waiting for the brain; try again shortly")
        else:
            self.minutes.user_turn(text, "text")

    def _to_brain(self, message: Inbound) -> bool:
        assert self._nursery is not None
        return self.upstream.send(message, room_nursery=self._nursery)

    async def _configure(self, msg: p.SessionConfig) -> None:
        session = self.session
        if session.configure(
            input_sample_rate=msg.input_sample_rate,
            language=msg.language,
            voice=msg.voice,
            instructions=msg.instructions,
        ) and (brain := self.upstream.brain):
            brain.configure(session.options)
        rate = session.input_rate
        if rate in self.brain_rates:
            self._resampler = None
        elif self._resampler is None or self._resampler.rate != rate:
            self._resampler = InputResampler(rate)
        await self.outbox.put(self.ready_event())

    # ----------------------------------------------------------------- turns

    async def transcript(self, text: str, *, final: bool, joined: bool = False) -> None:
        """The brain heard the user (a partial or the final transcript of a turn;
        ``joined``: of the whole turn the last final transcript began)."""
        await self.outbox.put(p.InputTranscript(text=text, final=final, joined=joined and final))
        if final and text.strip():
            self.minutes.user_turn(text, "voice", amends=joined)

    async def start_response(self, *, reply: bool = True) -> RoomTurn:
        """A new response (the brain's ``start_response``); the one before it ends first."""
        turn = self.turn
        if turn is not None:
            if not turn.closed:
                await turn.finish()
            if turn.voice_done is not None:
                await turn.voice_done.wait()  # responses are spoken one after another
        self._responses += 1
        upstream = self.upstream
        reply_to, speech_end = upstream.user_turn_ended_at, upstream.user_speech_ended_at
        upstream.user_turn_ended_at = upstream.user_speech_ended_at = None
        if not reply:
            reply_to = speech_end = None
        turn = self.turn = RoomTurn(self, f"resp_{self._responses}", reply_to, speech_end)
        self.touch()
        await self.outbox.put(p.ResponseStarted(response_id=turn.response_id))
        return turn

    async def interrupt(self, played_ms: int | None) -> None:
        """Barge-in: cut the response the user is hearing (DESIGN.md section 1)."""
        turn = self.turn
        if turn is None or turn.state is TurnState.CUT:
            return
        if played_ms is None and isinstance(self._transport, PlaybackReport):
            played_ms = self._transport.played_ms(turn.response_id)  # a phone line's marks
        if not turn.speaking and (played_ms is None or played_ms >= turn.sent_ms):
            return  # nothing left to cut
        # Without the client's word (server VAD), what it has played by the clock.
        heard = turn.played_ms_estimate() if played_ms is None else min(played_ms, turn.sent_ms)
        self.minutes.interrupts += 1
        self.metrics.interrupts += 1
        await self._drop(turn, heard)
        if (brain := self.upstream.brain) is not None:
            await brain.cancel_response(turn.response_id, played_ms=heard)

    async def barge_in(self) -> None:
        """The brain confirmed speech over the agent: cut what the user hears. Where the
        client's hint said what it had played, that (and the time since) is what was
        heard, not the server's estimate (a client's playback may lag it)."""
        turn = self.turn
        if turn is None:
            return
        played = None
        hint = self._played_hint
        if hint is not None and hint[0] == turn.response_id:
            played = hint[1] + int((trio.current_time() - hint[2]) * 1000)
        if turn.speaking or (played is not None and played < turn.sent_ms):
            await self.interrupt(played)

    async def drop_reply(self) -> None:
        """Drop the reply the user has not heard (they went on speaking, the brain joins
        it to their turn): the client drops it as on an interrupt; not a barge-in."""
        turn = self.turn
        if turn is None or turn.state is TurnState.CUT or turn.reply_to is None:
            return
        await self._drop(turn, 0)

    async def _drop(self, turn: RoomTurn, heard_ms: int) -> None:
        """Cut ``turn`` as heard up to ``heard_ms``; ``interrupted`` makes the client drop
        what it holds of it."""
        self.outbox.cut()
        closing = turn.cut()
        turn.record(heard_ms)  # now: its end, queued before, may be made while this waits
        await self.outbox.put_together(p.Interrupted(response_id=turn.response_id), *closing)

    async def end_turn(self) -> None:
        """The upstream is gone: the response it left open ends, interrupted."""
        turn = self.turn
        if turn is not None and not turn.ended:
            heard = turn.played_ms_estimate()
            closing = turn.cut()
            turn.record(heard)
            await self.outbox.put_together(*closing)
