"""The server side of a WebSocket (RFC 6455) on one Trio socket, built for many rooms.

Why not Hypercorn's WebSocket path: with the bench's standard room, Hypercorn +
wsproto + Trio spent ~80 % of the server's CPU under the room (py-spy,
bench/README.md "Profile"): a reader task per connection that hands every
message to the app through a memory channel, an ASGI dict per message, a lock,
a shielded cancel scope and a timeout scope per write, a generator-based frame
parser. Here the room's own reader parses frames straight off the socket, and
its single writer sends everything queued in one ``writev``.

What is kept from RFC 6455 (and tested on the wire):

- the handshake by wsproto's :class:`~wsproto.handshake.H11Handshake`, which
  validates the request; no extension is ever accepted (permessage-deflate
  costs more CPU than it saves bytes, DESIGN.md section 1) and no subprotocol;
- client frames must be masked, RSV bits clear, opcodes known, control frames
  short and unfragmented: else close 1002; a message over the size limit is
  refused from its header with 1009 (its payload is never buffered); text that
  is not UTF-8 closes with 1007;
- fragmented messages, pings (answered with pongs), and the closing handshake
  both ways.

The socket's read and write sides are used directly (``os.read``/``os.writev``
after Trio's ``wait_readable``/``wait_writable``): one system call per read and
per batch of writes, no extra scheduler pass when the data is already there.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Final

import trio
from trio.lowlevel import checkpoint_if_cancelled, wait_readable, wait_writable
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

__all__ = [
    "WebSocket",
    "Handshake",
    "read_request_head",
    "is_websocket_upgrade",
    "MAX_HEAD_BYTES",
]

#: Longest request head read before deciding who serves a connection (Hypercorn's h11 limit).
MAX_HEAD_BYTES: Final = 16 * 1024
_READ_BYTES: Final = 64 * 1024
#: Frames per ``writev`` (each frame is two buffers; Linux allows 1024).
MAX_BATCH: Final = 128
#: After sending a close frame, how long to wait for the client's before dropping TCP.
CLOSE_WAIT_S: Final = 1.0

_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10
_DATA_OPS = frozenset((_OP_CONT, _OP_TEXT, _OP_BINARY))
_CONTROL_OPS = frozenset((_OP_CLOSE, _OP_PING, _OP_PONG))
_PROTOCOL_ERROR, _INVALID_PAYLOAD, _TOO_BIG = 1002, 1007, 1009
_H2 = struct.Struct("!BB")
_H4 = struct.Struct("!BBH")
_H10 = struct.Struct("!BBQ")
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
#: Frames parsed from one buffered burst before the reader lets other tasks run.
FRAMES_PER_YIELD: Final = 64


class _Failed(Exception):
    """The client broke the protocol: close with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _valid_close_code(code: int) -> bool:
    # RFC 6455 section 7.4: codes a peer may send in a close frame.
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011) or (3000 <= code <= 4999)


def _unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(
        n, "little"
    )


def _header(opcode: int, size: int) -> bytes:
    if size < 126:
        return _H2.pack(0x80 | opcode, size)
    if size < 65536:
        return _H4.pack(0x80 | opcode, 126, size)
    return _H10.pack(0x80 | opcode, 127, size)


def _close_payload(code: int, reason: str) -> bytes:
    # Control frames carry at most 125 bytes; cut the reason on a character boundary.
    text = reason.encode("utf-8")[:123].decode("utf-8", "ignore")
    return _U16.pack(code) + text.encode("utf-8")


class WebSocket:
    """An accepted connection: :meth:`receive` in one task, :meth:`send` in another.

    ``receive`` returns ``bytes`` (a binary message), ``str`` (a text message) or
    None once the connection is over (closed by either side, lost, or failed by
    the client, which has then been sent the close frame with the reason).

    What one connection can make the server hold is bounded by bytes: the frame
    being read (at most ``max_message_bytes`` plus a header and one read) and the
    message in progress, whose fragments are copied into one buffer as they
    arrive (at most ``max_message_bytes``, in at most ``max_fragments`` frames).
    """

    __slots__ = (
        "_sock",
        "_fd",
        "_buf",
        "_max_bytes",
        "_max_fragments",
        "_parts",
        "_fragments",
        "_parts_op",
        "_pong",
        "_frames_since_yield",
        "_lock",
        "_owed",
        "_broken",
        "_eof",
        "close_sent",
        "close_received",
        "close_code",
    )

    def __init__(
        self,
        stream: trio.SocketStream,
        *,
        max_message_bytes: int,
        max_fragments: int = 1024,
        buffered: bytes = b"",
    ) -> None:
        self._sock = stream.socket
        self._fd = stream.socket.fileno()
        self._buf = bytearray(buffered)
        self._max_bytes = max_message_bytes
        self._max_fragments = max_fragments
        # The message in progress (fragments so far, unmasked), its frame count and opcode.
        self._parts = bytearray()
        self._fragments = 0
        self._parts_op = -1
        # The payload of the newest ping not yet answered (RFC 6455 section 5.5.3
        # lets a burst of pings be answered by one pong, for the newest).
        self._pong: bytes | None = None
        self._frames_since_yield = 0
        self._lock = trio.Lock()
        # What a cancelled write left of a frame it had begun (sent before anything else).
        self._owed: list[memoryview | bytes] = []
        self._broken = False
        self._eof = False
        #: A close frame has gone out / come in.
        self.close_sent = False
        self.close_received = False
        #: The code of the close frame that ended the connection, either way.
        self.close_code: int | None = None

    @property
    def open(self) -> bool:
        return not (self.close_sent or self.close_received or self._broken or self._eof)

    # ------------------------------------------------------------------ reading

    async def receive(self) -> bytes | str | None:
        """The next message; None when the connection is over.

        It waits for the socket only when no whole message is buffered, so a
        burst already read (up to 64 KiB) is handed out without a scheduler pass,
        but never more than :data:`FRAMES_PER_YIELD` frames: a flood of tiny
        frames cannot keep the other rooms from running.
        """
        while True:
            if not self.open:
                await checkpoint_if_cancelled()
                return None
            try:
                message = await self._next_message()
            except _Failed as failure:
                await self._fail(failure.code, failure.reason)
                return None
            if self._pong is not None:
                await self._send_pong()
            if message is not None:
                return message
            if self.open and not await self._read_more():
                return None

    async def _read_more(self) -> bool:
        self._frames_since_yield = 0
        await wait_readable(self._sock)
        try:
            data = os.read(self._fd, _READ_BYTES)
        except BlockingIOError:
            return True
        except OSError:
            self._broken = True
            return False
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def _next_message(self) -> bytes | str | None:
        """Parse one complete message out of the buffer, noting control frames.

        Frames are read at an offset and the buffer is cut once at the end, so a
        buffer of many small frames costs time in proportion to its size.
        """
        buf = self._buf
        pos = 0
        try:
            while True:
                if self._frames_since_yield >= FRAMES_PER_YIELD:
                    del buf[:pos]
                    pos = 0
                    self._frames_since_yield = 0
                    await trio.lowlevel.checkpoint()
                    if not self.open:
                        return None
                frame = self._parse_frame(buf, pos)
                if frame is None:
                    return None
                opcode, fin, start, end = frame
                payload = _unmask(bytes(buf[start:end]), bytes(buf[start - 4 : start]))
                pos = end
                self._frames_since_yield += 1
                if opcode >= _OP_CLOSE:
                    await self._on_control(opcode, payload)
                    if not self.open:
                        return None
                    continue
                if opcode != _OP_CONT:
                    if fin:
                        return self._message(opcode, payload)
                    self._parts_op = opcode
                self._parts += payload
                self._fragments += 1
                if fin:
                    op, whole = self._parts_op, bytes(self._parts)
                    self._parts = bytearray()
                    self._fragments = 0
                    self._parts_op = -1
                    return self._message(op, whole)
        finally:
            del buf[:pos]

    def _parse_frame(self, buf: bytearray, pos: int) -> tuple[int, int, int, int] | None:
        """(opcode, fin, payload start, payload end) of the frame at ``pos``, or None if cut.

        Raises :class:`_Failed` for a frame the RFC forbids, as soon as its header says so.
        """
        have = len(buf) - pos
        if have < 2:
            return None
        b0, b1 = buf[pos], buf[pos + 1]
        size = b1 & 0x7F
        offset = 2
        if b0 & 0x70:
            raise _Failed(_PROTOCOL_ERROR, "reserved bits set (no extension was agreed)")
        if not b1 & 0x80:
            raise _Failed(_PROTOCOL_ERROR, "client frames must be masked")
        opcode = b0 & 0x0F
        fin = b0 & 0x80
        if opcode in _CONTROL_OPS:
            if not fin or size > 125:
                raise _Failed(_PROTOCOL_ERROR, "control frames must be short and whole")
        elif opcode not in _DATA_OPS:
            raise _Failed(_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        elif opcode == _OP_CONT:
            if self._parts_op < 0:
                raise _Failed(_PROTOCOL_ERROR, "continuation without a message to continue")
        elif self._parts_op >= 0:
            raise _Failed(_PROTOCOL_ERROR, "new message before the last one ended")
        if size == 126:
            if have < 4:
                return None
            size = _U16.unpack_from(buf, pos + 2)[0]
            offset = 4
            if size < 126:
                raise _Failed(_PROTOCOL_ERROR, "frame length not in its shortest form")
        elif size == 127:
            if have < 10:
                return None
            size = _U64.unpack_from(buf, pos + 2)[0]
            offset = 10
            if size < 65536 or size >> 63:
                raise _Failed(_PROTOCOL_ERROR, "frame length not in its shortest form")
        if opcode in _DATA_OPS:
            if len(self._parts) + size > self._max_bytes:
                raise _Failed(_TOO_BIG, f"message over {self._max_bytes} bytes")
            if not fin or opcode == _OP_CONT:
                if self._fragments >= self._max_fragments:
                    raise _Failed(_TOO_BIG, f"message in over {self._max_fragments} frames")
        start = pos + offset + 4
        end = start + size
        if len(buf) < end:
            return None
        return opcode, fin, start, end

    @staticmethod
    def _message(opcode: int, payload: bytes) -> bytes | str:
        if opcode == _OP_BINARY:
            return payload
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            raise _Failed(_INVALID_PAYLOAD, "text message is not valid UTF-8") from None

    async def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == _OP_PING:
            self._pong = payload  # answered before the next wait (see receive)
        elif opcode == _OP_CLOSE:
            self.close_received = True
            if len(payload) == 1:
                raise _Failed(_PROTOCOL_ERROR, "close frame of one byte")
            code = _U16.unpack_from(payload)[0] if payload else 1005
            if payload and not _valid_close_code(code):
                raise _Failed(_PROTOCOL_ERROR, f"close code {code} is not one a peer may send")
            try:
                payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise _Failed(_INVALID_PAYLOAD, "close reason is not valid UTF-8") from None
            self.close_code = code
            if not self.close_sent:  # answer the client's close, echoing its code
                reply = _U16.pack(code) if payload else b""
                self.close_sent = True
                await self._write_quietly([_header(_OP_CLOSE, len(reply)), reply])

    async def _send_pong(self) -> None:
        payload, self._pong = self._pong, None
        if payload is not None and not (self.close_sent or self._broken):
            # A peer lost mid-pong ends the connection like any lost peer.
            await self._write_quietly([_header(_OP_PONG, len(payload)), payload])

    async def _fail(self, code: int, reason: str) -> None:
        self.close_code = code
        if not self.close_sent and not self._broken:
            self.close_sent = True
            data = _close_payload(code, reason)
            await self._write_quietly([_header(_OP_CLOSE, len(data)), data])

    # ------------------------------------------------------------------ writing

    async def send(self, messages: Sequence[bytes | str]) -> None:
        """Send messages in order (``bytes`` binary, ``str`` text) in as few system calls as can be.

        Raises :class:`trio.BrokenResourceError` if the connection is over.
        """
        if self.close_sent or self._broken or self._eof:
            await checkpoint_if_cancelled()
            raise trio.BrokenResourceError("the WebSocket is closed")
        buffers: list[bytes] = []
        for message in messages:
            if isinstance(message, str):
                data = message.encode("utf-8")
                buffers.append(_header(_OP_TEXT, len(data)))
            else:
                data = message
                buffers.append(_header(_OP_BINARY, len(data)))
            buffers.append(data)
        await self._write(buffers)

    async def close(self, code: int, reason: str = "") -> None:
        """Send the close frame (once), then wait a little for the client's."""
        if self.close_sent or self._broken:
            await checkpoint_if_cancelled()
            return
        self.close_sent = True
        self.close_code = code
        data = _close_payload(code, reason)
        await self._write_quietly([_header(_OP_CLOSE, len(data)), data])
        with trio.move_on_after(CLOSE_WAIT_S):
            while not (self.close_received or self._broken or self._eof):
                try:
                    await self._next_message()  # data after our close is discarded
                except _Failed:
                    return
                if not (self.close_received or self._broken or self._eof):
                    if not await self._read_more():
                        return

    async def _write_quietly(self, buffers: list[bytes]) -> None:
        try:
            await self._write(buffers)
        except trio.BrokenResourceError:
            pass

    async def _write(self, buffers: list[bytes]) -> None:
        # Writers take turns by a lock, but the common case (no other writer
        # parked, the kernel takes it all) is one writev and no scheduler pass.
        await checkpoint_if_cancelled()
        lock = self._lock
        if lock.locked():
            async with lock:
                await self._write_locked(buffers)
            return
        lock.acquire_nowait()
        try:
            await self._write_locked(buffers)
        finally:
            lock.release()

    async def _write_locked(self, buffers: list[bytes]) -> None:
        if self._broken:
            raise trio.BrokenResourceError("the connection was lost")
        views: list[memoryview | bytes] = [*self._owed, *buffers]
        started = bool(self._owed)
        self._owed = []
        try:
            while views:
                try:
                    sent = os.writev(self._fd, views[:1024])
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    self._broken = True
                    raise trio.BrokenResourceError("the connection was lost") from exc
                if sent:
                    started = True
                    views = _advance(views, sent)
                if views:
                    await wait_writable(self._sock)
        except BaseException:
            if started and views:
                # Cancelled with a frame cut: its rest (and the rest of the batch) is
                # owed, so the next write (the close frame) keeps the stream whole.
                self._owed = views
            raise


def _advance(views: list[memoryview | bytes], sent: int) -> list[memoryview | bytes]:
    i = 0
    while i < len(views) and sent >= len(views[i]):
        sent -= len(views[i])
        i += 1
    rest = views[i:]
    if sent and rest:
        rest[0] = memoryview(rest[0])[sent:]
    return rest


# ---------------------------------------------------------------------- handshake


async def read_request_head(stream: trio.SocketStream) -> bytes:
    """Read until the end of the first request's head (or EOF, or MAX_HEAD_BYTES)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < MAX_HEAD_BYTES:
        chunk = await stream.receive_some(MAX_HEAD_BYTES)
        if not chunk:
            break
        data += chunk
    return data


def is_websocket_upgrade(data: bytes) -> bool:
    """Whether a request head asks for ``Upgrade: websocket`` (validated later by wsproto)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


class Handshake:
    """The opening handshake of one connection, by wsproto (no extensions, no subprotocols)."""

    def __init__(self, data: bytes) -> None:
        head, sep, rest = data.partition(b"\r\n\r\n")
        #: Bytes the client sent after the request head (frames sent early).
        self.rest = rest
        self._h11 = H11Handshake(ConnectionType.SERVER)
        #: The request's target (path and query), or None if the request was refused.
        self.target: str | None = None
        #: The request's headers (names in lower case), as wsproto read them.
        self.headers: list[tuple[bytes, bytes]] = []
        #: The response to send when the request is not a valid WebSocket handshake.
        self.refusal: bytes | None = None
        try:
            self._h11.receive_data(head + sep)
            for event in self._h11.events():
                if isinstance(event, Request):
                    self.target = event.target
                    self.headers = [(bytes(n), bytes(v)) for n, v in event.extra_headers]
                    self.headers.append((b"host", event.host.encode("utf-8")))
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            if not isinstance(hint, RejectConnection):
                hint = RejectConnection(status_code=400)
            self.refusal = self._h11.send(hint)
        if self.target is None and self.refusal is None:  # the head never ended
            self.refusal = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"

    def accept(self) -> bytes:
        response = self._h11.send(AcceptConnection(extensions=[]))
        # wsproto made a Connection for the frames to come, which this module parses
        # itself. Its FrameProtocol holds a parser generator whose frame holds the
        # FrameProtocol: a cycle per connection, left for a full collection (or kept
        # for good once frozen, issue #10). Closing the generator breaks it.
        connection = self._h11.connection
        if connection is not None:
            connection._proto._parse_more.close()
        return response

    def reject(self, status_code: int) -> bytes:
        return self._h11.send(RejectConnection(status_code=status_code))
