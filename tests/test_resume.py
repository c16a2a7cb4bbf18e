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
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from voice_trio.demo import build_receptionist
from voice_trio.deploy import Address, nginx_config

from .fakes.azure_realtime import open_fake_azure
from .support import Client, RunningServer, open_client, running_server
from .test_azure import azure_app
from .test_cluster import RedisServer, free_port, new_prefix, start_serve
from .test_nginx import NGINX, _stop, _wait_http


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
    redis: RedisServer,
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


async def test_a_drained_instances_rooms_resume_on_the_others_through_nginx(
    redis: RedisServer,
    tmp_path: Path,
) -> None:
    """SIGTERM on one instance of two behind nginx: its rooms close with 1001 after their
    turns, and the clients' reconnects (through nginx, to the instance left) resume."""
    prefix = new_prefix()
    env = {
        **os.environ,
        "VOICE_BRAIN": "echo",
        "REDIS_URL": redis.url,
        "REDIS_PREFIX": prefix,
        "TRUSTED_PROXIES": "127.0.0.1",
        "SHUTDOWN_GRACE_S": "2",
        "GC_THRESHOLDS": "off",
        "TRANSCRIPTS": "false",
    }
    ports = [free_port(), free_port()]
    procs = [
        start_serve(
            ["--host", "127.0.0.1", "--port", str(port)],
            {**env, "INSTANCE_ID": f"i{n}"},
            tmp_path / f"i{n}.log",
        )
        for n, port in enumerate(ports)
    ]
    front = free_port()
    config = nginx_config(
        Address("127.0.0.1", front), [Address("127.0.0.1", p) for p in ports], tmp_path
    )
    (tmp_path / "nginx.conf").write_text(config)
    nginx = _start_nginx(tmp_path)
    logs = [tmp_path / "i0.log", tmp_path / "i1.log", tmp_path / "nginx.log"]
    try:
        for port in [*ports, front]:
            await trio.to_thread.run_sync(
                _wait_http, f"http://127.0.0.1:{port}/healthz", [*procs, nginx], logs
            )
        base = f"ws://127.0.0.1:{front}/ws/"
        with trio.fail_after(60):
            # Sessions until one lands on i0 (nginx hashes the session id).
            held: list[tuple[str, Client]] = []
            async with trio.open_nursery() as nursery:
                for n in range(40):
                    client = await _open(nursery, base + f"drain-{n}")
                    await client.send_json(type="text", text=f"xin chào {n}")
                    await client.until("response.done")
                    held.append((f"drain-{n}", client))
                    if client.ready["instance_id"] == "i0":
                        break
                session_id, client = held[-1]
                assert client.ready["instance_id"] == "i0"
                await client.send_json(type="text", text="một câu nữa")
                await client.until("response.done")
                procs[0].send_signal(signal.SIGTERM)
                assert (await client.closed())[0] == 1001  # its turn had ended: closed at once
                await trio.to_thread.run_sync(procs[0].wait)
                again = await _open(nursery, base + session_id)
                assert again.ready["instance_id"] == "i1"
                assert again.ready["resumed"] is True
                assert again.ready["turns_restored"] == 4  # two turns and their echoes
                await again.send_json(type="text", text="tiếp")
                events, _ = await again.until("response.done")
                assert events[-1]["status"] == "completed"
                nursery.cancel_scope.cancel()
    finally:
        for proc in [nginx, *procs]:
            _stop(proc)


def _start_nginx(prefix: Path) -> subprocess.Popen[bytes]:
    """nginx in the foreground on ``prefix``/nginx.conf, its output in nginx.log."""
    with (prefix / "nginx.log").open("wb") as out:
        return subprocess.Popen(
            [NGINX, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-e", "stderr"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _open(nursery: trio.Nursery, url: str) -> Client:
    ws = await trio_websocket.connect_websocket_url(
        nursery, url, extra_headers=[("X-Forwarded-For", "10.9.0.1")]
    )
    client = Client(ws)
    client.ready = await client.expect("session.ready")
    return client


async def test_azure_gets_the_recent_turns_back_on_a_resumed_session(tmp_path: Path) -> None:
    """The model of a resumed conversation is given its recent turns, as after its own
    reconnects (conversation.item.create before any new input)."""
    async with open_fake_azure(reply=lambda text: f"Dạ, {text}") as fake:
        graph = build_receptionist(tmp_path / "a.sqlite3")
        async with running_server(app_class=azure_app(fake, graph), agent=graph) as server:
            async with server.connect("azure-resume") as client:
                await client.send_json(type="text", text="Tôi muốn đặt lịch hẹn")
                await client.until("response.done")
            await kept(server, 0)
            async with server.connect("azure-resume") as client:
                assert client.ready["resumed"] is True
                await client.send_json(type="text", text="Tên tôi là An")
                await client.until("response.done")
        first, second = fake.sessions[0], fake.sessions[-1]
        assert first is not second
        restored = [
            part.get("text")
            for event in second.of_type("conversation.item.create")
            for part in event["item"].get("content", ())
        ]
        assert "Tôi muốn đặt lịch hẹn" in restored
        assert restored.index("Tôi muốn đặt lịch hẹn") < restored.index("Tên tôi là An")


def test_a_sessions_snapshot_restores_dates_times_and_history(tmp_path: Path) -> None:
    import datetime as dt

    from voice_trio.providers import SessionOptions
    from voice_trio.session import Session

    graph = build_receptionist(tmp_path / "a.sqlite3")
    session = Session("snap", SessionOptions(language="vi", voice="x"))
    session.input_rate = 16000
    conversation = session.conversation = graph.conversation(session_id="snap")
    conversation.slots.update(
        name="An", day=dt.date(2026, 12, 4), time=dt.time(9, 30), cancel={"code": "482913"}
    )
    conversation.record("user", "Tôi muốn đặt lịch")
    session.hear("user", "Tôi muốn đặt lịch")
    data = session.snapshot()
    assert data is not None
    back = Session.restore("snap", data, graph)
    assert back is not None and back.resumed
    assert back.options == session.options and back.input_rate == 16000
    assert back.conversation.slots == conversation.slots  # the same types, not strings
    assert [(e.role, e.text) for e in back.conversation.history] == [("user", "Tôi muốn đặt lịch")]
    assert back.conversation.node.name == conversation.node.name
    assert list(back.heard or ()) == [("user", "Tôi muốn đặt lịch")]
    # What cannot be kept is not kept (and said, not raised); garbage is not restored.
    conversation.slots["odd"] = object()
    assert session.snapshot() is None
    assert Session.restore("snap", b"{not json", graph) is None
    assert Session.restore("snap", b'{"v": 99}', graph) is None


def test_the_heard_turns_stay_in_their_bound_when_a_joined_turn_amends_one() -> None:
    """A joined final transcript replaces the user turn it began with a longer one: the
    turns kept for resume still hold at most HEARD_CHARS_MAX characters."""
    from voice_trio.providers import SessionOptions
    from voice_trio.session import HEARD_CHARS_MAX, Session

    session = Session("bound", SessionOptions(language="vi", voice="x"))
    said = "Tôi muốn đặt lịch hẹn"
    session.hear("assistant", "a" * (HEARD_CHARS_MAX - 4000 - len(said)))
    session.hear("user", "b" * 2000)
    session.hear("assistant", "c" * 2000)
    session.hear("user", said)  # the bound, exactly
    assert len(session.heard or ()) == 4
    session.amend_heard("user", said, said + " và đổi số điện thoại" * 40)
    heard = list(session.heard or ())
    assert heard[-1] == ("user", said + " và đổi số điện thoại" * 40)
    assert sum(len(text) for _, text in heard) <= HEARD_CHARS_MAX
    session.hear("assistant", "d" * 3000)  # its count of them is right: it evicts enough
    assert sum(len(text) for _, text in session.heard or ()) <= HEARD_CHARS_MAX
    back = Session.restore("bound", session.snapshot() or b"", None)
    assert back is not None and sum(len(t) for _, t in back.heard or ()) <= HEARD_CHARS_MAX
