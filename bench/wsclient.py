"""A small WebSocket client on Trio + wsproto that offers permessage-deflate like a browser.

Browsers send ``Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits``
on every WebSocket handshake; wsproto's own client handshake would send a
different offer, and trio-websocket does not expose extensions, so the
upgrade request is written here by hand. If the server accepts deflate, the
connection really uses it (wsproto's ``PerMessageDeflate``), so the figures
are what a browser user would get, and ``deflate`` tells the caller.

Sending: when deflate is off, frames are built here with an all-zero masking
key (a client must mask; the key's value does not change the server's work:
wsproto unmasks every byte with whatever key arrives) which saves the load
generator the XOR of every audio byte. With deflate on, wsproto frames them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate

__all__ = ["HandshakeError", "WSClient", "connect", "room_token_query"]

BROWSER_EXTENSION_OFFER = "permessage-deflate; client_max_window_bits"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_HEADER_BYTES = 16384
_RECEIVE_BYTES = 65536


class HandshakeError(Exception):
    """The server did not answer the upgrade with a valid 101."""


def _frame(opcode: int, payload: bytes | bytearray) -> bytes:
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + b"\x00\x00\x00\x00" + payload


class WSClient:
    """One client connection. ``send_*`` may be called from several tasks."""

    def __init__(
        self,
        stream: trio.SocketStream,
        conn: Connection,
        *,
        deflate: bool,
        extension_header: str | None,
    ) -> None:
        self.stream = stream
        self.conn = conn
        self.deflate = deflate
        self.extension_header = extension_header
        self.bytes_sent = 0
        self._send_lock = trio.Lock()
        self.closed = False
        self.close_code: int | None = None
        self.close_reason: str | None = None

    async def _send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(data)
        self.bytes_sent += len(data)

    async def send_bytes(self, payload: bytes | bytearray) -> None:
        if self.deflate:
            await self._send_raw(self.conn.send(BytesMessage(data=bytes(payload))))
        else:
            await self._send_raw(_frame(0x2, payload))

    async def send_text(self, text: str) -> None:
        if self.deflate:
            await self._send_raw(self.conn.send(TextMessage(data=text)))
        else:
            await self._send_raw(_frame(0x1, text.encode()))

    async def receive_events(self) -> list[Event]:
        """Read once from the socket; return the wsproto events it completed.

        Answers pings and close frames itself. Returns [] at EOF (``closed`` set).
        """
        if self.closed:
            return []
        try:
            data = await self.stream.receive_some(_RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.closed = True
            self.conn.receive_data(None)
        else:
            self.conn.receive_data(data)
        events = list(self.conn.events())
        for event in events:
            if isinstance(event, Ping):
                if self.conn.state is ConnectionState.OPEN:  # no pong once we are closing
                    await self._send_raw(self.conn.send(event.response()))
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                self.close_reason = event.reason
                try:
                    await self._send_raw(self.conn.send(event.response()))
                except Exception:  # noqa: BLE001 - the peer may already be gone
                    pass
                self.closed = True
        return events

    async def aclose(self, code: int = 1000, timeout: float = 2.0) -> None:
        """Send a close frame, wait (bounded) for the server's close, close the socket."""
        with trio.move_on_after(timeout):
            if not self.closed:
                try:
                    await self._send_raw(self.conn.send(CloseConnection(code=code)))
                except Exception:  # noqa: BLE001 - already broken: just close below
                    self.closed = True
                while not self.closed:
                    await self.receive_events()
        self.closed = True
        await self.stream.aclose()


async def connect(
    host: str, port: int, path: str, *, offer_deflate: bool = True, timeout: float = 10.0
) -> WSClient:
    """Open a TCP connection and do the WebSocket upgrade, offering deflate like a browser."""
    with trio.fail_after(timeout):
        stream = await trio.open_tcp_stream(host, port)
        try:
            key = base64.b64encode(os.urandom(16))
            lines = [
                f"GET {path} HTTP/1.1",
                f"Host: {host}:{port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key.decode()}",
                "Sec-WebSocket-Version: 13",
                f"Origin: http://{host}:{port}",
                "User-Agent: voice-trio-bench",
            ]
            if offer_deflate:
                lines.append(f"Sec-WebSocket-Extensions: {BROWSER_EXTENSION_OFFER}")
            await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
            buffer = bytearray()
            while b"\r\n\r\n" not in buffer:
                data = await stream.receive_some(4096)
                if not data:
                    raise HandshakeError("connection closed during handshake")
                buffer += data
                if len(buffer) > _MAX_HEADER_BYTES:
                    raise HandshakeError("handshake response too large")
            head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or parts[1] != "101":
                raise HandshakeError(f"upgrade refused: {status_line!r}")
            headers: dict[str, str] = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            expected = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
            if headers.get("sec-websocket-accept") != expected:
                raise HandshakeError("bad Sec-WebSocket-Accept")
            extension_header = headers.get("sec-websocket-extensions")
            extensions: list[Extension] = []
            deflate = False
            if extension_header:
                for accepted in extension_header.split(","):
                    if accepted.split(";", 1)[0].strip() == "permessage-deflate":
                        pmd = PerMessageDeflate()
                        pmd.finalize(accepted.strip())
                        extensions.append(pmd)
                        deflate = True
            conn = Connection(ConnectionType.CLIENT, extensions=extensions, trailing_data=rest)
        except BaseException:
            await stream.aclose()
            raise
    return WSClient(stream, conn, deflate=deflate, extension_header=extension_header)


def room_token_query(session_id: str) -> str:
    """``?token=...`` when AUTH_SECRET is set (the server then needs one per room), else ""."""
    secret = os.environ.get("AUTH_SECRET")
    if not secret:
        return ""
    from voice_trio.security import mint_token

    return "?token=" + mint_token(secret, session_id, ttl_s=86_400)
