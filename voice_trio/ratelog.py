"""A log that cannot be flooded: at most a few lines per key and period.

A client that sends 3,000 bad messages must not write 3,000 log lines (the
issue #10 probe wrote 5.5 MB in 3.4 s). Each key (e.g. an error code) may log
``burst`` lines per ``period_s``; the rest are counted, and the first line of
the next period says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class _Window:
    __slots__ = ("start", "logged", "left_out")

    def __init__(self, start: float) -> None:
        self.start = start
        self.logged = 0
        self.left_out = 0


class RateLimitedLog:
    """``log(key, message, *args)`` at ``level``, at most ``burst`` times per ``period_s`` per key.

    Keys should come from a small fixed set (error codes, not client values):
    one small window is kept per key.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        level: int = logging.INFO,
        burst: int = 5,
        period_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._level = level
        self._burst = burst
        self._period_s = period_s
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def log(self, key: str, message: str, *args: object) -> None:
        if not self._logger.isEnabledFor(self._level):
            return
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window.start >= self._period_s:
            left_out = 0 if window is None else window.left_out
            window = self._windows[key] = _Window(now)
            if left_out:
                self._logger.log(
                    self._level,
                    "%s: %d more like this in the last %g s were not logged",
                    key,
                    left_out,
                    self._period_s,
                )
        if window.logged < self._burst:
            window.logged += 1
            self._logger.log(self._level, message, *args)
        else:
            window.left_out += 1
