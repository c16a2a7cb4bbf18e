"""Transcripts kept (voice_trio.transcripts): records in through the app's recorder, JSON out.

A real server in-process (both serve paths) on a fresh SQLite file per test;
records are fed through ``app.recorder``, the interface a room calls, and read
back through ``GET /v1/sessions/{id}`` and ``voice-trio session``. Without
Celery the server writes the local summary and the usage itself.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from voice_trio.app import VoiceTrioApp
from voice_trio.config import Settings
from voice_trio.record import (
    AssistantTurn,
    ErrorRecord,
    Recorder,
    RoomClosed,
    RoomOpened,
    Usage,
    UserTurn,
)
from voice_trio.security import mint_token
from voice_trio.transcripts import StoreRecorder, TranscriptStore, mint_admin_token, read_session

from .support import BOTH_PATHS, RunningServer, prom_samples, running_server

BIN = Path(sys.executable).parent
SECRET = "s" * 40

#: The receptionist's booking reply; the caller cut it off before the code was read out.
BOOKED = (
    "Dạ, tôi đã đặt lịch hẹn cho Nguyễn Văn An lúc 9 giờ sáng thứ Hai. Mã lịch hẹn của quý "
    "khách là 4 8 2 9 1 3; quý khách vui lòng ghi lại mã này."
)
HEARD = "Dạ, tôi đã đặt lịch hẹn cho Nguyễn Văn An lúc 9 giờ"


def conversation(recorder: Recorder, session_id: str, *, t0: float | None = None) -> float:
    """A booking call, as a room would hand it: returns its close time."""
    t = time.time() - 30 if t0 is None else t0
    recorder.room_opened(
        RoomOpened(session_id=session_id, instance_id="test:1", at=t, brain="local", voice="local")
    )
    recorder.user_turn(
        UserTurn(session_id=session_id, text="Tôi muốn đặt lịch hẹn", source="voice",
                 started_at=t + 1, ended_at=t + 2.5)
    )  # fmt: skip
    recorder.assistant_turn(
        AssistantTurn(session_id=session_id, response_id="resp_1",
                      text="Quý khách cho tôi xin tên người đặt lịch ạ?",
                      full_text="Quý khách cho tôi xin tên người đặt lịch ạ?",
                      status="completed", started_at=t + 2.8, ended_at=t + 5.0,
                      audio_ms=2200, heard_ms=2200, ttfa_ms=310.0)
    )  # fmt: skip
    recorder.user_turn(
        UserTurn(session_id=session_id, text="Nguyễn Văn An, 9 giờ sáng thứ Hai",
                 source="text", started_at=None, ended_at=t + 8)
    )  # fmt: skip
    recorder.assistant_turn(
        AssistantTurn(session_id=session_id, response_id="resp_2", text=HEARD, full_text=BOOKED,
                      status="interrupted", started_at=t + 8.3, ended_at=t + 11.0,
                      audio_ms=7400, heard_ms=2700, ttfa_ms=280.5)
    )  # fmt: skip
    recorder.user_turn(
        UserTurn(session_id=session_id, text="Cảm ơn", source="voice", started_at=t + 10.6,
                 ended_at=t + 11.4)
    )  # fmt: skip
    recorder.error(ErrorRecord(session_id=session_id, code="rate_limited", at=t + 12))
    closed = t + 20
    recorder.room_closed(
        RoomClosed(session_id=session_id, instance_id="test:1", at=closed, duration_s=20.0,
                   close_code=1000, reason="bye",
                   usage=Usage(audio_in_s=4.1, audio_out_s=9.6, user_turns=3, responses=2,
                               interrupts=1, brain="local", voice="local", duration_s=20.0))
    )  # fmt: skip
    return closed


def assert_whole(found: dict[str, Any], session_id: str) -> None:
    """The conversation above, as heard, in order."""
    assert found["session_id"] == session_id
    transcript = found["transcript"]
    assert [(t["role"], t["text"], t["status"]) for t in transcript] == [
        ("user", "Tôi muốn đặt lịch hẹn", "completed"),
        ("assistant", "Quý khách cho tôi xin tên người đặt lịch ạ?", "completed"),
        ("user", "Nguyễn Văn An, 9 giờ sáng thứ Hai", "completed"),
        ("assistant", HEARD, "interrupted"),
        ("user", "Cảm ơn", "completed"),
    ]
    assert transcript[1]["response_id"] == "resp_1" and transcript[3]["response_id"] == "resp_2"
    assert transcript[3]["full_text"] == BOOKED and transcript[3]["heard_ms"] == 2700
    assert transcript[0]["source"] == "voice" and transcript[2]["source"] == "text"
    assert transcript[2]["started_at"] is None
    assert all(isinstance(t["ended_at"], float) for t in transcript)


async def poll_session(server: RunningServer, session_id: str, *, until: str = "usage",
                       query: str = "", timeout: float = 30) -> dict[str, Any]:  # fmt: skip
    """GET the session until ``until`` is filled in."""
    with trio.fail_after(timeout):
        while True:
            response = await server.get(f"/v1/sessions/{session_id}{query}")
            if response.status_code == 200 and response.json().get(until) is not None:
                found: dict[str, Any] = response.json()
                return found
            await trio.sleep(0.05)


@BOTH_PATHS
async def test_a_conversation_is_kept_as_heard_with_its_summary_and_usage(
    tmp_path: Path, asgi: bool
) -> None:
    db = tmp_path / "t.sqlite3"
    async with running_server(asgi=asgi, transcript_db_path=str(db)) as server:
        assert (await server.get("/v1/sessions/nobody")).status_code == 404
        conversation(server.app.recorder, "call-1")
        found = await poll_session(server, "call-1")
        assert_whole(found, "call-1")
        # No Celery: the server wrote the local summary (the receptionist's reading of
        # the call: the booking code it said, though the caller did not hear it all).
        assert found["summary_by"] == "local"
        assert found["intent"] == "book" and found["booking_code"] == "482913"
        assert "đặt lịch hẹn" in found["summary"] and "482913" in found["summary"]
        assert "1 bị ngắt" in found["summary"]
        assert found["usage"] == {
            "audio_in_s": 4.1, "audio_out_s": 9.6, "user_turns": 3, "responses": 2,
            "interrupts": 1, "brain": "local", "voice": "local", "duration_s": 20.0,
            "rooms": 1, "recorded_by": ["server"],
        }  # fmt: skip
        assert found["close_code"] == 1000 and found["close_reason"] == "bye"
        assert found["errors"] == [{"code": "rate_limited", "at": found["errors"][0]["at"],
                                    "fatal": False}]  # fmt: skip
        assert (await server.get("/v1/sessions/bad$id")).status_code == 404
        # A second room of the same session (a reconnect) adds to it.
        server.app.recorder.room_opened(
            RoomOpened(session_id="call-1", instance_id="test:1", at=time.time(), brain="local",
                       voice="local", resumed=True)
        )  # fmt: skip
        server.app.recorder.room_closed(
            RoomClosed(session_id="call-1", instance_id="test:1", at=time.time() + 1,
                       duration_s=1.0, close_code=1001, reason="server shutting down",
                       usage=Usage(audio_in_s=0.5, audio_out_s=0, user_turns=0, responses=0,
                                   interrupts=0, brain="local", voice="local", duration_s=1.0))
        )  # fmt: skip
        with trio.fail_after(30):
            while (again := await poll_session(server, "call-1"))["usage"]["rooms"] != 2:
                await trio.sleep(0.05)
        assert again["rooms"] == 2 and again["close_code"] == 1001
        assert again["usage"]["audio_in_s"] == 4.6 and again["usage"]["duration_s"] == 21.0
        assert len(again["transcript"]) == 5
    # The rows are really in the file, written by one writer in WAL mode.
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM turns").fetchone()[0] == 5


async def test_the_endpoint_needs_the_room_token_or_an_admin_token(tmp_path: Path) -> None:
    async with running_server(
        auth_secret=SECRET, transcript_db_path=str(tmp_path / "t.sqlite3")
    ) as server:
        conversation(server.app.recorder, "call-2")
        room = mint_token(SECRET, "call-2")
        await poll_session(server, "call-2", query=f"?token={room}")
        async with httpx.AsyncClient(base_url=server.url) as client:
            missing = await client.get("/v1/sessions/call-2")
            assert missing.status_code == 401 and missing.headers["www-authenticate"]
            other = await client.get(f"/v1/sessions/call-2?token={mint_token(SECRET, 'call-3')}")
            assert other.status_code == 403 and other.json()["error"] == "token_session"
            forged = await client.get(f"/v1/sessions/call-2?token={mint_token('x' * 40, 'call-2')}")
            assert forged.status_code == 401
            bearer = await client.get(
                "/v1/sessions/call-2", headers={"authorization": f"Bearer {room}"}
            )
            assert bearer.status_code == 200
            assert_whole(bearer.json(), "call-2")
            admin = mint_admin_token(SECRET)
            as_admin = await client.get(
                "/v1/sessions/call-2", headers={"authorization": f"Bearer {admin}"}
            )
            assert as_admin.status_code == 200 and as_admin.json() == bearer.json()
            # An admin token of another secret, or an expired one, reads nothing.
            stale = mint_admin_token(SECRET, ttl_s=10, now=time.time() - 100)
            for token in (mint_admin_token("y" * 40), stale):
                refused = await client.get(f"/v1/sessions/call-2?token={token}")
                assert refused.status_code == 401
            # An unknown session answers 404 only to who may ask: no probing without a token.
            assert (await client.get("/v1/sessions/call-9")).status_code == 401
            assert (await client.get(f"/v1/sessions/call-9?token={admin}")).status_code == 404
        # An admin token opens no room (its audience is not a room token's).
        with pytest.raises(trio_websocket.HandshakeError):
            async with server.connect(f"admin?token={admin}"):
                pass


async def test_voice_trio_session_prints_what_the_endpoint_answers(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite3"
    env = {**os.environ, "TRANSCRIPT_DB_PATH": str(db), "AUTH_SECRET": SECRET}
    async with running_server(transcript_db_path=str(db)) as server:
        conversation(server.app.recorder, "call-4")
        found = await poll_session(server, "call-4")
        done = await trio.run_process(
            [BIN / "voice-trio", "session", "call-4"], capture_stdout=True, env=env
        )
        assert json.loads(done.stdout) == found
        assert "Nguyễn Văn An" in done.stdout.decode()  # UTF-8, not \\u escapes
        unknown = await trio.run_process(
            [BIN / "voice-trio", "session", "call-5"], capture_stderr=True, check=False, env=env
        )
        assert unknown.returncode == 1 and b"no session" in unknown.stderr
    minted = await trio.run_process(
        [BIN / "voice-trio", "token", "--admin", "--ttl", "60"], capture_stdout=True, env=env
    )
    admin = minted.stdout.decode().strip()
    async with running_server(auth_secret=SECRET, transcript_db_path=str(db)) as server:
        response = await server.get(f"/v1/sessions/call-4?token={admin}")
        assert response.status_code == 200 and response.json()["transcript"] == found["transcript"]


async def test_a_full_backlog_drops_and_counts_and_the_recorder_never_waits(
    tmp_path: Path,
) -> None:
    """The writer stuck on a locked file: records past the byte bound are dropped and
    counted, the recorder returns at once, and once the lock goes all that was kept is in."""
    db = tmp_path / "t.sqlite3"
    TranscriptStore(db).connect()
    blocker = sqlite3.connect(db, check_same_thread=False)
    blocker.execute("BEGIN EXCLUSIVE")
    async with running_server(transcript_db_path=str(db), transcript_queue_bytes=65_536) as server:
        store = server.app.outofband.store
        assert isinstance(store, StoreRecorder)
        recorder = server.app.recorder
        text = "x" * 1000
        for i in range(200):  # ~240 KB of records against a 64 KB backlog
            recorder.user_turn(UserTurn(session_id="busy", text=f"{i} {text}", source="text",
                                        started_at=None, ended_at=time.time()))  # fmt: skip
        samples = prom_samples((await server.get("/metrics")).text)
        dropped = samples["voice_trio_transcript_dropped_total"]
        assert dropped > 100
        blocker.rollback()
        blocker.close()
        with trio.fail_after(60):
            while True:
                found = (await server.get("/v1/sessions/busy")).json()
                if len(found.get("transcript", [])) == 200 - dropped:
                    break
                await trio.sleep(0.1)
        # What was kept is the first of them, in order (the backlog refuses, never evicts).
        kept = [int(t["text"].split()[0]) for t in found["transcript"]]
        assert kept == list(range(len(kept)))


def test_the_settings_check_what_the_sinks_need() -> None:
    from voice_trio.config import ConfigError

    with pytest.raises(ConfigError, match="ANALYTICS_SINK=redis"):
        Settings(analytics_sink="redis")
    with pytest.raises(ConfigError, match="KAFKA_BOOTSTRAP_SERVERS"):
        Settings(analytics_sink="kafka")
    with pytest.raises(ConfigError, match="TRANSCRIPTS"):
        Settings(celery_broker_url="redis://127.0.0.1:1/0", transcripts=False)
    with pytest.raises(ConfigError, match="AZURE_OPENAI_ENDPOINT"):
        Settings(azure_openai_chat_deployment="gpt-4o-mini")
    shown = repr(Settings(celery_broker_url="redis://:hunter2@host:6379/1"))
    assert "hunter2" not in shown


async def test_records_handed_over_just_before_the_server_stops_are_written(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.sqlite3"
    async with running_server(transcript_db_path=str(db)) as server:
        for i in range(20):
            conversation(server.app.recorder, f"last-{i}")
    # The lifespan's end flushed the backlog: every call whole, with its results.
    for i in range(20):
        found = read_session(db, f"last-{i}")
        assert found is not None
        assert_whole(found, f"last-{i}")
        assert found["usage"]["recorded_by"] == ["server"] and found["booking_code"] == "482913"


async def test_a_server_that_holds_no_room_writes_no_file(tmp_path: Path) -> None:
    db = tmp_path / "never" / "t.sqlite3"
    async with running_server(transcript_db_path=str(db)) as server:
        assert (await server.get("/v1/sessions/anyone")).status_code == 404
    assert not db.exists()


async def test_without_auth_secret_transcripts_are_served_on_loopback_only(tmp_path: Path) -> None:
    """Under a plain ASGI server bound to a public address (``voice-trio serve`` refuses
    to start there without AUTH_SECRET), the endpoint refuses as the handshake does."""
    from voice_trio.app import VoiceTrioApp

    db = tmp_path / "t.sqlite3"
    store = TranscriptStore(db)
    store.write([UserTurn(session_id="open-1", text="Xin chào", source="text",
                          started_at=None, ended_at=time.time())])  # fmt: skip
    store.close()
    app = VoiceTrioApp(Settings(voice_brain="echo", transcript_db_path=str(db)))
    for host, status in (("10.1.2.3", 403), ("127.0.0.1", 200)):
        transport = httpx.ASGITransport(app=app)  # the scope's server is the URL's host
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as client:
            assert (await client.get("/v1/sessions/open-1")).status_code == status
    opened = VoiceTrioApp(
        Settings(voice_brain="echo", transcript_db_path=str(db), allow_unauthenticated=True)
    )
    transport = httpx.ASGITransport(app=opened)
    async with httpx.AsyncClient(transport=transport, base_url="http://10.1.2.3") as client:
        response = await client.get("/v1/sessions/open-1")
        assert (
            response.status_code == 200 and response.json()["transcript"][0]["text"] == "Xin chào"
        )


class _StoryApp(VoiceTrioApp):
    """A real room whose brain answers a text turn with ten words and 3 s of audio."""

    def make_brain(self, session: Any) -> Any:
        from .test_room_parts import StoryBrain

        return StoryBrain(session.options)


async def test_a_real_rooms_conversation_is_read_back_as_heard(tmp_path: Path) -> None:
    """End to end: a room's turns, one reply cut by the client, through the endpoint."""
    db = tmp_path / "t.sqlite3"
    async with running_server(
        app_class=_StoryApp, transcript_db_path=str(db), ws_tts_chunk_bytes=4800
    ) as server:
        async with server.connect("real-1") as client:
            await client.send_json(type="text", text="kể đi")
            await client.expect("response.started")
            received = 0
            while received < 5 * 4800:  # half a second of the reply
                message = await client.recv()
                if isinstance(message, bytes):
                    received += len(message)
            await client.send_json(type="interrupt", played_ms=300)
            events, _ = await client.until("response.done")
            assert events[-1]["status"] == "interrupted"
        found = await poll_session(server, "real-1")
    transcript = found["transcript"]
    assert [(t["role"], t["status"]) for t in transcript] == [
        ("user", "completed"),
        ("assistant", "interrupted"),
    ]
    user, reply = transcript
    assert user["text"] == "kể đi" and user["source"] == "text"
    assert reply["full_text"] == "một hai ba bốn năm sáu bảy tám chín mười"
    assert reply["heard_ms"] == 300
    assert reply["text"] and reply["full_text"].startswith(reply["text"])
    assert len(reply["text"].split()) < 10  # what was heard, not all of it
    assert found["usage"]["interrupts"] == 1 and found["usage"]["responses"] == 1
    assert found["close_code"] == 1005  # the client closed it


class _SpokenAtOnceApp(VoiceTrioApp):
    """A real room whose brain makes a reply's 3 s of audio at once, as a fast voice does:
    the response is done (all its audio queued) long before the client has played it."""

    def make_brain(self, session: Any) -> Any:
        from .test_room_parts import StoryBrain

        class AtOnce(StoryBrain):
            async def _speak(self, turn: Any) -> None:
                for _ in range(30):
                    await turn.audio(bytes(4800))
                await turn.finish()

        return AtOnce(session.options)


async def test_a_reply_cut_while_it_still_plays_is_recorded_once_as_heard(
    tmp_path: Path, redis: Any
) -> None:
    """In the store, the analytics stream and the session kept for resume: one record of
    the response, as heard (a done one cut later amends its record, it is not a second)."""
    from .test_analytics import read_stream

    db, stream = tmp_path / "t.sqlite3", "at-once:events"
    async with running_server(
        app_class=_SpokenAtOnceApp, transcript_db_path=str(db), ws_tts_chunk_bytes=4800,
        analytics_sink="redis", analytics_redis_url=redis.url, analytics_stream=stream,
    ) as server:  # fmt: skip
        async with server.connect("at-once") as client:
            await client.send_json(type="text", text="kể đi")
            events, _ = await client.until("response.done")
            assert events[-1]["status"] == "completed"  # all of it was made and sent
            # The client has played 300 ms of its 3 s when the user cuts it.
            await client.send_json(type="interrupt", played_ms=300)
            await client.expect("interrupted")
            await client.send_json(type="text", text="thôi")
            await client.until("response.done")
            heard = list(server.app.rooms["at-once"].session.heard or ())
        found = await poll_session(server, "at-once")
        with trio.fail_after(30):
            while not any(e["type"] == "room.closed" for e in await read_stream(redis.url, stream)):
                await trio.sleep(0.05)
        events = await read_stream(redis.url, stream)
    transcript = found["transcript"]
    assert [(t["role"], t["status"]) for t in transcript] == [
        ("user", "completed"),
        ("assistant", "interrupted"),
        ("user", "completed"),
        ("assistant", "completed"),
    ], transcript
    cut = transcript[1]
    assert cut["heard_ms"] == 300 and cut["audio_ms"] == 3000
    assert cut["full_text"].startswith(cut["text"]) and len(cut["text"]) < len(cut["full_text"])
    assert found["usage"]["responses"] == 2 and found["usage"]["interrupts"] == 1
    assert [role for role, _ in heard] == ["user", "assistant", "user", "assistant"]
    assert heard[1][1] == cut["text"]
    replies = [e for e in events if e["type"] == "turn.completed" and e["role"] == "assistant"]
    (interrupt,) = [e for e in events if e["type"] == "interrupt"]
    assert [e["response_id"] for e in replies] == ["resp_1", "resp_2"]
    assert interrupt["response_id"] == "resp_1" and interrupt["heard_ms"] == 300
