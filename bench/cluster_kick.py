"""Cross-instance kick latency, resume time, and Redis commands per 1,000 idle rooms per minute.

Starts redis-server and two `voice-trio serve` instances (VOICE_BRAIN=echo) on
loopback; every process it starts is ended by its pid.
Usage: .venv/bin/python bench/cluster_kick.py [--kicks 200] [--resumes 200] [--idle-rooms 1000]
       [--idle-s 60] [--idle-addresses 1]
Resume: a room on A takes a text turn and closes; the reconnect on B is timed from
its connect to the `session.ready` that says `resumed` (the conversation read from Redis).
The idle rooms come from `--idle-addresses` client addresses (X-Forwarded-For,
127.0.0.1 trusted): each address holding rooms on an instance is one entry of
the per-address room counts that the presence refresh rewrites too.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import trio
import trio_websocket


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_cmd(port, *args):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall((f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)).encode())
        data = b""
        while True:
            data += s.recv(1 << 20)
            if data[:1] in b"+-:" and data.endswith(b"\r\n"):
                return data.decode()
            if data[:1] == b"$":
                head, _, body = data.partition(b"\r\n")
                if int(head[1:]) < 0 or len(body) >= int(head[1:]) + 2:
                    return body.decode()


def commandstats(port):
    out = {}
    for line in redis_cmd(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line.partition(":")
            f = dict(x.split("=") for x in rest.split(","))
            out[name[8:]] = int(f["calls"])
    return out


async def wait_ok(port):
    import httpx

    async with httpx.AsyncClient() as c:
        while True:
            try:
                h = (await c.get(f"http://127.0.0.1:{port}/healthz")).json()
                if h.get("redis") == "ok":
                    return h
            except Exception:
                pass
            await trio.sleep(0.05)


async def kicks(a, b, n):
    lat, after_ready = [], []
    for i in range(n):
        sid = f"kick{i}"
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{a}/ws/{sid}") as old:
            assert json.loads(await old.get_message())["instance_id"] == "A"
            closed = trio.Event()
            box: dict[str, float] = {}

            async def watch(old=old, box=box, closed=closed):
                try:
                    while True:
                        await old.get_message()
                except trio_websocket.ConnectionClosed as e:
                    box["code"] = e.reason.code
                    box["t"] = time.perf_counter()
                    closed.set()

            async with trio.open_nursery() as n_:
                n_.start_soon(watch)
                t0 = time.perf_counter()
                async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{b}/ws/{sid}") as new:
                    ready = json.loads(await new.get_message())
                    t_ready = time.perf_counter()
                    assert ready["instance_id"] == "B"
                    with trio.fail_after(10):
                        await closed.wait()
                    assert box["code"] == 4000
                    lat.append(box["t"] - t0)
                    after_ready.append(box["t"] - t_ready)
    return lat, after_ready


async def idle(port, rport, rooms, seconds, addresses=1):
    done = trio.Event()
    opened = [0]

    all_open = trio.Event()

    async def hold(i):
        n = i % addresses
        xff = [("X-Forwarded-For", f"10.0.{n // 250}.{n % 250 + 1}")]
        url = f"ws://127.0.0.1:{port}/ws/idle{i}"
        async with trio_websocket.open_websocket_url(url, extra_headers=xff) as ws:
            await ws.get_message()
            opened[0] += 1
            if opened[0] == rooms:
                all_open.set()
            await done.wait()

    async with trio.open_nursery() as n:
        for i in range(rooms):
            n.start_soon(hold, i)
            if i % 50 == 49:
                await trio.sleep(0.05)
        await all_open.wait()
        redis_cmd(rport, "CONFIG", "RESETSTAT")
        await trio.sleep(seconds)
        stats = commandstats(rport)
        import httpx

        async with httpx.AsyncClient() as c:
            text = (await c.get(f"http://127.0.0.1:{port}/metrics")).text
        prefixes = ("voice_trio_redis", "voice_trio_cluster")
        print([line for line in text.splitlines() if line.startswith(prefixes)])
        done.set()
    return stats


def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1) + 0.5))]


async def resumes(a, b, n):
    times = []
    for i in range(n):
        sid = f"resume{i}"
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{a}/ws/{sid}") as first:
            json.loads(await first.get_message())
            await first.send_message(json.dumps({"type": "text", "text": "xin chào"}))
            while json.loads(await first.get_message())["type"] != "response.done":
                pass
        await trio.sleep(0.5)  # kept after the turn (SessionKeeper: a few times a second)
        t0 = time.perf_counter()
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{b}/ws/{sid}") as again:
            ready = json.loads(await again.get_message())
            times.append(time.perf_counter() - t0)
            assert ready.get("resumed") is True and ready["instance_id"] == "B", ready
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kicks", type=int, default=200)
    ap.add_argument("--resumes", type=int, default=200)
    ap.add_argument("--idle-rooms", type=int, default=1000)
    ap.add_argument("--idle-s", type=float, default=60)
    ap.add_argument("--idle-addresses", type=int, default=1)
    args = ap.parse_args()
    d = tempfile.mkdtemp()
    rport, a, b = free_port(), free_port(), free_port()
    procs = [
        subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(rport),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                d,
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
    ]
    try:
        time.sleep(0.2)
        env = {
            **os.environ,
            "VOICE_BRAIN": "echo",
            "REDIS_URL": f"redis://127.0.0.1:{rport}/0",
            "MAX_ROOMS_PER_IP": "100000",
            "MAX_CONNECTIONS_PER_IP": "100000",
            "HANDSHAKE_BURST_PER_IP": "100000",
            "HANDSHAKE_RATE_PER_IP": "100000",
            "TRUSTED_PROXIES": "127.0.0.1",
        }
        for port, name in ((a, "A"), (b, "B")):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "voice_trio", "serve", "--port", str(port)],
                    env={**env, "INSTANCE_ID": name},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

        async def run():
            await wait_ok(a)
            await wait_ok(b)
            lat, after = await kicks(a, b, args.kicks)
            print(
                f"kicks={len(lat)} connect-to-close p50={q(lat, 0.5) * 1e3:.2f} ms"
                f" p99={q(lat, 0.99) * 1e3:.2f} ms max={max(lat) * 1e3:.2f} ms"
            )
            print(
                f"  session.ready(new)-to-close p50={q(after, 0.5) * 1e3:.2f} ms"
                f" p99={q(after, 0.99) * 1e3:.2f} ms"
            )
            if args.resumes:
                took = await resumes(a, b, args.resumes)
                print(
                    f"resumes={len(took)} reconnect-to-session.ready(resumed) p50="
                    f"{q(took, 0.5) * 1e3:.2f} ms p99={q(took, 0.99) * 1e3:.2f} ms"
                )
            if args.idle_rooms:
                stats = await idle(a, rport, args.idle_rooms, args.idle_s, args.idle_addresses)
                per = {k: v * 1000 / args.idle_rooms * 60 / args.idle_s for k, v in stats.items()}
                print(
                    f"idle rooms={args.idle_rooms} from {args.idle_addresses} addresses"
                    f" for {args.idle_s:.0f} s: commandstats {stats}"
                )
                client = stats.get("evalsha", 0) + stats.get("ping", 0) + stats.get("publish", 0)
                calls = client * 1000 / args.idle_rooms * 60 / args.idle_s
                served = sum(per.values()) - per.get("info", 0) - per.get("config|resetstat", 0)
                print(
                    f"  per 1,000 idle rooms per minute: client calls {calls:.1f},"
                    f" server commands {served:.0f}"
                )

        trio.run(run)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
