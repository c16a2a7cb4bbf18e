"""Resume (issue #13): a conversation outlives its connection, and with Redis its instance.

A room opened again for a session id finds the conversation where it was: the
agent graph's step and slots, the recent turns as heard, the client's options.
`session.ready` says `resumed: true` and how many turns came back; the local brain
does not greet again and goes on at the same step.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from voice_trio.demo import build_receptionist

from .support import Client, RunningServer, open_client, running_server
from .test_cluster import RedisServer, free_port, new_prefix, redis, start_serve  # noqa: F401


async def say(client: Client, text: str) -> tuple[list[dict[str, Any]], str]:
    """A typed turn; the events up to its reply's end, and the reply's text."""
    await client.send_json(type="text", text=text)
    events: list[dict[str, Any]] = []
    while True:
        message = await client.recv()
        if isinstance(message, bytes):
            continue
        event = json.loads(message)
        events.append(event)
        if event["type"] == "response.text.done" and event["text"] and not _greeting(event):
            return events, event["text"]


def _greeting(event: dict[str, Any]) -> bool:
    return "Phòng khám Bình An xin nghe" in event.get("text", "")


async def kept(server: RunningServer, saved: int) -> None:
    """Until the server's keeper has kept more than ``saved`` sessions."""
    keeper = server.app.keeper
    assert keeper is not None
    with trio.fail_after(30):
        while keeper.saved <= saved:
            await trio.sleep(0.02)


@asynccontextmanager
async def receptionist_server(local_speech: Any, db: Path, **fields: Any) -> AsyncIterator[Any]:
    async with running_server(
        voice_brain="local", speech=local_speech, agent=build_receptionist(db), **fields
    ) as server:
        yield server


async def test_a_reconnect_resumes_the_booking_where_it_was(
    local_speech: Any, tmp_path: Path
) -> None:
    async with receptionist_server(local_speech, tmp_path / "a.sqlite3") as server:
        async with server.connect("booking") as client:
            assert "resumed" not in client.ready
            events, reply = await say(client, "Tôi muốn đặt lịch hẹn")
            assert any(_greeting(e) for e in events), "a new conversation is greeted"
            assert "tên" in reply
            _, reply = await say(client, "Tên tôi là Nguyễn Văn An")
            assert "ngày nào" in reply
            saved = server.app.keeper.saved  # type: ignore[union-attr]
        await kept(server, saved)  # the room's close is kept too
        async with server.connect("booking") as client:
            # Greeting, two user turns and two replies, as heard.
            assert client.ready["resumed"] is True
            assert client.ready["turns_restored"] == 5
            events, reply = await say(client, "thứ sáu")
            assert not any(_greeting(e) for e in events), "a resumed conversation is not greeted"
            assert [e["type"] for e in events].count("response.started") == 1
            assert "mấy giờ" in reply  # the same booking, at its next step


async def test_a_replaced_room_hands_its_conversation_to_the_new_one() -> None:
    async with running_server() as server:
        async with server.connect("swap") as old:
            await old.send_json(type="text", text="xin chào")
            await old.until("response.done")
            await old.send_json(type="session.config", language="en")
            await old.expect("session.ready")
            async with server.connect("swap") as new:
                assert await old.closed() == (4000, "replaced")
                assert new.ready["resumed"] is True
                assert new.ready["turns_restored"] == 2  # "xin chào", and the echo heard
                assert server.app.rooms["swap"].session.options.language == "en"


async def test_without_resume_a_reconnect_starts_afresh() -> None:
    async with running_server(session_resume_ttl_s=0) as server:
        async with server.connect("fresh") as client:
            await client.send_json(type="text", text="xin chào")
            await client.until("response.done")
        async with server.connect("fresh") as client:
            assert "resumed" not in client.ready
        assert server.app.keeper is None


async def test_an_unknown_session_is_not_resumed_and_kept_sessions_expire() -> None:
    async with running_server(session_resume_ttl_s=1) as server:
        async with server.connect("short") as client:
            await client.send_json(type="text", text="xin chào")
            await client.until("response.done")
        await kept(server, 0)
        async with server.connect("other") as client:
            assert "resumed" not in client.ready
        await trio.sleep(1.5)  # past SESSION_RESUME_TTL_S
        async with server.connect("short") as client:
            assert "resumed" not in client.ready


async def test_the_booking_survives_kill_9_of_its_instance(
    redis: RedisServer,  # noqa: F811
    local_speech: Any,
    tmp_path: Path,
) -> None:
    prefix = new_prefix()
    db = tmp_path / "appointments.sqlite3"
    port = free_port()
    env = {
        **os.environ,
        "VOICE_BRAIN": "local",
        "REDIS_URL": redis.url,
        "REDIS_PREFIX": prefix,
        "INSTANCE_ID": "doomed",
        "AGENT_DB_PATH": str(db),
        "TRANSCRIPTS": "false",
    }
    doomed = start_serve(["--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "a.log")
    try:
        async with running_server(
            voice_brain="local",
            speech=local_speech,
            agent=build_receptionist(db),
            redis_url=redis.url,
            redis_prefix=prefix,
            instance_id="survivor",
        ) as survivor:
            url = f"ws://127.0.0.1:{port}/ws/call"
            with trio.fail_after(120):  # the doomed instance loads its models
                while True:
                    try:
                        async with open_client(url) as client:
                            break
                    except (OSError, trio_websocket.HandshakeError):
                        await trio.sleep(0.2)
            async with open_client(url) as client:
                assert client.ready["instance_id"] == "doomed"
                _, reply = await say(client, "Tôi muốn đặt lịch hẹn")
                assert "tên" in reply
                _, reply = await say(client, "Tên tôi là Nguyễn Văn An")
                assert "ngày nào" in reply
                key = f"{prefix}session:call"
                with trio.fail_after(30):  # kept in Redis after the turn
                    while "Nguyễn Văn An" not in redis.command("GET", key).encode().decode():
                        await trio.sleep(0.05)
                os.killpg(doomed.pid, signal.SIGKILL)
                doomed.wait(timeout=30)
            async with survivor.connect("call") as client:
                assert client.ready["instance_id"] == "survivor"
                assert client.ready["resumed"] is True
                events, reply = await say(client, "thứ sáu")
                assert not any(_greeting(e) for e in events)
                assert "mấy giờ" in reply
                _, reply = await say(client, "mười giờ sáng")
                assert "xác nhận" in reply
                _, reply = await say(client, "đúng rồi")
                assert "đã đặt lịch hẹn" in reply
    finally:
        if doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait(timeout=30)
