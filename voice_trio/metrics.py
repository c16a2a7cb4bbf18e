"""Process telemetry: counters, the event-loop-lag monitor, Prometheus text.

One :class:`ServerMetrics` per app (not module state). Rooms bump its plain
integer counters; ``/metrics`` renders them with the names fixed in DESIGN.md
section 6.
"""

from __future__ import annotations

import bisect
import collections
import logging
import os
import resource
import sys
from collections.abc import Callable, Iterable

import trio

from .ratelog import RateLimitedLog

__all__ = [
    "TURN_STAGES",
    "Histogram",
    "LoopLagMonitor",
    "ServerMetrics",
    "count_tasks",
    "open_fds",
    "resident_memory_bytes",
]

#: The stages of a reply, in order (voice_trio_turn_stage_seconds{stage}): end of the
#: user's speech to the end of the turn decided, that to the final transcript, that to
#: the reply's first text, that to its first audio sent, and the whole of it (end of
#: the user's speech, else of the turn, to first audio). See record.TurnStages.
TURN_STAGES = ("end_of_turn", "asr", "brain", "tts", "total")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory_bytes() -> int:
    """This process's RSS now (Linux ``/proc``), else its peak RSS."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def open_fds() -> int:
    """File descriptors open in this process (Linux ``/proc``; -1 elsewhere)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


def count_tasks() -> int:
    """Trio tasks alive now, walked from the root task (0 outside Trio)."""
    try:
        root = trio.lowlevel.current_root_task()
    except RuntimeError:
        return 0
    if root is None:
        return 0
    count = 0
    stack = [root]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count


class Histogram:
    """A cumulative Prometheus histogram with fixed bucket bounds."""

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        """Its samples; ``labels`` (e.g. ``stage="asr"``) go on each of them."""
        lines = []
        running = 0
        sep = labels + "," if labels else ""
        tail = "{" + labels + "}" if labels else ""
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            lines.append(f'{name}_bucket{{{sep}le="{bound:g}"}} {running}')
        lines.append(f'{name}_bucket{{{sep}le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum{tail} {self.sum:.6f}")
        lines.append(f"{name}_count{tail} {self.count}")
        return lines


class LoopLagMonitor:
    """Sleeps a fixed interval and records how late it wakes, over a window."""

    def __init__(self, *, interval: float = 0.05, window_s: float = 60.0) -> None:
        self.interval = interval
        self.samples: collections.deque[float] = collections.deque(
            maxlen=max(1, int(window_s / interval))
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        clock = trio.current_time
        while True:
            target = clock() + self.interval
            await trio.sleep_until(target)
            self.samples.append(max(0.0, clock() - target))

    def quantiles(self, qs: Iterable[float] = (0.5, 0.99, 1.0)) -> dict[float, float]:
        ordered = sorted(self.samples)
        if not ordered:
            return {q: 0.0 for q in qs}
        last = len(ordered) - 1
        return {q: ordered[min(last, int(q * last + 0.5))] for q in qs}


class ServerMetrics:
    """Process-wide figures. Plain attributes: rooms add to them directly."""

    def __init__(self) -> None:
        self.loop_lag = LoopLagMonitor()
        self.outbox_dropped: collections.Counter[str] = collections.Counter()
        self.incoming_audio_dropped = 0
        self.slow_consumer_closes = 0
        self.interrupts = 0
        self.messages_in = 0
        self.messages_out = 0
        self.time_to_first_audio = Histogram(
            (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
        )
        #: Each reply's stages (TURN_STAGES), those its brain's events give.
        self.turn_stages = {
            stage: Histogram((0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0))
            for stage in TURN_STAGES
        }
        #: Client messages answered with an ``error`` event, by error code.
        self.input_errors: collections.Counter[str] = collections.Counter()
        #: Where rooms note bad client input: INFO, a few lines per code per minute.
        self.input_error_log = RateLimitedLog(logging.getLogger("voice_trio.input"))
        #: Connections refused or dropped by the front door before any room, by reason.
        self.connections_refused: collections.Counter[str] = collections.Counter()
        #: Inbound messages a room dropped over its rate limits, by kind (messages, audio).
        self.rate_limited: collections.Counter[str] = collections.Counter()
        #: WebSocket handshakes refused before any room (voice_trio.security), by reason.
        self.handshakes_refused: collections.Counter[str] = collections.Counter()
        #: Failed attempts to reach a provider (azure, cartesia, asr), by provider.
        self.upstream_errors: collections.Counter[str] = collections.Counter()
        #: Garbage-collector pauses (set up by the app after start-up).
        self.gc_pause = Histogram((0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
        # Filled in by the app: live views of the rooms.
        self.rooms_open: Callable[[], int] = lambda: 0
        self.upstreams_live: Callable[[], int] = lambda: 0
        self.outbox_depth_max: Callable[[], int] = lambda: 0
        #: Open client connections of every kind (filled in by ``voice-trio serve``).
        self.connections_open: Callable[[], int] = lambda: 0
        #: Per provider, whether its circuit breaker is open now (filled in by the providers).
        self.circuit_open: dict[str, Callable[[], bool]] = {}
        #: Failed Redis calls (REDIS_URL), by operation: claim, refresh, release, ping, subscribe,
        #: and the per-address limits' handshake and rooms.
        self.redis_errors: collections.Counter[str] = collections.Counter()
        #: With REDIS_URL (filled in by the app): whether Redis answers and the kick
        #: subscriber is subscribed, and the cross-instance kicks sent and received.
        self.redis_up: Callable[[], bool] | None = None
        self.cluster_kicks: Callable[[], tuple[int, int]] = lambda: (0, 0)
        #: Out of band (issue #14): records the transcript writer, jobs the broker and
        #: events the analytics sink could not take (full, down or too slow).
        self.transcript_dropped = 0
        self.jobs_dropped = 0
        self.events_dropped = 0

    def render(self) -> str:
        """The Prometheus text exposition of every figure."""
        lag = self.loop_lag.quantiles()
        out = [
            "# HELP voice_trio_rooms_open Rooms with an open socket.",
            "# TYPE voice_trio_rooms_open gauge",
            f"voice_trio_rooms_open {self.rooms_open()}",
            "# HELP voice_trio_upstreams_live Rooms whose brain session is connected.",
            "# TYPE voice_trio_upstreams_live gauge",
            f"voice_trio_upstreams_live {self.upstreams_live()}",
            "# HELP voice_trio_loop_lag_seconds Event-loop lag over the last 60 s.",
            "# TYPE voice_trio_loop_lag_seconds summary",
        ]
        for q, label in ((0.5, "0.5"), (0.99, "0.99"), (1.0, "1")):
            out.append(f'voice_trio_loop_lag_seconds{{quantile="{label}"}} {lag[q]:.6f}')
        out += [
            f"voice_trio_loop_lag_seconds_sum {sum(self.loop_lag.samples):.6f}",
            f"voice_trio_loop_lag_seconds_count {len(self.loop_lag.samples)}",
            "# HELP voice_trio_outbox_depth_max Deepest outbox of any room now.",
            "# TYPE voice_trio_outbox_depth_max gauge",
            f"voice_trio_outbox_depth_max {self.outbox_depth_max()}",
            "# HELP voice_trio_outbox_dropped_total Droppable messages dropped, by kind.",
            "# TYPE voice_trio_outbox_dropped_total counter",
        ]
        for kind in sorted(set(self.outbox_dropped) | {"metrics", "response.text.delta"}):
            out.append(
                f'voice_trio_outbox_dropped_total{{kind="{kind}"}} {self.outbox_dropped[kind]}'
            )
        out += [
            "# HELP voice_trio_incoming_audio_dropped_total Inbound audio frames dropped.",
            "# TYPE voice_trio_incoming_audio_dropped_total counter",
            f"voice_trio_incoming_audio_dropped_total {self.incoming_audio_dropped}",
            "# HELP voice_trio_slow_consumer_closes_total Rooms closed as slow consumers.",
            "# TYPE voice_trio_slow_consumer_closes_total counter",
            f"voice_trio_slow_consumer_closes_total {self.slow_consumer_closes}",
            "# HELP voice_trio_interrupts_total Barge-ins served.",
            "# TYPE voice_trio_interrupts_total counter",
            f"voice_trio_interrupts_total {self.interrupts}",
            "# HELP voice_trio_messages_total WebSocket messages.",
            "# TYPE voice_trio_messages_total counter",
            f'voice_trio_messages_total{{direction="in"}} {self.messages_in}',
            f'voice_trio_messages_total{{direction="out"}} {self.messages_out}',
            "# HELP voice_trio_time_to_first_audio_seconds End of user turn to first"
            " assistant audio byte sent.",
            "# TYPE voice_trio_time_to_first_audio_seconds histogram",
            *self.time_to_first_audio.render("voice_trio_time_to_first_audio_seconds"),
            "# HELP voice_trio_turn_stage_seconds A reply's time by stage: asr (end of speech to"
            " final transcript), brain (to first text), tts (to first audio), total.",
            "# TYPE voice_trio_turn_stage_seconds histogram",
            *(
                line
                for stage, histogram in self.turn_stages.items()
                for line in histogram.render("voice_trio_turn_stage_seconds", f'stage="{stage}"')
            ),
            "# HELP voice_trio_input_errors_total Client messages answered with an error event.",
            "# TYPE voice_trio_input_errors_total counter",
            *(
                f'voice_trio_input_errors_total{{code="{code}"}} {n}'
                for code, n in sorted(self.input_errors.items())
            ),
            "# HELP voice_trio_connections_open Open client connections (WebSocket and HTTP).",
            "# TYPE voice_trio_connections_open gauge",
            f"voice_trio_connections_open {self.connections_open()}",
            "# HELP voice_trio_connections_refused_total Connections refused before any room.",
            "# TYPE voice_trio_connections_refused_total counter",
            *(
                f'voice_trio_connections_refused_total{{reason="{reason}"}} {n}'
                for reason, n in sorted(self.connections_refused.items())
            ),
            "# HELP voice_trio_rate_limited_total Inbound messages dropped over a room's limits.",
            "# TYPE voice_trio_rate_limited_total counter",
            *(
                f'voice_trio_rate_limited_total{{kind="{kind}"}} {self.rate_limited[kind]}'
                for kind in ("audio", "messages")
            ),
            "# HELP voice_trio_handshakes_refused_total WebSocket handshakes refused, by reason.",
            "# TYPE voice_trio_handshakes_refused_total counter",
            *(
                f'voice_trio_handshakes_refused_total{{reason="{reason}"}} {n}'
                for reason, n in sorted(self.handshakes_refused.items())
            ),
            "# HELP voice_trio_upstream_errors_total Failed attempts to reach a provider.",
            "# TYPE voice_trio_upstream_errors_total counter",
            *(
                f'voice_trio_upstream_errors_total{{provider="{name}"}} {n}'
                for name, n in sorted(self.upstream_errors.items())
            ),
            "# HELP voice_trio_circuit_open Whether a provider's circuit breaker is open (1).",
            "# TYPE voice_trio_circuit_open gauge",
            *(
                f'voice_trio_circuit_open{{provider="{name}"}} {int(is_open())}'
                for name, is_open in sorted(self.circuit_open.items())
            ),
            "# HELP voice_trio_redis_errors_total Failed or timed-out Redis calls, by operation.",
            "# TYPE voice_trio_redis_errors_total counter",
            *(
                f'voice_trio_redis_errors_total{{op="{op}"}} {n}'
                for op, n in sorted(self.redis_errors.items())
            ),
            *self._render_cluster(),
            "# HELP voice_trio_transcript_dropped_total Records the transcript store dropped.",
            "# TYPE voice_trio_transcript_dropped_total counter",
            f"voice_trio_transcript_dropped_total {self.transcript_dropped}",
            "# HELP voice_trio_jobs_dropped_total Background jobs not handed to the broker.",
            "# TYPE voice_trio_jobs_dropped_total counter",
            f"voice_trio_jobs_dropped_total {self.jobs_dropped}",
            "# HELP voice_trio_events_dropped_total Analytics events that did not reach the sink.",
            "# TYPE voice_trio_events_dropped_total counter",
            f"voice_trio_events_dropped_total {self.events_dropped}",
            "# HELP voice_trio_tasks Trio tasks alive in the process.",
            "# TYPE voice_trio_tasks gauge",
            f"voice_trio_tasks {count_tasks()}",
            "# HELP voice_trio_gc_pause_seconds Garbage-collector pauses.",
            "# TYPE voice_trio_gc_pause_seconds histogram",
            *self.gc_pause.render("voice_trio_gc_pause_seconds"),
            "# HELP process_open_fds Open file descriptors.",
            "# TYPE process_open_fds gauge",
            f"process_open_fds {open_fds()}",
            "# HELP process_resident_memory_bytes Resident memory size in bytes.",
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {resident_memory_bytes()}",
        ]
        return "\n".join(out) + "\n"

    def _render_cluster(self) -> list[str]:
        if self.redis_up is None:
            return []
        sent, received = self.cluster_kicks()
        return [
            "# HELP voice_trio_redis_up Whether Redis answers and the kick subscriber is on (1).",
            "# TYPE voice_trio_redis_up gauge",
            f"voice_trio_redis_up {int(self.redis_up())}",
            "# HELP voice_trio_cluster_kicks_total Rooms replaced across instances.",
            "# TYPE voice_trio_cluster_kicks_total counter",
            f'voice_trio_cluster_kicks_total{{direction="sent"}} {sent}',
            f'voice_trio_cluster_kicks_total{{direction="received"}} {received}',
        ]
