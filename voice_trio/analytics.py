"""The analytics and audit stream (issue #14): room and turn events to Redis Streams or Kafka.

``ANALYTICS_SINK=redis``: each event is ``XADD {ANALYTICS_STREAM} MAXLEN ~ N * event
{json}`` (coredis, native on Trio; ``ANALYTICS_REDIS_URL``, else ``REDIS_URL``).
``ANALYTICS_SINK=kafka``: each event is a message on ``KAFKA_TOPIC`` whose key is
the session id (a session's events stay in one partition, in order), produced
by confluent-kafka in a thread, with ``message.timeout.ms`` of
``ANALYTICS_TIMEOUT_S`` (not librdkafka's five minutes).

:class:`EventStream` is a recorder (``voice_trio.record``): it turns each record
into an event, encodes it and appends it to a backlog bounded in bytes; one
task sends batches. An event that finds the backlog full, or that the sink does
not take within ``ANALYTICS_TIMEOUT_S`` (down, slow, refusing), is dropped and
counted in ``voice_trio_events_dropped_total``, with a rate-limited log line; a
room never waits on it.

Events are JSON objects, each with ``type``, ``session_id``, ``instance_id``
and ``ts`` (seconds since the epoch); the README's "Analytics events" lists
every field. No event holds a transcript's text, a token, a secret or audio.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import msgspec
import trio

from .ratelog import RateLimitedLog
from .record import AssistantTurn, ErrorRecord, QueueRecorder, RoomClosed, RoomOpened, UserTurn
from .transcripts import Backlog

if TYPE_CHECKING:
    import coredis
    from confluent_kafka import KafkaError, Message, Producer

__all__ = ["EventStream", "KafkaSink", "RedisSink", "Sink", "event_of"]

log = logging.getLogger("voice_trio.analytics")

#: Events per send at most.
SEND_BATCH: Final = 500
#: Events that come this soon after the first wait for it: one send (a Redis pipeline,
#: a thread hop for Kafka) for all of them. With one send per event the sinks' code
#: was 19 % of the server's samples at 250 standard rooms (~350 events a second),
#: with this 10 % (bench/README.md, "Out of band").
GATHER_S: Final = 0.2
#: After a failed send, the stream waits this long (events meanwhile: queued, then dropped).
BACKOFF_S: Final = 1.0

_encoder = msgspec.json.Encoder()


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def event_of(record: Any, instance_id: str) -> list[dict[str, Any]]:
    """The events of one record (an interrupted response is two: its turn and the interrupt;
    one cut after it was done and recorded, only the interrupt)."""
    if isinstance(record, RoomOpened):
        return [
            {
                "type": "room.opened",
                "session_id": record.session_id,
                "instance_id": record.instance_id,
                "ts": record.at,
                "brain": record.brain,
                "voice": record.voice,
                "resumed": record.resumed,
            }
        ]
    if isinstance(record, RoomClosed):
        return [
            {
                "type": "room.closed",
                "session_id": record.session_id,
                "instance_id": record.instance_id,
                "ts": record.at,
                "duration_s": round(record.duration_s, 3),
                "close_code": record.close_code,
                "reason": record.reason,
                "usage": msgspec.to_builtins(record.usage),
            }
        ]
    if isinstance(record, UserTurn):
        if record.amends:
            return []  # the whole of a turn its first part's event already counted
        return [
            {
                "type": "turn.completed",
                "session_id": record.session_id,
                "instance_id": instance_id,
                "ts": record.ended_at,
                "role": "user",
                "source": record.source,
                "speech_ms": None
                if record.started_at is None
                else _ms(record.ended_at - record.started_at),
                "chars": len(record.text),
            }
        ]
    if isinstance(record, AssistantTurn):
        events: list[dict[str, Any]] = []
        if not record.amends:  # one cut after it was done had its turn.completed then
            events.append(
                {
                    "type": "turn.completed",
                    "session_id": record.session_id,
                    "instance_id": instance_id,
                    "ts": record.ended_at,
                    "role": "assistant",
                    "response_id": record.response_id,
                    "status": record.status,
                    "ttfa_ms": record.ttfa_ms,
                    "stages_ms": None
                    if record.stages is None
                    else msgspec.to_builtins(record.stages),
                    "duration_ms": _ms(record.ended_at - record.started_at),
                    "audio_ms": record.audio_ms,
                    "heard_ms": record.heard_ms,
                    "chars": len(record.full_text),
                    "heard_chars": len(record.text),
                }
            )
        if record.status == "interrupted":
            events.append(
                {
                    "type": "interrupt",
                    "session_id": record.session_id,
                    "instance_id": instance_id,
                    "ts": record.ended_at,
                    "response_id": record.response_id,
                    "audio_ms": record.audio_ms,
                    "heard_ms": record.heard_ms,
                }
            )
        return events
    if isinstance(record, ErrorRecord):
        return [
            {
                "type": "error",
                "session_id": record.session_id,
                "instance_id": instance_id,
                "ts": record.at,
                "code": record.code,
                "fatal": record.fatal,
            }
        ]
    return []


class Sink(abc.ABC):
    """Where a stream's events go. ``send`` returns how many of the batch were lost."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    @abc.abstractmethod
    async def send(self, batch: list[tuple[str, bytes]]) -> int:
        """Deliver ``batch`` ((key, event) pairs); how many of them were lost."""


class EventStream(QueueRecorder):
    """A recorder that sends each record's events to a :class:`Sink`, never waiting on it."""

    def __init__(
        self,
        sink: Sink,
        *,
        instance_id: str,
        max_bytes: int,
        dropped: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.sink = sink
        self.instance_id = instance_id
        self.backlog: Backlog[tuple[str, bytes]] = Backlog(max_bytes)
        self._dropped = dropped
        self._log = RateLimitedLog(log, level=logging.WARNING)
        self.sent = 0

    def put(self, record: Any) -> None:
        for event in event_of(record, self.instance_id):
            data = _encoder.encode(event)
            if not self.backlog.put((event["session_id"], data), len(data) + 100):
                self.drop(1, "backlog full")

    def drop(self, n: int, why: str) -> None:
        self._dropped(n)
        self._log.log("dropped", "%d analytics events dropped (%s)", n, why)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.sink.run)
            task_status.started()
            full = False
            while True:
                await self.backlog.wait()
                if not full:  # a full batch left more behind it: send on at once
                    await trio.sleep(GATHER_S)
                batch = [item for item, _ in self.backlog.take(SEND_BATCH)]
                full = len(batch) == SEND_BATCH
                lost = await self.sink.send(batch)
                self.sent += len(batch) - lost
                if lost:
                    self.drop(lost, "the sink did not take them")
                    await trio.sleep(BACKOFF_S)


class RedisSink(Sink):
    """``XADD stream MAXLEN ~ maxlen * event json``, a pipeline per batch, under a deadline."""

    def __init__(self, url: str, *, stream: str, maxlen: int, timeout_s: float) -> None:
        self.url = url
        self.stream = stream
        self.maxlen = maxlen
        self.timeout_s = timeout_s
        self._client: coredis.Redis[bytes] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        import coredis
        from coredis.retry import NoRetryPolicy

        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self.url,
            stream_timeout=self.timeout_s,
            connect_timeout=self.timeout_s,
            retry_policy=NoRetryPolicy(),
        )
        async with client:
            self._client = client
            task_status.started()
            await trio.sleep_forever()

    async def send(self, batch: list[tuple[str, bytes]]) -> int:
        from coredis import PureToken

        from .cluster import is_redis_failure

        client = self._client
        if client is None:
            return len(batch)
        with trio.move_on_after(self.timeout_s):
            try:
                async with client.pipeline(transaction=False) as pipe:
                    for _, data in batch:
                        pipe.xadd(
                            self.stream,
                            {"event": data},
                            trim_strategy=PureToken.MAXLEN,
                            trim_operator=PureToken.APPROXIMATELY,
                            threshold=self.maxlen,
                        )
                return 0
            except BaseException as exc:
                if not is_redis_failure(exc):
                    raise
                log.debug("XADD failed: %r", exc)
                return len(batch)
        return len(batch)


class KafkaSink(Sink):
    """confluent-kafka's Producer in a thread: ``produce`` per event, ``poll`` for deliveries.

    Delivery is bounded by ``message.timeout.ms`` (``timeout_s``); an event not
    delivered by then, or refused by the client's full queue, counts as dropped.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        topic: str,
        timeout_s: float,
        max_bytes: int,
        dropped: Callable[[int], None],
    ) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "client.id": "voice-trio",
            "message.timeout.ms": int(timeout_s * 1000),
            "socket.timeout.ms": max(1000, int(timeout_s * 1000)),
            "queue.buffering.max.kbytes": max(64, max_bytes // 1024),
            "queue.buffering.max.messages": 100_000,
            "linger.ms": 20,
            "acks": 1,
            # librdkafka logs each failed connection: the error callback logs instead.
            "log_level": 2,
            "error_cb": self._error,
        }
        self._dropped = dropped
        self._undelivered = 0
        self._reported = 0
        self._producer: Producer | None = None
        self._limiter = trio.CapacityLimiter(1)
        self._log = RateLimitedLog(log, level=logging.WARNING)

    def _error(self, error: KafkaError) -> None:
        self._log.log("kafka", "Kafka: %s", error.str())

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        # In the producer's thread (poll): counted here, reported on the loop.
        if error is not None:
            self._undelivered += 1
            self._log.log("undelivered", "an analytics event was not delivered: %s", error.str())

    def _report(self) -> None:
        if self._undelivered > self._reported:
            self._dropped(self._undelivered - self._reported)
            self._reported = self._undelivered

    def _make(self) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(self._config)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(self._make, limiter=self._limiter)
        task_status.started()
        try:
            while True:
                # Deliveries are reported by poll(): while messages are in flight, poll.
                await trio.sleep(0.1)
                if self._producer is not None and len(self._producer):
                    await trio.to_thread.run_sync(self._poll, limiter=self._limiter)
                    self._report()
        finally:
            with trio.move_on_after(self.timeout_s) as scope:
                scope.shield = True
                await trio.to_thread.run_sync(
                    self._flush, limiter=self._limiter, abandon_on_cancel=True
                )
                self._report()

    def _poll(self) -> None:
        assert self._producer is not None
        self._producer.poll(0)

    def _flush(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.timeout_s)

    async def send(self, batch: list[tuple[str, bytes]]) -> int:
        lost = await trio.to_thread.run_sync(self._produce, batch, limiter=self._limiter)
        self._report()
        return lost

    def _produce(self, batch: list[tuple[str, bytes]]) -> int:
        producer = self._producer
        assert producer is not None
        lost = 0
        for key, data in batch:
            try:
                producer.produce(self.topic, value=data, key=key, on_delivery=self._delivered)
            except BufferError:
                lost += 1  # librdkafka's own queue is full (the broker is away)
        producer.poll(0)
        return lost
