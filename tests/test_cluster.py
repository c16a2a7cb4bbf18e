"""Many instances on one Redis (voice_trio.cluster): presence, the cross-instance kick, outages.

One real redis-server per module on a free loopback port; instances are
in-process apps, and ``voice-trio serve --workers 2`` as a subprocess. Each
test uses its own key prefix and instance names, so tests never see each
other's keys or kicks. No wall-clock bound is asserted (the kick's latency is
measured outside the tests, between two ``voice-trio serve`` processes); waits
are events and polls under generous ``fail_after``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from .support import RunningServer, prom_samples, running_server

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(autouse=True)
def _redis_is_installed() -> None:
    # scripts/test.sh installs redis-server: a missing one is a failure, not a skip.
    if not os.path.exists(REDIS):
        pytest.fail("redis-server is not installed (scripts/setup.sh test installs it)")


_names = itertools.count()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A real redis-server on 127.0.0.1:port that a test may kill and start again."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def command(self, *args: str) -> str:
        """One command over a plain socket (RESP2 inline reply), as text."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            parts = [f"${len(a.encode())}\r\n{a}\r\n" for a in args]
            sock.sendall(f"*{len(args)}\r\n{''.join(parts)}".encode())
            data = b""
            sock.settimeout(5)
            while True:
                data += sock.recv(65536)
                if _complete(data):
                    return data.decode()

    def commandstats(self) -> dict[str, int]:
        stats = {}
        for line in self.command("INFO", "commandstats").splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line.partition(":")
                fields = dict(field.split("=") for field in rest.split(","))
                # Calls that ran (a NOSCRIPT answer is a failed call, then SCRIPT LOAD).
                calls = int(fields["calls"]) - int(fields.get("failed_calls", 0))
                stats[name[len("cmdstat_") :]] = calls
        return stats


def _complete(data: bytes) -> bool:
    if data[:1] in (b"+", b"-", b":"):
        return data.endswith(b"\r\n")
    if data[:1] == b"$":
        head, _, body = data.partition(b"\r\n")
        size = int(head[1:])
        return size < 0 or len(body) >= size + 2
    return False


@asynccontextmanager
async def instance(
    redis: RedisServer, name: str, prefix: str, **fields: Any
) -> AsyncIterator[RunningServer]:
    fields.setdefault("presence_ttl_s", 20)
    fields.setdefault("presence_refresh_s", 1.0)
    async with running_server(
        redis_url=redis.url, instance_id=name, redis_prefix=prefix, **fields
    ) as server:
        yield server


async def wait_health(server: RunningServer, redis_state: str) -> dict[str, Any]:
    with trio.fail_after(30):
        while True:
            health: dict[str, Any] = (await server.get("/healthz")).json()
            if health.get("redis") == redis_state:
                return health
            await trio.sleep(0.05)


def start_serve(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``voice-trio serve`` in its own process group (ended by that group's id)."""
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "voice_trio", "serve", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )


def new_prefix() -> str:
    return f"t{next(_names)}-{os.getpid()}:"


async def test_a_room_opened_on_another_instance_replaces_the_old_one(redis: RedisServer) -> None:
    prefix = new_prefix()
    async with instance(redis, "a", prefix) as a, instance(redis, "b", prefix) as b:
        assert (await wait_health(a, "ok"))["instance_id"] == "a"
        await wait_health(b, "ok")
        async with a.connect("s1") as old:
            await old.ping()
            assert redis.command("GET", f"{prefix}presence:s1").endswith("@a\r\n")
            async with trio_websocket.open_websocket_url(f"{b.ws_base}/ws/s1") as ws:
                ready = json.loads(await ws.get_message())
                assert ready["type"] == "session.ready"
                assert ready["instance_id"] == "b"
                with trio.fail_after(30):
                    assert await old.closed() == (4000, "replaced")
                # The new room works.
                await ws.send_message(json.dumps({"type": "ping"}))
                assert json.loads(await ws.get_message()) == {"type": "pong"}
                assert redis.command("GET", f"{prefix}presence:s1").endswith("@b\r\n")
                assert b.app.cluster is not None and a.app.cluster is not None
                assert b.app.cluster.statistics().kicks_sent == 1
                assert a.app.cluster.statistics().kicks_received == 1
                samples = prom_samples((await a.get("/metrics")).text)
                assert samples['voice_trio_cluster_kicks_total{direction="received"}'] == 1
                assert samples["voice_trio_redis_up"] == 1
        # Closed rooms' keys are deleted (in the next batch of releases).
        with trio.fail_after(30):
            while redis.command("EXISTS", f"{prefix}presence:s1") != ":0\r\n":
                await trio.sleep(0.05)


async def test_presence_keys_have_ttls_refreshed_in_one_call_per_batch(
    redis: RedisServer,
) -> None:
    prefix = new_prefix()
    rooms = 50
    async with instance(redis, "p", prefix, presence_ttl_s=6, presence_refresh_s=0.5) as p:
        await wait_health(p, "ok")
        async with trio.open_nursery() as nursery:
            opened = 0
            done = trio.Event()

            async def hold(sid: str) -> None:
                nonlocal opened
                async with p.connect(sid):
                    opened += 1
                    await done.wait()

            for i in range(rooms):
                nursery.start_soon(hold, f"r{i}")
            with trio.fail_after(30):
                while opened < rooms:
                    await trio.sleep(0.02)
            redis.command("CONFIG", "RESETSTAT")
            with trio.fail_after(30):
                while redis.commandstats().get("evalsha", 0) < 3:
                    await trio.sleep(0.1)
            stats = redis.commandstats()
            for i in range(rooms):
                ttl = int(redis.command("TTL", f"{prefix}presence:r{i}")[1:])
                assert 0 < ttl <= 6
            done.set()
    # Idle rooms cost one script call per refresh for all of them (GET + EXPIRE
    # per key inside it), and one for their client addresses' room counts (here
    # one address: TIME, HGET, HSET, PEXPIRE), and nothing else: no call, no timer
    # per room. The statistics may be reset or read between a refresh's two calls.
    refreshes = stats["get"] // rooms
    assert refreshes >= 1
    assert stats["get"] == rooms * refreshes
    assert stats["expire"] == rooms * refreshes
    assert 2 * refreshes - 1 <= stats["evalsha"] <= 2 * refreshes + 1
    assert refreshes - 1 <= stats["hset"] <= refreshes + 1
    assert set(stats) <= {
        "evalsha", "script|load", "get", "expire", "config|resetstat", "info", "ttl", "ping",
        "time", "hget", "hset", "pexpire",
    }  # fmt: skip


async def test_redis_down_rooms_go_on_degraded_then_reconnect_and_kick(
    redis: RedisServer,
) -> None:
    prefix = new_prefix()
    async with instance(redis, "x", prefix) as x, instance(redis, "y", prefix) as y:
        await wait_health(x, "ok")
        await wait_health(y, "ok")
        async with x.connect("before") as before:
            redis.stop()
            try:
                health = await wait_health(x, "degraded")
                assert health["status"] == "ok"
                # Rooms keep working: the open one, and one opened during the outage.
                await before.ping()
                async with x.connect("during") as during:
                    await during.send_json(type="text", text="xin chào")
                    with trio.fail_after(30):
                        await during.until("response.done")
                    errors = {
                        k: v
                        for k, v in prom_samples((await x.get("/metrics")).text).items()
                        if k.startswith("voice_trio_redis_errors_total")
                    }
                    assert sum(errors.values()) >= 1, errors
                    assert prom_samples((await x.get("/metrics")).text)["voice_trio_redis_up"] == 0
                    await wait_health(y, "degraded")
            finally:
                redis.start()
            await wait_health(x, "ok")
            await wait_health(y, "ok")
            # The presence of the rooms held through the outage was written again.
            assert redis.command("GET", f"{prefix}presence:before").endswith("@x\r\n")
            # And the kick works again.
            async with y.connect("before"):
                with trio.fail_after(30):
                    assert await before.closed() == (4000, "replaced")


async def test_a_hung_redis_delays_no_room_past_its_deadline(redis: RedisServer) -> None:
    prefix = new_prefix()
    async with instance(redis, "h", prefix, redis_timeout_s=0.2) as h:
        await wait_health(h, "ok")
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
        try:
            # The claim gives up after its deadline; the room opens and works.
            async with h.connect("hung") as client:
                await client.ping()
            health = await wait_health(h, "degraded")
            assert health["status"] == "ok"
            samples = prom_samples((await h.get("/metrics")).text)
            assert samples['voice_trio_redis_errors_total{op="claim"}'] >= 1
            # Degraded: rooms open without waiting for Redis at all.
            async with h.connect("hung-2") as client:
                await client.ping()
                redis.proc.send_signal(signal.SIGCONT)
                await wait_health(h, "ok")
                # Its presence is written once Redis answers again.
                assert redis.command("GET", f"{prefix}presence:hung-2").endswith("@h\r\n")
                await client.ping()
        finally:
            redis.proc.send_signal(signal.SIGCONT)


async def test_no_cluster_no_instance_id_on_the_wire() -> None:
    async with running_server() as server:
        async with server.connect("plain"):
            pass
        health = (await server.get("/healthz")).json()
        assert "redis" not in health
        # voice-trio serve names an instance by its host and port by default.
        assert health["instance_id"] == f"{socket.gethostname()}:{server.port}"
        assert server.app.cluster is None


async def test_workers_replace_each_others_rooms(redis: RedisServer, tmp_path: Path) -> None:
    port = free_port()
    prefix = new_prefix()
    env = {
        **os.environ,
        "VOICE_BRAIN": "echo",
        "REDIS_URL": redis.url,
        "REDIS_PREFIX": prefix,
        "INSTANCE_ID": "w",
        "GC_THRESHOLDS": "off",
        # Up to 100 handshakes from 127.0.0.1 until one crosses to the other worker.
        "HANDSHAKE_BURST_PER_IP": "1000",
    }
    proc = start_serve(["--port", str(port), "--workers", "2"], env, tmp_path / "serve.log")
    try:
        base = f"http://127.0.0.1:{port}"
        workers: set[str] = set()
        with trio.fail_after(60):
            async with httpx.AsyncClient() as http:
                while len(workers) < 2:
                    try:
                        # A new connection each time: either worker may answer it.
                        answer = await http.get(base + "/healthz", headers={"Connection": "close"})
                        health = answer.json()
                        if health.get("redis") == "ok":
                            workers.add(health["instance_id"])
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.05)
        assert all(w.startswith("w:") for w in workers)
        # Open the same session again and again: each new room replaces the last,
        # until one lands on the other worker (the kernel picks who accepts).
        url = f"ws://127.0.0.1:{port}/ws/shared"
        crossed = False
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                previous: Holder | None = None
                for _ in range(100):
                    holder = Holder()
                    nursery.start_soon(holder.run, url)
                    await holder.ready.wait()
                    assert holder.instance in workers
                    if previous is not None:
                        await previous.closed.wait()
                        assert previous.code == (4000, "replaced")
                        if previous.instance != holder.instance:
                            crossed = True
                            break
                    previous = holder
                # The last room works.
                assert redis.command("GET", f"{prefix}presence:shared").endswith(
                    f"@{holder.instance}\r\n"
                )
                nursery.cancel_scope.cancel()
        assert crossed, "every connection reached the same worker"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Holder:
    """A client holding a room until the server closes it."""

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.closed = trio.Event()
        self.instance = ""
        self.code: tuple[int, str | None] | None = None

    async def run(self, url: str) -> None:
        async with trio_websocket.open_websocket_url(url) as ws:
            ready = json.loads(await ws.get_message())
            self.instance = ready["instance_id"]
            self.ready.set()
            try:
                while True:
                    await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                self.code = (exc.reason.code, exc.reason.reason)
        self.closed.set()
