"""A room's inbound rate limits (DESIGN.md section 9): messages a second, audio seconds a second.

What is over a limit is dropped and counted, and the client is told once a second
(a droppable ``rate_limited`` error, so a flood never makes the reader wait); a
room over its limits for ``RATE_LIMIT_CLOSE_S`` seconds running is closed with 1008.
"""

from __future__ import annotations

from ..config import Settings
from ..security import TokenBucket

__all__ = ["RoomLimits"]


class RoomLimits:
    """The two token buckets of a room and its run of seconds over them."""

    __slots__ = ("messages", "audio", "_close_after", "_last_drop_second", "_streak")

    def __init__(self, settings: Settings, now: float) -> None:
        rate = settings.room_message_rate
        self.messages = TokenBucket(rate, 2 * rate, now)
        #: In seconds of audio: room_audio_rate of them a second, twice that in a burst.
        self.audio = TokenBucket(settings.room_audio_rate, 2 * settings.room_audio_rate, now)
        self._close_after = settings.rate_limit_close_s
        self._last_drop_second = -2
        #: Seconds running (whole clock seconds) with a message dropped in each.
        self._streak = 0

    def dropped(self, now: float) -> str | None:
        """A message was dropped at ``now``: what to do about it.

        ``"tell"`` the first time in a clock second, ``"close"`` once the room has been
        over its limits for longer than RATE_LIMIT_CLOSE_S seconds running, else None.
        """
        second = int(now)
        if second == self._last_drop_second:
            return None
        self._streak = self._streak + 1 if second == self._last_drop_second + 1 else 1
        self._last_drop_second = second
        return "close" if self._streak > self._close_after else "tell"
