"""The demo graph: a Vietnamese receptionist ("lễ tân") that books appointments.

It greets, tells the time and date, books an appointment (name, day, hour:
it asks again for what is missing and reads the booking back for a "có" or
"không"), stores it in SQLite under a random six-digit booking code, reads it
back, cancels it, says goodbye, and says plainly when it did not understand,
with what the caller can say.

Privacy: a booking is read back or cancelled only from the session that made
it, or when the caller gives its booking code together with the name it was
made under (marks and case ignored). Anything else gets the same answer
whether or not such a booking exists (:data:`NO_MATCH`), and a session that
gets a code or a name wrong :data:`MAX_CODE_TRIES` times is refused from then
on (:data:`TOO_MANY_TRIES`). The tool handlers enforce this, so it holds on
both brains, whatever the model is told or decides.

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
import secrets
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
    code_span,
    extract_name,
    format_code,
    format_date,
    format_time,
    name_key,
    name_span,
    parse_day,
    parse_time,
    yes_or_no,
)

__all__ = [
    "MAX_CODE_TRIES",
    "NO_MATCH",
    "TOO_MANY_TRIES",
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
    #: Six digits, random, unique in the file: what the caller says to find it from another call.
    code: str

    def spoken(self, today: dt.date | None = None) -> str:
        """``"9 giờ sáng, thứ Tư, ngày 26 tháng 11"``."""
        return f"{format_time(self.time)}, {format_date(self.day, today)}"

    def to_json(self, today: dt.date | None = None) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "day": self.day.isoformat(),
            "time": self.time.strftime("%H:%M"),
            "status": self.status,
            "spoken": self.spoken(today),
        }

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Appointment:
        id_, session_id, name, day, time, created_at, status, code = row
        return cls(
            id=id_,
            session_id=session_id,
            name=name,
            day=dt.date.fromisoformat(day),
            time=dt.time.fromisoformat(time),
            created_at=created_at,
            status=status,
            code=code,
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
    name_key TEXT NOT NULL,     -- the name without marks, lower case: for look-ups
    code TEXT                   -- the booking code (six digits); NULL only before migration
);
CREATE INDEX IF NOT EXISTS appointments_name_key ON appointments (name_key, status);
CREATE INDEX IF NOT EXISTS appointments_session ON appointments (session_id, status);
"""
_COLUMNS = "id, session_id, name, day, time, created_at, status, code"
#: Codes are drawn again on a clash; with 900 000 codes this never runs out in a demo.
_CODE_DRAWS = 20


def _new_code() -> str:
    """Six random digits, no leading zero (said as a six-digit number, it stays six)."""
    return str(100_000 + secrets.randbelow(900_000))


def _migrate(conn: sqlite3.Connection) -> None:
    """Give a file from before booking codes its ``code`` column, and every row a code."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(appointments)")}
    if "code" not in columns:
        conn.execute("ALTER TABLE appointments ADD COLUMN code TEXT")
    for (id_,) in conn.execute("SELECT id FROM appointments WHERE code IS NULL").fetchall():
        for _ in range(_CODE_DRAWS):
            code = _new_code()
            if conn.execute("SELECT 1 FROM appointments WHERE code = ?", (code,)).fetchone():
                continue
            conn.execute("UPDATE appointments SET code = ? WHERE id = ?", (code, id_))
            break
    conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS appointments_code ON appointments (code)")


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
            with conn:
                _migrate(conn)
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
            for _ in range(_CODE_DRAWS):
                try:
                    cursor = conn.execute(
                        "INSERT INTO appointments (session_id, name, day, time, created_at, "
                        "status, name_key, code) VALUES (?, ?, ?, ?, ?, 'booked', ?, ?)",
                        (*row, created_at.isoformat(timespec="seconds"), name_key(name),
                         _new_code()),
                    )  # fmt: skip
                except sqlite3.IntegrityError:
                    continue  # the code is taken (the only unique column): draw again
                added = _get(conn, cursor.lastrowid or 0)
                assert added is not None  # just inserted, in the same transaction
                return added
            raise RuntimeError(f"no free booking code after {_CODE_DRAWS} draws")

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
        code: str | None = None,
        from_day: dt.date | None = None,
        status: str | None = "booked",
    ) -> list[Appointment]:
        """Appointments by session, name (marks and case ignored) and/or code, soonest first.

        Who may see them is the caller's business (see :class:`_Receptionist`).
        """
        where, args = [], []
        if session_id is not None:
            where.append("session_id = ?")
            args.append(session_id)
        if name is not None:
            where.append("name_key = ?")
            args.append(name_key(name))
        if code is not None:
            where.append("code = ?")
            args.append(code)
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

# Privacy. A booking from another call is found only by its code and its name together,
# and every failure says the same, so no answer tells whether a booking exists.
#: Wrong code-and-name tries a session may make; after that every try is refused, right or
#: wrong, so one call cannot work through the 900 000 codes for a name it knows.
MAX_CODE_TRIES = 5
#: The answer to any code and name that do not both match one upcoming booking.
NO_MATCH = (
    "Xin lỗi, tôi không tìm thấy lịch hẹn nào khớp với mã lịch hẹn và tên này. Để bảo mật "
    "thông tin, tôi chỉ đọc lại hoặc hủy lịch hẹn đã đặt trong chính cuộc gọi này, hoặc khi "
    "quý khách cho biết đúng mã lịch hẹn cùng tên người đã đặt lịch ạ."
)
#: The answer to every try after :data:`MAX_CODE_TRIES` wrong ones.
TOO_MANY_TRIES = (
    "Xin lỗi, mã lịch hẹn hoặc tên đã không khớp nhiều lần, nên để bảo mật thông tin tôi "
    "không tra cứu lịch hẹn bằng mã trong cuộc gọi này nữa ạ."
)
_ASK_BOTH = (
    "Để bảo mật thông tin, quý khách vui lòng cho tôi biết mã lịch hẹn và tên người đã đặt lịch ạ."
)
_ASK_CODE = (
    "Để bảo mật thông tin, quý khách cho tôi xin thêm mã lịch hẹn ạ? Đó là mã sáu chữ số tôi "
    "đã đọc khi đặt lịch."
)
_ASK_WHOSE = "Dạ, quý khách cho tôi xin thêm tên người đã đặt lịch ạ?"
_FORGOT = (
    "Dạ, để bảo mật thông tin, khi không có mã lịch hẹn tôi chỉ xem lại hoặc hủy được lịch "
    "hẹn đã đặt trong chính cuộc gọi này thôi ạ."
)
# What the tools answer the model (which says the Vietnamese to the caller).
_REFUSED = (
    "no upcoming appointment matches that booking code and name (for privacy, one booked in "
    "another call is found only by its code together with the name it was booked under; "
    f"say nothing else about any booking). Tell the caller: {NO_MATCH}"
)
_LOCKED = (
    "too many wrong booking codes or names in this call: no more look-ups by code. Tell the "
    f"caller: {TOO_MANY_TRIES}"
)
_NOTE = (
    "nothing booked in this call matches. An appointment booked in another call is found "
    "only with both its booking code (6 digits) and the name it was booked under: ask the "
    f"caller for both, never say whether anyone has a booking. Ask: {_ASK_BOTH}"
)
_FAILURES = "code_failures"  # the slot counting a session's wrong tries

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
_FORGOT_CODE = ("không nhớ", "quên", "không có mã", "không biết mã", "mất mã", "không còn mã")
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
            "book_appointment, rồi đọc cho quý khách mã lịch hẹn (6 chữ số, đọc từng số) và dặn "
            "ghi lại; xem lại lịch hẹn (find_appointment); hủy lịch hẹn: tìm bằng "
            "find_appointment, hỏi quý khách xác nhận, rồi gọi cancel_appointment với mã (code) "
            "và tên.\n"
            "Bảo mật: chỉ đọc lại hay hủy lịch hẹn đã đặt trong chính cuộc gọi này "
            "(find_appointment không tham số), hoặc khi quý khách nói cả mã lịch hẹn và tên "
            "người đã đặt lịch (gọi find_appointment với code và name). Chỉ biết tên thì không "
            "đủ: hỏi thêm mã; không bao giờ nói có hay không có lịch hẹn của ai.\n"
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
        today = self.now().date()
        code = None if code is None else code.strip()
        found = await self.store.find(
            session_id=conversation.session_id, code=code, name=name, from_day=today
        )
        if not found and code is not None and name is not None:
            if self.locked_out(conversation):
                raise ToolError(_LOCKED)
            found = [
                a
                for a in await self.store.find(code=code, from_day=today)
                if self._own(conversation, a) or name_key(a.name) == name_key(name)
            ]
            if not found:
                self._wrong_try(conversation)
                raise ToolError(_REFUSED)
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
                raise ToolError(_LOCKED)
            if appointment is None or name is None or name_key(name) != name_key(appointment.name):
                self._wrong_try(conversation)
                raise ToolError(_REFUSED)
        if appointment.status != "booked":
            raise ToolError(f"appointment {code} is already {appointment.status}")
        cancelled = await self.store.cancel(appointment.id)
        if cancelled is None:
            raise ToolError(f"appointment {code} is already cancelled")
        return {"cancelled": cancelled.to_json(self.now().date())}

    def tools(self) -> list[Tool]:
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
        return await self.look(conversation, "lookup", *self.credentials(utterance))

    async def cancel(self, conversation: Conversation, utterance: Utterance) -> str:
        return await self.look(conversation, "cancel", *self.credentials(utterance))

    def credentials(
        self, utterance: Utterance, *, bare: bool = False
    ) -> tuple[str | None, str | None]:
        """The booking code and the name said in this turn ("mã 482913, tên Lan")."""
        code = None
        if (found := code_span(utterance)) is not None:
            code, span = found
            utterance = utterance.without(*span)
        name = extract_name(utterance)
        if name is None and bare:
            name = extract_name(utterance, bare=True)
        return code, name

    async def look(
        self, conversation: Conversation, purpose: str, code: str | None, name: str | None
    ) -> str:
        """Find the bookings to read back or cancel (``purpose``): this session's, or the
        one with this code under this name; else ask for what is missing, or refuse."""
        conversation.goto("main")
        for slot in ("purpose", "code", "whose"):
            conversation.slots.pop(slot, None)
        arguments = {k: v for k, v in (("code", code), ("name", name)) if v is not None}
        result = await conversation.call_tool("find_appointment", **arguments)
        if not result.ok:
            return self.refusal(conversation, purpose, result.error, name)
        found: list[dict[str, Any]] = result.value["appointments"]
        if not found:
            # Nothing from this session: a code and a name are needed, whoever asks.
            conversation.slots.update(purpose=purpose, code=code, whose=name)
            conversation.goto("identify")
            return self.ask_credentials(conversation)
        if purpose == "cancel":
            return self.ask_cancel(conversation, found)
        return self.read_back(found)

    def refusal(
        self, conversation: Conversation, purpose: str, error: str | None, name: str | None
    ) -> str:
        if error == _LOCKED:
            return f"{TOO_MANY_TRIES} {_ANYTHING_ELSE}"
        if error != _REFUSED:
            return f"Xin lỗi, tôi chưa tra được lịch hẹn lúc này. {_ANYTHING_ELSE}"
        if purpose == "lookup":
            conversation.slots["offer_turn"] = conversation.turns
            conversation.slots["offer_name"] = name
            return f"{NO_MATCH} Quý khách có muốn đặt lịch mới không ạ?"
        return f"{NO_MATCH} {_ANYTHING_ELSE}"

    def ask_credentials(self, conversation: Conversation) -> str:
        """What to ask for in the ``identify`` node: the code, the name, or both."""
        code, whose = conversation.slots.get("code"), conversation.slots.get("whose")
        if code is None and whose is None:
            return _ASK_BOTH
        return _ASK_CODE if code is None else _ASK_WHOSE

    def read_back(self, found: list[dict[str, Any]]) -> str:
        if len(found) == 1:
            a = found[0]
            text = (
                f"Quý khách có một lịch hẹn: {a['name']}, lúc {a['spoken']}, mã lịch hẹn "
                f"{format_code(a['code'])}."
            )
        else:
            listed = "; ".join(f"{a['name']}, lúc {a['spoken']}" for a in found)
            text = f"Quý khách có {len(found)} lịch hẹn: {listed}."
        return f"{text} {_ANYTHING_ELSE}"

    def ask_cancel(self, conversation: Conversation, found: list[dict[str, Any]]) -> str:
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
            f"của quý khách là {format_code(booked['code'])}; quý khách vui lòng ghi lại mã này "
            f"để xem lại hoặc hủy lịch khi gọi lại. {_ANYTHING_ELSE}"
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
        return await self.identify_with(conversation, *self.credentials(utterance, bare=True))

    async def identify_with(
        self, conversation: Conversation, code: str | None, name: str | None
    ) -> str:
        """Add what this turn said to what was said before, and look again."""
        slots = conversation.slots
        code = code or slots.get("code")
        name = name or slots.get("whose")
        return await self.look(conversation, slots.get("purpose", "lookup"), code, name)

    async def identify_fallback(self, conversation: Conversation, utterance: Utterance) -> Say:
        code, name = self.credentials(utterance, bare=True)
        if code is not None or name is not None:
            return Say(await self.identify_with(conversation, code, name))
        return Say(
            f"Xin lỗi, tôi chưa nghe rõ. {self.ask_credentials(conversation)}", understood=False
        )

    async def stop_identify(self, conversation: Conversation, utterance: Utterance) -> str:
        for slot in ("purpose", "code", "whose"):
            conversation.slots.pop(slot, None)
        conversation.goto("main")
        return f"Dạ vâng. {_ANYTHING_ELSE}"

    async def forgot_code(self, conversation: Conversation, utterance: Utterance) -> str:
        await self.stop_identify(conversation, utterance)
        return f"{_FORGOT} {_ANYTHING_ELSE}"

    # ---------------------------------------------------------------- cancel

    async def keep(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.slots.pop("cancel", None)
        conversation.goto("main")
        return f"Dạ, tôi giữ nguyên lịch hẹn của quý khách. {_ANYTHING_ELSE}"

    async def do_cancel(self, conversation: Conversation, utterance: Utterance) -> str:
        target = conversation.slots.pop("cancel")
        result = await conversation.call_tool(
            "cancel_appointment", code=target["code"], name=target["name"]
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
                Rule("lookup", lambda c, u: code_span(u) is not None, self.lookup),
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
            instructions=(
                "Để bảo mật, hỏi mã lịch hẹn và tên người đã đặt lịch; cần cả hai mới tìm được."
            ),
            rules=[
                Rule("forgot", phrases(*_FORGOT_CODE), self.forgot_code),
                Rule("stop", phrases("thôi", "không cần", "bỏ qua", "dừng"), self.stop_identify),
                Rule("credentials", lambda c, u: any(self.credentials(u)), self.identified),
            ],
            prompt=self.ask_credentials,
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
