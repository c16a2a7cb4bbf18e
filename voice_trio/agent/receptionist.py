"""The demo graph: a Vietnamese receptionist ("lễ tân") that books appointments.

It greets, tells the time and date, books an appointment (name, day, hour:
it asks again for what is missing and reads the booking back for a "có" or
"không"), stores it in SQLite, reads it back, cancels it, says goodbye, and
says plainly when it did not understand, with what the caller can say.

The local brain walks it by rules (nodes ``main``, ``booking``,
``booking_confirm``, ``identify``, ``cancel_confirm``, ``goodbye``); the Azure
brain gets the same four tools (``get_time``, ``book_appointment``,
``find_appointment``, ``cancel_appointment``) through function calling, with
instructions that carry today's date.

Time comes from an injectable clock (default: Vietnam local time), so tests
and other time zones can fix "now".
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import zoneinfo
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from .graph import Conversation, Graph, Node, Rule, Say, Tool, ToolError, phrases
from .vietnamese import (
    WEEKDAYS,
    Utterance,
    extract_name,
    format_date,
    format_time,
    name_key,
    name_span,
    parse_day,
    parse_time,
    yes_or_no,
)

__all__ = [
    "VIETNAM",
    "Appointment",
    "AppointmentStore",
    "Clock",
    "build_receptionist",
    "vietnam_now",
]

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


# ------------------------------------------------------------------ storage


@dataclass(frozen=True, slots=True)
class Appointment:
    id: int
    session_id: str
    name: str
    day: dt.date
    time: dt.time
    created_at: str
    status: str  # "booked" or "cancelled"

    def spoken(self, today: dt.date | None = None) -> str:
        """``"9 giờ sáng, thứ Tư, ngày 26 tháng 11"``."""
        return f"{format_time(self.time)}, {format_date(self.day, today)}"

    def to_json(self, today: dt.date | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "day": self.day.isoformat(),
            "time": self.time.strftime("%H:%M"),
            "status": self.status,
            "spoken": self.spoken(today),
        }

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Appointment:
        id_, session_id, name, day, time, created_at, status = row
        return cls(
            id=id_,
            session_id=session_id,
            name=name,
            day=dt.date.fromisoformat(day),
            time=dt.time.fromisoformat(time),
            created_at=created_at,
            status=status,
        )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS appointments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    name TEXT NOT NULL,
    day TEXT NOT NULL,          -- YYYY-MM-DD
    time TEXT NOT NULL,         -- HH:MM, local time
    created_at TEXT NOT NULL,   -- ISO 8601 with offset
    status TEXT NOT NULL DEFAULT 'booked',
    name_key TEXT NOT NULL      -- the name without marks, lower case: for look-ups
);
CREATE INDEX IF NOT EXISTS appointments_name_key ON appointments (name_key, status);
CREATE INDEX IF NOT EXISTS appointments_session ON appointments (session_id, status);
"""
_COLUMNS = "id, session_id, name, day, time, created_at, status"


class AppointmentStore:
    """The ``appointments`` table of one SQLite file, created if missing.

    Every call opens its own connection in a worker thread; one call at a time
    (SQLite serialises writers anyway, and this never waits on its lock).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._limiter = trio.CapacityLimiter(1)
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5.0)
        if not self._ready:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            self._ready = True
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        def work() -> Any:
            conn = self._connect()
            try:
                with conn:
                    return fn(conn)
            finally:
                conn.close()

        return await trio.to_thread.run_sync(work, limiter=self._limiter)

    async def add(
        self, *, session_id: str, name: str, day: dt.date, time: dt.time, created_at: dt.datetime
    ) -> Appointment:
        def add(conn: sqlite3.Connection) -> Appointment:
            row = (session_id, name, day.isoformat(), time.strftime("%H:%M"))
            cursor = conn.execute(
                "INSERT INTO appointments (session_id, name, day, time, created_at, status, "
                "name_key) VALUES (?, ?, ?, ?, ?, 'booked', ?)",
                (*row, created_at.isoformat(timespec="seconds"), name_key(name)),
            )
            added = _get(conn, cursor.lastrowid or 0)
            assert added is not None  # just inserted, in the same transaction
            return added

        result: Appointment = await self._run(add)
        return result

    async def get(self, appointment_id: int) -> Appointment | None:
        result: Appointment | None = await self._run(lambda conn: _get(conn, appointment_id))
        return result

    async def find(
        self,
        *,
        session_id: str | None = None,
        name: str | None = None,
        from_day: dt.date | None = None,
        status: str | None = "booked",
    ) -> list[Appointment]:
        """Appointments by session and/or name (marks and case ignored), soonest first."""
        where, args = [], []
        if session_id is not None:
            where.append("session_id = ?")
            args.append(session_id)
        if name is not None:
            where.append("name_key = ?")
            args.append(name_key(name))
        if from_day is not None:
            where.append("day >= ?")
            args.append(from_day.isoformat())
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = f"SELECT {_COLUMNS} FROM appointments"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY day, time, id LIMIT 20"

        def find(conn: sqlite3.Connection) -> list[Appointment]:
            return [Appointment.from_row(row) for row in conn.execute(sql, args)]

        result: list[Appointment] = await self._run(find)
        return result

    async def cancel(self, appointment_id: int) -> Appointment | None:
        """Mark as cancelled; None if there is no such booked appointment."""

        def cancel(conn: sqlite3.Connection) -> Appointment | None:
            cursor = conn.execute(
                "UPDATE appointments SET status = 'cancelled' WHERE id = ? AND status = 'booked'",
                (appointment_id,),
            )
            return _get(conn, appointment_id) if cursor.rowcount else None

        result: Appointment | None = await self._run(cancel)
        return result


def _get(conn: sqlite3.Connection, appointment_id: int) -> Appointment | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM appointments WHERE id = ?", (appointment_id,)
    ).fetchone()
    return Appointment.from_row(row) if row else None


# ------------------------------------------------------------------ texts

_ASK_NAME = "Quý khách cho tôi xin tên người đặt lịch ạ?"
_ASK_DAY = "Quý khách muốn đặt lịch vào ngày nào ạ?"
_ANYTHING_ELSE = "Quý khách cần tôi giúp gì thêm không ạ?"

_GOODBYE = ("tạm biệt", "bye", "bai bai", "hẹn gặp lại", "không cần gì nữa", "vậy thôi",
            "không còn gì nữa", "thế thôi", "thôi cảm ơn", "hết rồi", "cúp máy")  # fmt: skip
_ASK_TIME = ("mấy giờ", "bây giờ là", "giờ là mấy", "mấy h", "giờ hiện tại", "thời gian")
_ASK_DATE = ("ngày mấy", "ngày bao nhiêu", "thứ mấy", "hôm nay là ngày", "hôm nay ngày",
             "ngày hôm nay", "hôm nay là thứ", "tháng mấy", "năm nay là năm")  # fmt: skip
_ASK_HOURS = ("mở cửa", "đóng cửa", "giờ làm việc", "làm việc", "mấy giờ mở", "giờ mở")
_THANKS = ("cảm ơn", "cám ơn", "thank", "thanks")
_HELLO = ("xin chào", "chào", "alo", "a lô", "alô", "hello", "hi", "chào bạn", "chào em")
_HELP = ("giúp được gì", "làm được gì", "làm gì được", "có thể làm gì", "hướng dẫn", "giúp gì")
_CANCEL = ("hủy", "huỷ", "bỏ lịch", "không đến được", "không tới được", "cancel", "hủy bỏ")
_LOOKUP = ("xem lại", "xem lịch", "nhắc lại", "đọc lại", "lịch của tôi", "lịch hẹn của tôi",
           "kiểm tra lịch", "kiểm tra lại", "tôi có lịch", "đã đặt", "tra cứu", "lịch hẹn của",
           "lịch của")  # fmt: skip
# After the booking phrases: "đặt lịch kiểm tra sức khỏe" is a booking.
_LOOKUP_WEAK = ("kiểm tra",)
_BOOK = ("đặt lịch", "đặt hẹn", "hẹn", "lịch hẹn", "đặt", "book", "đăng ký", "lịch khám",
         "muốn khám", "đi khám", "muốn gặp")  # fmt: skip
_STOP = ("thôi", "không đặt nữa", "dừng", "dừng lại", "hủy", "huỷ", "bỏ qua", "để sau",
         "không cần nữa", "không đặt")  # fmt: skip
_CLOSING = ("không", "ko", "k", "dạ", "ạ", "cần", "gì", "nữa", "đâu", "thôi", "rồi", "cảm",
            "ơn", "cám", "nhé", "nha", "vâng", "ừ", "em", "bạn", "à", "ờ", "có",
            "chưa")  # fmt: skip
_CHANGE = ("đổi", "sửa", "thay", "nhầm")
# A turn that asks ("mấy giờ rồi?") fills no slot, even if it names a day.
_QUESTION = ("mấy", "bao nhiêu")


class _Receptionist:
    """The rules' actions and the tools' handlers, sharing a store and a clock."""

    def __init__(
        self,
        store: AppointmentStore,
        clock: Clock,
        business: str,
        opens: dt.time,
        closes: dt.time,
        closed_weekdays: frozenset[int],
    ) -> None:
        self.store = store
        self.clock = clock
        self.business = business
        self.opens = opens
        self.closes = closes
        self.closed_weekdays = closed_weekdays

    # ---------------------------------------------------------------- facts

    def now(self) -> dt.datetime:
        now = self.clock()
        return now if now.tzinfo is not None else now.replace(tzinfo=VIETNAM)

    def hours_text(self) -> str:
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

    def instructions(self, conversation: Conversation) -> str:
        now = self.now()
        return (
            f"Bạn là lễ tân ảo của {self.business}, nói chuyện qua điện thoại bằng tiếng Việt "
            'tự nhiên, lịch sự và ngắn gọn (một hai câu mỗi lượt); xưng "tôi", gọi người gọi '
            'là "quý khách".\n'
            "Việc bạn làm: chào hỏi; cho biết giờ và ngày (gọi get_time); đặt lịch hẹn: cần đủ "
            "tên, ngày và giờ, hỏi lại điều còn thiếu, đọc lại để quý khách xác nhận rồi mới gọi "
            "book_appointment; xem lại lịch hẹn (find_appointment); hủy lịch hẹn: tìm bằng "
            "find_appointment, hỏi quý khách xác nhận, rồi gọi cancel_appointment với id và tên.\n"
            f"{self.business} nhận lịch {self.hours_text()}.\n"
            f"Hôm nay là {format_date(now.date())} năm {now.year}, bây giờ là "
            f"{format_time(now.time())} (giờ Việt Nam). Gửi ngày cho công cụ theo dạng "
            "YYYY-MM-DD và giờ theo dạng HH:MM (24 giờ).\n"
            "Khi công cụ trả về lỗi, nói rõ cho quý khách bằng lời đơn giản; không bịa thông tin. "
            "Khi không hiểu, nói thẳng là chưa hiểu và gợi ý những việc bạn làm được. Khi quý "
            "khách chào tạm biệt, chào lại ngắn gọn."
        )

    def greeting(self, conversation: Conversation) -> str:
        return (
            f"Xin chào, {self.business} xin nghe. Tôi là lễ tân ảo, có thể giúp quý khách đặt "
            "lịch hẹn, xem lại hoặc hủy lịch hẹn. Quý khách cần giúp gì ạ?"
        )

    # ---------------------------------------------------------------- tools

    async def get_time(self, conversation: Conversation) -> dict[str, Any]:
        now = self.now()
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
        now = self.now()
        if when_day < now.date() or (when_day == now.date() and when_time <= now.time()):
            raise ToolError(f"{day} {time} is in the past (now: {now:%Y-%m-%d %H:%M})")
        if when_day.weekday() in self.closed_weekdays:
            raise ToolError(f"closed on {WEEKDAYS[when_day.weekday()]}; pick another day")
        if not self.opens <= when_time <= self.closes:
            raise ToolError(
                f"outside opening hours ({self.opens:%H:%M}-{self.closes:%H:%M}); pick another time"
            )
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

    async def find_appointment(
        self, conversation: Conversation, *, name: str | None = None, id: int | None = None
    ) -> dict[str, Any]:
        today = self.now().date()
        if id is not None:
            appointment = await self.store.get(int(id))
            found = [appointment] if appointment is not None else []
        elif name is not None:
            found = await self.store.find(name=name, from_day=today)
        else:
            found = await self.store.find(session_id=conversation.session_id, from_day=today)
        return {"appointments": [a.to_json(today) for a in found], "count": len(found)}

    async def cancel_appointment(
        self, conversation: Conversation, *, id: int, name: str | None = None
    ) -> dict[str, Any]:
        appointment = await self.store.get(int(id))
        if appointment is None:
            raise ToolError(f"there is no appointment number {id}")
        if appointment.status != "booked":
            raise ToolError(f"appointment {id} is already {appointment.status}")
        same_name = name is not None and name_key(name) == name_key(appointment.name)
        if appointment.session_id != conversation.session_id and not same_name:
            raise ToolError(
                f"appointment {id} was booked under another name; ask for the name it is under"
            )
        cancelled = await self.store.cancel(appointment.id)
        if cancelled is None:
            raise ToolError(f"appointment {id} is already cancelled")
        return {"cancelled": cancelled.to_json(self.now().date())}

    def tools(self) -> list[Tool]:
        name = {"type": "string", "minLength": 1, "maxLength": 80,
                "description": "Tên người đặt lịch, ví dụ \"Nguyễn Văn An\""}  # fmt: skip
        appointment_id = {"type": "integer", "minimum": 1, "description": "Mã lịch hẹn"}
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
                    "Tìm các lịch hẹn sắp tới: theo mã (id), theo tên, hoặc (không có tham số) "
                    "các lịch đã đặt trong cuộc gọi này."
                ),
                handler=self.find_appointment,
                parameters={
                    "type": "object",
                    "properties": {"name": name, "id": appointment_id},
                    "additionalProperties": False,
                },
            ),
            Tool(
                name="cancel_appointment",
                description=(
                    "Hủy một lịch hẹn theo mã (id), sau khi quý khách xác nhận. Với lịch đặt từ "
                    "cuộc gọi khác, cần tên người đặt."
                ),
                handler=self.cancel_appointment,
                parameters={
                    "type": "object",
                    "properties": {"id": appointment_id, "name": name},
                    "required": ["id"],
                    "additionalProperties": False,
                },
            ),
        ]

    # ---------------------------------------------------------------- slots

    def missing(self, conversation: Conversation) -> str | None:
        for slot in ("name", "day", "time"):
            if conversation.slots.get(slot) is None:
                return slot
        return None

    def ask(self, conversation: Conversation) -> str:
        """The question for the first missing slot."""
        slot = self.missing(conversation)
        if slot == "name":
            return _ASK_NAME
        if slot == "day":
            return _ASK_DAY
        if slot == "time":
            return f"Quý khách muốn đến lúc mấy giờ ạ? Chúng tôi nhận lịch {self.hours_text()}."
        return self.confirm_question(conversation)

    def confirm_question(self, conversation: Conversation) -> str:
        slots = conversation.slots
        when = f"{format_time(slots['time'])}, {format_date(slots['day'], self.now().date())}"
        return f"Tôi xin xác nhận lịch hẹn cho {slots['name']} lúc {when}. Đúng không ạ?"

    def extract(self, utterance: Utterance) -> dict[str, Any]:
        """The booking slots said in this turn."""
        if utterance.has(*_QUESTION):
            return {}
        found: dict[str, Any] = {}
        if (name := extract_name(utterance)) is not None:
            found["name"] = name
        if (day := parse_day(utterance, self.now().date())) is not None:
            found["day"] = day
        if (time := parse_time(utterance, daytime=True)) is not None:
            found["time"] = time
        return found

    def fill(self, conversation: Conversation, found: dict[str, Any]) -> str:
        """Put the values in the slots (those that can be booked); the reply to say."""
        slots = conversation.slots
        said: list[str] = []
        if "name" in found:
            slots["name"] = found["name"]
        if "day" in found:
            problem = self.problem(found["day"], None)
            slots["day"] = None if problem else found["day"]
            if problem:
                said.append(problem)
        time = found.get("time", slots.get("time"))
        if time is not None:
            # Checked again when only the day changed: 9:00 is fine tomorrow, not today at 10.
            problem = self.problem(slots.get("day"), time)
            slots["time"] = None if problem else time
            if problem:
                said.append(problem)
        if self.missing(conversation) is None:
            conversation.goto("booking_confirm")
            return " ".join([*said, self.confirm_question(conversation)])
        conversation.goto("booking")
        if not said:
            noted = []
            if "name" in found:
                noted.append(f"tên {found['name']}")
            if slots.get("day") is not None and "day" in found:
                noted.append(format_date(slots["day"], self.now().date()))
            if slots.get("time") is not None and "time" in found:
                noted.append(f"lúc {format_time(slots['time'])}")
            if noted:
                said.append(f"Dạ, tôi đã ghi nhận {', '.join(noted)}.")
        return " ".join([*said, self.ask(conversation)])

    def clear_booking(self, conversation: Conversation) -> None:
        for slot in ("name", "day", "time"):
            conversation.slots.pop(slot, None)

    # ---------------------------------------------------------------- matchers

    def core(self, utterance: Utterance) -> Utterance:
        """The utterance without the name said in it ("tên tôi là Huy" is not "hủy")."""
        span = name_span(utterance)
        return utterance.without(*span) if span else utterance

    def wants(self, *choices: str) -> Callable[[Conversation, Utterance], bool]:
        def match(conversation: Conversation, utterance: Utterance) -> bool:
            return self.core(utterance).has(*choices)

        return match

    def says_slots(self, conversation: Conversation, utterance: Utterance) -> bool:
        return bool(self.extract(utterance))

    def changes_slot(self, conversation: Conversation, utterance: Utterance) -> bool:
        return bool(self.core(utterance).has(*_CHANGE) and self._slots_named(utterance))

    def _slots_named(self, utterance: Utterance) -> list[str]:
        named = {"name": ("tên",), "day": ("ngày", "hôm"), "time": ("giờ", "tiếng")}
        found = self.extract(utterance)
        return [s for s, words in named.items() if utterance.has(*words) and s not in found]

    def stops(self, conversation: Conversation, utterance: Utterance) -> bool:
        if self.missing(conversation) == "name" and utterance.plain == "huy":
            return False  # a caller named Huy, answering "tên gì ạ?"
        return self.core(utterance).has(*_STOP)

    def yes(self, conversation: Conversation, utterance: Utterance) -> bool:
        return yes_or_no(utterance) is True

    def no(self, conversation: Conversation, utterance: Utterance) -> bool:
        return yes_or_no(utterance) is False

    def nothing_more(self, conversation: Conversation, utterance: Utterance) -> bool:
        """A plain no to "anything else?": "không", "dạ không cần đâu ạ" (not "không biết")."""
        return self.no(conversation, utterance) and all(
            utterance.word_is(i, *_CLOSING) for i in range(len(utterance))
        )

    def offered(self, conversation: Conversation) -> bool:
        """The previous reply offered to book ("có muốn đặt lịch mới không ạ?")."""
        return conversation.slots.get("offer_turn") == conversation.turns - 1

    # ---------------------------------------------------------------- global actions

    async def goodbye(self, conversation: Conversation, utterance: Utterance) -> str:
        self.clear_booking(conversation)
        result = await conversation.call_tool("find_appointment")
        upcoming = result.value["appointments"] if result.ok else []
        see_you = f" Hẹn gặp quý khách lúc {upcoming[0]['spoken']}." if upcoming else ""
        return (
            f"Cảm ơn quý khách đã gọi cho {self.business}.{see_you} Chúc quý khách một ngày "
            "tốt lành, tạm biệt ạ!"
        )

    async def clock_answer(self, conversation: Conversation, utterance: Utterance) -> str:
        result = await conversation.call_tool("get_time")
        now = result.value
        time_asked = utterance.has(*_ASK_TIME)
        date_asked = utterance.has(*_ASK_DATE)
        parts = []
        if time_asked or not date_asked:
            parts.append(f"Bây giờ là {now['spoken_time']}.")
        if date_asked:
            parts.append(f"Hôm nay là {now['spoken_date']}.")
        return " ".join(parts)

    async def opening_hours(self, conversation: Conversation, utterance: Utterance) -> str:
        return f"Dạ, {self.business} nhận lịch {self.hours_text()} ạ."

    async def thanks(self, conversation: Conversation, utterance: Utterance) -> str:
        if conversation.node.name == "main":
            return f"Dạ, không có gì ạ. {_ANYTHING_ELSE}"
        return "Dạ, không có gì ạ."

    async def hello(self, conversation: Conversation, utterance: Utterance) -> str:
        if conversation.node.name != "main":
            return "Dạ, xin chào quý khách."
        return (
            "Xin chào quý khách! Tôi có thể giúp quý khách đặt lịch hẹn, xem lại hoặc hủy lịch "
            "hẹn. Quý khách cần gì ạ?"
        )

    async def help(self, conversation: Conversation, utterance: Utterance) -> str:
        return (
            "Tôi có thể đặt lịch hẹn cho quý khách, đọc lại hoặc hủy lịch hẹn đã đặt, và cho "
            "biết ngày giờ. Quý khách cứ nói, ví dụ: tôi muốn đặt lịch chín giờ sáng mai."
        )

    async def not_understood(self, conversation: Conversation, utterance: Utterance) -> Say:
        return Say(
            "Xin lỗi, tôi chưa hiểu ý quý khách. Quý khách có thể nói, ví dụ: tôi muốn đặt lịch "
            "hẹn, xem lại lịch hẹn của tôi, hủy lịch hẹn, hoặc hỏi bây giờ là mấy giờ.",
            understood=False,
        )

    # ---------------------------------------------------------------- main

    async def accept_offer(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.slots.pop("offer_turn", None)
        name = conversation.slots.pop("offer_name", None)
        self.clear_booking(conversation)
        found = self.extract(utterance)
        if name is not None:
            found.setdefault("name", name)
        return self.fill(conversation, found)

    async def decline_offer(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.slots.pop("offer_turn", None)
        return f"Dạ vâng. {_ANYTHING_ELSE}"

    async def start_booking(self, conversation: Conversation, utterance: Utterance) -> str:
        self.clear_booking(conversation)
        return self.fill(conversation, self.extract(utterance))

    async def lookup(self, conversation: Conversation, utterance: Utterance) -> str:
        return await self.lookup_for(conversation, extract_name(utterance))

    async def _find(
        self, conversation: Conversation, name: str | None, purpose: str
    ) -> list[dict[str, Any]] | str:
        """The upcoming appointments under ``name``, or what to say instead (a failure,
        or asking for the name when none was given and none was found)."""
        conversation.goto("main")
        result = await conversation.call_tool("find_appointment", **_named(name))
        if not result.ok:
            return f"Xin lỗi, tôi chưa tra được lịch hẹn lúc này. {_ANYTHING_ELSE}"
        found: list[dict[str, Any]] = result.value["appointments"]
        if not found and name is None:
            conversation.slots["purpose"] = purpose
            conversation.goto("identify")
            return "Dạ, quý khách cho tôi xin tên người đã đặt lịch ạ?"
        return found

    async def lookup_for(self, conversation: Conversation, name: str | None) -> str:
        found = await self._find(conversation, name, "lookup")
        if isinstance(found, str):
            return found
        if not found:
            conversation.slots["offer_turn"] = conversation.turns
            conversation.slots["offer_name"] = name
            return (
                f"Tôi không tìm thấy lịch hẹn nào sắp tới dưới tên {name} ạ. Quý khách có muốn "
                "đặt lịch mới không ạ?"
            )
        if len(found) == 1:
            a = found[0]
            text = f"Quý khách có một lịch hẹn: {a['name']}, lúc {a['spoken']}, mã số {a['id']}."
        else:
            listed = "; ".join(f"{a['name']}, lúc {a['spoken']}" for a in found)
            text = f"Quý khách có {len(found)} lịch hẹn: {listed}."
        return f"{text} {_ANYTHING_ELSE}"

    async def cancel(self, conversation: Conversation, utterance: Utterance) -> str:
        return await self.cancel_for(conversation, extract_name(utterance))

    async def cancel_for(self, conversation: Conversation, name: str | None) -> str:
        found = await self._find(conversation, name, "cancel")
        if isinstance(found, str):
            return found
        if not found:
            return f"Tôi không tìm thấy lịch hẹn nào sắp tới dưới tên {name} ạ. {_ANYTHING_ELSE}"
        target = found[0]
        conversation.slots["cancel"] = target
        conversation.goto("cancel_confirm")
        lead = (
            f"Quý khách có {len(found)} lịch hẹn. Lịch gần nhất là"
            if len(found) > 1
            else "Quý khách muốn hủy"
        )
        return f"{lead} lịch hẹn của {target['name']} lúc {target['spoken']}, đúng không ạ?"

    async def no_more(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.goto("goodbye")
        return await self.goodbye(conversation, utterance)

    async def yes_what(self, conversation: Conversation, utterance: Utterance) -> str:
        return "Dạ, quý khách cần gì ạ? Tôi có thể đặt lịch hẹn, xem lại hoặc hủy lịch hẹn."

    # ---------------------------------------------------------------- booking

    async def fill_slots(self, conversation: Conversation, utterance: Utterance) -> str:
        return self.fill(conversation, self.extract(utterance))

    async def change_slot(self, conversation: Conversation, utterance: Utterance) -> str:
        for slot in self._slots_named(utterance):
            conversation.slots[slot] = None
        conversation.goto("booking")
        return f"Dạ vâng. {self.ask(conversation)}"

    async def stop_booking(self, conversation: Conversation, utterance: Utterance) -> str:
        self.clear_booking(conversation)
        conversation.goto("main")
        return f"Dạ, tôi đã dừng việc đặt lịch. {_ANYTHING_ELSE}"

    async def booking_fallback(self, conversation: Conversation, utterance: Utterance) -> Say:
        if self.missing(conversation) == "name":
            name = extract_name(utterance, bare=True)
            if name is not None:
                return Say(self.fill(conversation, {"name": name}))
        return Say(f"Xin lỗi, tôi chưa nghe rõ. {self.ask(conversation)}", understood=False)

    async def confirm_changes(self, conversation: Conversation, utterance: Utterance) -> str:
        return self.fill(conversation, self.extract(utterance))

    def corrects(self, conversation: Conversation, utterance: Utterance) -> bool:
        found = self.extract(utterance)
        return any(conversation.slots.get(k) != v for k, v in found.items())

    async def book(self, conversation: Conversation, utterance: Utterance) -> str:
        slots = conversation.slots
        result = await conversation.call_tool(
            "book_appointment",
            name=slots["name"],
            day=slots["day"].isoformat(),
            time=slots["time"].strftime("%H:%M"),
        )
        self.clear_booking(conversation)
        if not result.ok:
            conversation.goto("main")
            return (
                "Xin lỗi, tôi chưa đặt được lịch hẹn này do hệ thống gặp sự cố. Quý khách vui "
                "lòng thử lại sau ít phút ạ."
            )
        booked = result.value["booked"]
        return (
            f"Dạ, tôi đã đặt lịch hẹn cho {booked['name']} lúc {booked['spoken']}. Mã lịch hẹn "
            f"của quý khách là số {booked['id']}. {_ANYTHING_ELSE}"
        )

    async def reject(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.goto("booking")
        return "Dạ, quý khách muốn sửa tên, ngày hay giờ ạ? Quý khách cứ nói thông tin mới."

    async def confirm_fallback(self, conversation: Conversation, utterance: Utterance) -> Say:
        return Say(
            "Xin lỗi, quý khách vui lòng nói đúng rồi để xác nhận, hoặc không để sửa lại ạ.",
            understood=False,
        )

    # ---------------------------------------------------------------- identify

    async def identified(self, conversation: Conversation, utterance: Utterance) -> str:
        name = extract_name(utterance) or extract_name(utterance, bare=True)
        return await self.proceed(conversation, name)

    async def proceed(self, conversation: Conversation, name: str | None) -> str:
        purpose = conversation.slots.pop("purpose", "lookup")
        if purpose == "cancel":
            return await self.cancel_for(conversation, name)
        return await self.lookup_for(conversation, name)

    async def identify_fallback(self, conversation: Conversation, utterance: Utterance) -> Say:
        name = extract_name(utterance, bare=True)
        if name is not None:
            return Say(await self.proceed(conversation, name))
        return Say(
            "Xin lỗi, tôi chưa nghe rõ. Quý khách cho tôi xin tên người đã đặt lịch ạ?",
            understood=False,
        )

    async def stop_identify(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.slots.pop("purpose", None)
        conversation.goto("main")
        return f"Dạ vâng. {_ANYTHING_ELSE}"

    # ---------------------------------------------------------------- cancel

    async def keep(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.slots.pop("cancel", None)
        conversation.goto("main")
        return f"Dạ, tôi giữ nguyên lịch hẹn của quý khách. {_ANYTHING_ELSE}"

    async def do_cancel(self, conversation: Conversation, utterance: Utterance) -> str:
        target = conversation.slots.pop("cancel")
        result = await conversation.call_tool(
            "cancel_appointment", id=target["id"], name=target["name"]
        )
        if not result.ok:
            conversation.goto("main")
            return f"Xin lỗi, tôi chưa hủy được lịch hẹn này. {_ANYTHING_ELSE}"
        done = result.value["cancelled"]
        return f"Dạ, tôi đã hủy lịch hẹn của {done['name']} lúc {done['spoken']}. {_ANYTHING_ELSE}"

    def cancel_question(self, conversation: Conversation) -> str:
        target = conversation.slots.get("cancel") or {}
        return (
            f"Quý khách muốn hủy lịch hẹn của {target.get('name')} lúc {target.get('spoken')}, "
            "đúng không ạ?"
        )

    async def cancel_fallback(self, conversation: Conversation, utterance: Utterance) -> Say:
        return Say(
            "Xin lỗi, quý khách vui lòng nói có để hủy lịch hẹn, hoặc không để giữ lại ạ.",
            understood=False,
        )

    # ---------------------------------------------------------------- the graph

    def graph(self) -> Graph:
        main = Node(
            name="main",
            instructions="Hỏi quý khách cần gì: đặt lịch, xem lại hoặc hủy lịch hẹn.",
            rules=[
                Rule("accept_offer", lambda c, u: self.offered(c) and self.yes(c, u),
                     self.accept_offer),
                Rule("decline_offer", lambda c, u: self.offered(c) and self.no(c, u),
                     self.decline_offer),
                Rule("goodbye", phrases(*_GOODBYE), self.goodbye, goto="goodbye"),
                Rule("cancel", self.wants(*_CANCEL), self.cancel),
                Rule("lookup", self.wants(*_LOOKUP), self.lookup),
                Rule("book", self.wants(*_BOOK), self.start_booking),
                Rule("lookup", self.wants(*_LOOKUP_WEAK), self.lookup),
                Rule("book", self.says_slots, self.start_booking),
                Rule("no_more", self.nothing_more, self.no_more),
                Rule("yes", lambda c, u: len(u) <= 3 and self.yes(c, u), self.yes_what),
            ],
        )  # fmt: skip
        booking = Node(
            name="booking",
            instructions="Đang đặt lịch: hỏi tên, ngày và giờ còn thiếu.",
            rules=[
                Rule("stop_booking", self.stops, self.stop_booking),
                Rule("change_slot", self.changes_slot, self.change_slot),
                Rule("fill_slots", self.says_slots, self.fill_slots),
            ],
            prompt=self.ask,
            fallback=self.booking_fallback,
        )
        booking_confirm = Node(
            name="booking_confirm",
            instructions="Đọc lại lịch hẹn và chờ quý khách xác nhận trước khi đặt.",
            rules=[
                Rule("change_slot", self.changes_slot, self.change_slot),
                Rule("correct", self.corrects, self.confirm_changes),
                Rule("stop_booking", self.stops, self.stop_booking),
                Rule("reject", self.no, self.reject),
                Rule("confirm", self.yes, self.book),
            ],
            transitions={"book_appointment": "main"},
            prompt=self.confirm_question,
            fallback=self.confirm_fallback,
        )
        identify = Node(
            name="identify",
            instructions="Hỏi tên người đã đặt lịch để tìm lịch hẹn.",
            rules=[
                Rule("stop", phrases("thôi", "không cần", "bỏ qua", "dừng"), self.stop_identify),
                Rule("name", lambda c, u: extract_name(u) is not None, self.identified),
            ],
            prompt=lambda c: "Quý khách cho tôi xin tên người đã đặt lịch ạ?",
            fallback=self.identify_fallback,
        )
        cancel_confirm = Node(
            name="cancel_confirm",
            instructions="Hỏi quý khách xác nhận trước khi hủy lịch hẹn.",
            rules=[
                Rule("keep", self.no, self.keep),
                Rule("cancel", lambda c, u: self.yes(c, u) or u.has(*_CANCEL), self.do_cancel),
            ],
            transitions={"cancel_appointment": "main"},
            prompt=self.cancel_question,
            fallback=self.cancel_fallback,
        )
        goodbye = Node(name="goodbye", instructions="Chào tạm biệt quý khách.", final=True)
        return Graph(
            nodes=[main, booking, booking_confirm, identify, cancel_confirm, goodbye],
            start="main",
            instructions=self.instructions,
            greeting=self.greeting,
            tools=self.tools(),
            rules=[
                Rule("goodbye", phrases(*_GOODBYE), self.goodbye, goto="goodbye"),
                Rule("opening_hours", phrases(*_ASK_HOURS), self.opening_hours),
                Rule("clock", phrases(*_ASK_TIME, *_ASK_DATE), self.clock_answer),
                Rule("thanks", phrases(*_THANKS), self.thanks),
                Rule("hello", phrases(*_HELLO), self.hello),
                Rule("help", phrases(*_HELP), self.help),
            ],
            fallback=self.not_understood,
        )


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _named(name: str | None) -> dict[str, Any]:
    return {} if name is None else {"name": name}


def build_receptionist(
    db_path: str | os.PathLike[str],
    *,
    clock: Clock = vietnam_now,
    business: str = "Phòng khám Bình An",
    opens: dt.time = dt.time(8, 0),
    closes: dt.time = dt.time(17, 0),
    closed_weekdays: Sequence[int] = (6,),
) -> Graph:
    """The receptionist graph, storing appointments in the SQLite file ``db_path``.

    ``clock`` returns "now" (an aware datetime; a naive one is read as Vietnam
    time). Appointments may start from ``opens`` to ``closes`` inclusive, on
    days whose ``weekday()`` is not in ``closed_weekdays`` (default: Sunday).
    """
    receptionist = _Receptionist(
        AppointmentStore(db_path), clock, business, opens, closes, frozenset(closed_weekdays)
    )
    return receptionist.graph()
