"""Logs: JSON lines off a terminal, the room's ids on its lines, never a secret."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from voice_trio import logs
from voice_trio.config import Settings
from voice_trio.security import mint_token

from .fakes.azure_realtime import open_fake_azure
from .support import open_client
from .test_cli import _wait_healthy, free_port

BIN = Path(sys.executable).parent

SECRETS = {
    "AUTH_SECRET": "auth-secret-" + "7" * 32,
    "AZURE_OPENAI_API_KEY": "azure-key-not-for-logs-0123456789",
    "CARTESIA_API_KEY": "cartesia-key-not-for-logs-0123456789",
    # Nothing listens there: the cluster logs its failures, with the URL's password masked.
    "REDIS_URL": "redis://:redis-password-not-for-logs@127.0.0.1:{redis_port}/0",
}


@pytest.fixture
def restore_logging() -> Any:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    ours = logging.getLogger("voice_trio").level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("voice_trio").setLevel(ours)
    logging.captureWarnings(False)


async def test_lines_in_a_room_and_its_child_tasks_carry_its_ids(restore_logging: Any) -> None:
    out = io.StringIO()
    logs.configure(Settings(log_format="json"), stream=out)
    log = logging.getLogger("voice_trio.room")

    async def child() -> None:
        await trio.lowlevel.checkpoint()
        log.warning("from a child task")

    log.info("before any room")
    with logs.room_context("room-a", "host-1:8000"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            log.info("in the room")
    with logs.room_context("room-b", "host-1:8000"):
        log.debug("not at the default level")
    log.info("after the room")
    logging.getLogger("httpx").info("a library's info: below its warning level")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["message"], line.get("session_id")) for line in lines] == [
        ("before any room", None),
        ("in the room", "room-a"),
        ("from a child task", "room-a"),
        ("after the room", None),
    ]
    assert {line.get("instance_id") for line in lines[1:3]} == {"host-1:8000"}
    assert [line["level"] for line in lines] == ["info", "info", "warning", "info"]
    assert {line["logger"] for line in lines} == {"voice_trio.room"}
    assert all(line["time"].endswith("Z") and line["pid"] == os.getpid() for line in lines)


def test_secrets_are_masked_in_messages_and_tracebacks_and_text_is_readable(
    restore_logging: Any,
) -> None:
    secret = "k" * 40
    out = io.StringIO()
    logs.configure(Settings(azure_openai_api_key=secret, log_format="text"), stream=out)
    log = logging.getLogger("voice_trio.azure")
    with logs.room_context("room-c", "host-2:9000"):
        try:
            raise RuntimeError(f"refused key {secret}")
        except RuntimeError:
            log.exception("connect with %s failed", secret)
    text = out.getvalue()
    assert secret not in text
    first = text.splitlines()[0]
    assert first.endswith(
        "ERROR voice_trio.azure [room-c @ host-2:9000] connect with <secret> failed"
    )
    assert "RuntimeError: refused key <secret>" in text


async def test_a_served_process_logs_json_lines_with_no_secret(tmp_path: Path) -> None:
    port, redis_port = free_port(), free_port()
    secrets = {k: v.format(redis_port=redis_port) for k, v in SECRETS.items()}
    async with open_fake_azure() as azure:
        env = {
            **os.environ,
            **secrets,
            # A wrong key for this stand-in: every room's upstream is refused (HTTP 401).
            "VOICE_BRAIN": "azure",
            "VOICE_TTS": "none",
            "AZURE_OPENAI_ENDPOINT": azure.endpoint,
            "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
            "AGENT_DB_PATH": str(tmp_path / "appointments.sqlite3"),
            "REDIS_TIMEOUT_S": "0.1",
            "SHUTDOWN_GRACE_S": "2",
        }
        env.pop("LOG_FORMAT", None)  # stdout and stderr are pipes here: JSON by default
        argv = [str(BIN / "voice-trio"), "serve", "--port", str(port)]
        async with trio.open_nursery() as nursery:
            proc = await nursery.start(
                partial(
                    trio.run_process,
                    argv,
                    env=env,
                    check=False,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
            )
            output = bytearray()

            async def collect() -> None:
                assert proc.stdout is not None
                async for chunk in proc.stdout:
                    output.extend(chunk)

            nursery.start_soon(collect)
            try:
                url = f"http://127.0.0.1:{port}"
                await _wait_healthy(url, proc)
                token = mint_token(secrets["AUTH_SECRET"], "logged-room")
                async with open_client(f"ws://127.0.0.1:{port}/ws/logged-room?token={token}") as c:
                    # Bad input is logged in the room; this one quotes a key back.
                    await c.send_json(type=secrets["AZURE_OPENAI_API_KEY"])
                    assert (await c.event())["type"] == "error"
                    await c.send_json(type="text", text="xin chào")
                    with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                        while True:
                            await c.recv()
                    assert closed.value.reason.code == 1011
                # A token signed with another key, and a request that carries the secret.
                wrong = mint_token("x" * 32, "logged-room")
                with pytest.raises(trio_websocket.ConnectionRejected):
                    async with open_client(f"ws://127.0.0.1:{port}/ws/logged-room?token={wrong}"):
                        pass
                async with httpx.AsyncClient() as http:
                    await http.get(f"{url}/?key={secrets['AZURE_OPENAI_API_KEY']}")
                proc.send_signal(signal.SIGTERM)
                with trio.fail_after(30):
                    await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
    assert proc.returncode == 0
    assert azure.rejected >= 1
    text = output.decode()
    for name, value in secrets.items():
        assert value not in text, name
    assert "redis-password-not-for-logs" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert len(lines) == len([line for line in text.splitlines() if line.strip()])
    room_lines = [line for line in lines if line.get("session_id") == "logged-room"]
    assert room_lines, "no line of the room names it:\n" + text
    instance = f"{os.uname().nodename}:{port}"
    assert {line["instance_id"] for line in room_lines} == {instance}
    assert any(
        line["logger"] == "voice_trio.input" and "<secret>" in line["message"]
        for line in room_lines
    ), room_lines
    assert any("Running on" in line["message"] for line in lines)
