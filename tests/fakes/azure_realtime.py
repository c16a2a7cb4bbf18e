"""A fake Azure OpenAI Realtime server: trio-websocket on 127.0.0.1, port 0.

It speaks the documented events (GA names on ``/openai/v1/realtime?model=``,
preview names on ``/openai/realtime?api-version=&deployment=``, see
../../../shared/PROVIDERS.md) and checks every client event against the openai
package's pydantic types (``openai.types.realtime`` for GA,
``openai.types.beta.realtime`` for preview), strictly: unknown keys anywhere
in a model are refused too. Its own server events go through the same check,
so the fake cannot drift from the schema either. Anything invalid is kept in
:attr:`FakeAzureRealtime.invalid`; :func:`open_fake_azure` fails the test with it.

Scripted behaviour: a commit (or server VAD's end of speech) gets transcript
events; ``response.create`` gets a reply streamed word by word as text deltas
(``output_modalities ["text"]``) or audio transcript plus audio deltas; a
queued tool call is answered as a function call instead. Knobs (attributes,
changeable mid-test): ``reject_status``, ``drop_after_deltas``,
``delta_delay_s``, ``error_next_response``, ``expire_after_s``, ``tool_calls``;
faults: ``handshake_delay_s`` (a slow handshake), ``stall_after_deltas`` (go
silent mid-response, once), ``close_after_accept`` (accept, then close at once
with 1008, as a service does with a bad key: Pipecat #3711), ``garble_next_response``
(once: a frame that is no readable event, sent instead of the next response;
it bypasses the schema check).
"""

from __future__ import annotations

import base64
import json
import typing
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Union

import trio
import trio_websocket
from openai.types.beta.realtime import realtime_client_event as preview_client
from openai.types.beta.realtime import realtime_server_event as preview_server
from openai.types.realtime import realtime_client_event as ga_client
from openai.types.realtime import realtime_server_event as ga_server
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

__all__ = ["FakeAzureRealtime", "FakeSession", "open_fake_azure", "reply_audio", "unknown_keys"]

BYTES_PER_MS = 48


def _adapter(alias: Any) -> TypeAdapter[Any]:
    """A TypeAdapter over the members of an openai event union, discriminated by ``type``."""
    union = typing.get_args(alias)[0]
    members = typing.get_args(union)
    return TypeAdapter(Annotated[Union[members], Field(discriminator="type")])  # noqa: UP007


GA_CLIENT = _adapter(ga_client.RealtimeClientEvent)
PREVIEW_CLIENT = _adapter(preview_client.RealtimeClientEvent)
GA_SERVER = _adapter(ga_server.RealtimeServerEvent)
PREVIEW_SERVER = _adapter(preview_server.RealtimeServerEvent)


def unknown_keys(value: Any, path: str = "$") -> list[str]:
    """Paths of keys no model declares (the openai models accept them silently)."""
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{path}.{key}" for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += unknown_keys(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for i, one in enumerate(value):
            found += unknown_keys(one, f"{path}[{i}]")
    return found


def reply_audio(index: int, n_bytes: int) -> bytes:
    """The audio of the ``index``-th delta of a reply: distinct, non-silent PCM16."""
    sample = (index % 200 + 1).to_bytes(2, "little", signed=True)
    return sample * (n_bytes // 2)


def _default_reply(session: FakeSession) -> str:
    last = session.items[-1] if session.items else None
    if last is not None and last.get("type") == "function_call_output":
        return f"Kết quả: {last['output']}"
    return f"Dạ, bạn vừa nói: {session.last_user_text() or '...'}"


@dataclass
class FakeSession:
    """One accepted connection and everything its client sent."""

    mode: str  # "ga" or "preview"
    path: str
    headers: dict[str, str]
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Conversation items in order: from the client (created), and the fake's own.
    items: list[dict[str, Any]] = field(default_factory=list)
    #: Items the client created with conversation.item.create (restored turns included).
    created_items: list[dict[str, Any]] = field(default_factory=list)
    session: dict[str, Any] = field(default_factory=dict)
    appended: bytearray = field(default_factory=bytearray)
    closed_by: str | None = None  # "client", "server", "expired", "dropped"
    ended: trio.Event = field(default_factory=trio.Event)
    responses: int = 0

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    def last_user_text(self) -> str:
        for item in reversed(self.items):
            if item.get("type") == "message" and item.get("role") == "user":
                for part in item.get("content", ()):
                    text = part.get("text") or part.get("transcript")
                    if text:
                        return str(text)
        return ""

    @property
    def turn_detection(self) -> Any:
        if self.mode == "ga":
            return self.session.get("audio", {}).get("input", {}).get("turn_detection")
        return self.session.get("turn_detection")

    @property
    def text_only(self) -> bool:
        if self.mode == "ga":
            return self.session.get("output_modalities") == ["text"]
        return self.session.get("modalities") == ["text"]


class _Conn:
    """The server side of one session: state the handlers share."""

    def __init__(self, fake: FakeAzureRealtime, ws: Any, session: FakeSession) -> None:
        self.fake = fake
        self.ws = ws
        self.record = session
        self.ga = session.mode == "ga"
        self.events = 0
        self.items = 0
        self.response_scope: trio.CancelScope | None = None
        self.response_id: str | None = None
        self.in_speech = False
        self.speech_item: str | None = None
        self.buffer = bytearray()  # input audio since the last commit
        self.audio_ms: dict[str, int] = {}  # assistant item -> audio produced
        self.nursery: trio.Nursery | None = None

    def name(self, ga: str, preview: str) -> str:
        return ga if self.ga else preview

    def new_item_id(self) -> str:
        self.items += 1
        return f"item_{self.record.responses}_{self.items}"

    async def send(self, event: dict[str, Any]) -> None:
        self.events += 1
        event = {"event_id": f"event_{self.events}", **event}
        self.fake._check(GA_SERVER if self.ga else PREVIEW_SERVER, event, "server")
        await self.ws.send_message(json.dumps(event, ensure_ascii=False))

    async def error(self, code: str, message: str, event_id: str | None = None) -> None:
        error = {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": None,
            "event_id": event_id,
        }
        await self.send({"type": "error", "error": error})

    async def item_added(self, item: dict[str, Any]) -> None:
        if self.ga:
            await self.send({"type": "conversation.item.added", "item": item})
            await self.send({"type": "conversation.item.done", "item": item})
        else:
            await self.send({"type": "conversation.item.created", "item": item})


class FakeAzureRealtime:
    """The fake service. Start it with ``await nursery.start(fake.run)``."""

    def __init__(
        self,
        *,
        api_key: str = "test-key",
        transcript: str = "xin chào",
        reply: Callable[[FakeSession], str] = _default_reply,
        audio_bytes_per_delta: int = 4800,
        delta_delay_s: float = 0.0,
        vad_start_bytes: int = 9600,
        vad_stop_bytes: int = 48000,
        vad_silence_ms: int = 0,
    ) -> None:
        self.api_key = api_key
        self.transcript = transcript
        self.reply = reply
        self.audio_bytes_per_delta = audio_bytes_per_delta
        self.vad_start_bytes = vad_start_bytes
        self.vad_stop_bytes = vad_stop_bytes
        #: How long before the end of what was appended the fake VAD says speech ended
        #: (a real server VAD stops after silence_duration_ms of silence).
        self.vad_silence_ms = vad_silence_ms
        # Knobs.
        self.delta_delay_s = delta_delay_s
        self.reject_status: int | None = None
        self.drop_after_deltas: int | None = None  # once: close mid-response
        self.error_next_response: tuple[str, str] | None = None  # once
        self.garble_next_response: str | None = None  # once
        self.expire_after_s: float | None = None
        self.tool_calls: list[tuple[str, dict[str, Any]]] = []
        self.handshake_delay_s = 0.0
        self.stall_after_deltas: int | None = None  # once: go silent mid-response
        self.close_after_accept = False
        # Records.
        self.endpoint = ""
        self.handshakes = 0
        self.rejected = 0
        self.sessions: list[FakeSession] = []
        self.invalid: list[str] = []
        self.session_started = trio.Event()

    # ---------------------------------------------------------------- checks

    def _check(self, adapter: TypeAdapter[Any], event: dict[str, Any], side: str) -> Any:
        try:
            model = adapter.validate_python(event)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
            )
            self.invalid.append(f"{side} {event.get('type')!r}: {problems}")
            return None
        extra = unknown_keys(model)
        if extra:
            self.invalid.append(f"{side} {event.get('type')!r}: unknown keys {extra}")
            return None
        return model

    def _semantics(self, conn: _Conn, event: dict[str, Any]) -> str | None:
        """Documented rules the schema does not carry; a message if one is broken."""
        kind = event["type"]
        if kind == "session.update":
            session = event["session"]
            if conn.ga:
                modalities = session.get("output_modalities")
                if modalities is not None and len(modalities) != 1:
                    return "output_modalities is ['audio'] or ['text'], not both"
                for side in ("input", "output"):
                    fmt = session.get("audio", {}).get(side, {}).get("format")
                    if fmt is not None and fmt != {"type": "audio/pcm", "rate": 24000}:
                        return f"audio.{side}.format must be PCM 24 kHz, not {fmt}"
            elif session.get("input_audio_format", "pcm16") != "pcm16":
                return "input_audio_format must be pcm16"
        elif kind == "input_audio_buffer.append":
            try:
                pcm = base64.b64decode(event["audio"], validate=True)
            except ValueError:
                return "audio is not base64"
            if len(pcm) % 2:
                return "audio is not PCM16 (odd length)"
        elif kind == "conversation.item.truncate" and event["content_index"] != 0:
            return "content_index must be 0 (the audio part)"
        return None

    # ---------------------------------------------------------------- server

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, self._handle, "127.0.0.1", 0, None
            )
            self.endpoint = f"http://127.0.0.1:{server.port}"
            task_status.started(self.endpoint)

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        self.handshakes += 1
        if self.handshake_delay_s:
            await trio.sleep(self.handshake_delay_s)
        url = urllib.parse.urlsplit(request.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        status = self.reject_status
        if url.path == "/openai/v1/realtime":
            mode = "ga"
            if "model" not in query or "api-version" in query:
                status = status or 401  # Azure: an api-version on the GA URL gives 401
        elif url.path == "/openai/realtime":
            mode = "preview"
            if "api-version" not in query or "deployment" not in query:
                status = status or 404
            if headers.get("openai-beta") != "realtime=v1":
                status = status or 400
        else:
            mode, status = "ga", status or 404
        if headers.get("api-key") != self.api_key:
            status = 401
        if status is not None:
            self.rejected += 1
            await request.reject(status, body=b'{"error":{"code":"refused"}}')
            return
        ws = await request.accept()
        record = FakeSession(mode=mode, path=request.path, headers=headers)
        self.sessions.append(record)
        if self.close_after_accept:
            record.closed_by = "server"
            record.ended.set()
            await ws.aclose(1008, "policy violation")
            return
        conn = _Conn(self, ws, record)
        try:
            async with trio.open_nursery() as nursery:
                conn.nursery = nursery
                await conn.send({"type": "session.created", "session": self._session_view(conn)})
                self.session_started.set()
                self.session_started = trio.Event()
                if self.expire_after_s is not None:
                    nursery.start_soon(self._expire, conn, self.expire_after_s)
                await self._read(conn)
                nursery.cancel_scope.cancel()
        except* trio_websocket.ConnectionClosed:
            pass  # the client went away (or the fake dropped it) mid-send
        finally:
            record.closed_by = record.closed_by or "client"
            record.ended.set()

    def _session_view(self, conn: _Conn) -> dict[str, Any]:
        session = dict(conn.record.session)
        if conn.ga:
            session.setdefault("type", "realtime")
        return session

    async def _expire(self, conn: _Conn, after: float) -> None:
        await trio.sleep(after)
        conn.record.closed_by = "expired"
        await conn.error("session_expired", "Your session hit the maximum duration of 30 minutes.")
        await conn.ws.aclose(1000, "session expired")

    async def _read(self, conn: _Conn) -> None:
        while True:
            try:
                raw = await conn.ws.get_message()
            except trio_websocket.ConnectionClosed:
                return
            try:
                event = json.loads(raw)
            except ValueError:
                self.invalid.append(f"client sent non-JSON: {raw[:80]!r}")
                continue
            conn.record.events.append(event)
            model = self._check(GA_CLIENT if conn.ga else PREVIEW_CLIENT, event, "client")
            problem = self._semantics(conn, event) if model is not None else None
            if problem is not None:
                self.invalid.append(f"client {event['type']!r}: {problem}")
            if model is None or problem is not None:
                await conn.error("invalid_value", "invalid event", event.get("event_id"))
                continue
            await self._on_event(conn, event)

    # ---------------------------------------------------------------- events

    async def _on_event(self, conn: _Conn, event: dict[str, Any]) -> None:
        kind = event["type"]
        record = conn.record
        if kind == "session.update":
            update = event["session"]
            merged = record.session
            for key, value in update.items():
                if key == "audio" and isinstance(value, dict):
                    audio = merged.setdefault("audio", {})
                    for side, conf in value.items():
                        audio.setdefault(side, {}).update(conf)
                else:
                    merged[key] = value
            await conn.send({"type": "session.updated", "session": self._session_view(conn)})
        elif kind == "input_audio_buffer.append":
            pcm = base64.b64decode(event["audio"])
            record.appended += pcm
            conn.buffer += pcm
            await self._server_vad(conn)
        elif kind == "input_audio_buffer.commit":
            if len(conn.buffer) < 100 * BYTES_PER_MS:
                await conn.error(
                    "input_audio_buffer_commit_empty",
                    "buffer too small: expected at least 100ms of audio",
                    event.get("event_id"),
                )
                return
            await self._commit(conn)
        elif kind == "conversation.item.create":
            item = dict(event["item"])
            item.setdefault("id", conn.new_item_id())
            record.created_items.append(item)
            record.items.append(item)
            await conn.item_added({**item, "object": "realtime.item", "status": "completed"})
        elif kind == "response.create":
            if conn.response_scope is not None:
                await conn.error(
                    "conversation_already_has_active_response",
                    "Conversation already has an active response",
                    event.get("event_id"),
                )
                return
            if self.garble_next_response is not None:
                frame, self.garble_next_response = self.garble_next_response, None
                await conn.ws.send_message(frame)
                return
            if self.error_next_response is not None:
                code, message = self.error_next_response
                self.error_next_response = None
                await conn.error(code, message, event.get("event_id"))
                return
            await self._start_response(conn)
        elif kind == "response.cancel":
            wanted = event.get("response_id")
            if conn.response_scope is None or (wanted and wanted != conn.response_id):
                await conn.error(
                    "response_cancel_not_active", "no active response", event.get("event_id")
                )
                return
            conn.response_scope.cancel()
        elif kind == "conversation.item.delete":
            item_id = event["item_id"]
            kept = [i for i in conn.record.items if i.get("id") != item_id]
            if len(kept) == len(conn.record.items):
                await conn.error(
                    "item_delete_invalid_item_id", f"no item {item_id}", event.get("event_id")
                )
                return
            conn.record.items[:] = kept
            await conn.send({"type": "conversation.item.deleted", "item_id": item_id})
        elif kind == "conversation.item.truncate":
            item_id = event["item_id"]
            produced = conn.audio_ms.get(item_id)
            if produced is None or event["audio_end_ms"] > produced:
                await conn.error(
                    "invalid_value",
                    f"audio_end_ms {event['audio_end_ms']} is past the audio of {item_id}",
                    event.get("event_id"),
                )
                return
            await conn.send(
                {
                    "type": "conversation.item.truncated",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": event["audio_end_ms"],
                }
            )

    async def _server_vad(self, conn: _Conn) -> None:
        detection = conn.record.turn_detection
        if not detection:
            return
        if not conn.in_speech and len(conn.buffer) >= self.vad_start_bytes:
            conn.in_speech = True
            item_id = conn.speech_item = conn.new_item_id()
            await conn.send(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": len(conn.record.appended) // BYTES_PER_MS,
                    "item_id": item_id,
                }
            )
            if conn.response_scope is not None and detection.get("interrupt_response", True):
                conn.response_scope.cancel()
        elif conn.in_speech and len(conn.buffer) >= self.vad_stop_bytes:
            conn.in_speech = False
            await conn.send(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": max(
                        0, len(conn.record.appended) // BYTES_PER_MS - self.vad_silence_ms
                    ),
                    "item_id": conn.speech_item,
                }
            )
            await self._commit(conn)
            if detection.get("create_response", True) and conn.response_scope is None:
                await self._start_response(conn)

    async def _commit(self, conn: _Conn) -> None:
        conn.buffer.clear()
        conn.in_speech = False
        item_id, conn.speech_item = conn.speech_item or conn.new_item_id(), None
        await conn.send(
            {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": None}
        )
        item = {
            "id": item_id,
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        conn.record.items.append(item)
        await conn.item_added({**item, "object": "realtime.item"})
        words = self.transcript.split(" ")
        half = " ".join(words[: max(1, len(words) // 2)])
        name = "conversation.item.input_audio_transcription"
        await conn.send(
            {"type": f"{name}.delta", "item_id": item_id, "content_index": 0, "delta": half}
        )
        await conn.send(
            {
                "type": f"{name}.delta",
                "item_id": item_id,
                "content_index": 0,
                "delta": self.transcript[len(half) :],
            }
        )
        await conn.send(
            {
                "type": f"{name}.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": self.transcript,
                "usage": {"type": "duration", "seconds": 1.0},
            }
        )
        item["content"][0]["transcript"] = self.transcript

    async def _start_response(self, conn: _Conn) -> None:
        assert conn.nursery is not None
        conn.record.responses += 1
        conn.response_id = f"resp_{conn.record.responses}"
        conn.response_scope = trio.CancelScope()
        conn.nursery.start_soon(self._respond, conn, conn.response_id, conn.response_scope)

    async def _respond(self, conn: _Conn, response_id: str, scope: trio.CancelScope) -> None:
        base = {"id": response_id, "object": "realtime.response", "output": []}
        output: list[dict[str, Any]] = []
        status = "completed"
        try:
            await conn.send(
                {"type": "response.created", "response": {**base, "status": "in_progress"}}
            )
            with scope:
                last = conn.record.items[-1] if conn.record.items else {}
                if self.tool_calls and last.get("type") != "function_call_output":
                    output.append(await self._function_call(conn, response_id))
                else:
                    output.append(await self._speak(conn, response_id))
            if scope.cancelled_caught:
                status = "cancelled"
        finally:
            conn.response_scope = None
            conn.response_id = None
        await conn.send(
            {"type": "response.done", "response": {**base, "status": status, "output": output}}
        )

    async def _function_call(self, conn: _Conn, response_id: str) -> dict[str, Any]:
        name, arguments = self.tool_calls.pop(0)
        args = json.dumps(arguments, ensure_ascii=False)
        item_id = conn.new_item_id()
        call_id = f"call_{item_id}"
        item = {
            "id": item_id,
            "type": "function_call",
            "object": "realtime.item",
            "status": "in_progress",
            "name": name,
            "call_id": call_id,
            "arguments": "",
        }
        where = {"response_id": response_id, "output_index": 0, "item_id": item_id}
        await conn.send(
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            }
        )
        await conn.send(
            {
                "type": "response.function_call_arguments.delta",
                **where,
                "call_id": call_id,
                "delta": args,
            }
        )
        await conn.send(
            {
                "type": "response.function_call_arguments.done",
                **where,
                "call_id": call_id,
                "name": name,
                "arguments": args,
            }
        )
        done = {**item, "status": "completed", "arguments": args}
        await conn.send(
            {
                "type": "response.output_item.done",
                "response_id": response_id,
                "output_index": 0,
                "item": done,
            }
        )
        conn.record.items.append(done)
        return done

    async def _speak(self, conn: _Conn, response_id: str) -> dict[str, Any]:
        record = conn.record
        text_only = record.text_only
        text = self.reply(record)
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1].rstrip()
        item_id = conn.new_item_id()
        part_kind = (
            ("output_text" if conn.ga else "text")
            if text_only
            else ("output_audio" if conn.ga else "audio")
        )
        item = {
            "id": item_id,
            "type": "message",
            "role": "assistant",
            "object": "realtime.item",
            "status": "in_progress",
            "content": [],
        }
        where = {
            "response_id": response_id,
            "output_index": 0,
            "item_id": item_id,
            "content_index": 0,
        }
        await conn.send(
            {
                "type": "response.output_item.added",
                "response_id": response_id,
                "output_index": 0,
                "item": item,
            }
        )
        part = {"type": "text" if text_only else "audio"}
        await conn.send({"type": "response.content_part.added", **where, "part": part})
        record.items.append(item)
        conn.audio_ms[item_id] = 0
        said: list[str] = []
        for i, word in enumerate(words):
            if self.delta_delay_s:
                await trio.sleep(self.delta_delay_s)
            if self.drop_after_deltas is not None and i == self.drop_after_deltas:
                self.drop_after_deltas = None
                record.closed_by = "dropped"
                await conn.ws.aclose(1011, "dropped")
                assert conn.nursery is not None
                conn.nursery.cancel_scope.cancel()
                await trio.lowlevel.checkpoint()
            if self.stall_after_deltas is not None and i == self.stall_after_deltas:
                self.stall_after_deltas = None
                record.closed_by = "stalled"
                await trio.sleep_forever()  # still connected, never another event
            said.append(word)
            if text_only:
                await conn.send(
                    {
                        "type": conn.name("response.output_text.delta", "response.text.delta"),
                        **where,
                        "delta": word,
                    }
                )
            else:
                await conn.send(
                    {
                        "type": conn.name(
                            "response.output_audio_transcript.delta",
                            "response.audio_transcript.delta",
                        ),
                        **where,
                        "delta": word,
                    }
                )
                pcm = reply_audio(i, self.audio_bytes_per_delta)
                await conn.send(
                    {
                        "type": conn.name("response.output_audio.delta", "response.audio.delta"),
                        **where,
                        "delta": base64.b64encode(pcm).decode(),
                    }
                )
                conn.audio_ms[item_id] += len(pcm) // BYTES_PER_MS
        full = "".join(said)
        if text_only:
            await conn.send(
                {
                    "type": conn.name("response.output_text.done", "response.text.done"),
                    **where,
                    "text": full,
                }
            )
            content = {"type": part_kind, "text": full}
        else:
            await conn.send(
                {"type": conn.name("response.output_audio.done", "response.audio.done"), **where}
            )
            await conn.send(
                {
                    "type": conn.name(
                        "response.output_audio_transcript.done", "response.audio_transcript.done"
                    ),
                    **where,
                    "transcript": full,
                }
            )
            content = {"type": part_kind, "transcript": full}
        await conn.send({"type": "response.content_part.done", **where, "part": part})
        done = {**item, "status": "completed", "content": [content]}
        await conn.send(
            {
                "type": "response.output_item.done",
                "response_id": response_id,
                "output_index": 0,
                "item": done,
            }
        )
        item.update(done)
        return done


@asynccontextmanager
async def open_fake_azure(**kwargs: Any) -> AsyncIterator[FakeAzureRealtime]:
    """Run a fake for the body; fail if any event on the wire broke the schema."""
    fake = FakeAzureRealtime(**kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(fake.run)
        yield fake
        nursery.cancel_scope.cancel()
    assert not fake.invalid, "invalid Realtime events:\n" + "\n".join(fake.invalid)
