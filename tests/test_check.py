"""`voice-trio check`: the embedded default is ready; a wrong key is a failure, found early."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

from voice_trio.config import Settings

from .fakes.azure_realtime import open_fake_azure
from .fakes.cartesia import open_fake_cartesia
from .test_cli import free_port
from .test_cluster import REDIS

BIN = Path(sys.executable).parent


def clean_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The test's environment without any setting of the outer one, plus ``settings``."""
    names = {name.upper() for name in Settings.__struct_fields__}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["AGENT_DB_PATH"] = str(tmp_path / "appointments.sqlite3")
    return {**env, **settings}


async def check(env: dict[str, str]) -> tuple[int, dict[str, tuple[str, str]], str]:
    """Run ``voice-trio check``: its exit status, its rows by name, its whole output."""
    done = await trio.run_process(
        [str(BIN / "voice-trio"), "check", "--timeout", "20"],
        env=env,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    out = done.stdout.decode()
    lines = out.splitlines()
    assert lines[0].split() == ["check", "result", "detail"], out + done.stderr.decode()
    rows = {}
    for line in lines[1:]:
        name, result, detail = re.split(r"\s{2,}", line, maxsplit=2)
        rows[name] = (result, detail)
    return done.returncode, rows, out + done.stderr.decode()


async def test_the_embedded_default_reports_ready(tmp_path: Path) -> None:
    code, rows, out = await check(clean_env(tmp_path))
    assert code == 0, out
    assert {name: result for name, (result, _) in rows.items()} == {
        "settings": "ok",
        "speech recognition": "ok",
        "embedded voice": "ok",
        "agent graph": "ok",
        "azure realtime": "skip",
        "cartesia": "skip",
        "redis": "skip",
    }
    assert "brain local, voice local" in rows["settings"][1]
    assert "Whisper base" in rows["speech recognition"][1]
    assert re.search(r"said 'Xin chào' \([1-9]\d* ms\)", rows["embedded voice"][1])


async def test_a_bad_setting_is_reported_with_exit_2(tmp_path: Path) -> None:
    code, rows, _ = await check(clean_env(tmp_path, VOICE_BRAIN="telepathy"))
    assert code == 2
    assert rows["settings"][0] == "FAIL" and "VOICE_BRAIN" in rows["settings"][1]


async def test_azure_and_cartesia_keys_are_tried_against_the_stand_ins(tmp_path: Path) -> None:
    async with open_fake_azure() as azure, open_fake_cartesia() as cartesia:
        good = clean_env(
            tmp_path,
            AZURE_OPENAI_ENDPOINT=azure.endpoint,
            AZURE_OPENAI_API_KEY=azure.api_key,
            AZURE_OPENAI_DEPLOYMENT="gpt-realtime",
            CARTESIA_BASE_URL=cartesia.base_url,
            CARTESIA_API_KEY=cartesia.api_key,
            CARTESIA_VOICE_ID=cartesia.voice_id,
        )
        code, rows, out = await check(good)
        assert code == 0, out
        assert rows["azure realtime"][0] == "ok" and "closed at once" in rows["azure realtime"][1]
        assert rows["cartesia"][0] == "ok" and "ms of audio" in rows["cartesia"][1]
        assert rows["speech recognition"][0] == "skip"  # azure brain, Cartesia voice
        # One real session, closed by the check; one Vietnamese context spoken.
        assert len(azure.sessions) == 1 and azure.sessions[0].closed_by == "client"
        (context,) = cartesia.contexts.values()
        assert context.text == "Xin chào." and context.requests[0]["language"] == "vi"
        assert context.context_id.startswith("voice-trio-check-")

        wrong_key = "wrong-azure-key-0123456789"
        code, rows, out = await check({**good, "AZURE_OPENAI_API_KEY": wrong_key})
        assert code == 1
        result, detail = rows["azure realtime"]
        assert result == "FAIL" and "HTTP 401" in detail and "AZURE_OPENAI_API_KEY" in detail
        assert rows["cartesia"][0] == "ok"  # the other checks still run
        assert wrong_key not in out and azure.rejected == 1

        code, rows, out = await check({**good, "CARTESIA_API_KEY": "wrong-cartesia-key-0123"})
        assert code == 1
        assert rows["cartesia"][0] == "FAIL" and "HTTP 401" in rows["cartesia"][1]
        assert "wrong-cartesia-key-0123" not in out

        code, rows, _ = await check({**good, "CARTESIA_MODEL": "sonic-2"})
        assert code == 1
        assert rows["cartesia"] == (
            "FAIL",
            "CARTESIA_MODEL=sonic-2 does not speak Vietnamese (sonic-3, sonic-3.5 do)",
        )


async def test_redis_is_pinged_with_the_urls_password_never_shown(tmp_path: Path) -> None:
    password = "redis-password-0123456789"
    port = free_port()
    argv = [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(tmp_path), "--requirepass", password, "--daemonize", "no"]
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(
            partial(trio.run_process, argv, check=False, stdout=subprocess.DEVNULL)
        )
        try:
            base = clean_env(tmp_path, VOICE_BRAIN="echo")
            with trio.fail_after(30):
                while True:  # until redis-server listens
                    code, rows, out = await check(
                        {**base, "REDIS_URL": f"redis://:{password}@127.0.0.1:{port}/0"}
                    )
                    if code == 0 or "AuthenticationFailure" in out:
                        break
                    await trio.sleep(0.1)
            assert code == 0, out
            assert rows["redis"][0] == "ok" and "answered PING" in rows["redis"][1]
            assert password not in out
            wrong = "wrong-password-987654321"
            code, rows, out = await check(
                {**base, "REDIS_URL": f"redis://:{wrong}@127.0.0.1:{port}/0"}
            )
            assert code == 1
            assert rows["redis"][0] == "FAIL" and "AuthenticationFailure" in rows["redis"][1]
            assert wrong not in out
        finally:
            proc.kill()
    code, rows, _ = await check(clean_env(tmp_path, VOICE_BRAIN="echo"))
    assert code == 0 and rows["redis"][0] == "skip"
