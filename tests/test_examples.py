"""The examples of docs/customise.md, run as a team would run them.

- ``examples/order_graph.py``: offline (the conversation alone, both brains' paths),
  in a real room on the embedded brain (typed turns answered in speech), and
  through ``voice-trio serve --graph`` in its own process.
- ``examples/http_voice.py``: a real room whose voice posts each clause to a
  stand-in TTS HTTP server on 127.0.0.1, and what a client sees when that
  server fails or refuses the key.
- ``examples/llm_responder.py``: the embedded brain hearing and speaking, a
  stand-in chat-completions server on 127.0.0.1 deciding.
- ``examples/watch_metrics.py``: what it says of a server that had to close a
  client that stopped reading (queues too small for it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_websocket

from examples.http_voice import HttpVoiceApp
from examples.llm_responder import LlmApp
from examples.order_graph import MENU, build_order_graph
from examples.watch_metrics import fetch, report

from .support import open_client, running_server, tone
from .test_cli import _wait_healthy, free_port
from .test_voice import assert_speech

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GRAPH = "examples.order_graph:build_order_graph"


# ------------------------------------------------------------------ the graph, offline


async def test_order_graph_offline_takes_an_order_by_rules_and_by_tool_calls() -> None:
    graph = build_order_graph()
    talk = graph.conversation(session_id="offline")
    assert "quán cà phê Trio" in talk.greeting()

    reply = await talk.handle_transcript("cho tôi hai ly trà đào")
    assert (reply.node, reply.rule) == ("confirm", "pick")
    assert "2 ly trà đào, 70 nghìn đồng" in reply.text
    reply = await talk.handle_transcript("có")
    assert reply.node == "order"  # the tool's transition
    assert [(c.name, c.ok) for c in reply.tool_calls] == [("place_order", True)]
    assert "đơn số 1" in reply.text and "70 nghìn" in reply.text

    # Typed without tone marks, then changed and refused: back to the order node.
    assert (await talk.handle_transcript("mot nuoc cam")).node == "confirm"
    reply = await talk.handle_transcript("không")
    assert (reply.node, reply.tool_calls) == ("order", ())

    # The model's path (Azure): the schema is exported as written and enforced.
    fields = talk.session_update_fields()
    tools = {tool["name"]: tool for tool in fields["tools"]}
    assert tools["place_order"]["parameters"]["properties"]["drink"]["enum"] == list(MENU)
    bad = json.loads(await talk.handle_tool_call("place_order", '{"drink":"bia","quantity":1}'))
    assert "must be one of" in bad["error"]
    bad = json.loads(await talk.handle_tool_call("place_order", '{"drink":"trà đào"}'))
    assert bad["error"] == "missing required argument 'quantity'"
    good = json.loads(
        await talk.handle_tool_call("place_order", '{"drink":"nước cam","quantity":3}')
    )
    assert good == {"order_number": 2, "total_vnd": 120_000}
    menu = json.loads(await talk.handle_tool_call("get_menu", ""))
    assert [d["name"] for d in menu["drinks"]] == list(MENU)
    # The handler's own rule: three orders a call, then a ToolError the model reads.
    await talk.handle_tool_call("place_order", '{"drink":"trà đào","quantity":1}')
    refused = json.loads(
        await talk.handle_tool_call("place_order", '{"drink":"trà đào","quantity":1}')
    )
    assert "three orders" in refused["error"]
    stats = graph.statistics()
    assert (stats.tool_calls, stats.tool_errors) == (7, 3)


# ------------------------------------------------------------------ the graph in a room


async def _turn(client: Any, text: str | None) -> tuple[str, bytes]:
    """Send a typed turn (None: wait for the greeting); the reply's text and audio."""
    if text is not None:
        await client.send_json(type="text", text=text)
    events, audio = await client.until("response.done")
    assert events[-1]["status"] == "completed", events
    done = [e for e in events if e["type"] == "response.text.done"]
    return done[-1]["text"], audio


async def test_order_graph_in_a_real_room_on_the_embedded_brain(local_speech) -> None:
    # AGENT_GRAPH (here the Settings field) is loaded by the app's start-up, as in serve.
    with trio.fail_after(120):
        serving = running_server(voice_brain="local", speech=local_speech, agent_graph=GRAPH)
        async with serving as server:
            assert server.app.agent is not None and "confirm" in server.app.agent.nodes
            async with server.connect("cafe") as client:
                await client.send_json(type="text", text="cho tôi hai ly trà đào")
                greeting, audio = await _turn(client, None)
                assert greeting.startswith("Xin chào, quán cà phê Trio")
                assert_speech(audio, min_seconds=1.5)
                text, audio = await _turn(client, None)
                assert "2 ly trà đào, 70 nghìn đồng" in text
                assert_speech(audio, min_seconds=1.5)
                text, audio = await _turn(client, "có")
                assert "đơn số 1" in text
                assert_speech(audio, min_seconds=1.5)


async def test_serve_graph_flag_serves_the_graph() -> None:
    port = free_port()
    argv = [str(BIN / "voice-trio"), "serve", "--port", str(port), "--graph", GRAPH]
    env = {**os.environ, "VOICE_BRAIN": "local", "SHUTDOWN_GRACE_S": "2"}
    env.pop("AGENT_GRAPH", None)
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(
            partial(
                trio.run_process, argv, env=env, cwd=ROOT, check=False,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
        try:
            await _wait_healthy(f"http://127.0.0.1:{port}", proc)
            with trio.fail_after(120):
                async with open_client(f"ws://127.0.0.1:{port}/ws/flag") as client:
                    await client.send_json(type="text", text="một cà phê sữa đá")
                    greeting, _ = await _turn(client, None)
                    assert "quán cà phê Trio" in greeting
                    text, audio = await _turn(client, None)
                    assert "1 ly cà phê sữa đá, 29 nghìn đồng" in text
                    assert_speech(audio, min_seconds=1.5)
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
            assert proc.returncode == 0
        finally:
            if proc.returncode is None:
                proc.kill()


def test_serve_with_a_graph_that_cannot_be_imported_says_so() -> None:
    argv = [str(BIN / "voice-trio"), "serve", "--port", str(free_port())]
    env = {**os.environ, "VOICE_BRAIN": "local"}
    done = subprocess.run(
        [*argv, "--graph", "examples.no_such_graph:build"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "AGENT_GRAPH=examples.no_such_graph:build: ModuleNotFoundError" in done.stderr
    done = subprocess.run(
        [*argv, "--graph", "not a module"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "AGENT_GRAPH='not a module' is not valid" in done.stderr


# ------------------------------------------------------------------ the HTTP voice


@dataclass
class StandInTts:
    """A TTS HTTP API on 127.0.0.1: PCM for each clause posted, or the status it is told."""

    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)
    url: str = ""

    def audio_for(self, text: str) -> bytes:
        # 50 ms of distinct, non-silent audio per character: the body of one answer.
        return tone(1200 * len(text), seed=len(self.sent))

    def handler(self) -> type[BaseHTTPRequestHandler]:
        tts = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization")
                tts.requests.append({**body, "path": self.path, "auth": auth})
                if tts.status != 200:
                    self.send_response(tts.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                pcm = tts.audio_for(body["text"])
                tts.sent.append(pcm)
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(pcm)))
                self.end_headers()
                for i in range(0, len(pcm), 4801):  # odd pieces: samples split across writes
                    self.wfile.write(pcm[i : i + 4801])
                    self.wfile.flush()

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@contextmanager
def stand_in_tts(status: int = 200) -> Iterator[StandInTts]:
    tts = StandInTts(status=status)
    server = ThreadingHTTPServer(("127.0.0.1", 0), tts.handler())
    tts.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tts
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


SAID = "Xin chào. Quán mở cửa lúc bảy giờ sáng!"


async def test_http_voice_speaks_each_clause_through_the_api() -> None:
    with stand_in_tts() as tts, trio.fail_after(30):
        app_class = partial(HttpVoiceApp, tts_url=tts.url, tts_key="test-key-1234")
        # The echo brain says the typed text back: the voice speaks it.
        async with running_server(app_class=app_class) as server:  # type: ignore[arg-type]
            async with server.connect("http-voice") as client:
                await client.send_json(type="text", text=SAID)
                events, audio = await client.until("response.done")
    assert events[-1]["status"] == "completed"
    assert [e["text"] for e in events if e["type"] == "response.text.done"] == [SAID]
    assert [r["text"] for r in tts.requests] == ["Xin chào.", "Quán mở cửa lúc bảy giờ sáng!"]
    first = tts.requests[0]
    assert first["path"] == "/v1/tts" and first["auth"] == "Bearer test-key-1234"
    assert (first["language"], first["sample_rate"], first["format"]) == ("vi", 24000, "pcm_s16le")
    assert audio == b"".join(tts.sent)  # every byte the API sent, in order, none lost


async def test_http_voice_failure_ends_the_response_and_the_room_goes_on() -> None:
    with stand_in_tts(status=500) as tts, trio.fail_after(30):
        app_class = partial(HttpVoiceApp, tts_url=tts.url, tts_key="")
        async with running_server(app_class=app_class) as server:  # type: ignore[arg-type]
            async with server.connect("http-voice-500") as client:
                await client.send_json(type="text", text=SAID)
                events, audio = await client.until("response.done")
                errors = [
                    (e["code"], e["message"], e["fatal"]) for e in events if e["type"] == "error"
                ]
                assert errors == [("tts_failed", "the TTS API answered 500", False)]
                assert events[-1]["status"] == "interrupted" and audio == b""
                await client.ping()  # still open
                tts.status = 200
                await client.send_json(type="text", text="Dạ.")
                events, audio = await client.until("response.done")
                assert events[-1]["status"] == "completed" and audio == tts.sent[-1]
    assert tts.requests[0]["auth"] is None  # no key: no header


async def test_http_voice_refused_key_closes_the_room_without_showing_the_key() -> None:
    with stand_in_tts(status=401) as tts, trio.fail_after(30):
        app_class = partial(HttpVoiceApp, tts_url=tts.url, tts_key="secret-key-5678")
        async with running_server(app_class=app_class) as server:  # type: ignore[arg-type]
            async with server.connect("http-voice-401") as client:
                await client.send_json(type="text", text=SAID)
                events, _ = await client.until("error")
                assert events[-1]["code"] == "tts_auth" and events[-1]["fatal"] is True
                assert "secret-key" not in json.dumps(events)
                code, _ = await client.closed()
    assert code == 1011
    assert tts.requests[0]["auth"] == "Bearer secret-key-5678"


@pytest.mark.parametrize("missing", ["", None])
def test_http_voice_app_needs_its_url(missing: str | None, monkeypatch) -> None:
    from voice_trio.errors import ConfigError

    monkeypatch.delenv("TTS_HTTP_URL", raising=False)
    with pytest.raises(ConfigError, match="TTS_HTTP_URL"):
        HttpVoiceApp(tts_url=missing)


# ------------------------------------------------------------------ the queues and metrics


async def test_watch_metrics_names_a_slow_consumer_and_the_settings_to_tune() -> None:
    # Tiny queues (4 messages of 2 s of audio each) and a 1 s patience, and a client
    # that sends 5 minutes of audio to the echo brain and reads none of it back.
    tuned = {"ws_outgoing_max": 4, "ws_tts_chunk_bytes": 96_000, "slow_client_timeout_s": 1}
    async with running_server(**tuned) as server:
        before = {f.figure: f for f in report(await fetch(server.url))}
        assert before["slow consumers closed"].value == "0"
        assert before["slow consumers closed"].advice == ""
        assert before["time to first audio p50, at most"].value == "n/a"
        async with server.connect("slow", message_queue_size=1) as client:
            try:
                for _ in range(300):
                    await client.send_audio(tone(48_000, seed=7))
            except trio_websocket.ConnectionClosed:
                pass  # on a busy machine the server closes it before all of it is sent
            with trio.fail_after(60):
                while not await server.metric("voice_trio_slow_consumer_closes_total"):
                    await trio.sleep(0.05)
        after = {f.figure: f for f in report(await fetch(server.url))}
        assert after["slow consumers closed"].value == "1"
        assert "SLOW_CLIENT_TIMEOUT_S" in after["slow consumers closed"].advice
        # As a team runs it.
        done = await trio.run_process(
            [sys.executable, "examples/watch_metrics.py", server.url],
            cwd=ROOT,
            capture_stdout=True,
        )
    lines = done.stdout.decode().splitlines()
    slow = next(line for line in lines if line.startswith("slow consumers closed"))
    assert slow.split()[3] == "1" and "<- clients whose outbox stayed full" in slow
    assert any(line.startswith("rooms open") for line in lines)


# ------------------------------------------------------------------ the chat-model responder


@dataclass
class StandInChat:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 with canned replies."""

    replies: list[str]
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        chat = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                auth = self.headers.get("Authorization")
                chat.requests.append({**body, "path": self.path, "auth": auth})
                if chat.status != 200:
                    payload = b'{"error": "overloaded"}'
                else:
                    reply = chat.replies.pop(0)
                    message = {"role": "assistant", "content": reply}
                    payload = json.dumps({"choices": [{"index": 0, "message": message}]}).encode()
                self.send_response(chat.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@contextmanager
def stand_in_chat(replies: list[str], status: int = 200) -> Iterator[StandInChat]:
    chat = StandInChat(replies=replies, status=status)
    server = ThreadingHTTPServer(("127.0.0.1", 0), chat.handler())
    chat.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield chat
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_llm_responder_decides_for_the_embedded_brain(local_speech, tmp_path) -> None:
    replies = ["Dạ, bây giờ là mười giờ sáng.", "Không có gì ạ, chúc anh một ngày vui."]
    with stand_in_chat(list(replies)) as chat, trio.fail_after(120):
        app_class = partial(LlmApp, llm_url=chat.url, llm_model="m", llm_key="k-123")
        serving = running_server(
            voice_brain="local",
            speech=local_speech,
            app_class=app_class,  # type: ignore[arg-type]
            agent_db_path=str(tmp_path / "unused.sqlite3"),
        )
        async with serving as server, server.connect("llm") as client:
            text, audio = await _turn(client, "mấy giờ rồi")
            assert text == replies[0]
            assert_speech(audio, min_seconds=1.5)
            text, _ = await _turn(client, "cảm ơn em")
            assert text == replies[1]
    first, second = chat.requests
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer k-123"
    assert first["model"] == "m" and first["messages"][0]["role"] == "system"
    assert first["messages"][1:] == [{"role": "user", "content": "mấy giờ rồi"}]
    assert second["messages"][1:] == [
        {"role": "user", "content": "mấy giờ rồi"},
        {"role": "assistant", "content": replies[0]},
        {"role": "user", "content": "cảm ơn em"},
    ]


async def test_llm_failure_is_an_error_and_the_conversation_survives_the_brain(
    local_speech, tmp_path
) -> None:
    with stand_in_chat(["Dạ, em nghe đây ạ."], status=503) as chat, trio.fail_after(120):
        app_class = partial(LlmApp, llm_url=chat.url, llm_key="")
        serving = running_server(
            voice_brain="local",
            speech=local_speech,
            app_class=app_class,  # type: ignore[arg-type]
            agent_db_path=str(tmp_path / "unused.sqlite3"),
        )
        async with serving as server, server.connect("llm-503") as client:
            await client.send_json(type="text", text="alo")
            error = await client.expect("error")
            assert (error["code"], error["fatal"]) == ("llm_failed", False)
            assert error["message"] == "the language model answered 503"
            chat.status = 200
            # A new brain for the next turn, the same conversation: "alo" is remembered.
            text, _ = await _turn(client, "có ai không")
            assert text == "Dạ, em nghe đây ạ."
    assert chat.requests[0]["auth"] is None  # no key: no header
    users = [m["content"] for m in chat.requests[1]["messages"] if m["role"] == "user"]
    assert users == ["alo", "có ai không"]
