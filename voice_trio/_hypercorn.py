"""Small, version-pinned adaptations of Hypercorn's WebSocket handling.

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
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from importlib.metadata import version as dist_version
from typing import Any

from hypercorn.protocol import ws_stream
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event

__all__ = ["adapt_hypercorn"]

_SUPPORTED = ("0.18.0",)


class _ClosingConnection(Connection):
    def events(self) -> Generator[Event, None, None]:
        for event in super().events():
            if isinstance(event, CloseConnection) and self.state is ConnectionState.OPEN:
                self._state = ConnectionState.REMOTE_CLOSING  # a protocol error we must answer
            yield event


def adapt_hypercorn() -> None:
    """Patch ``ws_stream.Handshake.accept`` once; idempotent."""
    handshake = ws_stream.Handshake
    if getattr(handshake.accept, "_voice_trio", False):
        return
    found = dist_version("hypercorn")
    if found not in _SUPPORTED:
        raise RuntimeError(
            f"voice_trio adapts Hypercorn {', '.join(_SUPPORTED)}'s WebSocket handshake; "
            f"found Hypercorn {found}. Install the pinned version (see pyproject.toml)."
        )
    original = handshake.accept

    def accept(
        self: Any, subprotocol: str | None, additional_headers: Iterable[tuple[bytes, bytes]]
    ) -> tuple[int, list[tuple[bytes, bytes]], Connection]:
        self.extensions = None  # decline every offered extension
        status, headers, _ = original(self, subprotocol, additional_headers)
        return status, headers, _ClosingConnection(ConnectionType.SERVER)

    accept._voice_trio = True  # type: ignore[attr-defined]
    handshake.accept = accept  # type: ignore[method-assign]
