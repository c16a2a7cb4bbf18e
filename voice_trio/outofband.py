"""The app's recorder (issue #14): the transcript store, the job queue and the event stream.

:func:`start_recorders` builds what the settings turn on and starts its tasks
in the app's lifespan nursery; the room is handed the one :class:`FanOut`
recorder. Each part is optional (the store is on by default, ``TRANSCRIPTS``);
each only enqueues on the event loop and drains off it, and none can raise
into a room: a part that fails is logged (rate-limited) and the others go on.

Order of the parts: the store first (the room's records are written locally
before anything else), the job queue fed by the store once a room's close is
committed, the event stream last.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import trio

from .analytics import EventStream, KafkaSink, RedisSink, Sink
from .config import Settings
from .metrics import ServerMetrics
from .ratelog import RateLimitedLog
from .record import (
    AssistantTurn,
    ErrorRecord,
    NullRecorder,
    Recorder,
    RoomClosed,
    RoomOpened,
    UserTurn,
)
from .transcripts import StoreRecorder, TranscriptStore, default_transcript_path

__all__ = ["FanOut", "OutOfBand", "start_recorders"]

log = logging.getLogger("voice_trio.record")


class FanOut:
    """Every record to each recorder in turn; one that raises is logged and skipped."""

    __slots__ = ("recorders", "_log")

    def __init__(self, recorders: Sequence[Recorder]) -> None:
        self.recorders = tuple(recorders)
        self._log = RateLimitedLog(log, level=logging.ERROR)

    def _each(self, method: str, record: Any) -> None:
        for recorder in self.recorders:
            try:
                getattr(recorder, method)(record)
            except Exception as exc:
                name = type(recorder).__name__
                self._log.log(name, "%s.%s failed: %r", name, method, exc)

    def room_opened(self, record: RoomOpened) -> None:
        self._each("room_opened", record)

    def user_turn(self, record: UserTurn) -> None:
        self._each("user_turn", record)

    def assistant_turn(self, record: AssistantTurn) -> None:
        self._each("assistant_turn", record)

    def error(self, record: ErrorRecord) -> None:
        self._each("error", record)

    def room_closed(self, record: RoomClosed) -> None:
        self._each("room_closed", record)


class OutOfBand:
    """The parts :func:`start_recorders` started (for /healthz, tests and the bench)."""

    def __init__(self) -> None:
        self.store: StoreRecorder | None = None
        self.jobs: Any = None  # voice_trio.jobs.JobQueue (imported only with Celery on)
        self.stream: EventStream | None = None

    @property
    def recorder(self) -> Recorder:
        parts: list[Recorder] = [p for p in (self.store, self.stream) if p is not None]
        if not parts:
            return NullRecorder()
        return FanOut(parts)


async def start_recorders(
    settings: Settings, metrics: ServerMetrics, nursery: trio.Nursery
) -> OutOfBand:
    """Start the parts the settings turn on, in ``nursery``; their recorder is ``.recorder``."""
    parts = OutOfBand()

    def transcript_dropped(n: int) -> None:
        metrics.transcript_dropped += n

    def jobs_dropped(n: int) -> None:
        metrics.jobs_dropped += n

    def events_dropped(n: int) -> None:
        metrics.events_dropped += n

    if settings.transcripts:
        store = StoreRecorder(
            TranscriptStore(settings.transcript_db_path or default_transcript_path()),
            max_bytes=settings.transcript_queue_bytes,
            results_locally=not settings.celery_broker_url,
            dropped=transcript_dropped,
        )
        if settings.celery_broker_url:
            from .jobs import JobQueue

            jobs = JobQueue(
                settings.celery_broker_url,
                max_bytes=settings.jobs_queue_bytes,
                timeout_s=settings.jobs_timeout_s,
                fallback=store.results_for,
                dropped=jobs_dropped,
            )
            store.committed = jobs.room_committed
            await nursery.start(jobs.run)
            parts.jobs = jobs
        await nursery.start(store.run)
        parts.store = store
    if settings.analytics_sink != "none":
        sink: Sink
        if settings.analytics_sink == "redis":
            sink = RedisSink(
                settings.analytics_redis_url or settings.redis_url,
                stream=settings.analytics_stream,
                maxlen=settings.analytics_stream_maxlen,
                timeout_s=settings.analytics_timeout_s,
            )
        else:
            sink = KafkaSink(
                settings.kafka_bootstrap_servers,
                topic=settings.kafka_topic,
                timeout_s=settings.analytics_timeout_s,
                max_bytes=settings.analytics_queue_bytes,
                dropped=events_dropped,
            )
        stream = EventStream(
            sink,
            instance_id=settings.instance_id,
            max_bytes=settings.analytics_queue_bytes,
            dropped=events_dropped,
        )
        await nursery.start(stream.run)
        parts.stream = stream
    return parts
