"""The receptionist's four tools, and the privacy rules they enforce.

Both brains book through these handlers: the local brain's rules call them with
:meth:`Conversation.call_tool <voice_trio.agent.Conversation.call_tool>`, Azure's model
through function calling. So the rules below hold whatever the model is told or decides.

Privacy: a booking is read back or cancelled only from the session that made it, or when
the caller gives its booking code together with the name it was made under (marks and
case ignored). Anything else gets the same answer whether or not such a booking exists
(:data:`REFUSED`, which carries :data:`~.wording.NO_MATCH` for the caller), and a session
that gets a code or a name wrong :data:`MAX_CODE_TRIES` times is refused from then on
(:data:`LOCKED`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..agent.graph import Conversation, Tool, ToolError
from ..agent.vietnamese import WEEKDAYS, format_date, format_time, name_key
from .clinic import Clinic
from .store import Appointment, AppointmentStore
from .wording import ASK_BOTH, NO_MATCH, TOO_MANY_TRIES

__all__ = ["LOCKED", "MAX_CODE_TRIES", "REFUSED", "BookingTools"]

#: Wrong code-and-name tries a session may make; after that every try is refused, right or
#: wrong, so one call cannot work through the 900 000 codes for a name it knows.
MAX_CODE_TRIES = 5
# What the tools answer the model (which says the Vietnamese to the caller).
#: The error of any code and name that do not both match one upcoming booking.
REFUSED = (
    "no upcoming appointment matches that booking code and name (for privacy, one booked in "
    "another call is found only by its code together with the name it was booked under; "
    f"say nothing else about any booking). Tell the caller: {NO_MATCH}"
)
#: The error of every try after :data:`MAX_CODE_TRIES` wrong ones, right or wrong.
LOCKED = (
    "too many wrong booking codes or names in this call: no more look-ups by code. Tell the "
    f"caller: {TOO_MANY_TRIES}"
)
_NOTE = (
    "nothing booked in this call matches. An appointment booked in another call is found "
    "only with both its booking code (6 digits) and the name it was booked under: ask the "
    f"caller for both, never say whether anyone has a booking. Ask: {ASK_BOTH}"
)
_FAILURES = "code_failures"  # the slot counting a session's wrong tries


class BookingTools:
    """``get_time``, ``book_appointment``, ``find_appointment``, ``cancel_appointment``."""

    def __init__(self, store: AppointmentStore, clinic: Clinic) -> None:
        self.store = store
        self.clinic = clinic

    async def get_time(self, conversation: Conversation) -> dict[str, Any]:
        now = self.clinic.now()
        return {
            "now": now.isoformat(timespec="seconds"),
            "date": now.date().isoformat(),
            "time": now.strftime("%H:%M"),
            "weekday": WEEKDAYS[now.weekday()],
            "spoken_time": format_time(now.time()),
            "spoken_date": f"{format_date(now.date())} năm {now.year}",
        }

    async def book_appointment(
        self, conversation: Conversation, *, name: str, day: str, time: str
    ) -> dict[str, Any]:
        name = " ".join(name.split())
        try:
            when_day = dt.date.fromisoformat(day)
            hour, minute = (int(part) for part in time.split(":"))
            when_time = dt.time(hour, minute)
        except ValueError:
            raise ToolError(f"day {day!r} or time {time!r} is not a real date/time") from None
        now = self.clinic.now()
        if when_day < now.date() or (when_day == now.date() and when_time <= now.time()):
            raise ToolError(f"{day} {time} is in the past (now: {now:%Y-%m-%d %H:%M})")
        if when_day.weekday() in self.clinic.closed_weekdays:
            raise ToolError(f"closed on {WEEKDAYS[when_day.weekday()]}; pick another day")
        opens, closes = self.clinic.opens, self.clinic.closes
        if not opens <= when_time <= closes:
            hours = f"{opens:%H:%M}-{closes:%H:%M}"
            raise ToolError(f"outside opening hours ({hours}); pick another time")
        today = now.date()
        for same in await self.store.find(session_id=conversation.session_id, name=name):
            if same.day == when_day and same.time == when_time:
                return {"booked": same.to_json(today), "already_booked": True}
        appointment = await self.store.add(
            session_id=conversation.session_id,
            name=name,
            day=when_day,
            time=when_time,
            created_at=now,
        )
        conversation.slots["last_booked"] = appointment.id
        return {"booked": appointment.to_json(today)}

    def _wrong_try(self, conversation: Conversation) -> None:
        conversation.slots[_FAILURES] = conversation.slots.get(_FAILURES, 0) + 1

    def locked_out(self, conversation: Conversation) -> bool:
        """This session has had its :data:`MAX_CODE_TRIES` wrong tries."""
        tries: int = conversation.slots.get(_FAILURES, 0)
        return tries >= MAX_CODE_TRIES

    def _own(self, conversation: Conversation, appointment: Appointment) -> bool:
        return appointment.session_id == conversation.session_id

    async def find_appointment(
        self, conversation: Conversation, *, code: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """The upcoming appointments booked in this session (narrowed by ``code`` and/or
        ``name`` when given), or, with both, the one with that code under that name."""
        today = self.clinic.now().date()
        code = None if code is None else code.strip()
        found = await self.store.find(
            session_id=conversation.session_id, code=code, name=name, from_day=today
        )
        if not found and code is not None and name is not None:
            if self.locked_out(conversation):
                raise ToolError(LOCKED)
            found = [
                a
                for a in await self.store.find(code=code, from_day=today)
                if self._own(conversation, a) or name_key(a.name) == name_key(name)
            ]
            if not found:
                self._wrong_try(conversation)
                raise ToolError(REFUSED)
        result: dict[str, Any] = {
            "appointments": [a.to_json(today) for a in found],
            "count": len(found),
        }
        if not found:
            result["note"] = _NOTE
        return result

    async def cancel_appointment(
        self, conversation: Conversation, *, code: str, name: str | None = None
    ) -> dict[str, Any]:
        """Cancel the appointment with this code: booked in this session, or under ``name``."""
        code = code.strip()
        matches = await self.store.find(code=code, status=None)
        appointment = matches[0] if matches else None
        if appointment is None or not self._own(conversation, appointment):
            # Checked in this order, and answered alike, so that no reply tells a code that
            # exists from one that does not, or a right name from a wrong one.
            if self.locked_out(conversation):
                raise ToolError(LOCKED)
            if appointment is None or name is None or name_key(name) != name_key(appointment.name):
                self._wrong_try(conversation)
                raise ToolError(REFUSED)
        if appointment.status != "booked":
            raise ToolError(f"appointment {code} is already {appointment.status}")
        cancelled = await self.store.cancel(appointment.id)
        if cancelled is None:
            raise ToolError(f"appointment {code} is already cancelled")
        return {"cancelled": cancelled.to_json(self.clinic.now().date())}

    def graph_tools(self) -> list[Tool]:
        """The four tools, for the graph."""
        name = {"type": "string", "minLength": 1, "maxLength": 80,
                "description": "Tên người đặt lịch, ví dụ \"Nguyễn Văn An\""}  # fmt: skip
        code = {"type": "string", "pattern": r"^\s*\d{6}\s*$",
                "description": "Mã lịch hẹn: 6 chữ số, ví dụ \"482913\""}  # fmt: skip
        return [
            Tool(
                name="get_time",
                description="Giờ và ngày hiện tại ở Việt Nam.",
                handler=self.get_time,
            ),
            Tool(
                name="book_appointment",
                description=(
                    "Đặt một lịch hẹn. Chỉ gọi sau khi quý khách đã xác nhận tên, ngày và giờ."
                ),
                handler=self.book_appointment,
                parameters={
                    "type": "object",
                    "properties": {
                        "name": name,
                        "day": {
                            "type": "string",
                            "format": "date",
                            "pattern": r"^\d{4}-\d{2}-\d{2}$",
                            "description": "Ngày hẹn, dạng YYYY-MM-DD, ví dụ 2025-11-26",
                        },
                        "time": {
                            "type": "string",
                            "pattern": r"^([01]?\d|2[0-3]):[0-5]\d$",
                            "description": "Giờ hẹn, dạng HH:MM (24 giờ), ví dụ 09:30",
                        },
                    },
                    "required": ["name", "day", "time"],
                    "additionalProperties": False,
                },
            ),
            Tool(
                name="find_appointment",
                description=(
                    "Tìm các lịch hẹn sắp tới. Không tham số: các lịch đã đặt trong cuộc gọi "
                    "này (name hoặc code chỉ lọc trong số đó). Lịch đặt từ cuộc gọi khác chỉ "
                    "tìm được khi có cả mã lịch hẹn (code) và tên người đã đặt (name), và phải "
                    "khớp cả hai; nếu không, công cụ trả lỗi và câu cần nói với quý khách."
                ),
                handler=self.find_appointment,
                parameters={
                    "type": "object",
                    "properties": {"code": code, "name": name},
                    "additionalProperties": False,
                },
            ),
            Tool(
                name="cancel_appointment",
                description=(
                    "Hủy một lịch hẹn theo mã lịch hẹn (code), sau khi quý khách xác nhận. Với "
                    "lịch đặt từ cuộc gọi khác, cần cả tên người đã đặt lịch (name), khớp với mã."
                ),
                handler=self.cancel_appointment,
                parameters={
                    "type": "object",
                    "properties": {"code": code, "name": name},
                    "required": ["code"],
                    "additionalProperties": False,
                },
            ),
        ]
