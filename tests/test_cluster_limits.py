"""Per-address limits counted across instances (REDIS_URL): a handshake rate and open rooms.

One real redis-server and two real ``voice-trio serve`` processes, A and B,
per module (the tests' order matters: the last one kills A). Every client
comes from 127.0.0.1, which the instances trust as a proxy, and says who it
is in its own ``X-Forwarded-For``: each test takes fresh client addresses, so
tests never share a bucket or a room count. The bucket refills at 0.001
handshakes a second (none within a test) so that what a test counts is what
the limits allowed. No wall-clock bound is asserted: "within the deadline" is
shown by handshakes admitted while Redis is stopped (they cannot have waited
for its answer); every wait is a poll under a generous ``fail_after``.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from .support import RunningServer, prom_samples, running_server
from .test_cluster import RedisServer, free_port, new_prefix, start_serve

#: HANDSHAKE_BURST_PER_IP of the instances (HANDSHAKE_RATE_PER_IP: 0.001 a second).
BURST = 8
#: MAX_ROOMS_PER_IP of the instances.
MAX_ROOMS = 3
#: PRESENCE_TTL_S: how long a dead instance's room counts go on counting.
TTL_S = 4
#: Bound for start-up and every wait: generous, both cores may be busy.
WAIT_S = 60.0


_addresses = itertools.count(1)


def new_address() -> str:
    """A client address no other test (or run of this module) uses."""
    n = next(_addresses)
    return f"10.{os.getpid() % 250}.{n // 250}.{n % 250 + 1}"


@dataclass
class Instance:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def samples(self) -> dict[str, float]:
        async with httpx.AsyncClient() as http:
            return prom_samples((await http.get(self.url + "/metrics")).text)

    async def refused(self, reason: str) -> float:
        key = f'voice_trio_handshakes_refused_total{{reason="{reason}"}}'
        return (await self.samples()).get(key, 0.0)

    async def redis_errors(self) -> dict[str, float]:
        prefix = "voice_trio_redis_errors_total"
        return {k: v for k, v in (await self.samples()).items() if k.startswith(prefix)}

    async def health(self, redis_state: str) -> None:
        """Wait until /healthz says ``"redis": redis_state``."""
        with trio.fail_after(WAIT_S):
            async with httpx.AsyncClient() as http:
                while True:
                    if self.proc.poll() is not None:
                        raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
                    try:
                        answer = (await http.get(self.url + "/healthz")).json()
                        if answer.get("redis") == redis_state:
                            return
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.05)


@dataclass
class Pair:
    redis: RedisServer
    prefix: str
    a: Instance
    b: Instance

    def rooms(self, address: str) -> dict[str, str]:
        """The per-address rooms hash in Redis: instance id -> "count expires_ms seq"."""
        values = strings(self.redis, "HGETALL", f"{self.prefix}rooms:{address}")
        return dict(zip(values[0::2], values[1::2], strict=True))

    def now_ms(self) -> int:
        """Redis's clock (the one the entries' expiry is written in)."""
        seconds, micros = strings(self.redis, "TIME")
        return int(seconds) * 1000 + int(micros) // 1000

    async def settled(self, address: str) -> None:
        """Wait until no instance counts a room of ``address`` in Redis (the key is gone)."""
        with trio.fail_after(WAIT_S):
            while self.redis.command("EXISTS", f"{self.prefix}rooms:{address}") != ":0\r\n":
                await trio.sleep(0.05)

    async def count_is(self, address: str, instance: str, count: int) -> None:
        """Wait until ``instance``'s entry for ``address`` says ``count`` rooms."""
        with trio.fail_after(WAIT_S):
            while True:
                entry = self.rooms(address).get(instance)
                if (int(entry.split()[0]) if entry else 0) == count:
                    return
                await trio.sleep(0.05)


def strings(redis: RedisServer, *args: str) -> list[str]:
    """A command whose reply is an array of bulk strings (RESP2, over a plain socket)."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as sock:
        sock.sendall(f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args
        ))  # fmt: skip
        data = b""
        while True:
            data += sock.recv(65536)
            lines = data.split(b"\r\n")
            if not lines[0].startswith(b"*"):
                raise AssertionError(data)
            n = int(lines[0][1:])
            if len(lines) >= 2 * n + 2:  # header, then a length and a value per item
                return [line.decode() for line in lines[2 : 2 * n + 1 : 2]]


@pytest.fixture(scope="module")
def pair(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("limits")
    prefix = new_prefix()
    env = {
        **os.environ,
        "VOICE_BRAIN": "echo",
        "GC_THRESHOLDS": "off",
        "REDIS_URL": redis.url,
        "REDIS_PREFIX": prefix,
        # Longer than the default 0.2 s: both cores may be busy, and a late answer
        # (the local limits decide) would blur what the counting tests count.
        "REDIS_TIMEOUT_S": "1.0",
        "PRESENCE_TTL_S": str(TTL_S),
        "PRESENCE_REFRESH_S": "1",
        "TRUSTED_PROXIES": "127.0.0.1",
        "HANDSHAKE_BURST_PER_IP": str(BURST),
        "HANDSHAKE_RATE_PER_IP": "0.001",
        "MAX_ROOMS_PER_IP": str(MAX_ROOMS),
        "SHUTDOWN_GRACE_S": "1",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        instances = []
        for name in ("A", "B"):
            port = free_port()
            log = root / f"{name}.log"
            proc = start_serve(
                ["--host", "127.0.0.1", "--port", str(port)], {**env, "INSTANCE_ID": name}, log
            )
            procs.append(proc)
            instances.append(Instance(name, port, proc, log))

        async def ready() -> None:
            for instance in instances:
                await instance.health("ok")

        trio.run(ready)
        yield Pair(redis, prefix, *instances)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


_sessions = itertools.count()


async def handshake(instance: Instance, address: str) -> int:
    """One handshake (a room opened and closed) from ``address``: 101, or the refusal's status."""
    url = f"ws://127.0.0.1:{instance.port}/ws/s{next(_sessions)}"
    try:
        async with trio_websocket.open_websocket_url(
            url, extra_headers=[("X-Forwarded-For", address)]
        ) as ws:
            assert json.loads(await ws.get_message())["type"] == "session.ready"
            return 101
    except trio_websocket.ConnectionRejected as exc:
        return int(exc.status_code)


@asynccontextmanager
async def room(instance: Instance, address: str) -> AsyncIterator[None]:
    """A room from ``address`` held open for the body (it must be admitted)."""
    url = f"ws://127.0.0.1:{instance.port}/ws/s{next(_sessions)}"
    async with trio_websocket.open_websocket_url(
        url, extra_headers=[("X-Forwarded-For", address)]
    ) as ws:
        ready = json.loads(await ws.get_message())
        assert ready["type"] == "session.ready" and ready["instance_id"] == instance.name
        yield


async def test_one_address_has_one_handshake_bucket_across_instances(pair: Pair) -> None:
    address, other = new_address(), new_address()
    refused = [await pair.a.refused("handshake_rate"), await pair.b.refused("handshake_rate")]
    with trio.fail_after(WAIT_S):
        # The burst spread over both instances: each sees only half of it.
        for i in range(BURST):
            assert await handshake((pair.a, pair.b)[i % 2], address) == 101, i
            await pair.settled(address)  # its room's count is gone, only the rate counts
        # The next one is refused on either instance (alone, each would take BURST).
        assert await handshake(pair.a, address) == 429
        assert await handshake(pair.b, address) == 429
        assert await pair.a.refused("handshake_rate") == refused[0] + 1
        assert await pair.b.refused("handshake_rate") == refused[1] + 1
        # Another address has its own bucket.
        assert await handshake(pair.b, other) == 101
    # The bucket is a Redis key that expires once it would be full again.
    ttl_ms = int(pair.redis.command("PTTL", f"{pair.prefix}rate:{address}")[1:])
    assert 0 < ttl_ms <= (BURST / 0.001 + 1) * 1000


async def test_rooms_of_one_address_are_counted_across_instances(pair: Pair) -> None:
    address = new_address()
    refused = [await pair.a.refused("rooms_per_ip"), await pair.b.refused("rooms_per_ip")]
    with trio.fail_after(WAIT_S):
        async with room(pair.a, address), room(pair.b, address):
            async with room(pair.a, address):
                entries = pair.rooms(address)
                assert sorted(entries) == ["A", "B"]
                assert entries["A"].split()[0] == "2" and entries["B"].split()[0] == "1"
                # MAX_ROOMS open across the two: one more is refused on either.
                assert await handshake(pair.a, address) == 429
                assert await handshake(pair.b, address) == 429
                assert await pair.a.refused("rooms_per_ip") == refused[0] + 1
                assert await pair.b.refused("rooms_per_ip") == refused[1] + 1
            # A room closed on A frees a slot on B (once A has written its count).
            await pair.count_is(address, "A", 1)
            async with room(pair.b, address):
                assert pair.rooms(address)["B"].split()[0] == "2"
        # Nothing is left behind once every room has closed.
        await pair.settled(address)


async def test_redis_stopped_then_killed_local_limits_then_shared_again(pair: Pair) -> None:
    assert pair.redis.proc is not None
    held, local, outage = new_address(), new_address(), new_address()
    with trio.fail_after(WAIT_S * 2):
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def hold(instance: Instance, address: str, opened: trio.Event) -> None:
                async with room(instance, address):
                    opened.set()
                    await done.wait()

            async def open_room(instance: Instance, address: str) -> None:
                opened = trio.Event()
                nursery.start_soon(hold, instance, address, opened)
                await opened.wait()

            await open_room(pair.a, held)  # held through the outage
            errors = await pair.a.redis_errors()
            # Redis hung (accepts, answers nothing): the handshake's call gives up at its
            # deadline and the local limits admit it, while Redis is still stopped.
            pair.redis.proc.send_signal(signal.SIGSTOP)
            try:
                assert await handshake(pair.a, new_address()) == 101
                after = await pair.a.redis_errors()
                key = 'voice_trio_redis_errors_total{op="handshake"}'
                assert after.get(key, 0) >= errors.get(key, 0) + 1, after
            finally:
                pair.redis.proc.send_signal(signal.SIGCONT)
            pair.redis.stop()  # killed
            try:
                await pair.a.health("degraded")
                await pair.b.health("degraded")
                # Each instance applies its own limits: the burst on A, then 429 ...
                for _ in range(BURST):
                    assert await handshake(pair.a, local) == 101
                assert await handshake(pair.a, local) == 429
                # ... while B, which cannot know, has its own bucket for the address.
                assert await handshake(pair.b, local) == 101
                # Rooms: MAX_ROOMS on A, one more refused there, and one on B.
                for _ in range(MAX_ROOMS):
                    await open_room(pair.a, outage)
                assert await handshake(pair.a, outage) == 429
                await open_room(pair.b, outage)
                for instance in (pair.a, pair.b):
                    assert sum((await instance.redis_errors()).values()) >= 1
            finally:
                pair.redis.start()  # empty: no bucket, no count
            await pair.a.health("ok")
            await pair.b.health("ok")
            # Shared again: the instances wrote their counts again, rooms held through
            # the outage included (MAX_ROOMS + 1 for `outage`: refused on both) ...
            assert list(pair.rooms(held)) == ["A"]
            assert pair.rooms(held)["A"].split()[0] == "1"
            assert pair.rooms(outage)["A"].split()[0] == str(MAX_ROOMS)
            assert pair.rooms(outage)["B"].split()[0] == "1"
            assert await handshake(pair.a, outage) == 429
            assert await handshake(pair.b, outage) == 429
            # ... and a fresh address's burst is shared again.
            fresh = new_address()
            for i in range(BURST):
                assert await handshake((pair.a, pair.b)[i % 2], fresh) == 101, i
                await pair.settled(fresh)
            assert await handshake(pair.a, fresh) == 429
            assert await handshake(pair.b, fresh) == 429
            done.set()


async def test_a_dead_instances_rooms_stop_counting(pair: Pair) -> None:
    """Runs last in the module: it kills A."""
    address = new_address()
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def hold_on_a(opened: trio.Event) -> None:
                try:
                    async with room(pair.a, address):
                        opened.set()
                        await done.wait()
                except trio_websocket.ConnectionClosed:
                    pass  # A was killed under it

            for _ in range(2):
                opened = trio.Event()
                nursery.start_soon(hold_on_a, opened)
                await opened.wait()
            async with room(pair.b, address):
                assert await handshake(pair.b, address) == 429
                assert pair.rooms(address)["A"].split()[0] == "2"
                os.killpg(pair.a.proc.pid, signal.SIGKILL)
                pair.a.proc.wait()
                # A's entry counts until it expires (PRESENCE_TTL_S after A last wrote it),
                # then B's admissions ignore it and delete it.
                expires_ms = int(pair.rooms(address)["A"].split()[1])
                assert expires_ms <= pair.now_ms() + TTL_S * 1000
                while pair.now_ms() <= expires_ms + 100:
                    await trio.sleep(0.1)
                async with room(pair.b, address), room(pair.b, address):
                    assert "A" not in pair.rooms(address)
                    assert pair.rooms(address)["B"].split()[0] == str(MAX_ROOMS)
                    assert await handshake(pair.b, address) == 429
            done.set()


async def test_both_serve_paths_share_one_bucket(redis: RedisServer) -> None:
    """``voice-trio serve``'s own handshake and plain Hypercorn's (ASGI) take the same tokens."""
    fields = {
        "redis_url": redis.url,
        "redis_prefix": new_prefix(),
        "redis_timeout_s": 1.0,
        "handshake_burst_per_ip": 4,
        "handshake_rate_per_ip": 0.001,
    }
    key = 'voice_trio_handshakes_refused_total{reason="handshake_rate"}'
    with trio.fail_after(WAIT_S):
        async with (
            running_server(instance_id="own", **fields) as own,
            running_server(instance_id="asgi", asgi=True, **fields) as asgi,
        ):
            for server in (own, asgi):
                while (await server.get("/healthz")).json().get("redis") != "ok":
                    await trio.sleep(0.05)
            for server in (own, asgi, own, asgi):
                async with server.connect("p"):
                    pass
            for server in (own, asgi):
                with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                    async with server.connect("p"):
                        pass
                assert rejected.value.status_code == 429
                assert prom_samples((await server.get("/metrics")).text)[key] == 1


async def test_handshakes_at_once_on_both_instances_take_the_burst_once(redis: RedisServer) -> None:
    """Handshakes that come together go to Redis together (one script call for a burst)."""
    fields = {
        "redis_url": redis.url,
        "redis_prefix": new_prefix(),
        "redis_timeout_s": 2.0,
        "handshake_burst_per_ip": 10,
        "handshake_rate_per_ip": 0.001,
    }
    statuses: list[int] = []

    async def one(server: RunningServer, n: int) -> None:
        try:
            async with server.connect(f"b{n}"):
                statuses.append(101)
        except trio_websocket.ConnectionRejected as exc:
            statuses.append(int(exc.status_code))

    with trio.fail_after(WAIT_S):
        async with (
            running_server(instance_id="x", **fields) as x,
            running_server(instance_id="y", **fields) as y,
        ):
            for server in (x, y):
                while (await server.get("/healthz")).json().get("redis") != "ok":
                    await trio.sleep(0.05)
            async with trio.open_nursery() as nursery:
                for n in range(30):
                    nursery.start_soon(one, (x, y)[n % 2], n)
            # Each instance alone would admit 10 (its own bucket lets 15 through 10).
            assert sorted(statuses) == [101] * 10 + [429] * 20
            key = 'voice_trio_handshakes_refused_total{reason="handshake_rate"}'
            refused = [prom_samples((await s.get("/metrics")).text).get(key, 0) for s in (x, y)]
            assert sum(refused) == 20
