"""Azure OpenAI Realtime as a brain, over trio-websocket (DESIGN.md section 3).

The openai package's own realtime client runs on asyncio, so this speaks the
documented events itself: their shapes and both dialects of ``session.update``
are the pure functions of :mod:`.azure_wire`. One room = one brain = one
Azure session at a time (two, briefly, while a session is rotated).

The brain's parts, one job each:

- :class:`_Sessions` (link supervision): opens sessions, reconnects a dropped
  one with exponential backoff and jitter, and rotates to a fresh session
  before Azure's 30-minute cut, at a quiet moment, carrying the conversation
  over; it sends on the live session;
- :class:`_Link`, one session: its socket and what it is doing now (a response
  asked for or running, speech, tool calls), changed only by its own methods;
- :class:`_Responses` (response bookkeeping): Azure's responses, the room's
  turns that voice them, their tool calls and their interruption;
- :class:`_Setup` (what configures a session): its ``session.update`` and the
  history a fresh session is given;
- :class:`AzureRealtimeBrain` itself: the room's face, and each session's
  receive loop, which maps events to the room or the responses.

Tasks, all in the brain's nursery (itself in the room's upstream nursery):
the supervisor (``run`` itself); per session, the receive loop, which never
waits on the room's voice: it maps VAD and transcript events straight to the
room and hands each response's events (typed messages: :class:`ResponseCreated`,
:class:`TextDelta`, :class:`AudioDelta`, :class:`ResponseDone`) over a bounded
channel to the session's responder, which opens the room's turn and streams that
turn's text and audio in a cancel scope an interrupt cancels; and tool calls,
one task per response that asked for them.

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

import collections
import dataclasses
import itertools
import logging
import math
import random
import re
import ssl
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import msgspec
import trio
import trio_websocket

from ..config import OUTPUT_SAMPLE_RATE
from ..errors import ProviderError, sole
from . import azure_wire as wire
from ._socket import open_provider_socket, websocket_base
from .base import BrainEvents, SessionOptions, Turn
from .breaker import Attempt, Backoff, CircuitBreaker, CircuitOpen

if TYPE_CHECKING:
    from ..agent import Conversation

__all__ = ["AZURE_VOICES", "AzureBrainStatistics", "AzureRealtimeBrain", "realtime_url"]

log = logging.getLogger("voice_trio.azure")

Output = wire.Output
TurnDetection = wire.TurnDetection

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
# User items whose partial transcripts are kept (one is spoken at a time; a few overlap).
_PARTIALS_MAX = 8
_RESTORE_TEXT_MAX = 4000
_CODE_CHARS = re.compile(r"[^a-z0-9_]+")


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


@dataclasses.dataclass(slots=True)
class _Figures:
    """The brain's counters; each part counts its own (``statistics()`` reads them)."""

    sessions_opened: int = 0
    reconnects: int = 0
    rotations: int = 0
    events_in: int = 0
    events_out: int = 0
    responses: int = 0
    tool_calls: int = 0


class _ResponseState:
    """One Azure response as the brain follows it: its words, audio and interruption."""

    __slots__ = (
        "azure_id",
        "_text",
        "done",
        "cancelled",
        "audio_item",
        "text_item",
        "forwarded_bytes",
        "scope",
        "_tools_scope",
    )

    def __init__(self, azure_id: str) -> None:
        self.azure_id = azure_id
        self._text: list[str] = []
        self.done = False
        self.cancelled = False
        #: The assistant item whose audio the room plays (for truncation).
        self.audio_item: str | None = None
        #: The assistant item of its text (text out: replaced by the heard words).
        self.text_item: str | None = None
        #: Audio handed to the room's turn, in bytes.
        self.forwarded_bytes = 0
        #: Where the responder streams this response into the room's turn; an
        #: interrupt cancels it. Not ``turn.scope``: with a voice, the room runs
        #: the voice in that scope, and a scope is entered once.
        self.scope = trio.CancelScope()
        self._tools_scope: trio.CancelScope | None = None

    def add_text(self, delta: str) -> None:
        self._text.append(delta)

    def said(self) -> str:
        """The words of the response so far."""
        return "".join(self._text).strip()

    def add_audio(self, item_id: str | None) -> None:
        if self.audio_item is None:
            self.audio_item = item_id

    def forwarded(self, n_bytes: int) -> None:
        self.forwarded_bytes += n_bytes

    def finish(self) -> None:
        self.done = True

    def start_tools(self) -> trio.CancelScope:
        """The scope its tool calls run in (an interrupt cancels it too)."""
        self._tools_scope = trio.CancelScope()
        return self._tools_scope

    def interrupt(self) -> bool:
        """The user barged in: stop voicing it and its tools. True if Azure is still
        producing it (it is to be cancelled there too)."""
        self.scope.cancel()
        if self._tools_scope is not None:
            self._tools_scope.cancel()
        if self.done or self.cancelled:
            return False
        self.cancelled = True
        return True


# What the receive loop hands a session's responder, in order.


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseCreated:
    """Azure began a response: the responder opens the room's turn for it."""

    state: _ResponseState


@dataclasses.dataclass(frozen=True, slots=True)
class TextDelta:
    state: _ResponseState
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class AudioDelta:
    state: _ResponseState
    pcm: bytes  # 24 kHz PCM16


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseDone:
    state: _ResponseState


_ResponseMessage = ResponseCreated | TextDelta | AudioDelta | ResponseDone


class _Link:
    """One Azure session: its socket and what it is doing now.

    Its state changes only through its methods. It is *busy* while a
    ``response.create`` is out or waiting, a response runs, the user speaks or
    tool calls run; :meth:`wait_quiet` waits for the end of that (a rotation's
    quiet moment), and each method that changes one of them keeps the quiet
    event true to it. It is *owed* events while a ``response.create`` is out or
    a response runs: :meth:`receive` gives up on a session that is owed events
    and silent for ``stall_timeout_s``.
    """

    def __init__(
        self,
        ws: trio_websocket.WebSocketConnection,
        number: int,
        *,
        stall_timeout_s: float,
        creates: Iterator[int],
        figures: _Figures,
    ) -> None:
        self.ws = ws
        self.number = number
        self.opened_at = trio.current_time()
        self._stall_timeout_s = stall_timeout_s
        self._creates = creates  # the brain's, so that event ids do not repeat
        self._figures = figures
        self._ended = trio.Event()
        self._quiet = trio.Event()
        self._quiet.set()
        self._expired = False
        # This brain closes it (rotation): its end says nothing bad about Azure.
        self._closing = False
        # It stayed up long enough to count as a success.
        self._stable = False
        # Given up on after ``stall_timeout_s`` of silence while owed events.
        self._stalled = False
        self._last_event_at = self.opened_at
        # Around each wait for an event; its deadline is the stall deadline.
        self._wait_scope: trio.CancelScope | None = None
        self._active: _ResponseState | None = None
        self._create_in_flight: str | None = None  # event_id of our response.create
        self._pending_create = False
        self._in_speech = False
        self._tools_running = 0
        # The user spoke while tools ran: their new turn gets the answer.
        self._skip_continuation = False
        self._partials: dict[str, str] = {}
        self._uncommitted: collections.deque[bytes] = collections.deque()
        self._uncommitted_bytes = 0
        # Input audio appended on this session, and when the last of it went (the
        # clock): where the server VAD says speech ended is mapped back to the clock.
        self._appended_bytes = 0
        self._appended_at: float | None = None
        self._tx, self._rx = trio.open_memory_channel[_ResponseMessage](_RESPONSE_EVENTS_MAX)
        self._peeked: _ResponseMessage | None = None

    # ------------------------------------------------------------ state

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    @property
    def expired(self) -> bool:
        """Azure said it expired the session (it closes it next)."""
        return self._expired

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def stable(self) -> bool:
        return self._stable

    @property
    def stalled(self) -> bool:
        return self._stalled

    @property
    def active(self) -> _ResponseState | None:
        """The response Azure is producing now."""
        return self._active

    @property
    def owed(self) -> bool:
        """Azure owes this session events: a response.create is out or a response runs."""
        return self._active is not None or self._create_in_flight is not None

    @property
    def busy(self) -> bool:
        return bool(self.owed or self._pending_create or self._in_speech or self._tools_running)

    @property
    def continues_after_tools(self) -> bool:
        """The model answers with its tools' outputs (the user has not spoken meanwhile)."""
        return not self._skip_continuation

    @property
    def uncommitted(self) -> tuple[bytes, ...]:
        """The user audio sent since the last commit (for replay into the next session)."""
        return tuple(self._uncommitted)

    def _update_quiet(self) -> None:
        if self.busy and not self._ended.is_set():
            if self._quiet.is_set():
                self._quiet = trio.Event()
        else:
            self._quiet.set()

    async def wait_quiet(self) -> None:
        while self.busy and not self._ended.is_set():
            await self._quiet.wait()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    def mark_stable(self) -> None:
        self._stable = True

    def expire(self) -> None:
        self._expired = True  # Azure closes it next; the supervisor reconnects

    async def close(self) -> None:
        """A normal close (rotation): its responder still voices what it has received."""
        self._closing = True
        await self.ws.aclose()

    def end(self) -> _ResponseState | None:
        """The session is over; the response it cut short, if any."""
        self._tx.close()  # the responder voices what it already has, then stops
        state, self._active = self._active, None
        self._ended.set()
        self._quiet.set()
        return state if state is not None and not state.done else None

    # ------------------------------------------------------------ events

    async def receive(self) -> str | bytes | None:
        """The next event; None once the socket has closed, or Azure has stalled
        (:attr:`stalled`: it owed events and was silent for ``stall_timeout_s``)."""
        while True:
            with trio.CancelScope(deadline=self._stall_deadline()) as scope:
                self._wait_scope = scope
                try:
                    raw = await self.ws.get_message()
                except trio_websocket.ConnectionClosed:
                    return None
            if scope.cancelled_caught:
                if not self.owed or self._stall_deadline() > trio.current_time():
                    continue  # what was owed arrived or was withdrawn meanwhile
                self._stalled = True
                return None
            self._last_event_at = trio.current_time()
            return raw

    def _stall_deadline(self) -> float:
        if not self.owed:
            return math.inf
        return self._last_event_at + self._stall_timeout_s

    def _expect_events(self) -> None:
        """Something was asked of Azure: bring the stall deadline in, if it was not set."""
        if self._wait_scope is not None:
            self._last_event_at = max(self._last_event_at, trio.current_time())
            self._wait_scope.deadline = min(self._wait_scope.deadline, self._stall_deadline())

    def speech_started(self) -> None:
        self._in_speech = True
        if self._tools_running:
            self._skip_continuation = True
        self._update_quiet()

    def speech_ended(self) -> None:
        self._in_speech = False
        self._update_quiet()

    def transcript_delta(self, item_id: str, delta: str) -> str:
        """The partial transcript of a user item so far, with ``delta``."""
        if item_id not in self._partials and len(self._partials) >= _PARTIALS_MAX:
            self._partials.pop(next(iter(self._partials)))
        text = self._partials[item_id] = self._partials.get(item_id, "") + delta
        return text

    def transcript_completed(self, item_id: str) -> None:
        self._partials.pop(item_id, None)

    # ------------------------------------------------------------ responses

    def request_response(self) -> str | None:
        """The event_id of a ``response.create`` to send now, or None: one goes out
        once the current response is done."""
        if self.owed:
            self._pending_create = True
            self._update_quiet()
            return None
        event_id = f"create_{next(self._creates)}"
        self._create_in_flight = event_id
        self._update_quiet()
        self._expect_events()
        return event_id

    def create_not_sent(self) -> None:
        self._create_in_flight = None
        self._update_quiet()

    def create_failed(self, event_id: str | None) -> str | None:
        """Azure refused a request (an ``error`` naming ``event_id``): if it was our
        ``response.create``, the event_id of the waiting one to send now."""
        if event_id is None or event_id != self._create_in_flight:
            return None
        self._create_in_flight = None  # that response.create will not be answered
        return self._next_create()

    def response_created(self, state: _ResponseState) -> None:
        self._active = state
        self._create_in_flight = None
        self._update_quiet()

    def response_done(self, *, tools: bool) -> str | None:
        """The active response is done; ``tools``: its tool calls run now (see
        :meth:`tools_done`). The event_id of a waiting ``response.create`` to send now."""
        self._active = None
        if tools:
            self._tools_running += 1
            self._skip_continuation = False
            self._update_quiet()
            return None
        return self._next_create()

    def tools_done(self) -> None:
        self._tools_running -= 1
        self._update_quiet()

    def _next_create(self) -> str | None:
        if not self._pending_create:
            self._update_quiet()
            return None
        self._pending_create = False
        return self.request_response()

    async def deliver(self, message: _ResponseMessage) -> None:
        """Hand a response's event to the session's responder."""
        await self._tx.send(message)

    def reader(self) -> trio.MemoryReceiveChannel[_ResponseMessage]:
        """The responder's end, to close with ``with`` (read it with :meth:`next_message`)."""
        return self._rx

    async def next_message(self) -> _ResponseMessage | None:
        """The responder's next message; None once the session has ended and all are read."""
        if self._peeked is not None:
            message, self._peeked = self._peeked, None
            return message
        try:
            return await self._rx.receive()
        except trio.EndOfChannel:
            return None

    def put_back(self, message: _ResponseMessage) -> None:
        """The responder read one message too far (the next response's start)."""
        self._peeked = message

    # ------------------------------------------------------------ sending

    async def send(self, frame: str) -> bool:
        """Send on this session; False if it has closed."""
        if self._ended.is_set():
            return False
        try:
            await self.ws.send_message(frame)
        except trio_websocket.ConnectionClosed:
            return False
        self._figures.events_out += 1
        return True

    def appended(self, size: int) -> None:
        """``size`` bytes of input audio went out on this session, now."""
        self._appended_bytes += size
        self._appended_at = trio.current_time()

    def speech_end_at(self, audio_end_ms: int | None) -> float | None:
        """When (the clock) the audio at ``audio_end_ms`` of this session's input went out:
        the end of the user's speech, for a reply's stages (None: not known)."""
        if audio_end_ms is None or self._appended_at is None:
            return None
        behind_ms = self._appended_bytes / _BYTES_PER_MS - audio_end_ms
        return None if behind_ms < 0 else self._appended_at - behind_ms / 1000

    def keep_uncommitted(self, pcm: bytes) -> None:
        self._uncommitted.append(pcm)
        self._uncommitted_bytes += len(pcm)
        while self._uncommitted_bytes > _REPLAY_MAX_BYTES:
            self._uncommitted_bytes -= len(self._uncommitted.popleft())

    def clear_uncommitted(self) -> None:
        self._uncommitted.clear()
        self._uncommitted_bytes = 0


class _Retry(Exception):
    """A connection attempt failed in a way worth another try."""


# -------------------------------------------------------------------- setup


class _Setup:
    """What configures a session: its ``session.update``, and the history a fresh one is given.

    Without an agent conversation, it keeps the history itself.
    """

    def __init__(
        self,
        options: SessionOptions,
        *,
        dialect: wire.Dialect,
        conversation: Conversation | None,
        output: Output,
        voice: str,
        instructions: str | None,
        transcription_model: str,
        turn_detection: TurnDetection,
        restore_items: int,
    ) -> None:
        self.dialect: wire.Dialect = dialect
        self.conversation = conversation
        self._options = options
        self._output: Output = output
        self._voice = voice
        self._instructions = instructions
        self._transcription_model = transcription_model
        self._turn_detection: TurnDetection = turn_detection
        self._restore_items = restore_items
        self._history: collections.deque[tuple[str, str]] = collections.deque(
            maxlen=max(1, restore_items)
        )

    @property
    def options(self) -> SessionOptions:
        return self._options

    def configure(self, options: SessionOptions) -> None:
        self._options = options

    @property
    def keeps_uncommitted(self) -> bool:
        """Audio is kept for replay: the client commits its turns (no server VAD)."""
        return self._turn_detection == "none"

    def client_takes_turns(self) -> bool:
        """The client committed a turn: server VAD would take them twice, so it goes.
        True if that changes the session (a ``session.update`` is due)."""
        if self._turn_detection == "none":
            return False
        self._turn_detection = "none"
        return True

    def session_update(self, *, first: bool) -> str:
        fields = dict(self.conversation.session_update_fields()) if self.conversation else {}
        options = self._options
        instructions = "\n\n".join(
            part
            for part in (
                fields.pop("instructions", None)
                or self._instructions
                or _default_instructions(options.language),
                options.instructions,
            )
            if part
        )
        voice = options.voice if options.voice in AZURE_VOICES else self._voice
        config = wire.SessionConfig(
            output=self._output,
            instructions=instructions,
            language=options.language,
            transcription_model=self._transcription_model,
            turn_detection=self._turn_detection,
            voice=voice if first else None,  # fixed once the session has spoken
            tools=fields.get("tools") or [],
            tool_choice=fields.get("tool_choice", "auto"),
            transcription_prompt=(
                ", ".join(self.conversation.hints()) if self.conversation else None
            ),
        )
        return wire.session_update(self.dialect, config)

    def record(self, role: str, text: str) -> None:
        if self.conversation is not None:
            self.conversation.record(role, text)
        else:
            self._history.append((role, text))

    def restore_events(self) -> list[str]:
        if not self._restore_items:
            return []
        if self.conversation is not None:
            entries = [(e.role, e.text) for e in self.conversation.history]
        else:
            entries = list(self._history)
        return [
            wire.history_item(self.dialect, role, text[:_RESTORE_TEXT_MAX])
            for role, text in entries[-self._restore_items :]
        ]


# -------------------------------------------------------------------- sessions


class _Sessions:
    """The brain's Azure sessions: opened through the breaker, held, replaced, sent on.

    ``respond`` is a session's responder and ``receive`` its receive loop; both
    run for as long as the session does.
    """

    def __init__(
        self,
        *,
        url: str,
        headers: list[tuple[bytes, bytes]],
        ssl_context: ssl.SSLContext | None,
        connect_timeout_s: float,
        reconnect_tries: int,
        backoff: Backoff,
        rng: random.Random | None,
        breaker: CircuitBreaker,
        stall_timeout_s: float,
        stable_after_s: float,
        session_max_s: float,
        rotate_grace_s: float,
        setup: _Setup,
        figures: _Figures,
        respond: Callable[[_Link], Awaitable[None]],
        receive: Callable[[_Link], Awaitable[None]],
    ) -> None:
        self._url = url
        self._headers = headers
        self._ssl_context = ssl_context
        self._connect_timeout_s = connect_timeout_s
        self._reconnect_tries = reconnect_tries
        self._backoff = backoff
        self._rng = rng
        self._breaker = breaker
        self._stall_timeout_s = stall_timeout_s
        self._stable_after_s = stable_after_s
        self._session_max_s = session_max_s
        self._rotate_grace_s = rotate_grace_s
        self._setup = setup
        self._figures = figures
        self._respond = respond
        self._receive = receive
        # Consecutive failed sessions (refused, timed out, dropped before stable).
        self._failures = 0
        self._last_failure = ""
        self._creates = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._link: _Link | None = None
        self._link_ready = trio.Event()
        self._send_lock = trio.Lock()

    @property
    def live(self) -> bool:
        return self._link is not None

    async def run(self, nursery: trio.Nursery, *, task_status: trio.TaskStatus[None]) -> None:
        """Open the first session, then keep one open until cancelled (in ``nursery``)."""
        self._nursery = nursery
        try:
            link = await self._connect()
            await self._activate(link)
            task_status.started()
            await self._supervise(link)
        finally:
            self._nursery = None
            self._link = None

    async def send_current(self, frame: str, *, audio: bytes | None = None) -> _Link:
        """Send on the live session, waiting through a reconnect; returns that session."""
        while True:
            link = self._link
            if link is None:
                await self._link_ready.wait()
                continue
            async with self._send_lock:
                if link is not self._link:
                    continue  # rotated or dropped while waiting for the lock
                if await link.send(frame):
                    if audio is not None:
                        link.appended(len(audio))
                        if self._setup.keeps_uncommitted:
                            link.keep_uncommitted(audio)
                    return link
            await link.wait_ended()

    async def _supervise(self, link: _Link) -> None:
        rotate_at = link.opened_at + self._session_max_s
        while True:
            with trio.move_on_at(rotate_at):
                await link.wait_ended()
            if link.ended:
                if not link.expired:
                    log.warning("Azure Realtime session %d dropped; reconnecting", link.number)
                self._figures.reconnects += 1
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
                await link.wait_quiet()
            await self._activate(fresh, replay=link)
            self._figures.rotations += 1
            assert self._nursery is not None
            self._nursery.start_soon(link.close)
            link = fresh
            rotate_at = link.opened_at + self._session_max_s

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
            number = self._figures.sessions_opened + 1
            try:
                link: _Link = await self._nursery.start(self._hold, number, attempt)
            except _Retry as exc:
                log.info("Azure Realtime connection attempt failed: %s", exc)
                continue
            self._figures.sessions_opened += 1
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
                    link = _Link(
                        ws,
                        number,
                        stall_timeout_s=self._stall_timeout_s,
                        creates=self._creates,
                        figures=self._figures,
                    )
                    await ws.send_message(self._setup.session_update(first=True))
                    self._figures.events_out += 1
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
                            self._end(link)
            except trio_websocket.ConnectionRejected as exc:
                if link is not None:
                    raise
                self._session_failed(attempt, f"HTTP {exc.status_code}")
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
            link.mark_stable()
            self._failures = 0
            attempt.succeeded()

    def _end(self, link: _Link) -> None:
        cut = link.end()
        if cut is not None and (text := cut.said()):
            # Dropped mid-reply: what was said so far is part of the conversation.
            self._setup.record("assistant", text)
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
            for frame in self._setup.restore_events():
                if not await link.send(frame):
                    return  # the supervisor sees it end and reconnects
            if replay is not None and self._setup.keeps_uncommitted:
                for pcm in replay.uncommitted:
                    if not await link.send(wire.append(pcm)):
                        return
                    link.appended(len(pcm))
                    link.keep_uncommitted(pcm)
            self._link = link
            self._link_ready.set()


# -------------------------------------------------------------------- responses


class _Responses:
    """Azure's responses on each session, and the room's turns that voice them.

    The receive loop reports each response's events here (:meth:`created`,
    :meth:`text`, :meth:`audio`, :meth:`done`); they go to the session's
    responder (:meth:`respond`), which voices one response after another, each
    in its own cancel scope. Tool calls run in the brain's nursery; an
    interrupt (:meth:`cancel`) cuts a response and its tools.
    """

    def __init__(
        self,
        setup: _Setup,
        figures: _Figures,
        *,
        breaker: CircuitBreaker,
        redact: Callable[[str], str],
        output: Output,
    ) -> None:
        self._setup = setup
        self._figures = figures
        self._breaker = breaker
        self._redact = redact
        self._output: Output = output
        self._events: BrainEvents | None = None
        self._nursery: trio.Nursery | None = None
        self._recent: collections.OrderedDict[str, tuple[_Link, _ResponseState]] = (
            collections.OrderedDict()
        )

    def start(self, events: BrainEvents, nursery: trio.Nursery) -> None:
        """The brain runs: the room to voice responses in, the nursery for tool calls."""
        self._events = events
        self._nursery = nursery

    # ------------------------------------------------------------ requests

    async def request(self, link: _Link) -> None:
        """``response.create`` now, or once the session's current response is done."""
        await self._create(link, link.request_response())

    async def create_failed(self, link: _Link, event_id: str | None) -> None:
        await self._create(link, link.create_failed(event_id))

    async def _create(self, link: _Link, event_id: str | None) -> None:
        if event_id is not None and not await link.send(wire.response_create(event_id)):
            link.create_not_sent()

    async def cancel(self, response_id: str, played_ms: int) -> None:
        found = self._recent.get(response_id)
        if found is None:
            return
        link, state = found
        running = state.interrupt()
        if link.ended:
            return
        if running:
            await link.send(wire.response_cancel(state.azure_id))
        if self._output == "audio" and state.audio_item is not None:
            heard = max(0, min(played_ms, state.forwarded_bytes // _BYTES_PER_MS))
            await link.send(wire.truncate(state.audio_item, heard))
        elif self._output == "text" and state.text_item is not None:
            # Text cannot be truncated: the cut item goes, the heard words take its place.
            text_heard = getattr(self._events, "text_heard", None)
            if text_heard is None:
                return  # a room that cannot say what was heard: the model keeps it all
            heard_text = str(text_heard(played_ms))
            await link.send(wire.item_delete(state.text_item))
            if heard_text:
                await link.send(wire.heard_item(self._setup.dialect, heard_text))

    # ------------------------------------------------------------ events

    async def created(self, link: _Link, response: wire.Response | None) -> None:
        azure_id = (response.id if response else None) or f"resp_{self._figures.responses}"
        state = _ResponseState(azure_id)
        link.response_created(state)
        self._figures.responses += 1
        await link.deliver(ResponseCreated(state))

    async def text(self, link: _Link, delta: str | None, item_id: str | None = None) -> None:
        state = link.active
        if state is None or state.cancelled or not delta:
            return
        if state.text_item is None:
            state.text_item = item_id
        state.add_text(delta)
        await link.deliver(TextDelta(state, delta))

    async def audio(self, link: _Link, pcm: bytes | None, item_id: str | None) -> None:
        state = link.active
        if state is None or state.cancelled or not pcm:
            return
        state.add_audio(item_id)
        await link.deliver(AudioDelta(state, pcm))

    async def done(self, link: _Link, response: wire.Response | None) -> None:
        response = response or wire.Response()
        state = link.active
        if state is None or (response.id and response.id != state.azure_id):
            return
        calls = response.function_calls
        tools = bool(calls) and response.status == "completed" and not state.cancelled
        create = link.response_done(tools=tools)
        tools_scope = state.start_tools() if tools else None
        state.finish()
        if text := state.said():
            self._setup.record("assistant", text)
        await link.deliver(ResponseDone(state))
        if response.status == "failed" and self._events is not None:
            message = response.error_message or "the model could not answer"
            self._breaker.count_error()
            await self._events.error("upstream_response_failed", self._redact(message))
        if tools_scope is not None:
            assert self._nursery is not None
            self._nursery.start_soon(self._run_tools, link, tools_scope, calls)
        else:
            await self._create(link, create)

    # ------------------------------------------------------------ voicing

    async def respond(self, link: _Link) -> None:
        """Voice this session's responses one after another, each in its own scope."""
        events = self._events
        assert events is not None
        with link.reader():
            while (message := await link.next_message()) is not None:
                match message:
                    case ResponseCreated(state=state) if not state.cancelled:
                        turn = await events.start_response()
                        self._recent[turn.response_id] = (link, state)
                        while len(self._recent) > _RECENT_RESPONSES:
                            self._recent.popitem(last=False)
                        with state.scope:
                            await self._play(link, state, turn)
                    case _:
                        pass  # the rest of a response that was cut

    async def _play(self, link: _Link, state: _ResponseState, turn: Turn) -> None:
        while True:
            message = await link.next_message()
            if message is None:
                if state.done:
                    break
                # The session dropped mid-reply: end the turn with what was said.
                if not link.stalled and self._events is not None:
                    await self._events.error(
                        "upstream_interrupted",
                        "the connection to the model dropped mid-reply; reconnecting",
                    )
                await turn.abort()
                return
            if message.state is not state:
                if isinstance(message, ResponseCreated):
                    link.put_back(message)  # a new response before this one's end
                    break
                continue  # the rest of a response that was cut
            match message:
                case TextDelta(text=text):
                    await turn.text_delta(text)
                case AudioDelta(pcm=pcm):
                    state.forwarded(len(pcm))
                    await turn.audio(pcm)
                case ResponseDone():
                    break
        await turn.finish()

    async def _run_tools(
        self, link: _Link, scope: trio.CancelScope, calls: list[wire.OutputItem]
    ) -> None:
        conversation = self._setup.conversation
        try:
            with scope:
                revision = conversation.revision if conversation else 0
                for call in calls:
                    self._figures.tool_calls += 1
                    output = await self._tool_output(call.name or "", call.arguments or "")
                    if not await link.send(wire.function_call_output(call.call_id or "", output)):
                        return
                if conversation is not None and conversation.revision != revision:
                    # The graph moved to another node: its instructions and tools now.
                    await link.send(self._setup.session_update(first=False))
                if link.continues_after_tools:
                    await self.request(link)
        finally:
            link.tools_done()

    async def _tool_output(self, name: str, arguments: str) -> str:
        conversation = self._setup.conversation
        if conversation is None:
            error = {"error": f"no tools are available here (asked for {name!r})"}
            return msgspec.json.encode(error).decode()
        return await conversation.handle_tool_call(name, arguments)


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
        dialect: wire.Dialect = "preview" if api_version else "ga"
        headers = [(b"api-key", api_key.encode())]
        if dialect == "preview":
            headers.append((b"OpenAI-Beta", b"realtime=v1"))
        self._api_key = api_key
        self._stall_timeout_s = stall_timeout_s
        #: Shared by every room of the process; None: this brain's own (tests, scripts).
        self._breaker = breaker or CircuitBreaker("azure")
        self._figures = _Figures()
        self._setup = _Setup(
            options,
            dialect=dialect,
            conversation=conversation,
            output=output,
            voice=voice,
            instructions=instructions,
            transcription_model=transcription_model,
            turn_detection=turn_detection,
            restore_items=restore_items,
        )
        self._responses = _Responses(
            self._setup, self._figures, breaker=self._breaker, redact=self._redact, output=output
        )
        self._sessions = _Sessions(
            url=realtime_url(endpoint, deployment, api_version),
            headers=headers,
            ssl_context=ssl_context,
            connect_timeout_s=connect_timeout_s,
            reconnect_tries=reconnect_tries,
            backoff=Backoff(backoff_s, backoff_max_s),
            rng=rng,
            breaker=self._breaker,
            stall_timeout_s=stall_timeout_s,
            stable_after_s=stable_after_s,
            session_max_s=session_max_s,
            rotate_grace_s=rotate_grace_s,
            setup=self._setup,
            figures=self._figures,
            respond=self._responses.respond,
            receive=self._receive,
        )
        self._events: BrainEvents | None = None
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------ public

    @property
    def options(self) -> SessionOptions:
        return self._setup.options

    def statistics(self) -> AzureBrainStatistics:
        figures = self._figures
        return AzureBrainStatistics(
            sessions_opened=figures.sessions_opened,
            reconnects=figures.reconnects,
            rotations=figures.rotations,
            events_in=figures.events_in,
            events_out=figures.events_out,
            responses=figures.responses,
            tool_calls=figures.tool_calls,
            live=self._sessions.live,
        )

    async def run(
        self, events: BrainEvents, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._events = events
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._responses.start(events, nursery)
                await self._sessions.run(nursery, task_status=task_status)
        except BaseExceptionGroup as group:
            # One provider failure leaves the brain as itself, not wrapped in a group.
            if (error := sole(group, ProviderError)) is not None:
                raise error from None
            raise
        finally:
            self._nursery = None

    async def send_audio(self, pcm: bytes, *, rate: int = OUTPUT_SAMPLE_RATE) -> None:
        await self._sessions.send_current(wire.append(pcm), audio=pcm)

    async def commit_audio(self) -> None:
        if self._setup.client_takes_turns():
            await self._sessions.send_current(self._setup.session_update(first=False))
        link = await self._sessions.send_current(wire.COMMIT)
        link.clear_uncommitted()
        await self._responses.request(link)

    async def send_text(self, text: str) -> None:
        link = await self._sessions.send_current(wire.user_text(text))
        self._setup.record("user", text)  # after the send: a restore in between would repeat it
        await self._responses.request(link)

    async def cancel_response(self, response_id: str, *, played_ms: int) -> None:
        await self._responses.cancel(response_id, played_ms)

    def configure(self, options: SessionOptions) -> None:
        self._setup.configure(options)
        if self._nursery is not None and self._sessions.live:
            update = self._setup.session_update(first=False)
            self._nursery.start_soon(self._sessions.send_current, update)

    # ------------------------------------------------------------ receiving

    async def _receive(self, link: _Link) -> None:
        """One session's receive loop, until it closes or stalls."""
        while (raw := await link.receive()) is not None:
            self._figures.events_in += 1
            await self._dispatch(link, wire.decode_server_event(raw))
        if link.stalled:
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

    async def _dispatch(self, link: _Link, event: wire.ServerEvent | wire.IgnoredEvent) -> None:
        events = self._events
        assert events is not None
        match event:
            case wire.AudioDeltaEvent(delta=pcm, item_id=item_id):
                await self._responses.audio(link, pcm, item_id)
            case wire.TextDeltaEvent(delta=delta, item_id=item_id):
                await self._responses.text(link, delta, item_id)
            case wire.SpeechStartedEvent():
                link.speech_started()
                await events.speech_started()
                await events.barge_in()
            case wire.SpeechStoppedEvent(audio_end_ms=audio_end_ms):
                link.speech_ended()
                await events.speech_stopped()
                turn_ended = getattr(events, "turn_ended", None)
                ended = link.speech_end_at(audio_end_ms)
                if turn_ended is not None and ended is not None:
                    turn_ended(speech_ended_at=ended)  # the server VAD ended the turn now
            case wire.CommittedEvent():
                link.speech_ended()
            case wire.TranscriptionDeltaEvent(item_id=item_id, delta=delta) if delta:
                text = link.transcript_delta(item_id or "", delta)
                await events.transcript(text.strip(), final=False)
            case wire.TranscriptionCompletedEvent(item_id=item_id, transcript=transcript):
                link.transcript_completed(item_id or "")
                if text := (transcript or "").strip():
                    self._setup.record("user", text)
                    await events.transcript(text, final=True)
            case wire.ResponseCreatedEvent(response=response):
                await self._responses.created(link, response)
            case wire.ResponseDoneEvent(response=response):
                await self._responses.done(link, response)
            case wire.ErrorEvent(error=error):
                await self._on_error(link, error or wire.ErrorDetails())
            case wire.TranscriptionFailedEvent():
                await events.error(
                    "transcription_failed", "the model could not transcribe that turn"
                )
            case _:
                pass  # the events this brain does not read

    async def _on_error(self, link: _Link, error: wire.ErrorDetails) -> None:
        code = error.code or error.type or "error"
        await self._responses.create_failed(link, error.event_id)
        if code == _SESSION_EXPIRED:
            link.expire()
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
