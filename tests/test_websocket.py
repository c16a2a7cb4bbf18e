"""voice-trio serve's own WebSocket (voice_trio.websocket), frame by frame on the wire.

Every test writes frames by hand (tests.support.RawClient) and reads the
server's frames and close codes back, as RFC 6455 says they must be.
"""

from __future__ import annotations

import json
import socket
import struct

import pytest
import trio

from voice_trio import server as server_module
from voice_trio.app import VoiceTrioApp
from voice_trio.providers import Brain
from voice_trio.session import Session

from .support import RawClient, frame, running_server, tone

PING_JSON = b'{"type":"ping"}'


async def _ready(server_port: int, session: str, **kwargs: bytes) -> RawClient:
    client = await RawClient.handshake(server_port, f"/ws/{session}", **kwargs)
    assert client.head.startswith(b"HTTP/1.1 101"), client.head
    assert (await client.read_event())["type"] == "session.ready"
    return client


async def test_a_ping_frame_gets_a_pong_with_its_payload() -> None:
    async with running_server() as server:
        client = await _ready(server.port, "pings")
        await client.send_frame(0x9, b"are you there")
        assert await client.read_frame() == (True, 0xA, b"are you there")
        await client.send_frame(0xA, b"unsolicited pong")  # ignored, as RFC 6455 allows
        await client.send_frame(0x1, PING_JSON)
        assert await client.read_event() == {"type": "pong"}


async def test_fragmented_messages_are_put_together_with_control_frames_between() -> None:
    async with running_server() as server:
        client = await _ready(server.port, "fragments")
        await client.send_frame(0x1, b'{"type":', fin=False)
        await client.send_frame(0x9, b"mid")  # control frames may come between fragments
        await client.send_frame(0x0, b'"text","text":"xin ', fin=False)
        await client.send_frame(0x0, 'chào"}'.encode())
        assert await client.read_frame() == (True, 0xA, b"mid")
        started = await client.read_event()
        assert started["type"] == "response.started"
        event = await client.read_event()
        while event["type"] == "response.text.delta":
            event = await client.read_event()
        assert event == {
            "type": "response.text.done",
            "response_id": started["response_id"],
            "text": "xin chào",
        }
        assert (await client.read_event())["type"] == "response.done"
        pcm = tone(2400, seed=5)
        await client.send_frame(0x2, pcm[:1000], fin=False)
        await client.send_frame(0x0, pcm[1000:])
        await client.send_frame(0x1, b'{"type":"commit_audio"}')
        audio = b""
        while True:
            _, opcode, payload = await client.read_frame()
            if opcode == 0x2:
                audio += payload
            elif json.loads(payload)["type"] == "response.done":
                break
        assert audio == pcm


async def test_a_query_string_is_not_part_of_the_session_id() -> None:
    async with running_server() as server:
        client = await RawClient.handshake(server.port, "/ws/with-query?lang=vi&x=1")
        assert client.head.startswith(b"HTTP/1.1 101"), client.head
        assert (await client.read_event())["session_id"] == "with-query"


async def test_frames_sent_with_the_handshake_are_not_lost() -> None:
    async with running_server() as server:
        client = await _ready(server.port, "early", early=frame(0x1, PING_JSON))
        assert await client.read_event() == {"type": "pong"}


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([frame(0x1, PING_JSON, masked=False)], 1002),
        ([frame(0x1, PING_JSON, rsv=4)], 1002),  # RSV1: deflate was never agreed
        ([frame(0x3, b"")], 1002),  # a reserved opcode
        ([frame(0x9, b"x" * 126)], 1002),  # control frame over 125 bytes
        ([frame(0x9, b"x", fin=False)], 1002),  # fragmented control frame
        ([frame(0x0, b"orphan")], 1002),  # continuation of nothing
        ([frame(0x1, b"{", fin=False), frame(0x1, b"}")], 1002),  # new message mid-message
        ([frame(0x8, b"\x03")], 1002),  # close frame of one byte
        ([frame(0x8, struct.pack("!H", 1005))], 1002),  # a code only for APIs, never sent
        ([frame(0x8, struct.pack("!H", 999))], 1002),
        ([frame(0x8, struct.pack("!H", 1000) + b"\xc3\x28")], 1007),  # reason not UTF-8
        ([frame(0x1, b"\xc3", fin=False), frame(0x0, b"\x28")], 1007),  # split bad UTF-8
    ],
    ids=[
        "unmasked",
        "rsv1",
        "opcode-3",
        "long-ping",
        "fragmented-ping",
        "orphan-continuation",
        "interleaved-message",
        "one-byte-close",
        "close-1005",
        "close-999",
        "close-reason-not-utf8",
        "split-invalid-utf8",
    ],
)
async def test_protocol_errors_close_with_the_rfc_code(frames: list[bytes], code: int) -> None:
    async with running_server() as server:
        neighbour = await _ready(server.port, "neighbour")
        client = await _ready(server.port, "breaks-it")
        await client.stream.send_all(b"".join(frames))
        with trio.fail_after(10):
            assert (await client.read_close())[0] == code
            assert await client.at_eof()
        # The neighbour never noticed.
        await neighbour.send_frame(0x1, PING_JSON)
        assert await neighbour.read_event() == {"type": "pong"}
        with trio.fail_after(10):
            while await server.metric("voice_trio_rooms_open") != 1:
                await trio.sleep(0.05)


async def test_a_message_over_the_limit_is_refused_from_its_header() -> None:
    async with running_server(ws_max_message_bytes=20_000, ws_max_audio_frame_bytes=9600) as server:
        client = await _ready(server.port, "huge")
        # Only the header of a 1 GB frame is sent: the server must not wait for the payload.
        await client.stream.send_all(frame(0x2, b"", length=1 << 30)[:10])
        with trio.fail_after(10):
            code, reason = await client.read_close()
        assert code == 1009 and "20000" in reason
        # A message split in fragments counts as a whole.
        client = await _ready(server.port, "huge-parts")
        await client.send_frame(0x2, b"\x00" * 8000, fin=False)
        for _ in range(2):
            await client.send_frame(0x0, b"\x00" * 8000, fin=False)
        with trio.fail_after(10):
            assert (await client.read_close())[0] == 1009


async def test_the_client_closes_and_the_server_answers_with_its_code() -> None:
    async with running_server() as server:
        client = await _ready(server.port, "bye")
        await client.send_frame(0x8, struct.pack("!H", 4321) + "tạm biệt".encode())
        with trio.fail_after(10):
            assert await client.read_close() == (4321, "")
            assert await client.at_eof()
            while await server.metric("voice_trio_rooms_open"):
                await trio.sleep(0.05)
        client = await _ready(server.port, "bye-empty")
        await client.send_frame(0x8, b"")
        with trio.fail_after(10):
            assert await client.read_close() == (None, "")


async def test_a_client_that_drops_tcp_ends_its_room() -> None:
    async with running_server() as server:
        client = await _ready(server.port, "vanish")
        await client.send_frame(0x1, b'{"type":"text","text":"hi"}')
        await client.stream.aclose()
        with trio.fail_after(10):
            while await server.metric("voice_trio_rooms_open"):
                await trio.sleep(0.05)


@pytest.mark.parametrize(
    ("request_head", "status"),
    [
        # No Sec-WebSocket-Version: 400, and a wrong one 426 naming the one we speak.
        (
            b"GET /ws/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            b"400",
        ),
        (
            b"GET /ws/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            b"426",
        ),
        (
            b"POST /ws/a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Content-Length: 0\r\n\r\n",
            b"400",
        ),
        (b"GET /ws/a HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", b"400"),
    ],
    ids=["no-version", "version-8", "post", "no-key"],
)
async def test_bad_handshakes_get_an_http_error(request_head: bytes, status: bytes) -> None:
    async with running_server() as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(request_head)
        response = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(4096):
                response += chunk
        assert response.split(b" ")[1] == status, response
        if status == b"426":
            assert b"sec-websocket-version: 13" in response.lower()
        assert await server.metric("voice_trio_rooms_open") == 0


async def test_plain_http_on_the_same_port_still_goes_to_hypercorn() -> None:
    async with running_server() as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        # Two requests on one keep-alive connection, the first split across writes.
        await stream.send_all(b"GET /hea")
        await trio.sleep(0.05)
        await stream.send_all(
            b"lthz HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        response = b""
        with trio.fail_after(10):
            while response.count(b"HTTP/1.1 200") < 2 or b"voice_trio_rooms_open" not in response:
                chunk = await stream.receive_some(65536)
                assert chunk, response
                response += chunk
        assert b'"status":"ok"' in response
        await stream.aclose()


async def test_a_connection_that_never_sends_a_request_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Real time (a server's start-up waits on real I/O, which virtual time would jump
    # over), with the head deadline made short.
    monkeypatch.setattr(server_module, "REQUEST_HEAD_TIMEOUT_S", 1.0)
    async with running_server() as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        start = trio.current_time()
        with trio.fail_after(30):
            assert await stream.receive_some(100) == b""
        assert trio.current_time() - start >= 0.9


async def test_a_burst_of_queued_events_arrives_whole_and_in_order() -> None:
    async with running_server(ws_outgoing_max=256) as server:
        client = await _ready(server.port, "burst")
        # 100 pings in one write: the answers leave in batches; each frame stays whole.
        await client.stream.send_all(b"".join(frame(0x1, PING_JSON) for _ in range(100)))
        for _ in range(100):
            assert await client.read_event() == {"type": "pong"}


class _BuggyApp(VoiceTrioApp):
    """A deployment whose brain factory has a bug for one room."""

    def make_brain(self, room: Session) -> Brain:
        if room.session_id == "buggy":
            raise RuntimeError("a bug in make_brain")
        return super().make_brain(room)


async def test_a_room_that_crashes_closes_1011_and_its_neighbour_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_server(app_class=_BuggyApp) as server:
        async with server.connect("buggy") as buggy, server.connect("fine") as fine:
            await buggy.send_json(type="text", text="xin chào")
            assert await buggy.closed() == (1011, "internal error")
            await fine.send_json(type="text", text="vẫn chạy")
            events, _ = await fine.until("response.done")
            assert events[-1]["status"] == "completed"
    assert "room buggy failed" in caplog.text and "a bug in make_brain" in caplog.text


def test_a_long_close_reason_is_cut_on_a_character_boundary() -> None:
    from voice_trio.websocket import _close_payload

    payload = _close_payload(1011, "lỗi " * 60)
    assert len(payload) <= 125 and struct.unpack("!H", payload[:2])[0] == 1011
    assert payload[2:].decode("utf-8").startswith("lỗi lỗi")


async def test_a_message_in_one_byte_fragments_is_put_together_up_to_the_fragment_bound() -> None:
    async with running_server(ws_max_fragments=300) as server:
        client = await _ready(server.port, "crumbs")
        text = b'{"type":"text","text":"' + b"a" * 250 + b'"}'  # 275 bytes, 275 frames
        frames = [frame(0x1, text[:1], fin=False)]
        frames += [frame(0x0, text[i : i + 1], fin=False) for i in range(1, len(text) - 1)]
        frames.append(frame(0x0, text[-1:]))
        await client.stream.send_all(b"".join(frames))
        assert (await client.read_event())["type"] == "response.started"
        event = await client.read_event()
        while event["type"] == "response.text.delta":
            event = await client.read_event()
        assert event["type"] == "response.text.done" and event["text"] == "a" * 250
        assert (await client.read_event())["type"] == "response.done"
        # One frame more than the bound: the message is refused (1009), unread.
        pcm = b"\x00\x01" * 301
        frames = [frame(0x2, pcm[:2], fin=False)]
        frames += [frame(0x0, pcm[i : i + 2], fin=False) for i in range(2, len(pcm), 2)]
        await client.stream.send_all(b"".join(frames))
        with trio.fail_after(10):
            code, reason = await client.read_close()
        assert code == 1009 and "300 frames" in reason


async def test_a_burst_of_pings_is_answered_by_a_pong_for_the_newest() -> None:
    async with running_server() as server:
        client = await _ready(server.port, "ping-burst")
        burst = b"".join(frame(0x9, b"%d" % i) for i in range(5000))
        await client.stream.send_all(burst + frame(0x1, PING_JSON))
        pongs = []
        while True:
            _, opcode, payload = await client.read_frame()
            if opcode == 0xA:
                pongs.append(payload)
            elif json.loads(payload)["type"] == "pong":
                break
        # Fewer pongs than pings (RFC 6455 section 5.5.3), and the newest one is answered.
        assert 1 <= len(pongs) < 5000 and pongs[-1] == b"4999"


@pytest.mark.parametrize(
    "head",
    [
        bytes([0x82, 0x80 | 126]) + struct.pack("!H", 100),
        bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1000),
        bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 63),
    ],
    ids=["16-bit-for-100", "64-bit-for-1000", "64-bit-msb"],
)
async def test_a_length_not_in_its_shortest_form_closes_1002(head: bytes) -> None:
    async with running_server() as server:
        client = await _ready(server.port, "lengths")
        await client.stream.send_all(head + b"\x00" * 4)
        with trio.fail_after(10):
            assert (await client.read_close())[0] == 1002


async def test_a_peer_lost_while_its_pong_is_written_is_not_a_room_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_server() as server:
        for i in range(20):
            client = await _ready(server.port, f"gone-{i}")
            # Pings, then a reset: the pongs meet a closed peer.
            await client.stream.send_all(b"".join(frame(0x9, b"x" * 125) for _ in range(200)))
            client.stream.socket.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            await client.stream.aclose()
        with trio.fail_after(10):
            while await server.metric("voice_trio_rooms_open"):
                await trio.sleep(0.05)
    assert "failed" not in caplog.text
