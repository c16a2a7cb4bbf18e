"""Shared helpers: a real server in-process on port 0, real WebSocket clients."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio_websocket
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.trio.run import worker_serve

from voice_trio.agent import Graph
from voice_trio.app import VoiceTrioApp
from voice_trio.config import Settings
from voice_trio.providers.local import LocalSpeech
from voice_trio.server import hypercorn_config, serve

#: Run a test on both ways a room is served: ``voice-trio serve``'s own
#: WebSocket, and ASGI under Hypercorn (``hypercorn voice_trio.app:app``).
BOTH_PATHS = pytest.mark.parametrize("asgi", [False, True], ids=["serve", "asgi"])


@dataclass
class RunningServer:
    app: VoiceTrioApp
    url: str  # http://127.0.0.1:PORT
    shutdown: trio.Event

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def ws_base(self) -> str:
        return "ws" + self.url[len("http") :]

    def connect(self, session_id: str, **kwargs: Any) -> Any:
        return open_client(f"{self.ws_base}/ws/{session_id}", **kwargs)

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            return await client.get(self.url + path)

    async def metric(self, name: str) -> float:
        """One sample from GET /metrics, e.g. ``voice_trio_rooms_open``."""
        text = (await self.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{name} not in /metrics:\n{text}")


@asynccontextmanager
async def running_server(
    settings: Settings | None = None,
    *,
    drain: bool = False,
    speech: LocalSpeech | None = None,
    agent: Graph | None = None,
    app_class: type[VoiceTrioApp] = VoiceTrioApp,
    asgi: bool = False,
    **fields: Any,
) -> AsyncIterator[RunningServer]:
    """Serve a fresh app on 127.0.0.1:0 for the body; cancelled (or drained) after.

    The echo brain unless ``voice_brain`` says otherwise; ``speech`` shares models
    loaded once per test run. ``asgi=True`` serves it with Hypercorn's own
    worker (rooms over ASGI, as ``hypercorn voice_trio.app:app`` does) instead of
    ``voice-trio serve``'s WebSocket.
    """
    fields.setdefault("voice_brain", "echo")
    # One test process serves many apps: the collector tuning (gc.freeze) is a
    # server process's, tested by the commands in test_cli and the bench.
    fields.setdefault("gc_thresholds", "off")
    # Every test client comes from 127.0.0.1, and many tests send bursts: the
    # per-address and per-room rate limits are lifted unless a test sets them
    # (tests/test_security.py, tests/test_front_door.py).
    for name in ("max_rooms_per_ip", "handshake_burst_per_ip", "room_message_rate"):
        fields.setdefault(name, 100_000)
    fields.setdefault("room_audio_rate", 100_000.0)
    app = app_class(settings or Settings(**fields), speech=speech, agent=agent)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        if asgi:
            urls = await nursery.start(
                partial(
                    worker_serve,
                    ASGIWrapper(app),  # type: ignore[arg-type]
                    hypercorn_config(app.settings, host="127.0.0.1", port=0),
                    shutdown_trigger=shutdown.wait,
                )
            )
        else:
            urls = await nursery.start(
                partial(serve, app, host="127.0.0.1", port=0, shutdown_event=shutdown)
            )
        yield RunningServer(app, urls[0], shutdown)
        if drain:
            shutdown.set()
        else:
            nursery.cancel_scope.cancel()


class Client:
    """A thin test client over a trio-websocket connection."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        #: The first ``session.ready`` (read by open_client).
        self.ready: dict[str, Any] = {}

    async def send_json(self, **message: Any) -> None:
        await self.ws.send_message(json.dumps(message))

    async def send_audio(self, pcm: bytes) -> None:
        await self.ws.send_message(pcm)

    async def recv(self) -> str | bytes:
        return await self.ws.get_message()

    async def event(self, *, skip_metrics: bool = True) -> dict[str, Any]:
        """The next JSON event (binary frames are an error here)."""
        while True:
            message = await self.ws.get_message()
            assert isinstance(message, str), f"expected a JSON event, got {len(message)} bytes"
            event = json.loads(message)
            if skip_metrics and event["type"] == "metrics":
                continue
            return event

    async def expect(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = await self.event()
        assert event["type"] == kind, event
        for key, value in fields.items():
            assert event[key] == value, event
        return event

    async def until(self, kind: str) -> tuple[list[dict[str, Any]], bytes]:
        """Collect events and audio up to and including the first event of ``kind``."""
        events: list[dict[str, Any]] = []
        audio = bytearray()
        while True:
            message = await self.ws.get_message()
            if isinstance(message, bytes):
                audio += message
                continue
            event = json.loads(message)
            events.append(event)
            if event["type"] == kind:
                return events, bytes(audio)

    async def ping(self) -> None:
        """Round trip: everything the server queued before is received and skipped."""
        await self.send_json(type="ping")
        while True:
            message = await self.ws.get_message()
            if isinstance(message, str) and json.loads(message)["type"] == "pong":
                return

    async def closed(self) -> tuple[int, str | None]:
        """Read until the server closes; return (code, reason)."""
        try:
            while True:
                await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            return exc.reason.code, exc.reason.reason


@asynccontextmanager
async def open_client(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    async with trio_websocket.open_websocket_url(url, **kwargs) as ws:
        client = Client(ws)
        ready = await client.event()
        assert ready["type"] == "session.ready", ready
        client.ready = ready
        yield client


def prom_samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def tone(n_samples: int, *, seed: int = 0) -> bytes:
    """Distinct, non-silent PCM16: a ramp offset by ``seed``."""
    import numpy as np

    ramp = (np.arange(n_samples, dtype=np.int64) * 7 + seed * 1009) % 20000 - 10000
    return ramp.astype("<i2").tobytes()


class RawClient:
    """A WebSocket client that writes frames by hand, to break the protocol on purpose."""

    KEY = "dGhlIHNhbXBsZSBub25jZQ=="

    def __init__(self, stream: trio.SocketStream, head: bytes, data: bytes) -> None:
        self.stream = stream
        #: The server's response head (status line and headers).
        self.head = head
        self._data = data

    @classmethod
    async def handshake(
        cls, port: int, path: str, extra: bytes = b"", *, early: bytes = b""
    ) -> RawClient:
        """Send the opening handshake (plus ``early`` bytes in the same write); read the head."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {cls.KEY}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
            ).encode()
            + extra
            + b"\r\n"
            + early
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return cls(stream, head, rest)

    async def send_frame(
        self,
        opcode: int,
        payload: bytes,
        *,
        fin: bool = True,
        rsv: int = 0,
        masked: bool = True,
        length: int | None = None,
    ) -> None:
        await self.stream.send_all(
            frame(opcode, payload, fin=fin, rsv=rsv, masked=masked, length=length)
        )

    async def read_frame(self) -> tuple[bool, int, bytes]:
        """The server's next frame: (fin, opcode, payload)."""
        while True:
            parsed = _parse_server_frame(self._data)
            if parsed is not None:
                fin, opcode, payload, used = parsed
                self._data = self._data[used:]
                return fin, opcode, payload
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError("the server closed TCP")
            self._data += chunk

    async def read_event(self) -> dict[str, Any]:
        """The next text frame as JSON (metrics events skipped)."""
        while True:
            _, opcode, payload = await self.read_frame()
            if opcode == 0x1:
                event: dict[str, Any] = json.loads(payload)
                if event["type"] != "metrics":
                    return event

    async def read_close(self) -> tuple[int | None, str]:
        """Skip frames up to the server's close frame: (code, reason)."""
        while True:
            _, opcode, payload = await self.read_frame()
            if opcode == 0x8:
                if not payload:
                    return None, ""
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    async def at_eof(self) -> bool:
        """Whether the server then closes TCP (reading and dropping anything else)."""
        while True:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return True


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    key: bytes | None = None,
    length: int | None = None,
) -> bytes:
    """A client frame; ``length`` declares another payload size than the real one.

    ``key``: the masking key (default: a random one, as a client's must be).
    """
    size = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = struct.pack("!BB", b0, mask_bit | size)
    elif size < 65536:
        head = struct.pack("!BBH", b0, mask_bit | 126, size)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, size)
    if not masked:
        return head + payload
    key = os.urandom(4) if key is None else key
    return head + key + mask(payload, key)


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the 4-byte ``key`` repeated (RFC 6455 section 5.3), in one big-int XOR."""
    n = len(payload)
    if not n:
        return payload
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(
        n, "little"
    )


def _parse_server_frame(data: bytes) -> tuple[bool, int, bytes, int] | None:
    if len(data) < 2:
        return None
    fin, opcode = bool(data[0] & 0x80), data[0] & 0x0F
    assert not data[1] & 0x80, "server frames are never masked"
    size, offset = data[1] & 0x7F, 2
    if size == 126:
        if len(data) < 4:
            return None
        size, offset = struct.unpack_from("!H", data, 2)[0], 4
    elif size == 127:
        if len(data) < 10:
            return None
        size, offset = struct.unpack_from("!Q", data, 2)[0], 10
    if len(data) < offset + size:
        return None
    return fin, opcode, data[offset : offset + size], offset + size
