"""Malformed input: a clear `error` event and the room stays up; no neighbour notices."""

from __future__ import annotations

import json

import pytest
import trio
import trio_websocket

from .support import BOTH_PATHS, RawClient, running_server, tone

BAD_TEXT_FRAMES = [
    ("{not json", "invalid_json"),
    ("[1, 2, 3]", "invalid_message"),
    ('{"text": "no type"}', "invalid_message"),
    ('{"type": "shout"}', "unknown_type"),
    ('{"type": 7}', "unknown_type"),
    ('{"type": "text"}', "invalid_message"),
    ('{"type": "text", "text": 42}', "invalid_message"),
    ('{"type": "interrupt", "played_ms": "soon"}', "invalid_message"),
    ('{"type": "interrupt", "played_ms": -5}', "invalid_message"),
    ('{"type": "ping", "extra": true}', "invalid_message"),
    ('{"type": "audio", "audio": [0, 40000]}', "invalid_audio"),
    ('{"type": "audio", "audio": [-32769]}', "invalid_audio"),
    ('{"type": "audio", "audio": [1.5]}', "invalid_audio"),
    ('{"type": "audio"}', "invalid_message"),
    ('{"type": "session.config", "input_sample_rate": 44100}', "unsupported_sample_rate"),
    ('{"type": "session.config", "input_sample_rate": "fast"}', "invalid_message"),
    ('{"type": "text", "text": "   "}', "invalid_message"),
    # The minimal inputs of issue #10 that killed the room (1011) before.
    ('{"type":"nope",', "invalid_json"),
    ('{"type":"ping","x":1}}', "invalid_json"),
    ('{"type":"interrupt","played_ms":1e400}', "invalid_message"),
    ("[" * 1000, "invalid_message"),
    ('{"type":' + "[" * 5000, "invalid_message"),
    ('{"a":' * 5000, "invalid_message"),
    ('{"type":1e400}', "unknown_type"),
    ('{"type":"audio","audio":[1e400]}', "invalid_audio"),
    ("", "invalid_json"),
]


@BOTH_PATHS
async def test_every_bad_text_frame_gets_an_error_and_the_room_stays_up(asgi: bool) -> None:
    async with running_server(asgi=asgi, ws_max_text_chars=100) as server:
        async with server.connect("bad") as bad, server.connect("neighbour") as neighbour:
            for frame, code in [
                *BAD_TEXT_FRAMES,
                (json.dumps({"type": "text", "text": "x" * 101}), "text_too_long"),
            ]:
                await bad.ws.send_message(frame)
                error = await bad.expect("error", code=code, fatal=False)
                assert error["message"], frame
                # The neighbour is served as if nothing happened.
                await neighbour.send_audio(tone(2400, seed=9))
                await neighbour.send_json(type="commit_audio")
                _, audio = await neighbour.until("response.done")
                assert audio == tone(2400, seed=9)
            # And the bad room still works.
            await bad.send_json(type="text", text="vẫn ở đây")
            events, _ = await bad.until("response.done")
            assert events[-1]["status"] == "completed"
        assert await server.metric("voice_trio_rooms_open") == 0


async def test_bad_binary_audio_gets_an_error_and_the_room_stays_up() -> None:
    async with running_server(ws_max_audio_frame_bytes=9600) as server:
        async with server.connect("bad-audio") as client:
            await client.send_audio(b"\x01\x02\x03")
            error = await client.expect("error", code="invalid_audio")
            assert "odd" in error["message"]
            await client.send_audio(tone(4801))  # 9602 bytes, over the limit
            error = await client.expect("error", code="invalid_audio")
            assert "9602" in error["message"] and "9600" in error["message"]
            await client.send_audio(tone(2400, seed=4))
            await client.send_json(type="commit_audio")
            _, audio = await client.until("response.done")
            assert audio == tone(2400, seed=4)


async def test_error_messages_quote_only_a_short_prefix_of_the_input(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO")
    async with running_server() as server:
        async with server.connect("long-values") as client:
            await client.send_json(type="z" * 100_000)
            error = await client.expect("error", code="unknown_type")
            assert "zzzz" in error["message"] and len(error["message"]) < 400
            await client.send_json(type="ping", **{"k" * 50_000: 1})
            error = await client.expect("error", code="invalid_message")
            assert "kkkk" in error["message"] and len(error["message"]) < 400
            # A flood of bad input: each gets its error, the log gets a few lines.
            for _ in range(200):
                await client.ws.send_message("{oops")
            for _ in range(200):
                await client.expect("error", code="invalid_json")
            await client.ping()
        assert await server.metric('voice_trio_input_errors_total{code="invalid_json"}') == 200
    lines = [r for r in caplog.records if r.name == "voice_trio.input"]
    assert 1 <= len(lines) <= 10, len(lines)
    assert all(r.levelname == "INFO" and r.exc_info is None for r in lines)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_unknown_field_messages_name_the_field() -> None:
    async with running_server() as server:
        async with server.connect("fields") as client:
            await client.send_json(type="interrupt", played_ms=5, response_id="r1")
            error = await client.expect("error", code="invalid_message")
            assert "response_id" in error["message"]


@BOTH_PATHS
async def test_message_over_the_size_limit_closes_with_1009(asgi: bool) -> None:
    async with running_server(
        asgi=asgi, ws_max_message_bytes=20_000, ws_max_audio_frame_bytes=9600
    ) as server:
        async with server.connect("big") as client, server.connect("other") as other:
            await client.send_audio(b"\x00" * 30_000)
            code, _ = await client.closed()
            assert code == 1009
            await other.ping()
        async with server.connect("big-text") as client:
            await client.ws.send_message(json.dumps({"type": "text", "text": "a" * 30_000}))
            code, _ = await client.closed()
            assert code == 1009


@BOTH_PATHS
async def test_invalid_utf8_in_a_text_frame_closes_with_1007(asgi: bool) -> None:
    async with running_server(asgi=asgi) as server:
        client = await RawClient.handshake(server.port, "/ws/utf8")
        assert client.head.startswith(b"HTTP/1.1 101")
        await client.send_frame(0x1, b'{"type":"text","text":"\xc3\x28"}')
        with trio.fail_after(10):
            code, _ = await client.read_close()
        assert code == 1007
        await client.stream.aclose()


@BOTH_PATHS
async def test_permessage_deflate_is_refused(asgi: bool) -> None:
    async with running_server(asgi=asgi) as server:
        client = await RawClient.handshake(
            server.port,
            "/ws/deflate",
            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
        )
        assert client.head.startswith(b"HTTP/1.1 101"), client.head
        assert b"sec-websocket-extensions" not in client.head.lower(), client.head
        await client.stream.aclose()


@pytest.mark.parametrize(
    "path", ["/ws/" + "a" * 129, "/ws/has%20space", "/ws/a.b", "/ws/", "/ws/a/b", "/elsewhere"]
)
async def test_bad_session_ids_are_refused_at_the_handshake(path: str) -> None:
    async with running_server() as server:
        with pytest.raises(trio_websocket.ConnectionRejected) as info:
            async with trio_websocket.open_websocket_url(server.ws_base + path):
                pass
        assert info.value.status_code == 403
        assert await server.metric("voice_trio_rooms_open") == 0


async def test_longest_valid_session_id_is_accepted() -> None:
    async with running_server() as server:
        async with server.connect("A-z_9" * 25 + "abc") as client:
            await client.ping()
