"""The receptionist's appointments: one SQLite table, each booking under a random code.

The store answers what is asked of it; who may see or cancel a booking is decided
by the tools (:mod:`.tools`), which call it.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ..agent.vietnamese import format_date, format_time, name_key

__all__ = ["Appointment", "AppointmentStore"]


@dataclass(frozen=True, slots=True)
class Appointment:
    """One row of the table; :meth:`to_json` is what the tools answer about it."""

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

        Who may see them is the caller's business (see :class:`.tools.BookingTools`).
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
