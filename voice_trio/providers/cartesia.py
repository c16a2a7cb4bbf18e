"""Cartesia streaming TTS as a voice, over trio-websocket (DESIGN.md section 3).

The cartesia package's WebSocket client is asyncio-only, so this speaks the
documented messages itself (../shared/PROVIDERS.md). One Cartesia *context*
per response: the response's text deltas go out with ``continue: true``, cut
at clause or word boundaries, and end with an empty transcript and
``continue: false``; audio comes back as raw ``pcm_s16le`` at 24 kHz. An
interrupt cancels the room's turn scope, and with it the context.

:class:`CartesiaPool` is process-wide (the app runs it once): a few sockets,
each multiplexing a bounded number of contexts from many rooms. A socket's
reader never waits on a room: each context has its own bounded audio queue,
and a context that lets it fill is failed alone. A socket that fails fails its
own contexts only (those rooms get an error); the next response opens a fresh one.

Faults (issue #10): opening a socket asks the pool's
:class:`~.breaker.CircuitBreaker` first (open: ``tts_circuit_open`` at once, no
network); after a failed open the next one waits a jittered exponential
backoff, so rooms asking together do not hammer a Cartesia that refuses them
(Pipecat #871). A socket counts as a success when it delivers audio; one that
closes or errors before that is a failure. A context that is owed audio and
hears nothing for ``stall_timeout_s`` fails alone (``tts_stalled``).
"""

from __future__ import annotations

import binascii
import dataclasses
import logging
import math
import random
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
import trio
import trio_websocket

from ..errors import ProviderError, sole
from ._socket import open_provider_socket, websocket_base
from .base import SessionOptions
from .breaker import Attempt, Backoff, CircuitBreaker, CircuitOpen

__all__ = ["CartesiaPool", "CartesiaPoolStatistics", "CartesiaVoice", "tts_url"]

log = logging.getLogger("voice_trio.cartesia")

# Where a clause ends (cut after it, when whitespace follows).
_CLAUSE_END = re.compile(r"[.,!?;:…\n。](?=\s)")
# Without a clause end, text is sent once this long, cut at the last space.
_WORD_FLUSH_CHARS = 40


def tts_url(base_url: str) -> str:
    """``wss://api.cartesia.ai/tts/websocket`` from a base URL (``http://`` gives ``ws://``)."""
    return websocket_base(base_url, "CARTESIA_BASE_URL") + "/tts/websocket"


class _WordTimestamps(msgspec.Struct):
    words: list[str]
    start: list[float]
    end: list[float]


class _Message(msgspec.Struct):
    """The fields read from any Cartesia response message."""

    type: str
    context_id: str | None = None
    data: str | None = None
    title: str | None = None
    message: str | None = None
    error_code: str | None = None
    #: ``timestamps``: when each word of the context's audio ends (s from its start).
    word_timestamps: _WordTimestamps | None = None


_decoder = msgspec.json.Decoder(_Message)
_encoder = msgspec.json.Encoder()


@dataclasses.dataclass(frozen=True, slots=True)
class CartesiaPoolStatistics:
    sockets: int
    contexts: int
    sockets_opened: int
    sockets_failed: int
    contexts_opened: int
    contexts_failed: int


class _Context:
    """One response's synthesis on a shared socket."""

    __slots__ = (
        "id", "socket", "tx", "rx", "error", "ended", "sent_last", "unanswered_since", "timed",
    )  # fmt: skip

    def __init__(self, context_id: str, socket: _Socket, audio_max: int) -> None:
        self.id = context_id
        self.socket = socket
        self.tx, self.rx = trio.open_memory_channel[bytes](audio_max)
        self.error: str | None = None
        self.ended = False  # Cartesia said done, or the context failed
        self.sent_last = False
        #: When text went out that Cartesia has not answered yet (None: nothing owed).
        self.unanswered_since: float | None = None
        #: Where the words' end times go (the room's turn), if anywhere.
        self.timed: Callable[[Sequence[float]], None] | None = None

    def heard(self) -> None:
        """A message for this context arrived: only the final ``done`` is owed now, if asked."""
        owed = self.sent_last and not self.ended
        self.unanswered_since = trio.current_time() if owed else None

    def push(self, pcm: bytes) -> None:
        try:
            self.tx.send_nowait(pcm)
        except trio.WouldBlock:
            self.fail("the room fell too far behind the voice")
        except trio.ClosedResourceError:
            pass

    def finish(self) -> None:
        self.ended = True
        self.tx.close()

    def fail(self, reason: str) -> None:
        if not self.ended:
            self.error = reason
        self.finish()


class _Socket:
    def __init__(self, ws: trio_websocket.WebSocketConnection, number: int) -> None:
        self.ws = ws
        self.number = number
        self.contexts: dict[str, _Context] = {}
        self.dead = False
        #: Delivered audio: the breaker has been told it works.
        self.proven = False


class CartesiaPool:
    """A few Cartesia sockets shared by every room of the process.

    Run it once in the app's nursery: ``await nursery.start(pool.run)``.
    """

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = "https://api.cartesia.ai",
        version: str = "2025-04-16",
        max_sockets: int = 4,
        contexts_per_socket: int = 64,
        context_audio_max: int = 512,
        connect_timeout_s: float = 10.0,
        acquire_timeout_s: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        breaker: CircuitBreaker | None = None,
        stall_timeout_s: float = 15.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        rng: random.Random | None = None,
    ) -> None:
        self._url = tts_url(base_url)
        self._api_key = api_key
        self._headers = [
            (b"Authorization", f"Bearer {api_key}".encode()),
            (b"Cartesia-Version", version.encode()),
        ]
        self._max_sockets = max_sockets
        self._contexts_per_socket = contexts_per_socket
        self._context_audio_max = context_audio_max
        self._connect_timeout_s = connect_timeout_s
        self._acquire_timeout_s = acquire_timeout_s
        self._ssl_context = ssl_context
        #: One per process (the app's); shows on /metrics as voice_trio_circuit_open.
        self.breaker = breaker or CircuitBreaker("cartesia")
        self.stall_timeout_s = stall_timeout_s
        self._backoff = Backoff(backoff_s, backoff_max_s)
        self._rng = rng
        # Consecutive failed opens, and when the next open may be tried.
        self._open_failures = 0
        self._retry_at = -math.inf
        self._last_failure = ""
        self._nursery: trio.Nursery | None = None
        self._sockets: list[_Socket] = []
        self._opening = 0
        self._capacity = trio.Event()
        self._numbers = 0
        self._contexts = 0
        self._sockets_failed = 0
        self._contexts_failed = 0

    def statistics(self) -> CartesiaPoolStatistics:
        return CartesiaPoolStatistics(
            sockets=len(self._sockets),
            contexts=sum(len(s.contexts) for s in self._sockets),
            sockets_opened=self._numbers,
            sockets_failed=self._sockets_failed,
            contexts_opened=self._contexts,
            contexts_failed=self._contexts_failed,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the sockets (opened on demand) until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    # ------------------------------------------------------------ contexts

    async def open_context(self) -> _Context:
        """A new context on a socket with room for it (opening one if needed)."""
        with trio.move_on_after(self._acquire_timeout_s):
            while True:
                live = [s for s in self._sockets if not s.dead]
                free = [s for s in live if len(s.contexts) < self._contexts_per_socket]
                if free:
                    socket = min(free, key=lambda s: len(s.contexts))
                    self._contexts += 1
                    context = _Context(f"ctx-{self._contexts}", socket, self._context_audio_max)
                    socket.contexts[context.id] = context
                    return context
                if len(live) + self._opening < self._max_sockets:
                    if trio.current_time() < self._retry_at:
                        await trio.sleep_until(self._retry_at)  # backoff after a failed open
                        continue
                    await self._open_socket()
                    continue
                await self._capacity.wait()
        if self._open_failures:
            raise ProviderError(
                "tts_unavailable", f"could not reach Cartesia ({self._last_failure}); retrying"
            )
        raise ProviderError("tts_busy", "every Cartesia connection is full; please try again")

    def context_stalled(self, context: _Context) -> None:
        """Cartesia owes ``context`` audio and sent nothing for ``stall_timeout_s``."""
        self._contexts_failed += 1
        log.warning("Cartesia context %s stalled (%.0f s)", context.id, self.stall_timeout_s)
        self.breaker.record_failure("a context stalled")

    def release(self, context: _Context) -> None:
        if context.socket.contexts.pop(context.id, None) is not None:
            self._capacity.set()
            self._capacity = trio.Event()

    async def _open_socket(self) -> None:
        if self._nursery is None:
            raise RuntimeError("CartesiaPool.run is not running")
        try:
            attempt = self.breaker.admit()
        except CircuitOpen as exc:
            raise ProviderError(
                "tts_circuit_open",
                f"Cartesia is failing ({exc.reason}); the voice is paused, next try in "
                f"{max(1, round(exc.retry_in_s))} s",
            ) from None
        self._opening += 1
        try:
            self._numbers += 1
            socket: _Socket = await self._nursery.start(self._hold, self._numbers, attempt)
        except ProviderError as exc:
            self._open_failed(exc.message)
            # Rooms waiting for a slot try again (after the backoff) or hear why not.
            self._capacity.set()
            self._capacity = trio.Event()
            raise
        finally:
            self._opening -= 1
        self._sockets.append(socket)

    def _open_failed(self, reason: str) -> None:
        self._open_failures += 1
        self._last_failure = reason
        delay = self._backoff.delay(self._open_failures, self._rng)
        self._retry_at = trio.current_time() + delay

    async def send(self, context: _Context, request: dict[str, Any]) -> None:
        if context.socket.dead:
            raise ProviderError("tts_failed", "the connection to Cartesia dropped")
        try:
            await context.socket.ws.send_message(_encoder.encode(request).decode())
        except trio_websocket.ConnectionClosed:
            raise ProviderError("tts_failed", "the connection to Cartesia dropped") from None
        if context.unanswered_since is None and not request.get("cancel"):
            context.unanswered_since = trio.current_time()

    # ------------------------------------------------------------ sockets

    async def _hold(
        self, number: int, attempt: Attempt, *, task_status: trio.TaskStatus[_Socket]
    ) -> None:
        socket: _Socket | None = None
        cancelled = False
        try:
            async with open_provider_socket(
                self._url,
                ssl_context=self._ssl_context,
                headers=self._headers,
                connect_timeout_s=self._connect_timeout_s,
            ) as ws:
                socket = _Socket(ws, number)
                task_status.started(socket)
                await self._read(socket, attempt)
        except trio_websocket.ConnectionRejected as exc:
            if socket is None:
                status = exc.status_code
                attempt.failed(f"HTTP {status}")
                if status in (401, 403):
                    raise ProviderError(
                        "tts_auth",
                        f"Cartesia refused the credentials (HTTP {status}): check CARTESIA_API_KEY",
                        fatal=True,
                    ) from None
                raise ProviderError(
                    "tts_unavailable", f"Cartesia refused the connection (HTTP {status})"
                ) from None
        except (trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, OSError) as exc:
            if socket is None:
                reason = (
                    "handshake timed out"
                    if isinstance(exc, trio_websocket.ConnectionTimeout)
                    else type(exc).__name__
                )
                attempt.failed(reason)
                raise ProviderError(
                    "tts_unavailable", f"could not reach Cartesia ({reason})"
                ) from None
        except trio.Cancelled:
            cancelled = True  # the pool is shutting down: nothing to hold against Cartesia
            raise
        finally:
            if socket is not None:
                self._retire(
                    socket, "the connection to Cartesia dropped", None if cancelled else attempt
                )
            attempt.release()  # only if unsettled: the pool was cancelled

    def _retire(self, socket: _Socket, reason: str, attempt: Attempt | None = None) -> None:
        """A socket is gone: fail its unfinished contexts (only those), free its slots."""
        if socket.dead:
            return
        socket.dead = True
        if attempt is not None:  # None: the pool's own shutdown
            if not socket.proven:
                attempt.failed(reason)
                self._open_failed(reason)
            elif any(not c.ended for c in socket.contexts.values()):
                self.breaker.record_failure(reason)
        if socket in self._sockets:
            self._sockets.remove(socket)
        failed = [c for c in socket.contexts.values() if not c.ended]
        if failed:
            self._sockets_failed += 1
            log.warning("Cartesia socket %d failed with %d contexts", socket.number, len(failed))
        for context in failed:
            self._contexts_failed += 1
            context.fail(reason)
        self._capacity.set()
        self._capacity = trio.Event()

    async def _read(self, socket: _Socket, attempt: Attempt) -> None:
        ws = socket.ws
        while True:
            try:
                raw = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            try:
                message = _decoder.decode(raw)
            except msgspec.DecodeError:
                self._retire(socket, "Cartesia sent a message this server cannot read", attempt)
                return
            context = socket.contexts.get(message.context_id or "")
            if message.type == "error" and context is None:
                reason = self._redact(message.message or message.title or "error")
                if message.context_id:
                    continue  # about a context already cancelled and released
                self._retire(socket, f"Cartesia: {reason}", attempt)
                return
            if context is None:
                continue  # the rest of a cancelled context
            if message.type == "chunk" and message.data:
                if not socket.proven:
                    socket.proven = True
                    self._open_failures = 0
                    attempt.succeeded()
                context.push(binascii.a2b_base64(message.data))
                context.heard()
            elif message.type == "timestamps" and message.word_timestamps is not None:
                context.heard()
                if context.timed is not None:
                    context.timed(message.word_timestamps.end)
            elif message.type == "done":
                context.finish()
            elif message.type == "error":
                self._contexts_failed += 1
                reason = self._redact(message.message or message.title or "error")
                self.breaker.record_failure(f"Cartesia: {reason}")
                context.fail(f"Cartesia: {reason}")

    def _redact(self, message: str) -> str:
        if self._api_key and self._api_key in message:
            message = message.replace(self._api_key, "***")
        return message[:300]


class CartesiaVoice:
    """One room's voice on the shared pool (``providers.Voice``).

    It asks for Cartesia's word timestamps and hands each word's end (seconds into
    the response's audio) to ``speak``'s ``timed``: what a cut reply's listener
    heard is then known word by word (PROVIDERS.md).
    """

    name = "cartesia"
    #: ``speak`` takes ``timed`` (the room passes it only to a voice that says so).
    word_times = True

    def __init__(
        self,
        pool: CartesiaPool,
        options: SessionOptions,
        *,
        voice_id: str,
        model: str = "sonic-3",
        language: str | None = None,
        max_buffer_delay_ms: int | None = None,
    ) -> None:
        self._pool = pool
        self._voice_id = voice_id
        self._model = model
        self._language = language or options.language
        self._max_buffer_delay_ms = max_buffer_delay_ms

    def _request(self, context: _Context, transcript: str, *, more: bool) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model_id": self._model,
            "transcript": transcript,
            "voice": {"mode": "id", "id": self._voice_id},
            "language": self._language,
            "context_id": context.id,
            "continue": more,
            "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000},
            "add_timestamps": True,
        }
        if self._max_buffer_delay_ms is not None:
            request["max_buffer_delay_ms"] = self._max_buffer_delay_ms
        return request

    async def speak(
        self,
        text: trio.MemoryReceiveChannel[str],
        emit: Callable[[bytes], Awaitable[None]],
        *,
        timed: Callable[[Sequence[float]], None] | None = None,
    ) -> None:
        """Speak the text as it comes; ``timed`` gets the end (s) of each word spoken."""
        context: _Context | None = None
        try:
            async with trio.open_nursery() as nursery:
                pending = ""
                async for delta in text:
                    pending += delta
                    ready, pending = _cut(pending)
                    if ready:
                        if context is None:
                            context = await self._open(nursery, emit, timed)
                        await self._pool.send(context, self._request(context, ready, more=True))
                if context is None and not pending.strip():
                    return
                if context is None:
                    context = await self._open(nursery, emit, timed)
                if pending:
                    await self._pool.send(context, self._request(context, pending, more=True))
                await self._pool.send(context, self._request(context, "", more=False))
                context.sent_last = True
        except BaseExceptionGroup as group:
            # One provider failure leaves the voice as itself, not wrapped in a group.
            if (error := sole(group, ProviderError)) is not None:
                raise error from None
            raise
        finally:
            if context is not None:
                if not context.ended and not context.socket.dead:
                    # Interrupted (or failed here): stop Cartesia generating for it.
                    with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                        try:
                            await self._pool.send(
                                context, {"context_id": context.id, "cancel": True}
                            )
                        except ProviderError:
                            pass
                self._pool.release(context)

    async def _open(
        self,
        nursery: trio.Nursery,
        emit: Callable[[bytes], Awaitable[None]],
        timed: Callable[[Sequence[float]], None] | None,
    ) -> _Context:
        context = await self._pool.open_context()
        context.timed = timed
        nursery.start_soon(self._play, context, emit)
        return context

    async def _play(self, context: _Context, emit: Callable[[bytes], Awaitable[None]]) -> None:
        stall_s = self._pool.stall_timeout_s
        async with context.rx:
            while True:
                since = context.unanswered_since
                now = trio.current_time()
                if since is not None and now - since >= stall_s:
                    self._pool.context_stalled(context)
                    raise ProviderError(
                        "tts_stalled", f"the voice stopped answering for {stall_s:g} s"
                    )
                wake = now + stall_s if since is None else since + stall_s
                pcm = b""
                with trio.move_on_at(wake):
                    try:
                        pcm = await context.rx.receive()
                    except trio.EndOfChannel:
                        break
                if pcm:
                    await emit(pcm)  # never under the stall deadline: a slow room is not a stall
        if context.error is not None:
            raise ProviderError("tts_failed", context.error)


def _cut(text: str) -> tuple[str, str]:
    """(what to send now, what to keep): up to the last clause end, else the last word."""
    ends = [m.end() for m in _CLAUSE_END.finditer(text)]
    if ends:
        return text[: ends[-1]], text[ends[-1] :]
    if len(text) >= _WORD_FLUSH_CHARS:
        space = max(text.rfind(" "), text.rfind("\n"))
        if space > 0:
            return text[: space + 1], text[space + 1 :]
    return "", text
