"""Azure OpenAI Realtime as a brain, over trio-websocket (DESIGN.md section 3).

The openai package's own realtime client runs on asyncio, so this speaks the
documented events itself (../shared/PROVIDERS.md). One room = one brain = one
Azure session at a time (two, briefly, while a session is rotated).

Tasks, all in the brain's nursery (itself in the room's upstream nursery):

- the supervisor (``run`` itself): opens sessions, reconnects a dropped one
  with exponential backoff and jitter, and rotates to a fresh session before
  Azure's 30-minute cut, at a quiet moment, carrying the conversation over;
- per session, a receive loop that never waits on the room's voice: it maps
  VAD and transcript events straight to the room, and hands each response's
  deltas to
- per session, a responder, which opens the room's turn and streams that
  turn's text and audio in a cancel scope an interrupt cancels;
- tool calls, one task per response that asked for them.

Faults (issue #10). Every connection attempt asks the process's Azure
:class:`~.breaker.CircuitBreaker` first (an open breaker is an immediate
``upstream_circuit_open`` error, no network). A session counts as a success
only once it has stayed up ``stable_after_s``; one refused, timed out, or
closed before that is a failure, for the breaker and for this brain's own
bound of ``reconnect_tries`` consecutive failures (after which the room gets
``upstream_unavailable`` and the brain ends). A session that is owed events
(a ``response.create`` sent, a response under way) and hears nothing for
``stall_timeout_s`` is closed as stalled (``upstream_stalled``) and replaced.

Settings are constructor arguments; the app reads them from the environment.
"""

from __future__ import annotations

import binascii
import collections
import dataclasses
import logging
import math
import random
import re
import ssl
import urllib.parse
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import trio
import trio_websocket

from ..config import OUTPUT_SAMPLE_RATE
from ..errors import ProviderError, sole
from ._socket import open_provider_socket, websocket_base
from .base import BrainEvents, SessionOptions, Turn
from .breaker import Attempt, Backoff, CircuitBreaker, CircuitOpen

if TYPE_CHECKING:
    from ..agent import Conversation

__all__ = ["AZURE_VOICES", "AzureBrainStatistics", "AzureRealtimeBrain", "realtime_url"]

log = logging.getLogger("voice_trio.azure")

Output = Literal["audio", "text"]
TurnDetection = Literal["server_vad", "semantic_vad", "none"]

#: Voices the Realtime models speak with (``SessionOptions.voice`` is used when it is one).
AZURE_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
_BYTES_PER_MS = 48  # 24 kHz PCM16 mono
# Error codes that are races of a normal session (a cancel after the response
# ended, a commit of a buffer server VAD already took): nothing to tell the user.
_BENIGN_ERRORS = frozenset(
    {
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "input_audio_buffer_commit_empty",
    }
)
_SESSION_EXPIRED = "session_expired"
# Response events between a session's receive loop and its responder. The loop
# only waits on this when the room has not taken that many events (a stuck client).
_RESPONSE_EVENTS_MAX = 512
# Audio kept for replay into the next session (client-committed turns only).
_REPLAY_MAX_BYTES = 15 * 1000 * _BYTES_PER_MS
_RECENT_RESPONSES = 8
_RESTORE_TEXT_MAX = 4000
_CODE_CHARS = re.compile(r"[^a-z0-9_]+")

_TEXT_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.output_audio_transcript.delta",
        "response.text.delta",  # preview
        "response.audio_transcript.delta",  # preview
    }
)
_AUDIO_DELTAS = frozenset({"response.output_audio.delta", "response.audio.delta"})


def realtime_url(endpoint: str, deployment: str, api_version: str | None = None) -> str:
    """The WebSocket URL of a deployment: GA by default, preview with an ``api_version``.

    ``endpoint`` is ``https://<resource>.openai.azure.com`` (``wss``), or
    ``http://host:port`` for a local stand-in (plain ``ws``).
    """
    base = websocket_base(endpoint, "AZURE_OPENAI_ENDPOINT")
    if api_version:
        query = urllib.parse.urlencode({"api-version": api_version, "deployment": deployment})
        return f"{base}/openai/realtime?{query}"
    return f"{base}/openai/v1/realtime?{urllib.parse.urlencode({'model': deployment})}"


# --------------------------------------------------------------------- wire


class _Append(msgspec.Struct, tag_field="type", tag="input_audio_buffer.append"):
    audio: bytes  # msgspec writes bytes as base64


class _ServerError(msgspec.Struct):
    type: str | None = None
    code: str | None = None
    message: str | None = None
    event_id: str | None = None


class _OutputItem(msgspec.Struct):
    type: str | None = None
    id: str | None = None
    name: str | None = None
    call_id: str | None = None
    arguments: str | None = None


class _StatusError(msgspec.Struct):
    code: str | None = None
    message: str | None = None


class _StatusDetails(msgspec.Struct):
    type: str | None = None
    reason: str | None = None
    error: _StatusError | None = None


class _Response(msgspec.Struct):
    id: str | None = None
    status: str | None = None
    output: list[_OutputItem] | None = None
    status_details: _StatusDetails | None = None


class _ServerEvent(msgspec.Struct):
    """The fields this brain reads, of any server event (others are ignored)."""

    type: str
    delta: str | None = None
    transcript: str | None = None
    item_id: str | None = None
    response_id: str | None = None
    response: _Response | None = None
    error: _ServerError | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_ServerEvent)


def _encode(event: Any) -> str:
    return _encoder.encode(event).decode()


_COMMIT = _encode({"type": "input_audio_buffer.commit"})


# -------------------------------------------------------------------- state


@dataclasses.dataclass(frozen=True, slots=True)
class AzureBrainStatistics:
    """One brain's figures."""

    sessions_opened: int
    reconnects: int
    rotations: int
    events_in: int
    events_out: int
    responses: int
    tool_calls: int
    live: bool


class _ResponseState:
    """One Azure response, and the room turn that voices it."""

    __slots__ = (
        "azure_id",
        "text",
        "done",
        "cancelled",
        "audio_item",
        "forwarded_bytes",
        "turn",
        "scope",
        "tools_scope",
    )

    def __init__(self, azure_id: str) -> None:
        self.azure_id = azure_id
        self.text: list[str] = []
        self.done = False
        self.cancelled = False
        #: The assistant item whose audio the room plays (for truncation).
        self.audio_item: str | None = None
        #: Audio handed to the room's turn, in bytes.
        self.forwarded_bytes = 0
        self.turn: Turn | None = None
        #: Where the responder streams this response into the room's turn; an
        #: interrupt (``cancel_response``) cancels it. Not ``turn.scope``: with a
        #: voice, the room runs the voice in that scope, and a scope is entered once.
        self.scope = trio.CancelScope()
        self.tools_scope: trio.CancelScope | None = None


# What the receive loop hands the responder.
_CREATED, _TEXT, _AUDIO, _DONE = 0, 1, 2, 3


class _Link:
    """One Azure session: its socket and what it is doing now."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, number: int) -> None:
        self.ws = ws
        self.number = number
        self.opened_at = trio.current_time()
        self.ended = trio.Event()
        self.expired = False
        #: This brain closes it (rotation): its end says nothing bad about Azure.
        self.closing = False
        #: It stayed up long enough to count as a success.
        self.stable = False
        #: Closed by the brain after ``stall_timeout_s`` of silence while owed events.
        self.stalled = False
        self.last_event_at = self.opened_at
        #: Around each wait for an event; its deadline is the stall deadline.
        self.wait_scope: trio.CancelScope | None = None
        self.active: _ResponseState | None = None
        self.create_in_flight: str | None = None  # event_id of our response.create
        self.pending_create = False
        self.in_speech = False
        self.tools_running = 0
        self.skip_continuation = False
        self.partials: dict[str, str] = {}
        self.uncommitted: collections.deque[bytes] = collections.deque()
        self.uncommitted_bytes = 0
        self.quiet = trio.Event()
        self.quiet.set()
        self.responses_tx, self.responses_rx = trio.open_memory_channel[
            tuple[int, _ResponseState, Any]
        ](_RESPONSE_EVENTS_MAX)
        self.peeked: tuple[int, _ResponseState, Any] | None = None

    @property
    def owed(self) -> bool:
        """Azure owes this session events: a response.create is out or a response runs."""
        return self.active is not None or self.create_in_flight is not None

    @property
    def busy(self) -> bool:
        return bool(
            self.active is not None
            or self.create_in_flight is not None
            or self.pending_create
            or self.in_speech
            or self.tools_running
        )

    def update_quiet(self) -> None:
        if self.busy and not self.ended.is_set():
            if self.quiet.is_set():
                self.quiet = trio.Event()
        else:
            self.quiet.set()

    def keep_uncommitted(self, pcm: bytes) -> None:
        self.uncommitted.append(pcm)
        self.uncommitted_bytes += len(pcm)
        while self.uncommitted_bytes > _REPLAY_MAX_BYTES:
            self.uncommitted_bytes -= len(self.uncommitted.popleft())

    def clear_uncommitted(self) -> None:
        self.uncommitted.clear()
        self.uncommitted_bytes = 0


class _Retry(Exception):
    """A connection attempt failed in a way worth another try."""


# -------------------------------------------------------------------- brain


class AzureRealtimeBrain:
    """One room's Azure OpenAI Realtime session (``providers.Brain``).

    ``output="text"`` when the room has a voice (TTS) that speaks the text;
    ``"audio"`` for the model's own voice (``turn.audio``). ``conversation`` is
    the room's agent conversation (instructions, tools, history); without it the
    brain answers by ``instructions`` alone.
    """

    name = "azure"
    #: Azure's ``pcm16`` input is 24 kHz.
    input_rates = frozenset({OUTPUT_SAMPLE_RATE})

    def __init__(
        self,
        options: SessionOptions,
        *,
        endpoint: str,
        api_key: str,
        deployment: str,
        api_version: str | None = None,
        conversation: Conversation | None = None,
        output: Output = "audio",
        voice: str = "alloy",
        instructions: str | None = None,
        transcription_model: str = "gpt-4o-mini-transcribe",
        turn_detection: TurnDetection = "server_vad",
        reconnect_tries: int = 5,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        connect_timeout_s: float = 10.0,
        session_max_s: float = 25 * 60.0,
        rotate_grace_s: float = 4 * 60.0,
        restore_items: int = 20,
        ssl_context: ssl.SSLContext | None = None,
        breaker: CircuitBreaker | None = None,
        stall_timeout_s: float = 20.0,
        stable_after_s: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        if output not in ("audio", "text"):
            raise ValueError(f"output must be 'audio' or 'text', not {output!r}")
        self.options = options
        self._url = realtime_url(endpoint, deployment, api_version)
        self._preview = bool(api_version)
        self._api_key = api_key
        self._headers = [(b"api-key", api_key.encode())]
        if self._preview:
            self._headers.append((b"OpenAI-Beta", b"realtime=v1"))
        self._conversation = conversation
        self._output: Output = output
        self._voice = voice
        self._instructions = instructions
        self._transcription_model = transcription_model
        self._turn_detection: TurnDetection = turn_detection
        self._reconnect_tries = reconnect_tries
        self._backoff = Backoff(backoff_s, backoff_max_s)
        self._rng = rng
        #: Shared by every room of the process; None: this brain's own (tests, scripts).
        self._breaker = breaker or CircuitBreaker("azure")
        self._stall_timeout_s = stall_timeout_s
        self._stable_after_s = stable_after_s
        # Consecutive failed sessions (refused, timed out, dropped before stable).
        self._failures = 0
        self._last_failure = ""
        self._connect_timeout_s = connect_timeout_s
        self._session_max_s = session_max_s
        self._rotate_grace_s = rotate_grace_s
        self._restore_items = restore_items
        self._ssl_context = ssl_context
        # Without an agent conversation, the brain keeps the history itself.
        self._history: collections.deque[tuple[str, str]] = collections.deque(
            maxlen=max(1, restore_items)
        )
        self._events: BrainEvents | None = None
        self._nursery: trio.Nursery | None = None
        self._link: _Link | None = None
        self._link_ready = trio.Event()
        self._send_lock = trio.Lock()
        self._recent: collections.OrderedDict[str, tuple[_Link, _ResponseState]] = (
            collections.OrderedDict()
        )
        self._creates = 0
        self._sessions = 0
        self._reconnects = 0
        self._rotations = 0
        self._events_in = 0
        self._events_out = 0
        self._responses = 0
        self._tool_calls = 0

    # ------------------------------------------------------------ public

    def statistics(self) -> AzureBrainStatistics:
        return AzureBrainStatistics(
            sessions_opened=self._sessions,
            reconnects=self._reconnects,
            rotations=self._rotations,
            events_in=self._events_in,
            events_out=self._events_out,
            responses=self._responses,
            tool_calls=self._tool_calls,
            live=self._link is not None,
        )

    async def run(
        self, events: BrainEvents, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._events = events
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                link = await self._connect()
                await self._activate(link)
                task_status.started()
                await self._supervise(link)
        except BaseExceptionGroup as group:
            # One provider failure leaves the brain as itself, not wrapped in a group.
            if (error := sole(group, ProviderError)) is not None:
                raise error from None
            raise
        finally:
            self._nursery = None
            self._link = None

    async def send_audio(self, pcm: bytes, *, rate: int = OUTPUT_SAMPLE_RATE) -> None:
        await self._send_current(_encode(_Append(audio=pcm)), audio=pcm)

    async def commit_audio(self) -> None:
        if self._turn_detection != "none":
            # The client takes turns itself: the server's VAD would take them twice.
            self._turn_detection = "none"
            await self._send_current(self._session_update(first=False))
        link = await self._send_current(_COMMIT)
        link.clear_uncommitted()
        await self._request_response(link)

    async def send_text(self, text: str) -> None:
        item = _message("user", "input_text", text)
        link = await self._send_current(_encode({"type": "conversation.item.create", "item": item}))
        self._record("user", text)  # after the send: a restore in between would repeat it
        await self._request_response(link)

    async def cancel_response(self, response_id: str, *, played_ms: int) -> None:
        found = self._recent.get(response_id)
        if found is None:
            return
        link, state = found
        state.scope.cancel()
        if state.tools_scope is not None:
            state.tools_scope.cancel()
        if link.ended.is_set():
            return
        if not state.done and not state.cancelled:
            state.cancelled = True
            await self._send_on(link, {"type": "response.cancel", "response_id": state.azure_id})
        if self._output == "audio" and state.audio_item is not None:
            heard = max(0, min(played_ms, state.forwarded_bytes // _BYTES_PER_MS))
            await self._send_on(
                link,
                {
                    "type": "conversation.item.truncate",
                    "item_id": state.audio_item,
                    "content_index": 0,
                    "audio_end_ms": heard,
                },
            )

    def configure(self, options: SessionOptions) -> None:
        self.options = options
        if self._nursery is not None and self._link is not None:
            self._nursery.start_soon(self._send_current, self._session_update(first=False))

    # ------------------------------------------------------------ sessions

    async def _connect(self) -> _Link:
        """Open a configured session, retrying transient failures with jittered backoff.

        Every attempt asks the process's breaker first. Gives up (``upstream_unavailable``)
        once ``reconnect_tries + 1`` sessions in a row have failed, counting the ones
        that opened and then dropped before they were stable.
        """
        assert self._nursery is not None
        while True:
            if self._failures > self._reconnect_tries:
                raise ProviderError(
                    "upstream_unavailable",
                    f"could not reach Azure OpenAI Realtime after {self._failures} "
                    f"attempts ({self._last_failure})",
                )
            if self._failures:
                await trio.sleep(self._backoff.delay(self._failures, self._rng))
            try:
                attempt = self._breaker.admit()
            except CircuitOpen as exc:
                raise ProviderError(
                    "upstream_circuit_open",
                    f"Azure OpenAI Realtime is failing ({exc.reason}); new sessions are "
                    f"paused, next try in {max(1, round(exc.retry_in_s))} s",
                ) from None
            try:
                link: _Link = await self._nursery.start(self._hold, self._sessions + 1, attempt)
            except _Retry as exc:
                log.info("Azure Realtime connection attempt failed: %s", exc)
                continue
            self._sessions += 1
            return link

    async def _hold(
        self, number: int, attempt: Attempt, *, task_status: trio.TaskStatus[_Link]
    ) -> None:
        """Own one session's socket and tasks until it closes or is closed.

        Settles ``attempt``: failed if the session never opened or ended unasked
        before it was stable; released if it was closed by this brain or cancelled.
        """
        link: _Link | None = None
        started = False
        try:
            try:
                async with open_provider_socket(
                    self._url,
                    ssl_context=self._ssl_context,
                    headers=self._headers,
                    connect_timeout_s=self._connect_timeout_s,
                ) as ws:
                    link = _Link(ws, number)
                    await ws.send_message(self._session_update(first=True))
                    self._events_out += 1
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._respond, link)
                        stable_scope = trio.CancelScope()
                        nursery.start_soon(self._mark_stable, link, attempt, stable_scope)
                        task_status.started(link)
                        started = True
                        try:
                            await self._receive(link)
                            # Counted before the supervisor sees the end and reconnects.
                            self._settle(link, attempt)
                        finally:
                            stable_scope.cancel()
                            # The responder voices what it already has, then stops.
                            link.responses_tx.close()
                            self._end(link)
            except trio_websocket.ConnectionRejected as exc:
                if link is not None:
                    raise
                reason = f"HTTP {exc.status_code}"
                self._session_failed(attempt, reason)
                raise self._rejected(exc.status_code) from None
            except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, OSError) as exc:
                if not started:
                    reason = _attempt_error(exc)
                    self._session_failed(attempt, reason)
                    raise _Retry(reason) from None
                # After the handshake: the session is over; the supervisor decides what next.
        except ProviderError as exc:
            if started and link is not None and not link.stable:
                self._session_failed(attempt, exc.code)
            raise
        finally:
            attempt.release()  # only if not settled: cancelled, or closed by this brain
            if link is not None:
                self._end(link)

    def _settle(self, link: _Link, attempt: Attempt) -> None:
        """A session ended without an exception: dropped, stalled, or closed on purpose."""
        if link.closing or link.expired:
            return  # released: says nothing bad about Azure
        reason = "stalled" if link.stalled else "dropped"
        if not link.stable:
            self._session_failed(attempt, f"session {reason} after opening")
        else:
            self._breaker.record_failure(f"session {reason}")
            self._last_failure = f"session {reason}"

    def _session_failed(self, attempt: Attempt, reason: str) -> None:
        self._failures += 1
        self._last_failure = reason
        attempt.failed(reason)

    async def _mark_stable(self, link: _Link, attempt: Attempt, scope: trio.CancelScope) -> None:
        """The session stayed up: a success for the breaker and this brain's count."""
        with scope:
            await trio.sleep(self._stable_after_s)
            link.stable = True
            self._failures = 0
            attempt.succeeded()

    def _end(self, link: _Link) -> None:
        state, link.active = link.active, None
        if state is not None and not state.done:
            # Dropped mid-reply: what was said so far is part of the conversation.
            text = "".join(state.text).strip()
            if text:
                self._record("assistant", text)
        link.ended.set()
        link.quiet.set()
        if self._link is link:
            self._link = None
            self._link_ready = trio.Event()

    def _rejected(self, status: int) -> BaseException:
        if status in (401, 403):
            # Fatal: the key is wrong for every room; retrying on each frame would
            # hammer Azure and spam the client. The room closes (1011) with this word.
            return ProviderError(
                "upstream_auth",
                f"Azure OpenAI refused the credentials (HTTP {status}): "
                "check AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT",
                fatal=True,
            )
        if status in (408, 425, 429) or status >= 500:
            return _Retry(f"HTTP {status}")
        return ProviderError(
            "upstream_rejected",
            f"Azure OpenAI refused the session (HTTP {status}): "
            "check AZURE_OPENAI_DEPLOYMENT and AZURE_OPENAI_API_VERSION",
            fatal=True,
        )

    async def _activate(self, link: _Link, replay: _Link | None = None) -> None:
        """Make ``link`` the session new input goes to, with the conversation restored."""
        async with self._send_lock:
            try:
                for event in self._restore_events():
                    await link.ws.send_message(event)
                    self._events_out += 1
                if replay is not None and self._turn_detection == "none":
                    for pcm in replay.uncommitted:
                        await link.ws.send_message(_encode(_Append(audio=pcm)))
                        link.keep_uncommitted(pcm)
                        self._events_out += 1
            except trio_websocket.ConnectionClosed:
                return  # the supervisor sees it end and reconnects
            self._link = link
            self._link_ready.set()

    async def _supervise(self, link: _Link) -> None:
        rotate_at = link.opened_at + self._session_max_s
        while True:
            with trio.move_on_at(rotate_at):
                await link.ended.wait()
            if link.ended.is_set():
                if not link.expired:
                    log.warning("Azure Realtime session %d dropped; reconnecting", link.number)
                self._reconnects += 1
                link = await self._connect()
                await self._activate(link)
                rotate_at = link.opened_at + self._session_max_s
                continue
            # Rotation: a fresh session is opened and configured while this one
            # serves; input moves over at the first quiet moment (no response,
            # speech or tool call in progress), so nothing audible is lost.
            try:
                fresh = await self._connect()
            except ProviderError as exc:
                if exc.fatal:
                    raise
                rotate_at = trio.current_time() + 60.0
                continue
            with trio.move_on_at(link.opened_at + self._session_max_s + self._rotate_grace_s):
                while link.busy and not link.ended.is_set():
                    await link.quiet.wait()
            await self._activate(fresh, replay=link)
            self._rotations += 1
            # A normal close: its responder still voices what it has received.
            assert self._nursery is not None
            link.closing = True
            self._nursery.start_soon(link.ws.aclose)
            link = fresh
            rotate_at = link.opened_at + self._session_max_s

    # ------------------------------------------------------------ sending

    async def _send_current(self, payload: str, *, audio: bytes | None = None) -> _Link:
        """Send on the live session, waiting through a reconnect; returns that session."""
        while True:
            link = self._link
            if link is None:
                await self._link_ready.wait()
                continue
            async with self._send_lock:
                if link is not self._link:
                    continue  # rotated or dropped while waiting for the lock
                try:
                    await link.ws.send_message(payload)
                except trio_websocket.ConnectionClosed:
                    pass
                else:
                    self._events_out += 1
                    if audio is not None and self._turn_detection == "none":
                        link.keep_uncommitted(audio)
                    return link
            await link.ended.wait()

    async def _send_on(self, link: _Link, event: Any) -> bool:
        """Send on one session (its responses, items); False if it has closed."""
        if link.ended.is_set():
            return False
        try:
            await link.ws.send_message(event if isinstance(event, str) else _encode(event))
        except trio_websocket.ConnectionClosed:
            return False
        self._events_out += 1
        return True

    async def _request_response(self, link: _Link) -> None:
        """``response.create`` now, or once the session's current response is done."""
        if link.active is not None or link.create_in_flight is not None:
            link.pending_create = True
            link.update_quiet()
            return
        self._creates += 1
        event_id = f"create_{self._creates}"
        link.create_in_flight = event_id
        link.update_quiet()
        self._expect_events(link)
        if not await self._send_on(link, {"type": "response.create", "event_id": event_id}):
            link.create_in_flight = None

    def _session_update(self, *, first: bool) -> str:
        fields: dict[str, Any] = {}
        if self._conversation is not None:
            fields = dict(self._conversation.session_update_fields())
        instructions = "\n\n".join(
            part
            for part in (
                fields.pop("instructions", None)
                or self._instructions
                or _default_instructions(self.options.language),
                self.options.instructions,
            )
            if part
        )
        tools = fields.get("tools") or []
        transcription: dict[str, Any] = {
            "model": self._transcription_model,
            "language": self.options.language,
        }
        detection: dict[str, Any] | None = None
        if self._turn_detection != "none":
            detection = {
                "type": self._turn_detection,
                "create_response": True,
                "interrupt_response": True,
            }
        voice = self.options.voice if self.options.voice in AZURE_VOICES else self._voice
        session: dict[str, Any]
        if self._preview:
            session = {
                "modalities": ["text"] if self._output == "text" else ["audio", "text"],
                "instructions": instructions,
                "input_audio_format": "pcm16",
                "output_audio_format": "pcm16",
                "input_audio_transcription": transcription,
                "turn_detection": detection,
                "tools": tools,
            }
            if first:
                session["voice"] = voice  # fixed once the session has spoken
        else:
            pcm = {"type": "audio/pcm", "rate": 24000}
            audio: dict[str, Any] = {
                "input": {
                    "format": pcm,
                    "transcription": transcription,
                    "turn_detection": detection,
                }
            }
            if self._output == "audio":
                audio["output"] = {"format": pcm, **({"voice": voice} if first else {})}
            session = {
                "type": "realtime",
                "output_modalities": [self._output],
                "instructions": instructions,
                "audio": audio,
                "tools": tools,
            }
        if tools:
            session["tool_choice"] = fields.get("tool_choice", "auto")
        return _encode({"type": "session.update", "session": session})

    # ------------------------------------------------------------ history

    def _record(self, role: str, text: str) -> None:
        if self._conversation is not None:
            self._conversation.record(role, text)
        else:
            self._history.append((role, text))

    def _restore_events(self) -> list[str]:
        if self._conversation is not None:
            entries = [(e.role, e.text) for e in self._conversation.history]
        else:
            entries = list(self._history)
        events = []
        for role, text in entries[-self._restore_items :] if self._restore_items else []:
            text = text[:_RESTORE_TEXT_MAX]
            if role == "user":
                item = _message("user", "input_text", text)
            elif role == "assistant":
                item = _message("assistant", "text" if self._preview else "output_text", text)
            else:
                item = _message("system", "input_text", f"({role}) {text}")
            events.append(_encode({"type": "conversation.item.create", "item": item}))
        return events

    # ------------------------------------------------------------ receiving

    async def _receive(self, link: _Link) -> None:
        ws = link.ws
        while True:
            with trio.CancelScope(deadline=self._stall_deadline(link)) as link.wait_scope:
                try:
                    raw = await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    return
            if link.wait_scope.cancelled_caught:
                if not link.owed or self._stall_deadline(link) > trio.current_time():
                    continue  # what was owed arrived or was withdrawn meanwhile
                await self._stalled(link)
                return
            link.last_event_at = trio.current_time()
            self._events_in += 1
            try:
                event = _decoder.decode(raw)
            except msgspec.DecodeError:
                raise ProviderError(
                    "upstream_protocol", "Azure OpenAI sent an event this server cannot read"
                ) from None
            await self._dispatch(link, event)

    def _stall_deadline(self, link: _Link) -> float:
        if not link.owed:
            return math.inf
        return link.last_event_at + self._stall_timeout_s

    def _expect_events(self, link: _Link) -> None:
        """Something was asked of Azure: bring the stall deadline in, if it was not set."""
        if link.wait_scope is not None:
            link.last_event_at = max(link.last_event_at, trio.current_time())
            link.wait_scope.deadline = min(link.wait_scope.deadline, self._stall_deadline(link))

    async def _stalled(self, link: _Link) -> None:
        """Azure owes events and has sent none for ``stall_timeout_s``: give up on the session."""
        link.stalled = True
        log.warning(
            "Azure Realtime session %d stalled: nothing for %.0f s during a response",
            link.number,
            self._stall_timeout_s,
        )
        assert self._events is not None
        await self._events.error(
            "upstream_stalled",
            f"the model stopped answering for {self._stall_timeout_s:g} s; reconnecting",
        )

    async def _dispatch(self, link: _Link, event: _ServerEvent) -> None:
        events = self._events
        assert events is not None
        kind = event.type
        if kind in _AUDIO_DELTAS or kind in _TEXT_DELTAS:
            state = link.active
            if state is None or state.cancelled or not event.delta:
                return
            if kind in _AUDIO_DELTAS:
                if state.audio_item is None:
                    state.audio_item = event.item_id
                await link.responses_tx.send((_AUDIO, state, binascii.a2b_base64(event.delta)))
            else:
                state.text.append(event.delta)
                await link.responses_tx.send((_TEXT, state, event.delta))
        elif kind == "input_audio_buffer.speech_started":
            link.in_speech = True
            if link.tools_running:
                link.skip_continuation = True  # the user's new turn gets the answer
            link.update_quiet()
            await events.speech_started()
            await events.barge_in()
        elif kind == "input_audio_buffer.speech_stopped":
            link.in_speech = False
            link.update_quiet()
            await events.speech_stopped()
        elif kind == "input_audio_buffer.committed":
            link.in_speech = False
            link.update_quiet()
        elif kind == "conversation.item.input_audio_transcription.delta":
            item = event.item_id or ""
            if event.delta:
                if item not in link.partials and len(link.partials) >= 8:
                    link.partials.pop(next(iter(link.partials)))
                text = link.partials[item] = link.partials.get(item, "") + event.delta
                await events.transcript(text.strip(), final=False)
        elif kind == "conversation.item.input_audio_transcription.completed":
            link.partials.pop(event.item_id or "", None)
            text = (event.transcript or "").strip()
            if text:
                self._record("user", text)
                await events.transcript(text, final=True)
        elif kind == "response.created":
            await self._on_created(link, event)
        elif kind == "response.done":
            await self._on_done(link, event)
        elif kind == "error":
            await self._on_error(link, event.error or _ServerError())
        elif kind == "conversation.item.input_audio_transcription.failed":
            await events.error("transcription_failed", "the model could not transcribe that turn")

    async def _on_created(self, link: _Link, event: _ServerEvent) -> None:
        azure_id = (event.response.id if event.response else None) or f"resp_{self._responses}"
        state = _ResponseState(azure_id)
        link.active = state
        link.create_in_flight = None
        link.update_quiet()
        self._responses += 1
        await link.responses_tx.send((_CREATED, state, None))

    async def _on_done(self, link: _Link, event: _ServerEvent) -> None:
        response = event.response or _Response()
        state = link.active
        if state is None or (response.id and response.id != state.azure_id):
            return
        link.active = None
        state.done = True
        text = "".join(state.text).strip()
        if text:
            self._record("assistant", text)
        calls = [o for o in response.output or () if o.type == "function_call" and o.name]
        await link.responses_tx.send((_DONE, state, response.status))
        if response.status == "failed" and self._events is not None:
            details = response.status_details
            error = details.error if details is not None else None
            message = (error.message if error else None) or "the model could not answer"
            self._breaker.count_error()
            await self._events.error("upstream_response_failed", self._redact(message))
        if calls and response.status == "completed" and not state.cancelled:
            link.tools_running += 1
            link.skip_continuation = False
            state.tools_scope = trio.CancelScope()
            assert self._nursery is not None
            self._nursery.start_soon(self._run_tools, link, state, calls)
        elif link.pending_create:
            link.pending_create = False
            await self._request_response(link)
        link.update_quiet()

    async def _on_error(self, link: _Link, error: _ServerError) -> None:
        code = error.code or error.type or "error"
        if error.event_id is not None and error.event_id == link.create_in_flight:
            link.create_in_flight = None  # that response.create will not be answered
            if link.pending_create:
                link.pending_create = False
                await self._request_response(link)
            link.update_quiet()
        if code == _SESSION_EXPIRED:
            link.expired = True  # Azure closes it next; the supervisor reconnects
            return
        if code in _BENIGN_ERRORS:
            log.debug("Azure Realtime: %s", code)
            return
        assert self._events is not None
        self._breaker.count_error()
        word = _CODE_CHARS.sub("_", code.lower()).strip("_") or "error"
        await self._events.error(
            f"upstream_{word}", self._redact(error.message or "the model reported an error")
        )

    def _redact(self, message: str) -> str:
        if self._api_key and self._api_key in message:
            message = message.replace(self._api_key, "***")
        return message[:500]

    # ------------------------------------------------------------ responses

    async def _next(self, link: _Link) -> tuple[int, _ResponseState, Any] | None:
        if link.peeked is not None:
            item, link.peeked = link.peeked, None
            return item
        try:
            return await link.responses_rx.receive()
        except trio.EndOfChannel:
            return None

    async def _respond(self, link: _Link) -> None:
        """Voice this session's responses one after another, each in its own scope."""
        events = self._events
        assert events is not None
        with link.responses_rx:
            while (item := await self._next(link)) is not None:
                kind, state, _ = item
                if kind != _CREATED or state.cancelled:
                    continue  # the rest of a response that was cut
                turn = await events.start_response()
                state.turn = turn
                self._recent[turn.response_id] = (link, state)
                while len(self._recent) > _RECENT_RESPONSES:
                    self._recent.popitem(last=False)
                with state.scope:
                    await self._play(link, state, turn)

    async def _play(self, link: _Link, state: _ResponseState, turn: Turn) -> None:
        while True:
            item = await self._next(link)
            if item is None:
                # The session dropped mid-reply: end the turn with what was said.
                if not state.done:
                    if not link.stalled and self._events is not None:
                        await self._events.error(
                            "upstream_interrupted",
                            "the connection to the model dropped mid-reply; reconnecting",
                        )
                    await turn.abort()
                    return
                break
            kind, other, payload = item
            if other is not state:
                if kind == _CREATED:
                    link.peeked = item  # a new response before this one's end
                    break
                continue
            if kind == _TEXT:
                await turn.text_delta(payload)
            elif kind == _AUDIO:
                state.forwarded_bytes += len(payload)
                await turn.audio(payload)
            elif kind == _DONE:
                break
        await turn.finish()

    async def _run_tools(
        self, link: _Link, state: _ResponseState, calls: list[_OutputItem]
    ) -> None:
        assert state.tools_scope is not None
        try:
            with state.tools_scope:
                revision = self._conversation.revision if self._conversation else 0
                for call in calls:
                    self._tool_calls += 1
                    output = await self._tool_output(call.name or "", call.arguments or "")
                    item = {
                        "type": "function_call_output",
                        "call_id": call.call_id or "",
                        "output": output,
                    }
                    if not await self._send_on(
                        link, {"type": "conversation.item.create", "item": item}
                    ):
                        return
                if self._conversation is not None and self._conversation.revision != revision:
                    # The graph moved to another node: its instructions and tools now.
                    await self._send_on(link, self._session_update(first=False))
                if not link.skip_continuation:
                    await self._request_response(link)
        finally:
            link.tools_running -= 1
            link.update_quiet()

    async def _tool_output(self, name: str, arguments: str) -> str:
        if self._conversation is None:
            return _encode({"error": f"no tools are available here (asked for {name!r})"})
        return await self._conversation.handle_tool_call(name, arguments)


def _message(role: str, kind: str, text: str) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def _default_instructions(language: str) -> str:
    if language == "vi":
        return (
            "Bạn là trợ lý giọng nói. Luôn trả lời bằng tiếng Việt tự nhiên, lịch sự và ngắn gọn "
            "(một hai câu mỗi lượt)."
        )
    return f"You are a voice assistant. Answer briefly, in the language {language!r}."


def _attempt_error(exc: BaseException) -> str:
    """A failed attempt in plain words (never the URL or headers, which hold the key)."""
    if isinstance(exc, trio_websocket.ConnectionTimeout):
        return "handshake timed out"
    if isinstance(exc, trio_websocket.ConnectionClosed):
        return "session dropped after opening"  # accepted, then closed at once
    if isinstance(exc, OSError):
        return f"network error ({type(exc).__name__})"
    return type(exc).__name__
