"""What the provider clients share: their WebSocket URLs and how they open sockets."""

from __future__ import annotations

import ssl
import urllib.parse
from contextlib import AbstractAsyncContextManager

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


def open_provider_socket(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None,
    headers: list[tuple[bytes, bytes]],
    connect_timeout_s: float,
) -> AbstractAsyncContextManager[trio_websocket.WebSocketConnection]:
    return trio_websocket.open_websocket_url(
        url,
        ssl_context,
        extra_headers=headers,
        connect_timeout=connect_timeout_s,
        disconnect_timeout=2.0,
        max_message_size=MAX_PROVIDER_MESSAGE,
    )
