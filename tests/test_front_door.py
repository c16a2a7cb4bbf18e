"""The front door of ``voice-trio serve`` (and of plain Hypercorn where it applies), on sockets.

Each test speaks raw HTTP/1.1 to a server on 127.0.0.1 and asserts what a client
sees: the status line and headers, the connection closed (EOF) or refused, the
refusal counted on /metrics, /healthz answering while one address is at its cap.
Connections that must count against one address come from 127.0.0.2 (Linux
routes all of 127.0.0.0/8 to loopback), so /healthz and /metrics, from
127.0.0.1, are another address. Timing bounds are generous: both cores may be busy.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from voice_trio import server as server_module
from voice_trio.app import VoiceTrioApp
from voice_trio.config import Settings
from voice_trio.server import (
    FD_RESERVE,
    Admission,
    ConnectionGate,
    client_key,
    connection_limit,
    serve,
)
from voice_trio.websocket import MAX_HEAD_BYTES

from .support import BOTH_PATHS, RawClient, RunningServer, running_server

OTHER = "127.0.0.2"  # the address that fills its cap
THIRD = "127.0.0.3"
#: Generous: the machine's two cores are shared with other test runs.
WAIT_S = 10.0

WS_HEAD = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {RawClient.KEY}\r\nSec-WebSocket-Version: 13\r\n"
)


async def connect(port: int, local: str = "127.0.0.1") -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", port, local_address=local)


async def read_to_eof(stream: trio.SocketStream, timeout: float = WAIT_S) -> bytes:
    """Everything the server sends until it closes; fails if it does not close in time."""
    data = b""
    with trio.fail_after(timeout):
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except trio.BrokenResourceError:  # reset: closed all the same
                return data
            if not chunk:
                return data
            data += chunk


async def read_response(
    stream: trio.SocketStream, buffered: bytes = b""
) -> tuple[bytes, bytes, bytes]:
    """One response with a content-length body: (head, body, what came after it)."""
    data = buffered
    with trio.fail_after(WAIT_S):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            assert chunk, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = int(header(head, b"content-length") or b"0")
        while len(rest) < length:
            chunk = await stream.receive_some(65536)
            assert chunk, data
            rest += chunk
    return head, rest[:length], rest[length:]


def header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


async def refused(srv: RunningServer, reason: str) -> float:
    return await srv.metric(f'voice_trio_connections_refused_total{{reason="{reason}"}}')


async def assert_refused_at_accept(port: int, local: str) -> None:
    """The server closes a new connection at once, without a byte."""
    stream = await connect(port, local)
    with trio.fail_after(WAIT_S):
        try:
            await stream.send_all(get("/healthz"))
        except trio.BrokenResourceError:
            return
        assert await read_to_eof(stream) == b""


async def hold_head(port: int, local: str = OTHER) -> trio.SocketStream:
    """A connection that has sent half a request head, and waits."""
    stream = await connect(port, local)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return stream


async def wait_metric(srv: RunningServer, name: str, value: float) -> None:
    with trio.fail_after(WAIT_S):
        while await srv.metric(name) != value:
            await trio.sleep(0.02)


# ------------------------------------------------------------- keep-alive, close


@BOTH_PATHS
async def test_a_static_file_response_honours_connection_close(asgi: bool) -> None:
    async with running_server(asgi=asgi) as srv:
        stream = await connect(srv.port)
        await stream.send_all(get("/index.html", "Connection: close\r\n"))
        data = await read_to_eof(stream)
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        assert b"<html" in data.lower()


@BOTH_PATHS
async def test_keep_alive_serves_static_files_again_then_closes_when_idle(
    asgi: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "HTTP_KEEP_ALIVE_S", 0.5)
    async with running_server(asgi=asgi) as srv:
        stream = await connect(srv.port)
        await stream.send_all(get("/index.html"))
        head, _, rest = await read_response(stream)
        assert head.startswith(b"HTTP/1.1 200"), head
        await stream.send_all(get("/style.css"))  # the same connection serves the next request
        head, _, rest = await read_response(stream, rest)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert await read_to_eof(stream) == rest == b""  # closed when idle


# ---------------------------------------------------------------- smuggling, h2

SMUGGLED = (
    b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + get("/metrics")
)


@BOTH_PATHS
async def test_content_length_with_transfer_encoding_is_refused_and_closed(asgi: bool) -> None:
    async with running_server(asgi=asgi) as srv:
        stream = await connect(srv.port)
        await stream.send_all(SMUGGLED)
        data = await read_to_eof(stream)
        assert data.startswith(b"HTTP/1.1 400"), data
        assert data.count(b"HTTP/1.1") == 1, data  # the smuggled GET /metrics is not served
        assert b"voice_trio" not in data
        if not asgi:
            assert await refused(srv, "cl_te") == 1


@BOTH_PATHS
async def test_content_length_with_transfer_encoding_is_refused_on_a_later_request(
    asgi: bool,
) -> None:
    async with running_server(asgi=asgi) as srv:
        stream = await connect(srv.port)
        await stream.send_all(get("/healthz"))
        head, _, rest = await read_response(stream)
        assert head.startswith(b"HTTP/1.1 200"), head
        await stream.send_all(SMUGGLED)
        data = rest + await read_to_eof(stream)
        assert data.startswith(b"HTTP/1.1 400"), data
        assert data.count(b"HTTP/1.1") == 1, data


@BOTH_PATHS
async def test_the_http2_preface_is_refused_in_http1(asgi: bool) -> None:
    async with running_server(asgi=asgi) as srv:
        stream = await connect(srv.port)
        settings_frame = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        await stream.send_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings_frame)
        data = await read_to_eof(stream)
        assert data.startswith(b"HTTP/1.1 505"), data
        if not asgi:
            assert await refused(srv, "http2") == 1


@BOTH_PATHS
async def test_an_h2c_upgrade_is_answered_in_http1(asgi: bool) -> None:
    async with running_server(asgi=asgi) as srv:
        stream = await connect(srv.port)
        await stream.send_all(
            get(
                "/healthz",
                "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
            )
        )
        head, body, rest = await read_response(stream)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b'"status":"ok"' in body
        await stream.send_all(get("/healthz", "Connection: close\r\n"))
        data = rest + await read_to_eof(stream)
        assert data.startswith(b"HTTP/1.1 200"), data  # still HTTP/1.1, never 101


async def test_a_websocket_upgrade_after_an_http_request_is_refused() -> None:
    async with running_server() as srv:
        stream = await connect(srv.port)
        await stream.send_all(get("/healthz"))
        head, _, rest = await read_response(stream)
        assert head.startswith(b"HTTP/1.1 200"), head
        await stream.send_all(get("/ws/second", WS_HEAD))
        data = rest + await read_to_eof(stream)
        assert data.startswith(b"HTTP/1.1 400"), data
        assert await refused(srv, "upgrade_not_first") == 1
        assert srv.app.rooms == {}


# ------------------------------------------------------------------- the head


async def test_a_head_over_16_kb_gets_431_even_with_an_upgrade_after_it() -> None:
    async with running_server() as srv:
        stream = await connect(srv.port)
        filler = "".join(f"X-Filler-{i}: {'a' * 90}\r\n" for i in range(MAX_HEAD_BYTES // 100 + 1))
        await stream.send_all(
            f"GET /ws/late HTTP/1.1\r\nHost: 127.0.0.1\r\n{filler}{WS_HEAD}\r\n".encode()
        )
        data = await read_to_eof(stream)
        assert data.startswith(b"HTTP/1.1 431"), data[:200]
        assert srv.app.rooms == {}
        assert await refused(srv, "head_too_large") == 1


async def test_a_head_that_does_not_arrive_in_time_is_closed_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "REQUEST_HEAD_TIMEOUT_S", 0.5)
    async with running_server() as srv:
        stream = await hold_head(srv.port, "127.0.0.1")
        assert await read_to_eof(stream) == b""
        assert await refused(srv, "head_timeout") == 1


# ------------------------------------------------------------ connection caps


async def test_one_address_is_capped_over_every_kind_of_connection() -> None:
    async with running_server(max_connections_per_ip=4) as srv:
        room = await RawClient.handshake(srv.port, "/ws/capped")  # from 127.0.0.1
        assert room.head.startswith(b"HTTP/1.1 101"), room.head
        # From OTHER: a room, an idle keep-alive HTTP connection, two unfinished heads.
        ws = await connect(srv.port, OTHER)
        await ws.send_all(get("/ws/other", WS_HEAD))
        head, _, _ = await read_response(ws)
        assert head.startswith(b"HTTP/1.1 101"), head
        http = await connect(srv.port, OTHER)
        await http.send_all(get("/healthz"))
        head, _, _ = await read_response(http)
        assert head.startswith(b"HTTP/1.1 200"), head
        heads = [await hold_head(srv.port) for _ in range(2)]
        await wait_metric(srv, "voice_trio_connections_open", 6)  # five + this /metrics
        await assert_refused_at_accept(srv.port, OTHER)
        assert await refused(srv, "per_ip") == 1
        # Another address is served meanwhile.
        assert (await srv.get("/healthz")).status_code == 200
        other = await connect(srv.port, THIRD)
        await other.send_all(get("/healthz", "Connection: close\r\n"))
        assert (await read_to_eof(other)).startswith(b"HTTP/1.1 200")
        # A connection that ends gives its place back.
        await heads[0].aclose()
        await wait_metric(srv, "voice_trio_connections_open", 5)
        again = await connect(srv.port, OTHER)
        await again.send_all(get("/healthz", "Connection: close\r\n"))
        assert (await read_to_eof(again)).startswith(b"HTTP/1.1 200")
        assert await refused(srv, "per_ip") == 1


async def test_past_the_process_cap_only_health_and_metrics_are_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(server_module, "PROBE_SLOTS", 2)
    async with running_server(max_connections=3, max_connections_per_ip=100) as srv:
        held = [await hold_head(srv.port) for _ in range(3)]
        await wait_metric(srv, "voice_trio_connections_open", 4)  # three + this /metrics (a probe)
        # The reserve: /healthz and /metrics answer, once per connection; the rest gets 503.
        health = await srv.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert health.headers["connection"] == "close"
        page = await connect(srv.port, THIRD)
        await page.send_all(get("/index.html"))
        data = await read_to_eof(page)
        assert data.startswith(b"HTTP/1.1 503"), data
        ws = await connect(srv.port, THIRD)
        await ws.send_all(get("/ws/full", WS_HEAD))
        assert (await read_to_eof(ws)).startswith(b"HTTP/1.1 503")
        assert srv.app.rooms == {}
        for stream in (page, ws):
            await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert await refused(srv, "capacity") == 2
        # With the reserve held too, a connection is closed at accept.
        probes = [await hold_head(srv.port, THIRD) for _ in range(2)]
        await trio.testing.wait_all_tasks_blocked()
        await assert_refused_at_accept(srv.port, THIRD)
        for stream in probes:  # reserve connections must send their head quickly
            assert await read_to_eof(stream) == b""
        await trio.testing.wait_all_tasks_blocked()  # the server has counted them out
        assert await refused(srv, "capacity") == 3
        for stream in held:
            await stream.aclose()
        await wait_metric(srv, "voice_trio_connections_open", 1)


def test_the_connection_cap_follows_the_descriptor_limit() -> None:
    assert connection_limit(Settings(max_connections=500), 20_000) == 500
    assert connection_limit(Settings(), 20_000) == 20_000 - FD_RESERVE
    azure = Settings(
        voice_brain="azure",
        azure_openai_endpoint="https://x.openai.azure.com",
        azure_openai_api_key="k",
        azure_openai_deployment="d",
        max_sessions=5000,
    )
    assert connection_limit(azure, 20_000) == 20_000 - FD_RESERVE - 5000  # one upstream per room
    assert connection_limit(Settings(), 100) >= 16


def test_the_gate_counts_per_address_and_keeps_a_reserve() -> None:
    gate = ConnectionGate(limit=2, per_ip_limit=2, probe_slots=1)
    assert gate.admit("a") is Admission.SERVE
    assert gate.admit("a") is Admission.SERVE
    assert gate.admit("a") is Admission.REFUSED_PER_IP
    assert gate.admit("b") is Admission.PROBE_ONLY
    assert gate.admit("c") is Admission.REFUSED_FULL
    stats = gate.statistics()
    assert (stats.open, stats.probes, stats.addresses, stats.busiest) == (3, 1, 2, 2)
    gate.release("b", Admission.PROBE_ONLY)
    gate.release("a", Admission.SERVE)
    assert gate.admit("c") is Admission.SERVE
    assert gate.statistics().addresses == 2


def test_an_ipv6_client_is_counted_by_its_64() -> None:
    assert client_key(("2001:db8:1:2::1", 5000, 0, 0)) == "2001:db8:1:2::/64"
    assert client_key(("2001:db8:1:2:ffff::9", 5000, 0, 0)) == "2001:db8:1:2::/64"
    assert client_key(("::ffff:192.0.2.7", 5000, 0, 0)) == "192.0.2.7"
    assert client_key(("192.0.2.7", 5000)) == "192.0.2.7"


async def test_the_listen_backlog_is_listen_backlog() -> None:
    # `ss` comes with iproute2, which scripts/setup.sh installs for the tests.
    assert shutil.which("ss"), "ss (iproute2) is not installed"
    async with running_server(listen_backlog=77) as srv:
        out = await trio.to_thread.run_sync(
            partial(
                subprocess.run,
                ["ss", "-ltnH", f"sport = :{srv.port}"],
                capture_output=True,
                text=True,
                check=True,
            )
        )
        assert out.stdout.split()[2] == "77", out.stdout  # Send-Q of a listener: its backlog


# ------------------------------------------------------------------- shutdown


@asynccontextmanager
async def served(
    static_dir: Path | None = None, **fields: object
) -> AsyncIterator[tuple[int, trio.Event, trio.Event]]:
    """A server whose end the test waits for: (port, shutdown, stopped)."""
    fields.setdefault("voice_brain", "echo")
    fields.setdefault("gc_thresholds", "off")
    app = VoiceTrioApp(Settings(**fields), static_dir=static_dir)  # type: ignore[arg-type]
    shutdown, stopped = trio.Event(), trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await serve(
                app, host="127.0.0.1", port=0, shutdown_event=shutdown, task_status=task_status
            )
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        urls = await nursery.start(run)
        yield int(urls[0].rsplit(":", 1)[1]), shutdown, stopped
        nursery.cancel_scope.cancel()


async def test_shutdown_closes_idle_http_connections_at_once() -> None:
    # A grace period far longer than the test may take: nothing here may wait for it.
    async with served(shutdown_grace_s=60.0) as (port, shutdown, stopped):
        idle = []
        for path in ("/index.html", "/healthz"):
            stream = await connect(port)
            await stream.send_all(get(path))
            head, _, _ = await read_response(stream)
            assert head.startswith(b"HTTP/1.1 200"), head
            idle.append(stream)
        half = await hold_head(port, "127.0.0.1")
        shutdown.set()
        with trio.fail_after(WAIT_S):
            await stopped.wait()
        for stream in [*idle, half]:
            assert await read_to_eof(stream, 1.0) == b""


async def test_shutdown_ends_a_response_the_client_stopped_reading(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(bytes(50_000_000))
    # The kernel's own deadline (TCP_USER_TIMEOUT) is a minute away: only the grace ends it.
    async with served(tmp_path, shutdown_grace_s=0.5, slow_client_timeout_s=60.0) as (
        port,
        shutdown,
        stopped,
    ):
        stream = await connect(port)
        await stream.send_all(get("/big.bin"))
        with trio.fail_after(WAIT_S):
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200")
        await trio.sleep(0.5)  # the server's writes fill both socket buffers, then wait
        shutdown.set()
        with trio.fail_after(WAIT_S):
            await stopped.wait()


async def test_shutdown_ends_rooms_as_before() -> None:
    async with served(shutdown_grace_s=0.5) as (port, shutdown, stopped):
        room = await RawClient.handshake(port, "/ws/leaving")
        assert room.head.startswith(b"HTTP/1.1 101"), room.head
        assert (await room.read_event())["type"] == "session.ready"
        shutdown.set()
        code, _ = await room.read_close()
        assert code == 1001
        with trio.fail_after(WAIT_S):
            await stopped.wait()
