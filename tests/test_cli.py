"""The commands a user runs: `voice-trio serve`, plain Hypercorn, bad settings, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from voice_trio.config import ConfigError, Settings, markdown_table

from .support import open_client, tone

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_settings_from_env_and_bad_values_name_the_variable() -> None:
    settings = Settings.from_env({"WS_OUTGOING_MAX": "12", "SESSION_IDLE_S": "2.5"})
    assert settings.ws_outgoing_max == 12 and settings.session_idle_s == 2.5
    for env, name in [
        ({"WS_OUTGOING_MAX": "many"}, "WS_OUTGOING_MAX"),
        ({"MAX_SESSIONS": "0"}, "MAX_SESSIONS"),
        ({"WS_TTS_CHUNK_BYTES": "9601"}, "WS_TTS_CHUNK_BYTES"),
        ({"VOICE_BRAIN": "telepathy"}, "VOICE_BRAIN"),
        ({"SLOW_CLIENT_TIMEOUT_S": "-1"}, "SLOW_CLIENT_TIMEOUT_S"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env(env)


def test_serve_help_describes_every_setting_and_shows_no_secret() -> None:
    secrets = {
        "AUTH_SECRET": "s3cret-" + "x" * 32,
        "AZURE_OPENAI_API_KEY": "azure-key-that-must-not-show",
        "CARTESIA_API_KEY": "cartesia-key-that-must-not-show",
        "REDIS_URL": "redis://:redis-password-that-must-not-show@127.0.0.1:1/0",
    }
    env = {**os.environ, **secrets}
    out = subprocess.run(
        [BIN / "voice-trio", "serve", "--help"], env=env, capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(out.split())
    for row in Settings.describe():
        assert row.description, f"{row.variable} has no description"
        assert f"{row.variable} [" in out or f"  {row.variable}\n" in out, row.variable
        assert " ".join(row.description.replace("`", "").split()) in flat, row.variable
    for flag in ("--host", "--port", "--workers"):
        assert flag in out
    assert "  AUTH_SECRET [secret, set]\n" in out
    assert "  REDIS_URL [secret, set]\n" in out
    bare = {k: v for k, v in os.environ.items() if k not in secrets}
    unset = subprocess.run(
        [BIN / "voice-trio", "serve", "--help"], env=bare, capture_output=True, text=True
    ).stdout
    assert "  AUTH_SECRET [secret, not set]\n" in unset
    shown = subprocess.run(
        [BIN / "voice-trio", "settings"], env=env, capture_output=True, text=True, check=True
    ).stdout
    for value in (*secrets.values(), "redis-password-that-must-not-show"):
        assert value not in out and value not in shown
    lines = {line[2:].split()[0]: line for line in shown.splitlines() if line[2:3].isupper()}
    assert set(lines) == {row.variable for row in Settings.describe()}
    assert lines["AUTH_SECRET"].split() == ["*", "AUTH_SECRET", "(set)"]
    assert lines["CARTESIA_API_KEY"].split() == ["*", "CARTESIA_API_KEY", "(set)"]
    assert lines["WS_OUTGOING_MAX"].split() == ["WS_OUTGOING_MAX", "64"]


def test_the_readme_configuration_table_is_the_one_made_from_settings() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))
    made = subprocess.run(
        [BIN / "voice-trio", "settings", "--markdown"], capture_output=True, text=True, check=True
    ).stdout
    # Same rows, defaults and meanings: `voice-trio settings --markdown` rewrites it.
    assert table == made
    assert made == markdown_table()
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1].strip("`")
    defaults = Settings()
    assert list(rows) == [name.upper() for name in Settings.__struct_fields__]
    for name in Settings.__struct_fields__:
        value = getattr(defaults, name)
        if isinstance(value, bool):
            assert rows[name.upper()] == str(value).lower(), name
        elif isinstance(value, int | float):
            assert float(rows[name.upper()]) == value, name
        else:
            assert rows[name.upper()] == (value or ""), name


def test_bad_setting_stops_start_up_with_a_message() -> None:
    env = {**os.environ, "WS_OUTGOING_MAX": "lots"}
    done = subprocess.run(
        [BIN / "voice-trio", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "WS_OUTGOING_MAX" in done.stderr


def test_plain_hypercorn_with_a_bad_setting_fails_naming_it() -> None:
    env = {**os.environ, "MAX_SESSIONS": "none"}
    done = subprocess.run(
        [
            BIN / "hypercorn",
            "--worker-class",
            "trio",
            "--bind",
            f"127.0.0.1:{free_port()}",
            "voice_trio.app:app",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Hypercorn's own master exits 0 whatever its worker did; the server must
    # not have started, and the message must name the variable.
    assert "lifespan.startup.failed" in done.stderr or "startup" in done.stderr
    assert "MAX_SESSIONS='none' is not valid" in done.stdout + done.stderr


async def client_count(port: int) -> int | None:
    """Rooms the server reports, or None once it no longer answers."""
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{port}/healthz")).json()["rooms"]
    except httpx.TransportError:
        return None


async def _wait_healthy(url: str, proc: trio.Process) -> None:
    with trio.fail_after(60):
        while True:
            assert proc.returncode is None, "server exited early"
            try:
                async with httpx.AsyncClient() as client:
                    if (await client.get(url + "/healthz")).status_code == 200:
                        return
            except httpx.TransportError:
                await trio.sleep(0.1)


@pytest.mark.parametrize(
    "command",
    [
        ["voice-trio", "serve", "--host", "127.0.0.1", "--port", "{port}"],
        ["voice-trio", "serve", "--port", "{port}", "--workers", "2"],
        ["hypercorn", "--worker-class", "trio", "--bind", "127.0.0.1:{port}", "voice_trio.app:app"],
    ],
    ids=["serve", "serve-2-workers", "hypercorn"],
)
async def test_served_process_echoes_and_stops_on_sigterm(command: list[str]) -> None:
    port = free_port()
    argv = [str(BIN / command[0])] + [a.format(port=port) for a in command[1:]]
    env = {**os.environ, "SHUTDOWN_GRACE_S": "5", "VOICE_BRAIN": "echo"}
    async with trio.open_nursery() as nursery:
        proc = await nursery.start(
            partial(
                trio.run_process,
                argv,
                env=env,
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        try:
            await _wait_healthy(f"http://127.0.0.1:{port}", proc)
            async with open_client(f"ws://127.0.0.1:{port}/ws/proc") as client:
                await client.send_audio(tone(4800, seed=3))
                await client.send_json(type="commit_audio")
                _, audio = await client.until("response.done")
                assert audio == tone(4800, seed=3)
                proc.send_signal(signal.SIGTERM)
                code, _ = await client.closed()
                if command[0] == "voice-trio":
                    assert code == 1001  # the graceful drain is voice-trio serve's
            with trio.fail_after(30):
                await proc.wait()
            assert (await client_count(port)) is None
            assert proc.returncode == 0
        finally:
            if proc.returncode is None:
                proc.kill()


def _voice(i: int, language: str) -> dict:
    from cartesia.types import Voice

    voice = {
        "id": f"00000000-0000-4000-8000-{i:012d}",
        "access": "public",
        "created_at": "2026-01-01T00:00:00Z",
        "description": f"giọng số {i}",
        "is_owner": False,
        "language": language,
        "locales": [{"is_native": True, "locale": f"{language}-{language.upper()}"}],
        "name": f"Voice {i}",
        "tagline": "",
        "visibility": "all",
    }
    Voice.model_validate(voice)  # what the stand-in serves follows Cartesia's schema
    return voice


def test_voices_lists_the_vietnamese_cartesia_voices_page_by_page() -> None:
    import http.server
    import threading
    import urllib.parse

    voices = [_voice(i, "vi" if i % 3 == 0 else "en") for i in range(1, 251)]
    seen: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            seen.append(
                {
                    "path": url.path,
                    "query": query,
                    "auth": self.headers["Authorization"],
                    "version": self.headers["Cartesia-Version"],
                }
            )
            if self.headers["Authorization"] != "Bearer sk-test":
                body, status = b'{"message": "invalid api key"}', 401
            else:
                start = 0
                if "starting_after" in query:
                    start = [v["id"] for v in voices].index(query["starting_after"]) + 1
                page = voices[start : start + int(query.get("limit", 100))]
                body = json.dumps(
                    {"data": page, "has_more": start + len(page) < len(voices)}
                ).encode()
                status = 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        env = {**os.environ, "CARTESIA_API_KEY": "sk-test", "CARTESIA_BASE_URL": base}
        done = subprocess.run(
            [BIN / "voice-trio", "voices"], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 83  # every third of 250 voices speaks Vietnamese
        assert all("[vi]" in line for line in lines)
        assert lines[0].startswith("00000000-0000-4000-8000-000000000003  Voice 3")
        # Page by page, until Cartesia returns an empty page.
        assert [q["query"].get("starting_after", "")[-3:] for q in seen] == [
            "",
            "100",
            "200",
            "250",
        ]
        assert {s["version"] for s in seen} == {"2025-04-16"}
        env["CARTESIA_API_KEY"] = "wrong"
        refused = subprocess.run(
            [BIN / "voice-trio", "voices"], env=env, capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 1 and "401" in refused.stderr
        env.pop("CARTESIA_API_KEY")
        missing = subprocess.run(
            [BIN / "voice-trio", "voices"], env=env, capture_output=True, text=True, timeout=60
        )
        assert missing.returncode == 2 and "CARTESIA_API_KEY" in missing.stderr
    finally:
        server.shutdown()
