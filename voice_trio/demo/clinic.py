"""The clinic the receptionist answers for: its name, its opening hours, and its clock.

Time comes from an injectable clock (default: Vietnam local time), so tests and other
time zones can fix "now".
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass

from ..agent.vietnamese import WEEKDAYS, format_date, format_time

__all__ = ["VIETNAM", "Clinic", "Clock", "vietnam_now"]

Clock = Callable[[], dt.datetime]


def _vietnam_zone() -> dt.tzinfo:
    # Without the system's or the tzdata package's zone files, Vietnam is a
    # fixed UTC+7 all year (no summer time since 1975), so the fallback is exact.
    try:
        return zoneinfo.ZoneInfo("Asia/Ho_Chi_Minh")
    except zoneinfo.ZoneInfoNotFoundError:
        return dt.timezone(dt.timedelta(hours=7), "ICT")


VIETNAM = _vietnam_zone()


def vietnam_now() -> dt.datetime:
    """Now, in Vietnam."""
    return dt.datetime.now(VIETNAM)


@dataclass(frozen=True, slots=True)
class Clinic:
    """Appointments may start from ``opens`` to ``closes`` inclusive, on days whose
    ``weekday()`` is not in ``closed_weekdays``; ``clock`` says when "now" is."""

    business: str
    opens: dt.time
    closes: dt.time
    closed_weekdays: frozenset[int]
    clock: Clock

    def now(self) -> dt.datetime:
        """The clock's now; a naive one is read as Vietnam time."""
        now = self.clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=VIETNAM)

    def hours_text(self) -> str:
        """``"từ 8 giờ sáng đến 5 giờ chiều; Chủ nhật nghỉ"``."""
        text = f"từ {format_time(self.opens)} đến {format_time(self.closes)}"
        if self.closed_weekdays:
            closed = " và ".join(WEEKDAYS[d] for d in sorted(self.closed_weekdays))
            text += f"; {closed} nghỉ"
        return text

    def problem(self, day: dt.date | None, time: dt.time | None) -> str | None:
        """Why this day/time cannot be booked, in Vietnamese; None if it can."""
        now = self.now()
        if day is not None and day < now.date():
            return _capital(f"{format_date(day)} đã qua rồi ạ.")
        if day is not None and day.weekday() in self.closed_weekdays:
            return f"Xin lỗi, {self.business} nghỉ vào {WEEKDAYS[day.weekday()]} ạ."
        if time is not None and not self.opens <= time <= self.closes:
            return f"Xin lỗi, {self.business} chỉ nhận lịch {self.hours_text()} ạ."
        if day == now.date() and time is not None and time <= now.time():
            return _capital(f"{format_time(time)} hôm nay đã qua rồi ạ.")
        return None


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
