"""What the provider clients share: their WebSocket URLs and how they open sockets."""

from __future__ import annotations

import math
import ssl
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

__all__ = ["open_provider_socket", "websocket_base"]

#: Largest message accepted from a provider (Azure audio deltas, Cartesia chunks).
MAX_PROVIDER_MESSAGE = 16 * 1024 * 1024


def websocket_base(url: str, setting: str) -> str:
    """``wss://host/path`` from an ``https``/``wss`` URL, ``ws://`` from ``http``/``ws``
    (a local stand-in); ``setting`` names the variable in the error."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("https", "http", "wss", "ws") or not parts.netloc:
        raise ValueError(f"{setting} must be an http(s) or ws(s) URL, not {url!r}")
    scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}"


@asynccontextmanager
async def open_provider_socket(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    headers: list[tuple[bytes, bytes]],
    connect_timeout_s: float,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A client socket; ``ConnectionTimeout`` if it is not open within ``connect_timeout_s``.

    trio-websocket's own ``connect_timeout`` raises, but then waits for its reader
    task, which waits for the server: a server that never answers the upgrade
    held the caller (measured: the whole 30 s of the fake's stall). The deadline
    here covers that task too, and is lifted once the socket is open.
    """
    opened = False
    with trio.CancelScope(deadline=trio.current_time() + connect_timeout_s) as opening:
        async with trio_websocket.open_websocket_url(
            url,
            ssl_context,
            extra_headers=headers,
            connect_timeout=connect_timeout_s,
            disconnect_timeout=2.0,
            max_message_size=MAX_PROVIDER_MESSAGE,
        ) as ws:
            opened = True
            opening.deadline = math.inf
            yield ws
    if not opened:
        raise trio_websocket.ConnectionTimeout
