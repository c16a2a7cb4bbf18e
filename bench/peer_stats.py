"""The /metrics figures of the comparison targets (floor_server.py, pipecat_server.py).

Same names and method as voice-trio's own: rooms open, loop lag over the last
60 s (a task sleeps 50 ms and records how late it wakes), messages, RSS. Each
server runs its own sampler on its own event loop and calls :meth:`record_lag`.
Only the standard library and psutil, so both servers' virtualenvs can use it.
"""

from __future__ import annotations

import collections
import math
import time

import psutil

LAG_INTERVAL_S = 0.05
LAG_WINDOW_S = 60.0


class PeerStats:
    """Process-wide figures of a comparison target (owned by its app)."""

    def __init__(self) -> None:
        self.rooms_open = 0
        self.messages_in = 0
        self.messages_out = 0
        self.lags: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=int(LAG_WINDOW_S / LAG_INTERVAL_S) + 10
        )
        self.process = psutil.Process()

    def record_lag(self, lag: float) -> None:
        self.lags.append((time.monotonic(), max(0.0, lag)))

    def lag_quantiles(self) -> dict[str, float]:
        now = time.monotonic()
        values = sorted(lag for t, lag in self.lags if now - t <= LAG_WINDOW_S)
        if not values:
            return {"0.5": 0.0, "0.99": 0.0, "1": 0.0}

        def q(p: float) -> float:
            return values[min(len(values) - 1, max(0, math.ceil(p * len(values)) - 1))]

        return {"0.5": q(0.5), "0.99": q(0.99), "1": values[-1]}

    def prometheus(self) -> str:
        lines = [
            "# TYPE voice_trio_rooms_open gauge",
            f"voice_trio_rooms_open {self.rooms_open}",
            "# TYPE voice_trio_loop_lag_seconds summary",
        ]
        for quantile, value in self.lag_quantiles().items():
            lines.append(f'voice_trio_loop_lag_seconds{{quantile="{quantile}"}} {value:.6f}')
        lines += [
            "# TYPE voice_trio_messages_total counter",
            f'voice_trio_messages_total{{direction="in"}} {self.messages_in}',
            f'voice_trio_messages_total{{direction="out"}} {self.messages_out}',
            "# TYPE process_resident_memory_bytes gauge",
            f"process_resident_memory_bytes {self.process.memory_info().rss}",
        ]
        return "\n".join(lines) + "\n"
