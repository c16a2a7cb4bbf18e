"""Background jobs (voice_trio.jobs): a real Celery worker on a real Redis broker.

One redis-server per module; each test starts its own ``voice-trio worker``
subprocess (Celery's solo pool) and ends it by PID. Records go in through the
app's recorder; the worker's summary and usage are read back through
``GET /v1/sessions/{id}``. The Azure chat deployment is a stand-in HTTP server on
127.0.0.1 that answers like the chat completions API.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from voice_trio.jobs import SUMMARY_PROMPT

from .support import prom_samples, running_server
from .test_cluster import RedisServer
from .test_transcripts import HEARD, assert_whole, conversation, poll_session

BIN = Path(sys.executable).parent
_db = 0
_names = itertools.count()


def broker_url(redis: RedisServer) -> str:
    # A database per test: no test sees another's queued jobs.
    return f"redis://127.0.0.1:{redis.port}/{next(_names) % 15 + 1}"


@contextmanager
def worker(broker: str, db: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``voice-trio worker`` (Celery, solo pool) until the block ends; killed by PID."""
    proc = subprocess.Popen(
        [BIN / "voice-trio", "worker", "--", "--pool=solo", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-n", f"w{next(_names)}@%h"],
        env={**os.environ, "CELERY_BROKER_URL": broker, "TRANSCRIPT_DB_PATH": str(db), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


async def test_the_worker_writes_the_summary_and_the_usage(
    redis: RedisServer, tmp_path: Path
) -> None:
    db = tmp_path / "t.sqlite3"
    broker = broker_url(redis)
    with worker(broker, db):
        async with running_server(transcript_db_path=str(db), celery_broker_url=broker) as server:
            conversation(server.app.recorder, "job-1")
            found = await poll_session(server, "job-1", until="summary")
            found = await poll_session(server, "job-1")
            assert_whole(found, "job-1")
            assert found["usage"]["recorded_by"] == ["worker"]
            assert found["usage"]["interrupts"] == 1 and found["usage"]["audio_out_s"] == 9.6
            assert found["summary_by"] == "local" and found["booking_code"] == "482913"
            assert "482913" in found["summary"]
            samples = prom_samples((await server.get("/metrics")).text)
            assert samples["voice_trio_jobs_dropped_total"] == 0
            assert server.app.outofband.jobs.sent == 1


class ChatStandIn:
    """An HTTP server that answers like Azure's chat completions; keeps what it was sent."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                stand_in.requests.append(
                    {"path": self.path, "api_key": self.headers.get("api-key"), "body": body}
                )
                lines = body["messages"][1]["content"].splitlines()
                # The "model" says how many lines it read, so the summary is this call's.
                reply = f"Khách gọi đặt lịch khám; lễ tân đã đặt lịch ({len(lines)} lượt lời)."
                data = json.dumps(
                    {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_an_azure_chat_deployment_writes_a_vietnamese_summary(
    redis: RedisServer, tmp_path: Path
) -> None:
    db = tmp_path / "t.sqlite3"
    broker = broker_url(redis)
    chat = ChatStandIn()
    try:
        with worker(
            broker,
            db,
            AZURE_OPENAI_ENDPOINT=chat.url,
            AZURE_OPENAI_API_KEY="test-key",
            AZURE_OPENAI_CHAT_DEPLOYMENT="gpt-4o-mini",
        ):
            async with running_server(
                transcript_db_path=str(db), celery_broker_url=broker
            ) as server:
                conversation(server.app.recorder, "job-2")
                found = await poll_session(server, "job-2", until="summary")
        assert found["summary"] == "Khách gọi đặt lịch khám; lễ tân đã đặt lịch (5 lượt lời)."
        assert found["summary_by"] == "azure"
        # The facts stay the graph's: the code the receptionist said.
        assert found["intent"] == "book" and found["booking_code"] == "482913"
        (request,) = chat.requests
        assert request["path"] == (
            "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
        )
        assert request["api_key"] == "test-key"
        system, user = request["body"]["messages"]
        assert system == {"role": "system", "content": SUMMARY_PROMPT}
        assert "tiếng Việt" in system["content"]
        # The model reads the call as the caller heard it.
        assert user["content"].splitlines() == [
            "Khách: Tôi muốn đặt lịch hẹn",
            "Lễ tân: Quý khách cho tôi xin tên người đặt lịch ạ?",
            "Khách: Nguyễn Văn An, 9 giờ sáng thứ Hai",
            f"Lễ tân: {HEARD}",
            "Khách: Cảm ơn",
        ]
    finally:
        chat.close()


async def test_a_killed_worker_catches_up_and_nothing_is_dropped(
    redis: RedisServer, tmp_path: Path
) -> None:
    db = tmp_path / "t.sqlite3"
    broker = broker_url(redis)
    async with running_server(transcript_db_path=str(db), celery_broker_url=broker) as server:
        with worker(broker, db) as first:
            conversation(server.app.recorder, "job-3")
            await poll_session(server, "job-3", until="summary")
            first.kill()
            first.wait()
        # No worker: the jobs wait in the broker; the transcript is whole at once.
        conversation(server.app.recorder, "job-4")
        with trio.fail_after(30):
            while server.app.outofband.jobs.sent < 2:
                await trio.sleep(0.05)
        found = (await server.get("/v1/sessions/job-4")).json()
        assert_whole(found, "job-4")
        assert found["summary"] is None and found["usage"] is None
        with worker(broker, db):
            found = await poll_session(server, "job-4")
            found = await poll_session(server, "job-4", until="summary")
        assert found["usage"]["recorded_by"] == ["worker"] and found["booking_code"] == "482913"
        samples = prom_samples((await server.get("/metrics")).text)
        assert samples["voice_trio_jobs_dropped_total"] == 0


def _black_hole() -> socket.socket:
    """A port that takes connections into its backlog and never answers (a stuck broker)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    return sock


@pytest.mark.parametrize("broker_state", ["killed", "stuck"])
async def test_a_broker_down_or_stuck_costs_counted_drops_and_the_server_writes_the_results(
    redis: RedisServer, tmp_path: Path, broker_state: str
) -> None:
    db = tmp_path / "t.sqlite3"
    if broker_state == "killed":
        # A broker that was up, then killed: the producer's connection breaks.
        dead = RedisServer(tmp_path)
        dead.start()
        broker, hole = dead.url, None
    else:
        hole = _black_hole()
        broker, dead = f"redis://127.0.0.1:{hole.getsockname()[1]}/0", None
    try:
        async with running_server(
            transcript_db_path=str(db), celery_broker_url=broker, jobs_timeout_s=0.5
        ) as server:
            if dead is not None:
                conversation(server.app.recorder, "up-1")
                with trio.fail_after(30):
                    while server.app.outofband.jobs.sent < 1:
                        await trio.sleep(0.05)
                dead.stop()
            async with server.connect("live-room") as client:
                for i in range(3):
                    conversation(server.app.recorder, f"down-{i}")
                    # The room's loop goes on: a round trip on a real room while jobs fail.
                    await client.ping()
                for i in range(3):
                    found = await poll_session(server, f"down-{i}")
                    assert_whole(found, f"down-{i}")
                    assert found["usage"]["recorded_by"] == ["server"]
                    assert found["summary_by"] == "local" and found["booking_code"] == "482913"
                await client.ping()
            samples = prom_samples((await server.get("/metrics")).text)
            # Two jobs per room (summary, usage), each room's dropped and made up here.
            assert samples["voice_trio_jobs_dropped_total"] == 6
    finally:
        if hole is not None:
            hole.close()
        if dead is not None:
            dead.stop()
