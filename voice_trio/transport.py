"""What a room needs of its connection, and the ASGI form of it.

A room talks to a :class:`Transport`: whole messages in, whole messages out,
a close. ``voice-trio serve`` gives it a :class:`~voice_trio.websocket.WebSocket`
straight on the socket; under any ASGI server (``hypercorn voice_trio.app:app``)
it gets an :class:`ASGITransport` over the ASGI ``send``/``receive`` callables.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import trio

__all__ = ["Transport", "ASGITransport", "PlaybackReport"]

ASGISend = Callable[[dict[str, Any]], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]


class Transport(Protocol):
    async def receive(self) -> bytes | str | None:
        """The next message (``bytes`` binary, ``str`` text); None once the client is gone."""

    async def send(self, messages: Sequence[bytes | str]) -> None:
        """Send messages in order; :class:`trio.BrokenResourceError` if the client is gone."""

    async def close(self, code: int, reason: str = "") -> None:
        """Send the close frame with ``code`` and ``reason``."""


@runtime_checkable
class PlaybackReport(Protocol):
    """A transport that knows what the listener has heard (a phone line, by its marks)."""

    def played_ms(self, response_id: str) -> int | None:
        """Milliseconds of ``response_id``'s audio heard so far; None: not known here.

        A barge-in the server detects (no ``played_ms`` from the client) cuts the
        response there, not at the room's playback-clock estimate.
        """


class ASGITransport:
    """A room's connection over ASGI's WebSocket messages (after ``websocket.accept``)."""

    __slots__ = ("_send", "_receive", "_gone")

    def __init__(self, send: ASGISend, receive: ASGIReceive) -> None:
        self._send = send
        self._receive = receive
        self._gone = False

    async def receive(self) -> bytes | str | None:
        while not self._gone:
            message = await self._receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                self._gone = True
            elif kind == "websocket.receive":
                data: bytes | None = message.get("bytes")
                if data is not None:
                    return data
                text: str | None = message.get("text")
                if text is not None:
                    return text
        await trio.lowlevel.checkpoint()
        return None

    async def send(self, messages: Sequence[bytes | str]) -> None:
        for message in messages:
            if isinstance(message, str):
                await self._send({"type": "websocket.send", "text": message})
            else:
                await self._send({"type": "websocket.send", "bytes": message})

    async def close(self, code: int, reason: str = "") -> None:
        await self._send({"type": "websocket.close", "code": code, "reason": reason})
