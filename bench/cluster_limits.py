"""What the cluster-wide per-address limits cost a handshake: one instance with and without Redis.

Starts redis-server and two `voice-trio serve` instances (echo brain): "local"
without REDIS_URL, "redis" with it (its handshakes make the limits' one script
call, under REDIS_TIMEOUT_S; the presence claim comes after the 101). Both get
limits too high to refuse anything. A raw client makes handshakes one after
the other, alternating between the instances in rounds of `--per-round`:
request sent -> `101` (the handshake checks, the shared limits' Redis call
among them) and -> `session.ready` (the room opened: with Redis, the presence
claim too), then a clean close. Reports per instance p50/p99 of both, the
server's CPU per handshake (/proc utime + stime), and for the Redis instance
the script calls per handshake and their time inside Redis (commandstats).
Then `--concurrency` clients at once against each for `--burst` handshakes:
handshakes a second.

    .venv/bin/python bench/cluster_limits.py --handshakes 2000 --concurrency 32

Everything is on 127.0.0.1; every process started here is ended by its PID.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import trio

TICKS = os.sysconf("SC_CLK_TCK")
LIMITS_OFF = {
    "HANDSHAKE_RATE_PER_IP": "1000000",
    "HANDSHAKE_BURST_PER_IP": "1000000",
    "MAX_ROOMS_PER_IP": "1000000",
    "MAX_CONNECTIONS_PER_IP": "100000",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_cmd(port: int, *args: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)).encode())
        data = b""
        while True:
            data += s.recv(1 << 20)
            if data[:1] in (b"+", b"-", b":") and data.endswith(b"\r\n"):
                return data.decode()
            if data[:1] == b"$":
                head, _, body = data.partition(b"\r\n")
                if int(head[1:]) < 0 or len(body) >= int(head[1:]) + 2:
                    return body.decode()


def redis_stats(port: int) -> dict[str, float]:
    """evalsha calls and their total usec; the server's CPU seconds."""
    out: dict[str, float] = {}
    for line in redis_cmd(port, "INFO", "all").splitlines():
        if line.startswith("cmdstat_evalsha:"):
            fields = dict(f.split("=") for f in line.split(":", 1)[1].split(","))
            out["evalsha"] = float(fields["calls"])
            out["evalsha_usec"] = float(fields["usec"])
        elif line.startswith(("used_cpu_sys:", "used_cpu_user:")):
            out["cpu"] = out.get("cpu", 0.0) + float(line.split(":")[1])
    return out


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


async def handshake(port: int, n: int) -> tuple[float, float]:
    """One room opened and closed cleanly: (seconds to 101, seconds to session.ready)."""
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws/h{n} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        t0 = time.perf_counter()
        await stream.send_all(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise RuntimeError("closed before the 101")
            data += chunk
        t101 = time.perf_counter()
        head, _, data = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        while not _frame_complete(data):  # session.ready
            data += await stream.receive_some(65536)
        tready = time.perf_counter()
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate((1000).to_bytes(2, "big")))
        await stream.send_all(bytes([0x88, 0x80 | len(payload)]) + mask + payload)
        with trio.move_on_after(5):
            while await stream.receive_some(65536):
                pass
    return t101 - t0, tready - t0


def _frame_complete(data: bytes) -> bool:
    if len(data) < 2:
        return False
    size, header = data[1] & 0x7F, 2
    if size == 126:
        if len(data) < 4:
            return False
        size, header = int.from_bytes(data[2:4], "big"), 4
    return len(data) >= header + size


def q(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1) + 0.5))]


async def wait_health(port: int, redis: bool) -> None:
    async with httpx.AsyncClient() as c:
        with trio.fail_after(60):
            while True:
                try:
                    h = (await c.get(f"http://127.0.0.1:{port}/healthz")).json()
                    if not redis or h.get("redis") == "ok":
                        return
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--handshakes", type=int, default=2000, help="sequential, per instance")
    ap.add_argument("--per-round", type=int, default=100)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--burst", type=int, default=2000, help="concurrent handshakes per instance")
    args = ap.parse_args()
    directory = tempfile.mkdtemp()
    rport, local, shared = free_port(), free_port(), free_port()
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    procs = [
        subprocess.Popen(
            [redis_server, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory, "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
        )
    ]  # fmt: skip
    try:
        env = {**os.environ, "VOICE_BRAIN": "echo", "GC_THRESHOLDS": "off", **LIMITS_OFF}
        for port, extra in (
            (local, {}),
            (shared, {"REDIS_URL": f"redis://127.0.0.1:{rport}/0", "INSTANCE_ID": "bench"}),
        ):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "voice_trio", "serve", "--port", str(port)],
                    env={**env, **extra},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        pids = {local: procs[1].pid, shared: procs[2].pid}

        async def run() -> None:
            await wait_health(local, False)
            await wait_health(shared, True)
            for port in (local, shared):  # warm-up: imports, scripts loaded
                for i in range(50):
                    await handshake(port, i)
            times: dict[int, list[tuple[float, float]]] = {local: [], shared: []}
            cpu = {local: 0.0, shared: 0.0}
            r0 = redis_stats(rport)
            n = 0
            while len(times[shared]) < args.handshakes:
                for port in (local, shared):
                    c0 = cpu_s(pids[port])
                    for _ in range(args.per_round):
                        times[port].append(await handshake(port, n))
                        n += 1
                    cpu[port] += cpu_s(pids[port]) - c0
            r1 = redis_stats(rport)
            for port, name in ((local, "without Redis"), (shared, "with Redis")):
                t101 = [t[0] for t in times[port]]
                tready = [t[1] for t in times[port]]
                print(
                    f"{name:14} handshakes={len(t101)} to 101 p50/p99 "
                    f"{q(t101, 0.5) * 1e3:.2f}/{q(t101, 0.99) * 1e3:.2f} ms, "
                    f"to session.ready {q(tready, 0.5) * 1e3:.2f}/{q(tready, 0.99) * 1e3:.2f} ms, "
                    f"server CPU {cpu[port] / len(t101) * 1e6:.0f} us/handshake"
                )
            calls = r1["evalsha"] - r0["evalsha"]
            usec = r1["evalsha_usec"] - r0["evalsha_usec"]
            count = len(times[shared])
            print(
                f"  Redis: {calls / count:.2f} script calls/handshake (limits + presence claim"
                f" + batched flushes), {usec / calls:.1f} us each inside Redis,"
                f" Redis CPU {(r1['cpu'] - r0['cpu']) / count * 1e6:.0f} us/handshake"
            )
            for port, name in ((local, "without Redis"), (shared, "with Redis")):
                done = 0

                async def client(port: int = port) -> None:
                    nonlocal done
                    while done < args.burst:
                        done += 1
                        await handshake(port, 100_000 + done)

                t0 = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for _ in range(args.concurrency):
                        nursery.start_soon(client)
                elapsed = time.perf_counter() - t0
                print(
                    f"{name:14} {args.concurrency} concurrent clients:"
                    f" {done / elapsed:.0f} handshakes/s"
                )

        trio.run(run)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
