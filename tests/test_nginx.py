"""`voice-trio nginx-config` in a real nginx, in front of three real `voice-trio serve` processes.

One cluster per module (three instances with the echo brain, each on a free
port, and nginx running the generated file in the foreground). Which instance
holds a room is read from the instances themselves: each one's `/healthz`
counts its rooms, and a reconnect that reaches the instance holding the
session replaces the room there (the old connection is closed with 4000), so
the counts do not move. The test that kills an instance runs last.

Every client says who it is in its own `X-Forwarded-For` (all of them come from
127.0.0.1, which the instances trust as the proxy): nginx appends its peer, and
the instances, reading from the nearest hop past trusted proxies, count each
client under its own address (MAX_ROOMS_PER_IP=2 makes that observable).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket

from voice_trio import cli
from voice_trio.deploy import Address, DeployError, nginx_config, parse_address

from .support import Client, prom_samples, tone

BIN = Path(sys.executable).parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture(autouse=True)
def _nginx_is_installed() -> None:
    # scripts/test.sh installs nginx: a missing one is a failure, not a skip.
    if not os.path.exists(NGINX):
        pytest.fail("nginx is not installed (scripts/setup.sh test installs it)")


#: Sessions spread over the instances by the sticky-routing tests.
SESSIONS = 60
#: Reconnects of each session in the sticky-routing test.
RECONNECTS = 3
#: Rooms one client address may hold on an instance (one room, plus its replacement).
ROOMS_PER_IP = 2
#: Bound for start-up and every wait on the processes: generous, both cores may be busy.
START_S = 60.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Instance:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Cluster:
    instances: list[Instance]
    nginx: subprocess.Popen[bytes]
    port: int
    prefix: Path
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws(self, session_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/{session_id}"

    async def counts(self, http: httpx.AsyncClient) -> list[int | None]:
        """Rooms each instance holds (None for an instance that was killed)."""
        counts: list[int | None] = [None] * len(self.instances)

        async def one(i: int, instance: Instance) -> None:
            if instance.alive:
                counts[i] = (await http.get(instance.url + "/healthz")).json()["rooms"]

        async with trio.open_nursery() as nursery:
            for i, instance in enumerate(self.instances):
                nursery.start_soon(one, i, instance)
        return counts


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _wait_http(url: str, procs: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + START_S
    while True:
        for proc, log in zip(procs, logs, strict=True):
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args} exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {START_S} s")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("nginx")
    env = {
        **os.environ,
        "VOICE_BRAIN": "echo",
        "TRUSTED_PROXIES": "127.0.0.1",
        "MAX_ROOMS_PER_IP": str(ROOMS_PER_IP),
        "SHUTDOWN_GRACE_S": "1",
        "GC_THRESHOLDS": "off",
    }
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        instances = []
        for i in range(3):
            port = free_port()
            log = root / f"instance-{i}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [BIN / "voice-trio", "serve", "--host", "127.0.0.1", "--port", str(port)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            procs.append(proc)
            logs.append(log)
            instances.append(Instance(port, proc))
        port = free_port()
        config = nginx_config(
            Address("127.0.0.1", port), [Address("127.0.0.1", i.port) for i in instances], root
        )
        (root / "nginx.conf").write_text(config)
        log = root / "nginx.log"
        with log.open("wb") as out:
            nginx = subprocess.Popen(
                [NGINX, "-p", f"{root}/", "-c", str(root / "nginx.conf"), "-e", "stderr"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(nginx)
        logs.append(log)
        for instance in instances:
            _wait_http(instance.url + "/healthz", procs, logs)
        _wait_http(f"http://127.0.0.1:{port}/healthz", procs, logs)
        yield Cluster(instances, nginx, port, root, logs)
    finally:
        for proc in reversed(procs):
            _stop(proc)


async def connect(
    nursery: trio.Nursery, cluster: Cluster, session_id: str, client_ip: str
) -> trio_websocket.WebSocketConnection:
    """A room through nginx, from a client that says it is ``client_ip``; after session.ready."""
    ws = await trio_websocket.connect_websocket_url(
        nursery, cluster.ws(session_id), extra_headers=[("X-Forwarded-For", client_ip)]
    )
    await Client(ws).expect("session.ready", session_id=session_id)
    return ws


async def replaced(ws: trio_websocket.WebSocketConnection) -> int:
    """The close code the server ends an old connection with (4000 when it was replaced)."""
    with trio.fail_after(START_S):
        try:
            while True:
                await ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            return int(exc.reason.code)


async def settle(cluster: Cluster, http: httpx.AsyncClient) -> None:
    """Wait until the rooms closed before have left every instance."""
    with trio.fail_after(START_S):
        while any(await cluster.counts(http)):
            await trio.sleep(0.05)


def delta(after: list[int | None], before: list[int | None]) -> list[int]:
    return [(a or 0) - (b or 0) for a, b in zip(after, before, strict=True)]


class Placement:
    """Sessions opened through nginx, held open, and the instance holding each."""

    def __init__(self, cluster: Cluster, http: httpx.AsyncClient, nursery: trio.Nursery) -> None:
        self.cluster = cluster
        self.http = http
        self.nursery = nursery
        self.rooms: dict[str, trio_websocket.WebSocketConnection] = {}
        self.owner: dict[str, int] = {}
        self.ip: dict[str, str] = {}

    async def open(self, session_id: str, client_ip: str) -> int:
        """Open a new session; the index of the instance that got it."""
        before = await self.cluster.counts(self.http)
        self.rooms[session_id] = await connect(self.nursery, self.cluster, session_id, client_ip)
        change = delta(await self.cluster.counts(self.http), before)
        assert sorted(change) == [0] * (len(change) - 1) + [1], (session_id, change)
        self.owner[session_id] = change.index(1)
        self.ip[session_id] = client_ip
        return self.owner[session_id]

    async def reconnect(self, session_id: str) -> int:
        """Reconnect a held session; the instance the new connection reached.

        On the instance holding it, the room is replaced: the counts stay and
        the old connection is closed with 4000. Elsewhere a room would be added.
        """
        old = self.rooms[session_id]
        before = await self.cluster.counts(self.http)
        self.rooms[session_id] = await connect(
            self.nursery, self.cluster, session_id, self.ip[session_id]
        )
        change = delta(await self.cluster.counts(self.http), before)
        if change == [0] * len(change):
            assert await replaced(old) == 4000, session_id
            return self.owner[session_id]
        assert sorted(change) == [0] * (len(change) - 1) + [1], (session_id, change)
        with trio.move_on_after(5):
            await old.aclose()
        return change.index(1)

    async def close_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for ws in self.rooms.values():
                nursery.start_soon(ws.aclose)
        self.rooms.clear()


# ------------------------------------------------------------------ the command


def test_arguments_are_validated_with_clear_errors(capsys: pytest.CaptureFixture[str]) -> None:
    good = ["nginx-config", "--listen", "127.0.0.1:8080"]
    cases = [
        (good, "at least one --backend"),
        (good + ["--backend", "127.0.0.1"], "expected HOST:PORT"),
        (good + ["--backend", "127.0.0.1:0"], "port must be a number from 1 to 65535"),
        (good + ["--backend", "127.0.0.1:http"], "port must be a number"),
        (good + ["--backend", "999.1.1.1:80"], "not an address or host name"),
        (good + ["--backend", "::1:8001"], "[ADDR]:PORT"),
        (good + ["--backend", "a:1", "--backend", "a:1"], "listed twice"),
        (good + ["--backend", "127.0.0.1:8080"], "also a backend"),
        (["nginx-config", "--listen", "8080", "--backend", "a:1"], "--listen '8080'"),
    ]
    for argv, message in cases:
        assert cli.main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):
        cli.main(["nginx-config", "--backend", "a:1"])  # --listen is required
    capsys.readouterr()
    assert parse_address("[::1]:8001") == Address("::1", 8001)
    assert str(parse_address("[::1]:8001")) == "[::1]:8001"
    assert parse_address("voice-2.internal:8000") == Address("voice-2.internal", 8000)
    with pytest.raises(DeployError):
        nginx_config(Address("127.0.0.1", 1), [], "/tmp")


def test_the_printed_config_passes_nginx_t(tmp_path: Path) -> None:
    done = subprocess.run(
        [BIN / "voice-trio", "nginx-config", "--listen", "127.0.0.1:18080"]
        + ["--backend", "127.0.0.1:18001", "--backend", "[::1]:18002"]
        + ["--backend", "localhost:18003", "--prefix", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    config = done.stdout
    for line in (
        "daemon off;",
        "hash $voice_trio_session consistent;",
        "server 127.0.0.1:18001 max_fails=1 fail_timeout=10s;",
        "server [::1]:18002 max_fails=1 fail_timeout=10s;",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_buffering off;",
        "proxy_buffer_size 16k;",
        f"pid {tmp_path}/nginx.pid;",
    ):
        assert line in config, line
    for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{temp}_temp_path {tmp_path}/{temp}_temp;" in config
    (tmp_path / "nginx.conf").write_text(config)
    checked = subprocess.run(
        [NGINX, "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


# ------------------------------------------------------------------ through nginx


async def test_a_room_works_through_nginx(cluster: Cluster) -> None:
    origin = [("Origin", cluster.url)]  # a browser on the page nginx serves
    with trio.fail_after(START_S):
        async with trio_websocket.open_websocket_url(
            cluster.ws("through-nginx"), extra_headers=origin
        ) as ws:
            client = Client(ws)
            await client.expect("session.ready", session_id="through-nginx")
            await client.send_audio(tone(4800, seed=5))
            await client.send_json(type="commit_audio")
            _, audio = await client.until("response.done")
            assert audio == tone(4800, seed=5)
            await client.ping()


async def test_http_paths_go_round_robin_to_the_instances(cluster: Cluster) -> None:
    # One room held directly on instance 0: nginx's /healthz answers say 1 room
    # when instance 0 answered, 0 otherwise; round robin over 3 gives each in turn.
    with trio.fail_after(START_S):
        first = cluster.instances[0]
        async with httpx.AsyncClient() as http:
            await settle(cluster, http)
        async with trio_websocket.open_websocket_url(
            f"ws://127.0.0.1:{first.port}/ws/direct-0"
        ) as ws:
            await Client(ws).expect("session.ready")
            async with httpx.AsyncClient(base_url=cluster.url) as http:
                rooms = [(await http.get("/healthz")).json()["rooms"] for _ in range(9)]
                assert sorted(rooms) == [0] * 6 + [1] * 3, rooms
                metrics = await http.get("/metrics")
                assert metrics.status_code == 200
                assert "voice_trio_rooms_open" in metrics.text
                page = await http.get("/")
                assert page.status_code == 200 and "<html" in page.text.lower()


async def test_sessions_stay_on_one_instance_across_reconnects(cluster: Cluster) -> None:
    with trio.fail_after(START_S * 2):
        async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:
            await settle(cluster, http)
            rooms = Placement(cluster, http, nursery)
            for i in range(SESSIONS):
                await rooms.open(f"sticky-{i}", f"10.1.{i // 250}.{i % 250 + 1}")
            spread = [list(rooms.owner.values()).count(k) for k in range(3)]
            assert all(spread), spread  # the hash spreads sessions over all three
            assert await cluster.counts(http) == spread
            for _ in range(RECONNECTS):
                for session_id, owner in list(rooms.owner.items()):
                    assert await rooms.reconnect(session_id) == owner, session_id
            assert await cluster.counts(http) == spread
            await rooms.close_all()


async def test_x_forwarded_for_reaches_the_instance(cluster: Cluster) -> None:
    with trio.fail_after(START_S * 2):
        async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:
            # Find three sessions nginx sends to the same instance.
            await settle(cluster, http)
            probe = Placement(cluster, http, nursery)
            on: dict[int, list[str]] = {0: [], 1: [], 2: []}
            i = 0
            while max(len(v) for v in on.values()) < ROOMS_PER_IP + 1:
                session_id = f"xff-{i}"
                on[await probe.open(session_id, f"10.2.0.{i + 1}")].append(session_id)
                i += 1
            await probe.close_all()
            await settle(cluster, http)
            target, sessions = max(on.items(), key=lambda kv: len(kv[1]))
            instance = cluster.instances[target]

            async def refused_per_ip() -> float:
                text = (await http.get(instance.url + "/metrics")).text
                key = 'voice_trio_handshakes_refused_total{reason="rooms_per_ip"}'
                return prom_samples(text).get(key, 0.0)

            refused = await refused_per_ip()
            held = [await connect(nursery, cluster, s, "10.9.0.1") for s in sessions[:-1]]
            # The same client address at its limit on that instance: 429 ...
            with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
                async with trio_websocket.open_websocket_url(
                    cluster.ws(sessions[-1]), extra_headers=[("X-Forwarded-For", "10.9.0.1")]
                ):
                    pass
            assert rejected.value.status_code == 429
            assert await refused_per_ip() == refused + 1
            # ... while another client, through the same nginx, gets its room.
            held.append(await connect(nursery, cluster, sessions[-1], "10.9.0.2"))
            assert (await cluster.counts(http))[target] == ROOMS_PER_IP + 1
            for ws in held:
                await ws.aclose()


async def test_a_dead_instance_moves_only_its_own_sessions(cluster: Cluster) -> None:
    """Runs last in the module: it kills an instance."""
    with trio.fail_after(START_S * 2):
        async with httpx.AsyncClient() as http, trio.open_nursery() as nursery:
            await settle(cluster, http)
            rooms = Placement(cluster, http, nursery)
            for i in range(SESSIONS):
                await rooms.open(f"moving-{i}", f"10.3.{i // 250}.{i % 250 + 1}")
            dead = 2
            victims = [s for s, owner in rooms.owner.items() if owner == dead]
            assert victims
            cluster.instances[dead].proc.send_signal(signal.SIGKILL)
            await trio.to_thread.run_sync(cluster.instances[dead].proc.wait)
            for session_id in victims:
                await replaced(rooms.rooms[session_id])  # their connections end
            moved: dict[str, int] = {}
            for session_id, owner in list(rooms.owner.items()):
                reached = await rooms.reconnect(session_id)
                if owner == dead:
                    assert reached != dead
                    moved[session_id] = reached
                else:
                    assert reached == owner, session_id  # the others stay where they were
            rooms.owner.update(moved)
            # A moved session now stays on its new instance.
            for session_id, owner in moved.items():
                assert await rooms.reconnect(session_id) == owner, session_id
            await rooms.close_all()
