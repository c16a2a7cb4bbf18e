"""Shared helpers: a real server in-process on port 0, real WebSocket clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import trio
import trio_websocket

from voice_trio.agent import Graph
from voice_trio.app import VoiceTrioApp
from voice_trio.config import Settings
from voice_trio.providers.local import LocalSpeech
from voice_trio.server import serve


@dataclass
class RunningServer:
    app: VoiceTrioApp
    url: str  # http://127.0.0.1:PORT
    shutdown: trio.Event

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
    **fields: Any,
) -> AsyncIterator[RunningServer]:
    """Serve a fresh app on 127.0.0.1:0 for the body; cancelled (or drained) after.

    The echo brain unless ``voice_brain`` says otherwise; ``speech`` shares models
    loaded once per test run.
    """
    fields.setdefault("voice_brain", "echo")
    # One test process serves many apps: the collector tuning (gc.freeze) is a
    # server process's, tested by the commands in test_cli and the bench.
    fields.setdefault("gc_thresholds", "off")
    app = app_class(settings or Settings(**fields), speech=speech, agent=agent)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
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
