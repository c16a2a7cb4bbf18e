"""Room security (issue #12): tokens, origins, per-address and per-room limits, secure default.

Every refusal is checked as a client sees it (the HTTP status of the handshake,
or the close code of the room) and as an operator does (its counter on
/metrics); tokens and the secret are checked never to reach a log or a page.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
import trio_websocket

from voice_trio import mint_token
from voice_trio.security import HandshakeGuard, Refusal, TrustedProxies

from .support import BOTH_PATHS, RawClient, open_client, prom_samples, running_server, tone

SECRET = "s3cret-" + "x" * 40
BIN = Path(sys.executable).parent


def refused(reason: str, text: str) -> float:
    return prom_samples(text).get(f'voice_trio_handshakes_refused_total{{reason="{reason}"}}', 0)


async def handshake_status(server: Any, path: str, headers: list[tuple[str, str]] = ()) -> int:
    """The HTTP status of a WebSocket handshake (101 if the room opened)."""
    try:
        async with trio_websocket.open_websocket_url(
            server.ws_base + path, extra_headers=list(headers)
        ):
            return 101
    except trio_websocket.ConnectionRejected as exc:
        return int(exc.status_code)


@BOTH_PATHS
async def test_every_room_needs_a_token_for_its_own_session(
    asgi: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    now = time.time()
    tokens = {
        "good": mint_token(SECRET, "alice"),
        "other": mint_token(SECRET, "bob"),
        "expired": mint_token(SECRET, "alice", ttl_s=60, now=now - 3600),
        "early": mint_token(SECRET, "alice", not_before=now + 3600),
        "forged": mint_token("another-secret-" + "y" * 40, "alice"),
        "wrong-aud": jwt.encode({"sub": "alice", "aud": "else", "exp": now + 60}, SECRET),
        "no-exp": jwt.encode({"sub": "alice", "aud": "voice-trio"}, SECRET),
        "none-alg": jwt.encode(
            {"sub": "alice", "aud": "voice-trio", "exp": now + 60}, None, algorithm="none"
        ),
    }
    async with running_server(asgi=asgi, auth_secret=SECRET) as server:
        cases = [
            ("/ws/alice", [], 401, "token_missing"),
            ("/ws/alice?token=not-a-jwt", [], 401, "token_invalid"),
            (f"/ws/alice?token={tokens['forged']}", [], 401, "token_invalid"),
            (f"/ws/alice?token={tokens['wrong-aud']}", [], 401, "token_invalid"),
            (f"/ws/alice?token={tokens['no-exp']}", [], 401, "token_invalid"),
            (f"/ws/alice?token={tokens['none-alg']}", [], 401, "token_invalid"),
            (f"/ws/alice?token={tokens['early']}", [], 401, "token_invalid"),
            (f"/ws/alice?token={tokens['expired']}", [], 401, "token_expired"),
            (f"/ws/alice?token={tokens['other']}", [], 403, "token_session"),
            ("/ws/alice", [("Authorization", f"Bearer {tokens['other']}")], 403, "token_session"),
            ("/ws/bad.id?token=x", [], 403, "session_id"),
        ]
        for path, headers, status, _ in cases:
            assert await handshake_status(server, path, headers) == status, path
        text = (await server.get("/metrics")).text
        for reason in {reason for *_, reason in cases}:
            expected = sum(1 for *_, r in cases if r == reason)
            assert refused(reason, text) == expected, reason
        assert await server.metric("voice_trio_rooms_open") == 0
        # The right token opens the room, from the query or the Authorization header.
        async with server.connect(f"alice?token={tokens['good']}") as client:
            await client.ping()
        async with open_client(
            f"{server.ws_base}/ws/alice",
            extra_headers=[("Authorization", f"Bearer {tokens['good']}")],
        ) as client:
            await client.send_json(type="text", text="xin chào")
            events, _ = await client.until("response.done")
            assert events[-1]["status"] == "completed"
        pages = (await server.get("/metrics")).text + (await server.get("/healthz")).text
    # The server's own logs (the test client, trio-websocket, logs its URLs).
    server_log = "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith(("voice_trio", "hypercorn"))
    )
    for secret in (SECRET, *tokens.values()):
        assert secret not in server_log and secret not in pages


async def test_a_refusal_says_why_with_the_rfc_headers() -> None:
    async with running_server(auth_secret=SECRET) as server:
        client = await RawClient.handshake(server.port, "/ws/alice")
        assert client.head.startswith(b"HTTP/1.1 401 ")
        assert b'www-authenticate: Bearer realm="voice-trio"' in client.head.lower().replace(
            b"bearer", b"Bearer"
        )
        body = client._data
        while b"\n" not in body:
            body += await client.stream.receive_some(1000)
        assert b"room token is needed" in body
        assert await client.at_eof()


async def test_taking_over_a_room_needs_its_token() -> None:
    async with running_server(auth_secret=SECRET) as server:
        token = mint_token(SECRET, "victim")
        async with server.connect(f"victim?token={token}") as victim:
            # An attacker who knows only the session id is refused, and the room goes on.
            assert await handshake_status(server, "/ws/victim") == 401
            assert (
                await handshake_status(server, f"/ws/victim?token={mint_token(SECRET, 'attacker')}")
                == 403
            )
            await victim.ping()
            # The holder of the token may reconnect: the old connection is replaced.
            async with server.connect(f"victim?token={token}") as again:
                assert await victim.closed() == (4000, "replaced")
                await again.ping()


async def test_origins_default_to_the_request_host_and_an_allowlist_replaces_it() -> None:
    async with running_server() as server:
        host = f"127.0.0.1:{server.port}"
        assert await handshake_status(server, "/ws/o1", [("Origin", f"http://{host}")]) == 101
        assert await handshake_status(server, "/ws/o2", [("Origin", "https://evil.example")]) == 403
        assert await handshake_status(server, "/ws/o3", [("Origin", "null")]) == 403
        assert await handshake_status(server, "/ws/o4") == 101  # not a browser
        text = (await server.get("/metrics")).text
        assert refused("origin", text) == 2
    async with running_server(allowed_origins="https://app.example, https://b.example/") as server:
        assert await handshake_status(server, "/ws/o5", [("Origin", "https://app.example")]) == 101
        assert await handshake_status(server, "/ws/o6", [("Origin", "https://B.example")]) == 101
        host = f"http://127.0.0.1:{server.port}"
        assert await handshake_status(server, "/ws/o7", [("Origin", host)]) == 403


async def test_rooms_per_address_are_capped_and_given_back() -> None:
    async with running_server(max_rooms_per_ip=2) as server:
        async with server.connect("r1"), server.connect("r2") as second:
            assert await handshake_status(server, "/ws/r3") == 429
            await second.ping()
        # Both rooms have ended: their slots are free again.
        with trio.fail_after(10):
            while await server.metric("voice_trio_rooms_open"):
                await trio.sleep(0.02)
        async with server.connect("r4"), server.connect("r5"):
            pass
        text = (await server.get("/metrics")).text
        assert refused("rooms_per_ip", text) == 1


async def test_handshakes_per_address_are_rate_limited() -> None:
    async with running_server(handshake_rate_per_ip=0.01, handshake_burst_per_ip=3) as server:
        statuses = [await handshake_status(server, f"/ws/h{i}") for i in range(5)]
        assert statuses == [101, 101, 101, 429, 429]
        client = await RawClient.handshake(server.port, "/ws/h5")
        assert client.head.startswith(b"HTTP/1.1 429 ") and b"retry-after: 1" in client.head
        text = (await server.get("/metrics")).text
        assert refused("handshake_rate", text) == 3


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client() -> None:
    async with running_server(max_rooms_per_ip=1, trusted_proxies="127.0.0.0/8") as server:
        a, b = [("X-Forwarded-For", "203.0.113.9")], [("X-Real-IP", "198.51.100.7")]
        async with open_client(f"{server.ws_base}/ws/p1", extra_headers=a):
            assert await handshake_status(server, "/ws/p2", a) == 429
            # Another user behind the same proxy is not held to the first one's cap ...
            async with open_client(f"{server.ws_base}/ws/p3", extra_headers=b):
                # ... and a forged hop at the left of the header is not believed.
                spoof = [("X-Forwarded-For", "198.51.100.7, 203.0.113.9")]
                assert await handshake_status(server, "/ws/p4", spoof) == 429
    async with running_server(max_rooms_per_ip=1) as server:
        # Without TRUSTED_PROXIES the header is ignored: every room is 127.0.0.1's.
        async with open_client(f"{server.ws_base}/ws/q1", extra_headers=a):
            assert await handshake_status(server, "/ws/q2", b) == 429


def test_forwarded_addresses_are_read_from_the_nearest_hop() -> None:
    proxies = TrustedProxies.parse("10.0.0.0/8, 192.0.2.1")
    assert proxies.client("192.0.2.1", "203.0.113.5, 10.1.1.1", None) == "203.0.113.5"
    assert proxies.client("192.0.2.1", "1.1.1.1, 203.0.113.5", None) == "203.0.113.5"
    assert proxies.client("192.0.2.1", None, "203.0.113.6") == "203.0.113.6"
    assert proxies.client("198.51.100.1", "203.0.113.5", "203.0.113.6") == "198.51.100.1"
    assert proxies.client("10.2.2.2", "10.3.3.3", None) == "10.3.3.3"


def test_open_rooms_off_loopback_are_refused_without_a_secret() -> None:
    def guard(**kwargs: Any) -> HandshakeGuard:
        settings: dict[str, Any] = dict(
            secret="",
            allow_unauthenticated=False,
            allowed_origins="",
            trusted_proxies="",
            max_rooms_per_ip=5,
            handshake_rate_per_ip=1.0,
            handshake_burst_per_ip=10,
            refused=lambda reason: None,
        )
        return HandshakeGuard(**{**settings, **kwargs})

    with pytest.raises(Refusal) as info:
        guard().admit("/ws/a", {}, peer="198.51.100.4", local="192.0.2.10")
    assert (info.value.status, info.value.reason) == (403, "unauthenticated")
    guard().admit("/ws/a", {}, peer="127.0.0.1", local="127.0.0.1").release()
    guard(allow_unauthenticated=True).admit("/ws/a", {}, peer="198.51.100.4", local="192.0.2.10")


def _serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "voice-trio", "serve", *args],
        env={**os.environ, "VOICE_BRAIN": "echo", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serving_off_loopback_without_a_secret_refuses_to_start() -> None:
    result = _serve({}, "--host", "0.0.0.0", "--port", "0")
    assert result.returncode == 2 and "AUTH_SECRET" in result.stderr
    assert "ALLOW_UNAUTHENTICATED" in result.stderr
    result = _serve({"AUTH_SECRET": "too-short"}, "--port", "0")
    assert result.returncode == 2 and "AUTH_SECRET must be at least 32 bytes" in result.stderr
    assert "too-short" not in result.stderr


def test_help_never_shows_a_secret() -> None:
    result = _serve({"AUTH_SECRET": SECRET, "AZURE_OPENAI_API_KEY": "azure-key-123"}, "--help")
    assert result.returncode == 0 and "AUTH_SECRET" in result.stdout
    assert SECRET not in result.stdout and "azure-key-123" not in result.stdout


def test_voice_trio_token_prints_a_token_for_the_session() -> None:
    result = subprocess.run(
        [BIN / "voice-trio", "token", "room-7", "--ttl", "90"],
        env={**os.environ, "AUTH_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
    )
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"], audience="voice-trio")
    assert claims["sub"] == "room-7" and claims["exp"] - claims["iat"] == 90
    result = subprocess.run(
        [BIN / "voice-trio", "token", "room-7"],
        env={k: v for k, v in os.environ.items() if k != "AUTH_SECRET"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "AUTH_SECRET" in result.stderr


async def test_a_flooding_room_is_limited_and_its_neighbour_does_not_notice() -> None:
    async with running_server(room_message_rate=50, rate_limit_close_s=3) as server:
        async with (
            server.connect("flood", message_queue_size=5000) as flood,
            server.connect("calm") as calm,
        ):
            # 400 pings at once: a burst of 100 is answered, the rest is dropped.
            for _ in range(400):
                await flood.ws.send_message('{"type":"ping"}')
            pongs, errors = 0, []
            with trio.move_on_after(2):
                while True:
                    event = json.loads(await flood.ws.get_message())
                    if event["type"] == "pong":
                        pongs += 1
                    elif event["type"] == "error":
                        errors.append(event)
            assert 100 <= pongs < 400, pongs
            assert errors and errors[0]["code"] == "rate_limited" and not errors[0]["fatal"]
            assert len(errors) <= 3  # at most one a second
            # The neighbour's round trips are served all the while.
            start = trio.current_time()
            await calm.ping()
            assert trio.current_time() - start < 5
            dropped = await server.metric('voice_trio_rate_limited_total{kind="messages"}')
            assert dropped == 400 - pongs
            # Flooding on for longer than RATE_LIMIT_CLOSE_S closes the room with 1008.
            with trio.fail_after(30):
                try:
                    while True:
                        for _ in range(100):
                            await flood.ws.send_message('{"type":"ping"}')
                        await trio.sleep(0.05)
                except trio_websocket.ConnectionClosed as exc:
                    assert exc.reason.code == 1008
                    assert "rate limits" in (exc.reason.reason or "")
            await calm.ping()


async def test_audio_faster_than_the_limit_is_dropped_and_counted() -> None:
    async with running_server(room_audio_rate=1.0) as server:
        async with server.connect("fast-audio") as client:
            second = tone(24_000, seed=3)  # one second at 24 kHz
            for _ in range(5):  # 5 s of audio at once: the burst holds 2 s
                await client.send_audio(second)
            await client.send_json(type="commit_audio")
            events, audio = await client.until("response.done")
            codes = [e["code"] for e in events if e["type"] == "error"]
            assert codes and set(codes) == {"rate_limited"} and len(codes) <= 2
            dropped = await server.metric('voice_trio_rate_limited_total{kind="audio"}')
            assert 2 <= dropped <= 3  # the burst holds 2 s (3 s if the sends took a second)
            # The echo brain sent back what was let in.
            assert len(audio) == (5 - dropped) * len(second)


async def test_a_trusted_proxy_is_not_capped_per_address_at_accept() -> None:
    async with running_server(max_connections_per_ip=2, trusted_proxies="127.0.0.1") as server:
        users = [[("X-Forwarded-For", f"203.0.113.{i}")] for i in range(4)]
        async with (
            open_client(f"{server.ws_base}/ws/u0", extra_headers=users[0]),
            open_client(f"{server.ws_base}/ws/u1", extra_headers=users[1]),
            open_client(f"{server.ws_base}/ws/u2", extra_headers=users[2]) as third,
        ):
            await third.ping()
    async with running_server(max_connections_per_ip=2) as server:
        async with server.connect("v0"), server.connect("v1"):
            # Without TRUSTED_PROXIES a third connection is closed at accept, unanswered.
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            with trio.fail_after(10):
                try:
                    assert await stream.receive_some(100) == b""
                except trio.BrokenResourceError:
                    pass  # reset: closed all the same
            await stream.aclose()
