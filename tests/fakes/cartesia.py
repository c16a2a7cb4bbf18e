"""A fake Cartesia TTS WebSocket server (``/tts/websocket``) on 127.0.0.1, port 0.

Every client message is checked against the cartesia package's pydantic types
(``GenerationRequest`` / ``CancelContextRequest``, strictly: no unknown keys)
and the documented rules (sonic-3 for Vietnamese, raw pcm_s16le 24 kHz, nothing
after a context's ``continue: false``); every server message against
``WebsocketResponse``. Problems land in :attr:`FakeCartesia.invalid`, and
:func:`open_fake_cartesia` fails the test with them.

The audio is a function of the text (:func:`audio_for`, 10 ms per character),
so however the client cut the transcript, a context's audio is
``audio_for(whole text)``: a test can tell whose audio a room got.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import trio_websocket
from cartesia.types.websocket_client_event import WebsocketClientEvent
from cartesia.types.websocket_response import WebsocketResponse
from pydantic import TypeAdapter, ValidationError

from .azure_realtime import unknown_keys

__all__ = ["FakeCartesia", "audio_for", "open_fake_cartesia", "word_times"]

CLIENT = TypeAdapter(WebsocketClientEvent)
SERVER = TypeAdapter(WebsocketResponse)
SAMPLES_PER_CHAR = 240  # 10 ms at 24 kHz


def audio_for(text: str) -> bytes:
    """The fake's speech for ``text``: per character, 10 ms of a level derived from it."""
    return b"".join(
        ((ord(c) * 37) % 30000 + 1).to_bytes(2, "little", signed=True) * SAMPLES_PER_CHAR
        for c in text
    )


def word_times(text: str, offset: int = 0) -> list[tuple[str, float, float]]:
    """(word, start s, end s) of each space-separated word of ``text`` in the fake's audio,
    ``offset`` characters into its context."""
    return [
        (m.group(), (offset + m.start()) / 100, (offset + m.end()) / 100)
        for m in re.finditer(r"\S+", text)
    ]


@dataclass
class FakeContext:
    context_id: str
    connection: int
    transcripts: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    ended_input: bool = False
    cancelled: bool = False
    done: bool = False
    #: Characters of its text spoken so far (its audio's length, 10 ms each).
    spoken: int = 0

    @property
    def text(self) -> str:
        return "".join(self.transcripts)


class FakeCartesia:
    def __init__(
        self,
        *,
        api_key: str = "cartesia-key",
        voice_id: str = "a0e99841-438c-4a64-b679-ae501e7d6091",
        chars_per_chunk: int = 8,
        chunk_delay_s: float = 0.0,
    ) -> None:
        self.api_key = api_key
        self.voice_id = voice_id
        self.chars_per_chunk = chars_per_chunk
        # Knobs.
        self.chunk_delay_s = chunk_delay_s
        self.reject_status: int | None = None
        #: Drop the socket carrying a context whose text contains this word (once).
        self.drop_on_word: str | None = None
        #: Go silent (no chunk, no done, socket open) for a context with this word (once).
        self.stall_on_word: str | None = None
        #: Answer a context with this word by an error message (once).
        self.error_on_word: str | None = None
        self.handshake_delay_s = 0.0
        # Records.
        self.base_url = ""
        #: Every opening handshake, refused ones too.
        self.handshakes = 0
        self.connections = 0
        self.open_connections = 0
        self.max_open_connections = 0
        self.contexts: dict[str, FakeContext] = {}
        self.invalid: list[str] = []

    def _check(self, adapter: TypeAdapter[Any], message: dict[str, Any], side: str) -> Any:
        try:
            model = adapter.validate_python(message)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
            )
            self.invalid.append(f"{side} {message}: {problems}")
            return None
        extra = unknown_keys(model)
        if extra:
            self.invalid.append(f"{side} {message}: unknown keys {extra}")
            return None
        return model

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, self._handle, "127.0.0.1", 0, None
            )
            self.base_url = f"http://127.0.0.1:{server.port}"
            task_status.started(self.base_url)

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        self.handshakes += 1
        if self.handshake_delay_s:
            await trio.sleep(self.handshake_delay_s)
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        status = self.reject_status
        if request.path != "/tts/websocket":
            status = status or 404
        if headers.get("authorization") != f"Bearer {self.api_key}":
            status = 401
        if not headers.get("cartesia-version"):
            status = status or 400
        if status is not None:
            await request.reject(status)
            return
        ws = await request.accept()
        self.connections += 1
        number = self.connections
        self.open_connections += 1
        self.max_open_connections = max(self.max_open_connections, self.open_connections)
        scopes: dict[str, trio.CancelScope] = {}
        inputs: dict[str, trio.MemorySendChannel[str | None]] = {}
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        raw = await ws.get_message()
                    except trio_websocket.ConnectionClosed:
                        break
                    message = json.loads(raw)
                    if self._check(CLIENT, message, "client") is None:
                        continue
                    context_id = message["context_id"]
                    if message.get("cancel"):
                        if context_id in self.contexts:
                            self.contexts[context_id].cancelled = True
                        if context_id in scopes:
                            scopes[context_id].cancel()
                        continue
                    context = self.contexts.get(context_id)
                    if context is None:
                        context = self.contexts[context_id] = FakeContext(context_id, number)
                        send, receive = trio.open_memory_channel[str | None](1000)
                        inputs[context_id] = send
                        scopes[context_id] = trio.CancelScope()
                        nursery.start_soon(
                            self._generate, ws, context, receive, scopes[context_id], nursery
                        )
                    problem = self._rules(context, message)
                    if problem:
                        self.invalid.append(f"client {message}: {problem}")
                        continue
                    context.requests.append(message)
                    if message["transcript"]:
                        context.transcripts.append(message["transcript"])
                        inputs[context_id].send_nowait(message["transcript"])
                    if not message.get("continue", False):
                        context.ended_input = True
                        inputs[context_id].send_nowait(None)
                nursery.cancel_scope.cancel()
        except* trio_websocket.ConnectionClosed:
            pass
        finally:
            self.open_connections -= 1

    def _rules(self, context: FakeContext, message: dict[str, Any]) -> str | None:
        if context.ended_input:
            return "a request after this context's continue=false"
        if message.get("language") == "vi" and message["model_id"] not in ("sonic-3", "sonic-3.5"):
            return f"{message['model_id']} does not speak Vietnamese"
        if message["output_format"] != {
            "container": "raw",
            "encoding": "pcm_s16le",
            "sample_rate": 24000,
        }:
            return "output_format must be raw pcm_s16le at 24 kHz"
        if message["voice"] != {"mode": "id", "id": self.voice_id}:
            return "unknown voice"
        if not message["transcript"] and message.get("continue", False):
            return "an empty transcript only ends a context (continue=false)"
        return None

    async def _send(self, ws: Any, message: dict[str, Any]) -> None:
        self._check(SERVER, message, "server")
        await ws.send_message(json.dumps(message))

    async def _generate(
        self,
        ws: Any,
        context: FakeContext,
        receive: trio.MemoryReceiveChannel[str | None],
        scope: trio.CancelScope,
        nursery: trio.Nursery,
    ) -> None:
        with scope:
            async for text in receive:
                if text is None:
                    context.done = True
                    await self._send(
                        ws,
                        {
                            "type": "done",
                            "context_id": context.context_id,
                            "done": True,
                            "status_code": 200,
                        },
                    )
                    return
                if self.error_on_word and self.error_on_word in context.text:
                    self.error_on_word = None
                    await self._send(
                        ws,
                        {
                            "type": "error",
                            "context_id": context.context_id,
                            "done": True,
                            "status_code": 500,
                            "title": "Internal error",
                            "message": "synthesis failed",
                            "error_code": "internal_error",
                        },
                    )
                    return
                if self.stall_on_word and self.stall_on_word in context.text:
                    self.stall_on_word = None
                    await trio.sleep_forever()
                for start in range(0, len(text), self.chars_per_chunk):
                    if self.chunk_delay_s:
                        await trio.sleep(self.chunk_delay_s)
                    if self.drop_on_word and self.drop_on_word in context.text:
                        self.drop_on_word = None
                        await ws.aclose(1011, "dropped")
                        nursery.cancel_scope.cancel()
                        await trio.lowlevel.checkpoint()
                    pcm = audio_for(text[start : start + self.chars_per_chunk])
                    await self._send(
                        ws,
                        {
                            "type": "chunk",
                            "context_id": context.context_id,
                            "data": base64.b64encode(pcm).decode(),
                            "done": False,
                            "status_code": 206,
                            "step_time": 1.0,
                        },
                    )
                if context.requests and context.requests[0].get("add_timestamps"):
                    # After the piece's audio, as Cartesia does: each word's start and end,
                    # seconds from the context's first audio (10 ms per character).
                    timed = word_times(text, context.spoken)
                    if timed:
                        words, starts, ends = zip(*timed, strict=True)
                        await self._send(
                            ws,
                            {
                                "type": "timestamps",
                                "context_id": context.context_id,
                                "done": False,
                                "status_code": 206,
                                "word_timestamps": {
                                    "words": list(words),
                                    "start": list(starts),
                                    "end": list(ends),
                                },
                            },
                        )
                context.spoken += len(text)


@asynccontextmanager
async def open_fake_cartesia(**kwargs: Any) -> AsyncIterator[FakeCartesia]:
    fake = FakeCartesia(**kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        yield fake
        nursery.cancel_scope.cancel()
    assert not fake.invalid, "invalid Cartesia messages:\n" + "\n".join(fake.invalid)
