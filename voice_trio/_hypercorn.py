"""Small, version-pinned adaptations of Hypercorn's WebSocket and HTTP/1.1 handling.

1. Hypercorn 0.18 accepts permessage-deflate whenever a client offers it
   (browsers always do) and has no setting to refuse it. Deflating PCM costs
   far more CPU than it saves bytes (DESIGN.md section 1), so the server
   answers every handshake as if no extension had been offered. RFC 6455
   lets a server decline any extension; the client then sends plain frames.
2. When the client breaks the protocol (invalid UTF-8 in a text frame, a bad
   frame), wsproto reports it as a ``CloseConnection`` event while its state
   is still OPEN, and Hypercorn then drops the TCP connection without a close
   frame. RFC 6455 section 8.1 asks for a close with 1007 (or 1002); marking
   the connection as closing makes Hypercorn answer with that close frame.
3. A response's end can be cancelled half-way. Starlette's ``FileResponse``
   (every static file) waits for ``http.disconnect`` beside the sending task
   and cancels that task when it comes; Hypercorn hands the app that message
   from inside the sending task's own last ``send``, before it closes the
   connection (``Connection: close``) or restarts the keep-alive timer. The
   cancel lands there, so the connection stayed open with no timer, forever
   (500 of 500 static-file connections after 60 s; Hypercorn issue #330 is one
   report of it). The rest of that step, after the app has its message, is
   shielded: it only closes the socket or starts the keep-alive timer.
4. Request smuggling: a request with both Content-Length and
   Transfer-Encoding is answered 400 and the connection closed (RFC 9112
   section 6.3), on every request of a keep-alive connection.
5. No HTTP/2 (the server has no use for it, and an idle h2 connection escaped
   every HTTP/1 timer): the prior-knowledge preface (``PRI * HTTP/2.0``) is
   answered 505 and closed, and ``Upgrade: h2c`` is ignored, the request
   answered in HTTP/1.1 (RFC 9110 section 7.8 lets a server ignore Upgrade).
   TLS is not used by ``voice-trio serve``; under plain ``hypercorn`` with TLS,
   set ``alpn_protocols = ["http/1.1"]`` so ALPN never picks h2.
6. Under ``voice-trio serve`` (a :class:`FrontDoorConfig` with
   ``websocket_upgrades`` false), a WebSocket upgrade that is not a
   connection's first request is refused with 400: the server's own WebSocket
   layer answers only first requests, and Hypercorn's must not serve rooms
   behind its back.

7. A TCPServer and its protocol point at each other; the protocol is let go
   when the connection ends, so each connection is freed by reference counting
   instead of waiting for a full garbage collection.

Each refusal is reported through ``FrontDoorConfig.on_refused`` (a reason) when
the config is one; under plain ``hypercorn`` it is only answered.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterable
from importlib.metadata import version as dist_version
from typing import Any

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import Closed
from hypercorn.events import Event as ServerEvent
from hypercorn.protocol import h11 as h11_protocol
from hypercorn.protocol import ws_stream
from hypercorn.trio import tcp_server
from hypercorn.trio.worker_context import WorkerContext as TrioWorkerContext
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event

__all__ = ["FrontDoorConfig", "adapt_hypercorn"]

_SUPPORTED = ("0.18.0",)


class FrontDoorConfig(Config):
    """Hypercorn's config with the two knobs the adaptations below read."""

    def __init__(self) -> None:
        super().__init__()
        #: False under ``voice-trio serve``: only a connection's first request may upgrade.
        self.websocket_upgrades = True
        #: Called with a reason (``cl_te``, ``http2``, ``upgrade_not_first``) for each refusal.
        self.on_refused: Callable[[str], None] | None = None


class _Refused(Exception):
    """A request the server answers with ``status`` and then closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _ClosingConnection(Connection):
    def events(self) -> Generator[Event, None, None]:
        for event in super().events():
            if isinstance(event, CloseConnection) and self.state is ConnectionState.OPEN:
                self._state = ConnectionState.REMOTE_CLOSING  # a protocol error we must answer
            yield event


def adapt_hypercorn() -> None:
    """Patch Hypercorn's handshake and HTTP/1.1 protocol once; idempotent."""
    handshake = ws_stream.Handshake
    if getattr(handshake.accept, "_voice_trio", False):
        return
    found = dist_version("hypercorn")
    if found not in _SUPPORTED:
        raise RuntimeError(
            f"voice_trio adapts Hypercorn {', '.join(_SUPPORTED)}'s WebSocket and HTTP/1.1 "
            f"handling; found Hypercorn {found}. Install the pinned version (see pyproject.toml)."
        )
    _adapt_handshake(handshake)
    _adapt_h11(h11_protocol.H11Protocol)
    _adapt_tcp_server(tcp_server.TCPServer)


def _adapt_tcp_server(server_class: Any) -> None:
    """The protocol's ``send`` is a bound method of the server: each connection, under
    plain ``hypercorn`` too, was freed only by a full garbage collection (issue #10)."""
    original = server_class.run

    async def run(self: Any) -> None:
        try:
            await original(self)
        finally:
            with contextlib.suppress(AttributeError):  # unset if it ended early
                del self.protocol

    server_class.run = run


def _adapt_handshake(handshake: Any) -> None:
    original = handshake.accept

    def accept(
        self: Any, subprotocol: str | None, additional_headers: Iterable[tuple[bytes, bytes]]
    ) -> tuple[int, list[tuple[bytes, bytes]], Connection]:
        self.extensions = None  # decline every offered extension
        status, headers, _ = original(self, subprotocol, additional_headers)
        return status, headers, _ClosingConnection(ConnectionType.SERVER)

    accept._voice_trio = True  # type: ignore[attr-defined]
    handshake.accept = accept


def check_request(request: h11.Request, *, websocket_upgrades: bool) -> None:
    """Raise :class:`_Refused` for a request this server does not serve (points 4 to 6)."""
    names = {name for name, _ in request.headers}  # h11 gives names in lower case
    if b"content-length" in names and b"transfer-encoding" in names:
        raise _Refused(400, "cl_te")
    if request.method == b"PRI" and request.target == b"*":
        raise _Refused(505, "http2")
    if not websocket_upgrades:
        for name, value in request.headers:
            if name == b"upgrade" and b"websocket" in value.lower():
                raise _Refused(400, "upgrade_not_first")


def _adapt_h11(protocol: Any) -> None:
    original_handle = protocol.handle
    original_recycle = protocol._maybe_recycle

    async def _check_protocol(self: Any, event: h11.Request) -> None:
        # Replaces Hypercorn's, which only switched to HTTP/2 (h2c upgrade, preface).
        check_request(event, websocket_upgrades=getattr(self.config, "websocket_upgrades", True))

    async def handle(self: Any, event: ServerEvent) -> None:
        try:
            await original_handle(self, event)
        except _Refused as refused:
            await self._send_error_response(refused.status)
            await self.send(Closed())
            on_refused = getattr(self.config, "on_refused", None)
            if on_refused is not None:
                on_refused(refused.reason)

    async def _maybe_recycle(self: Any) -> None:
        await self._close_stream()  # the app gets http.disconnect, and may cancel us for it
        if not isinstance(self.context, TrioWorkerContext):
            await original_recycle(self)
            return
        with trio.CancelScope(shield=True):  # close, or start the keep-alive timer
            await original_recycle(self)  # (its own _close_stream finds no stream now)

    protocol._check_protocol = _check_protocol
    protocol.handle = handle
    protocol._maybe_recycle = _maybe_recycle
