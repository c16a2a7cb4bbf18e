"""Transcripts kept (issue #14): every room's turns, summary and usage in SQLite.

The app's :class:`StoreRecorder` is one of the recorders a room hands its
records to (``voice_trio.record``). It only appends them to a :class:`Backlog`
(bounded in bytes and items, never blocking); one drain task writes them off
the event loop, a batch per transaction, through one connection used by one
thread at a time (``trio.to_thread`` under a limiter of 1). The file is in WAL
mode, so the endpoint's readers and a Celery worker (``voice_trio.jobs``,
which writes summaries and usage into the same file) never wait on the writer
for long.

What is written where:

- the room's records, always, by the server process: ``sessions`` (one row per
  session id: opened, closed, close code, how many rooms it had) and ``turns``
  (user turns and assistant responses as heard, in the order the room gave
  them); nothing of it depends on a broker;
- ``summaries`` and ``usage``: by the Celery worker when ``CELERY_BROKER_URL`` is
  set, else (or when a job could not be handed to the broker) by this writer
  after the room's close is committed, with the local summary of
  :func:`voice_trio.jobs.local_summary`. ``usage.recorded_by`` says which.

``GET /v1/sessions/{session_id}`` and ``voice-trio session`` read a session back
with :meth:`TranscriptStore.session` (:func:`session_access` is who may).
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, Generic, TypeVar

import jwt
import msgspec
import trio

from .config import data_dir
from .ratelog import RateLimitedLog
from .record import (
    AssistantTurn,
    ErrorRecord,
    QueueRecorder,
    Record,
    RoomClosed,
    RoomOpened,
    Usage,
    UserTurn,
)
from .security import Refusal, token_from, verify_token

__all__ = [
    "ADMIN_AUDIENCE",
    "Backlog",
    "StoreRecorder",
    "TranscriptStore",
    "default_transcript_path",
    "mint_admin_token",
    "session_access",
]

log = logging.getLogger("voice_trio.transcripts")

#: The ``aud`` of an admin token: not a room token's, so no admin token opens a room.
ADMIN_AUDIENCE: Final = "voice-trio-admin"
#: Records written in one transaction at most.
BATCH_MAX: Final = 500
#: What a record costs in the backlog besides its text (the struct, the deque slot).
RECORD_OVERHEAD: Final = 200
#: How long the writer may go on flushing after the server began to stop.
FLUSH_ON_EXIT_S: Final = 5.0
#: How long the writer waits after a record for more, so that they are written together.
BATCH_WAIT_S: Final = 0.2

T = TypeVar("T")


def default_transcript_path() -> Path:
    """Where transcripts are kept when TRANSCRIPT_DB_PATH is empty (next to AGENT_DB_PATH's)."""
    return data_dir() / "transcripts.sqlite3"


def record_size(record: Record) -> int:
    """The bytes a record holds in a backlog (its texts, and a fixed overhead)."""
    if isinstance(record, AssistantTurn):
        return RECORD_OVERHEAD + len(record.text) + len(record.full_text)
    if isinstance(record, UserTurn):
        return RECORD_OVERHEAD + len(record.text)
    if isinstance(record, RoomClosed):
        return RECORD_OVERHEAD + len(record.reason)
    return RECORD_OVERHEAD


class Backlog(Generic[T]):
    """A FIFO bounded by bytes and by items; :meth:`put` never blocks, it refuses.

    Filled synchronously on the event loop (a recorder's methods), drained by
    one task that waits in :meth:`wait` and takes batches with :meth:`take`.
    """

    def __init__(self, max_bytes: int, max_items: int = 100_000) -> None:
        self.max_bytes = max_bytes
        self.max_items = max_items
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self.bytes = 0
        self._ready = trio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, size: int) -> bool:
        if self.bytes + size > self.max_bytes or len(self._items) >= self.max_items:
            return False
        self._items.append((item, size))
        self.bytes += size
        self._ready.set()
        return True

    def put_back(self, items: list[tuple[T, int]]) -> None:
        """Return a taken batch to the front (a write to retry), even over the bound."""
        for item in reversed(items):
            self._items.appendleft(item)
            self.bytes += item[1]
        if items:
            self._ready.set()

    def take(self, max_items: int) -> list[tuple[T, int]]:
        batch: list[tuple[T, int]] = []
        while self._items and len(batch) < max_items:
            item = self._items.popleft()
            self.bytes -= item[1]
            batch.append(item)
        if not self._items:
            self._ready = trio.Event()
        return batch

    async def wait(self) -> None:
        """Until something is queued."""
        await self._ready.wait()


# ------------------------------------------------------------------ the store

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id   TEXT PRIMARY KEY,
    instance_id  TEXT,
    brain        TEXT,
    voice        TEXT,
    opened_at    REAL NOT NULL,      -- the first room's
    closed_at    REAL,               -- the last room's (NULL while one is open)
    close_code   INTEGER,
    close_reason TEXT,
    rooms        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS turns (
    id          INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL,
    role        TEXT NOT NULL,       -- user | assistant
    text        TEXT NOT NULL,       -- as heard (an interrupted response: cut where it was)
    status      TEXT NOT NULL,       -- completed | interrupted
    source      TEXT,                -- user: voice | text
    response_id TEXT,                -- assistant
    started_at  REAL,
    ended_at    REAL NOT NULL,
    full_text   TEXT,                -- assistant: all the brain produced
    audio_ms    INTEGER,
    heard_ms    INTEGER,
    ttfa_ms     REAL
);
CREATE INDEX IF NOT EXISTS turns_session ON turns (session_id, id);
CREATE TABLE IF NOT EXISTS errors (
    id          INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL,
    code        TEXT NOT NULL,
    at          REAL NOT NULL,
    fatal       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS errors_session ON errors (session_id, id);
CREATE TABLE IF NOT EXISTS summaries (
    session_id   TEXT PRIMARY KEY,
    text         TEXT NOT NULL,
    written_by   TEXT NOT NULL,      -- local | azure
    intent       TEXT,
    booking_code TEXT,
    created_at   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS usage (  -- one row per room, for billing
    session_id   TEXT NOT NULL,
    closed_at    REAL NOT NULL,
    audio_in_s   REAL NOT NULL,
    audio_out_s  REAL NOT NULL,
    user_turns   INTEGER NOT NULL,
    responses    INTEGER NOT NULL,
    interrupts   INTEGER NOT NULL,
    brain        TEXT NOT NULL,
    voice        TEXT NOT NULL,
    duration_s   REAL NOT NULL,
    recorded_by  TEXT NOT NULL,      -- worker | server
    recorded_at  REAL NOT NULL,
    PRIMARY KEY (session_id, closed_at)
);
"""


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    written_by: str
    intent: str | None = None
    booking_code: str | None = None


class TranscriptStore:
    """One SQLite file of transcripts. Every method is synchronous: call it off the loop.

    A store's connection is made on first use and used by one thread at a time
    (the caller serializes: the writer's limiter, or a worker's single task).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---------------------------------------------------------------- writes

    def write(self, records: Iterable[Record], *, results_locally: bool = False) -> list[str]:
        """Write ``records`` in one transaction; returns the sessions closed by them.

        ``results_locally``: for each room closed, write its summary and usage
        here (no worker will), after the room's turns are in.
        """
        conn = self.connect()
        closed: list[tuple[str, float, Usage]] = []
        with conn:
            for record in records:
                if isinstance(record, UserTurn) and record.amends:
                    conn.execute(  # the whole of the turn that row began
                        "UPDATE turns SET text = ?, started_at = ?, ended_at = ? WHERE id ="
                        " (SELECT max(id) FROM turns WHERE session_id = ? AND role = 'user')",
                        (record.text, record.started_at, record.ended_at, record.session_id),
                    )
                elif isinstance(record, UserTurn):
                    conn.execute(
                        "INSERT INTO turns (session_id, role, text, status, source, started_at,"
                        " ended_at) VALUES (?, 'user', ?, 'completed', ?, ?, ?)",
                        (record.session_id, record.text, record.source, record.started_at,
                         record.ended_at),
                    )  # fmt: skip
                elif isinstance(record, AssistantTurn) and record.amends:
                    conn.execute(  # cut after it was recorded whole: that row, as heard
                        "UPDATE turns SET text = ?, status = ?, ended_at = ?, audio_ms = ?,"
                        " heard_ms = ? WHERE id = (SELECT max(id) FROM turns WHERE"
                        " session_id = ? AND response_id = ?)",
                        (record.text, record.status, record.ended_at, record.audio_ms,
                         record.heard_ms, record.session_id, record.response_id),
                    )  # fmt: skip
                elif isinstance(record, AssistantTurn):
                    conn.execute(
                        "INSERT INTO turns (session_id, role, text, status, response_id,"
                        " started_at, ended_at, full_text, audio_ms, heard_ms, ttfa_ms)"
                        " VALUES (?, 'assistant', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (record.session_id, record.text, record.status, record.response_id,
                         record.started_at, record.ended_at, record.full_text, record.audio_ms,
                         record.heard_ms, record.ttfa_ms),
                    )  # fmt: skip
                elif isinstance(record, RoomOpened):
                    conn.execute(
                        "INSERT INTO sessions (session_id, instance_id, brain, voice, opened_at,"
                        " rooms) VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (session_id) DO UPDATE SET"
                        " instance_id = excluded.instance_id, brain = excluded.brain,"
                        " voice = excluded.voice, closed_at = NULL, close_code = NULL,"
                        " close_reason = NULL, rooms = rooms + 1",
                        (record.session_id, record.instance_id, record.brain, record.voice,
                         record.at),
                    )  # fmt: skip
                elif isinstance(record, RoomClosed):
                    conn.execute(
                        "INSERT INTO sessions (session_id, instance_id, brain, voice, opened_at,"
                        " closed_at, close_code, close_reason, rooms)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (session_id) DO UPDATE"
                        " SET closed_at = excluded.closed_at, close_code = excluded.close_code,"
                        " close_reason = excluded.close_reason",
                        (record.session_id, record.instance_id, record.usage.brain,
                         record.usage.voice, record.at - record.duration_s, record.at,
                         record.close_code, record.reason),
                    )  # fmt: skip
                    closed.append((record.session_id, record.at, record.usage))
                elif isinstance(record, ErrorRecord):
                    conn.execute(
                        "INSERT INTO errors (session_id, code, at, fatal) VALUES (?, ?, ?, ?)",
                        (record.session_id, record.code, record.at, int(record.fatal)),
                    )
        if results_locally:
            from .jobs import local_summary

            for session_id, closed_at, usage in closed:
                self.put_summary(session_id, local_summary(self.turns(session_id)))
                self.put_usage(session_id, closed_at, usage, recorded_by="server")
        return [session_id for session_id, _, _ in closed]

    def put_summary(self, session_id: str, summary: Summary) -> None:
        conn = self.connect()
        with conn:
            conn.execute(
                "INSERT OR REPLACE INTO summaries (session_id, text, written_by, intent,"
                " booking_code, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (session_id, summary.text, summary.written_by, summary.intent,
                 summary.booking_code, time.time()),
            )  # fmt: skip

    def put_usage(
        self, session_id: str, closed_at: float, usage: Usage, *, recorded_by: str
    ) -> None:
        """The usage of one room (idempotent: a job run twice writes the same row)."""
        conn = self.connect()
        with conn:
            conn.execute(
                "INSERT OR REPLACE INTO usage (session_id, closed_at, audio_in_s, audio_out_s,"
                " user_turns, responses, interrupts, brain, voice, duration_s, recorded_by,"
                " recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, closed_at, usage.audio_in_s, usage.audio_out_s, usage.user_turns,
                 usage.responses, usage.interrupts, usage.brain, usage.voice, usage.duration_s,
                 recorded_by, time.time()),
            )  # fmt: skip

    # ----------------------------------------------------------------- reads

    def closed_at(self, session_id: str) -> float | None:
        """When the session's last room closed, as committed (None: open, or unknown)."""
        row = (
            self.connect()
            .execute("SELECT closed_at FROM sessions WHERE session_id = ?", (session_id,))
            .fetchone()
        )
        return None if row is None else row[0]

    def turns(self, session_id: str) -> list[dict[str, Any]]:
        """The session's turns in the order the rooms gave them."""
        rows = (
            self.connect()
            .execute(
                "SELECT role, text, status, source, response_id, started_at, ended_at, full_text,"
                " audio_ms, heard_ms, ttfa_ms FROM turns WHERE session_id = ? ORDER BY id",
                (session_id,),
            )
            .fetchall()
        )
        turns = []
        for role, text, status, source, rid, started, ended, full, audio, heard, ttfa in rows:
            turn: dict[str, Any] = {
                "role": role,
                "text": text,
                "status": status,
                "started_at": started,
                "ended_at": ended,
            }
            if role == "user":
                turn["source"] = source
            else:
                turn.update(
                    response_id=rid, full_text=full, audio_ms=audio, heard_ms=heard, ttfa_ms=ttfa
                )
            turns.append(turn)
        return turns

    def session(self, session_id: str) -> dict[str, Any] | None:
        """The JSON of ``GET /v1/sessions/{session_id}``; None for an unknown session."""
        conn = self.connect()
        head = conn.execute(
            "SELECT opened_at, closed_at, close_code, close_reason, rooms, brain, voice"
            " FROM sessions WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        turns = self.turns(session_id)
        if head is None and not turns:
            return None
        summary = conn.execute(
            "SELECT text, written_by, intent, booking_code FROM summaries WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        usage_rows = conn.execute(
            "SELECT audio_in_s, audio_out_s, user_turns, responses, interrupts, brain, voice,"
            " duration_s, recorded_by FROM usage WHERE session_id = ? ORDER BY closed_at",
            (session_id,),
        ).fetchall()
        errors = conn.execute(
            "SELECT code, at, fatal FROM errors WHERE session_id = ? ORDER BY id", (session_id,)
        ).fetchall()
        usage: dict[str, Any] | None = None
        if usage_rows:
            # The session's total over its rooms; brain and voice of the last room.
            usage = {
                "audio_in_s": round(sum(r[0] for r in usage_rows), 3),
                "audio_out_s": round(sum(r[1] for r in usage_rows), 3),
                "user_turns": sum(r[2] for r in usage_rows),
                "responses": sum(r[3] for r in usage_rows),
                "interrupts": sum(r[4] for r in usage_rows),
                "brain": usage_rows[-1][5],
                "voice": usage_rows[-1][6],
                "duration_s": round(sum(r[7] for r in usage_rows), 3),
                "rooms": len(usage_rows),
                "recorded_by": sorted({r[8] for r in usage_rows}),
            }
        result: dict[str, Any] = {
            "session_id": session_id,
            "transcript": turns,
            "summary": None if summary is None else summary[0],
            "usage": usage,
        }
        if summary is not None:
            result["summary_by"] = summary[1]
            result["intent"] = summary[2]
            result["booking_code"] = summary[3]
        if head is not None:
            opened, closed, code, reason, rooms, brain, voice = head
            result.update(
                opened_at=opened, closed_at=closed, close_code=code, close_reason=reason,
                rooms=rooms, brain=brain, voice=voice,
            )  # fmt: skip
        result["errors"] = [{"code": c, "at": at, "fatal": bool(f)} for c, at, f in errors]
        return result


# ------------------------------------------------------------------ the recorder


class StoreRecorder(QueueRecorder):
    """The room's records into a :class:`TranscriptStore`, off the event loop.

    ``results_locally``: this process writes each closed room's summary and
    usage (no Celery); else :meth:`results_for` hands a room that the job queue
    could not send back here (see ``voice_trio.jobs.JobQueue``).
    """

    def __init__(
        self,
        store: TranscriptStore,
        *,
        max_bytes: int,
        results_locally: bool,
        dropped: Callable[[int], None] = lambda n: None,
        committed: Callable[[RoomClosed], None] | None = None,
    ) -> None:
        self.store = store
        self.backlog: Backlog[Record | _Results] = Backlog(max_bytes)
        self.results_locally = results_locally
        self._dropped = dropped
        #: Called on the loop for each RoomClosed once it is committed (the job queue's cue).
        self.committed = committed
        self.written = 0
        self._limiter = trio.CapacityLimiter(1)
        self._log = RateLimitedLog(log, level=logging.WARNING)

    def put(self, record: Record) -> None:
        if not self.backlog.put(record, record_size(record)):
            self._dropped(1)
            self._log.log(
                "full",
                "transcript backlog full (%d bytes): a record was dropped",
                self.backlog.bytes,
            )

    def results_for(self, record: RoomClosed) -> None:
        """Write this closed room's summary and usage here (its job was not sent)."""
        if not self.backlog.put(_Results(record), RECORD_OVERHEAD):
            self._dropped(1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drain the backlog until cancelled; then flush what is left (at most a few seconds)."""
        # The file is made at the first record, not at start-up (a server that never
        # holds a room writes nothing).
        task_status.started()
        try:
            while True:
                await self.backlog.wait()
                # Gather what comes in the next moment too: one thread hop and one
                # transaction for many records, not one for each (the room's CPU).
                await trio.sleep(BATCH_WAIT_S)
                await self._flush()
        finally:
            # The server is stopping: the job queue stops with it, so the rooms closed in
            # this last flush get their summary and usage here.
            self.results_locally = True
            self.committed = None
            with trio.move_on_after(FLUSH_ON_EXIT_S) as scope:
                scope.shield = True
                # One turn of the scheduler first: the job queue hands back what it holds.
                await trio.lowlevel.checkpoint()
                while len(self.backlog):
                    await self._flush()
            await trio.to_thread.run_sync(self.store.close, limiter=self._limiter)

    async def _flush(self) -> None:
        batch = self.backlog.take(BATCH_MAX)
        records = [item for item, _ in batch if not isinstance(item, _Results)]
        results = [item.record for item, _ in batch if isinstance(item, _Results)]
        try:
            await trio.to_thread.run_sync(self._write, records, results, limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:
            # A full disk, a locked file, a directory that cannot be made: keep the
            # batch (the backlog's bound still holds for new records), try again.
            self._log.log("write", "transcript write failed (%s); retrying", exc)
            self.backlog.put_back(batch)
            await trio.sleep(1.0)
            return
        except BaseException:
            # Cancelled before the thread began (it cannot be once begun): not written.
            self.backlog.put_back(batch)
            raise
        self.written += len(records)
        if self.committed is not None:
            for record in records:
                if isinstance(record, RoomClosed):
                    self.committed(record)

    def _write(self, records: list[Record], results: list[RoomClosed]) -> None:
        self.store.write(records, results_locally=self.results_locally)
        if results:
            from .jobs import local_summary

            for record in results:
                self.store.put_summary(
                    record.session_id, local_summary(self.store.turns(record.session_id))
                )
                self.store.put_usage(
                    record.session_id, record.at, record.usage, recorded_by="server"
                )


class _Results(msgspec.Struct, frozen=True):
    record: RoomClosed


# ------------------------------------------------------------------ access


def mint_admin_token(secret: str, *, ttl_s: float = 3600.0, now: float | None = None) -> str:
    """A token that reads any session's transcript (``voice-trio token --admin``).

    HS256 with ``AUTH_SECRET``, ``aud`` = ``voice-trio-admin`` (never a room
    token's audience, so it opens no room), ``admin`` = true, ``exp``.
    """
    issued = time.time() if now is None else now
    claims = {
        "sub": "admin",
        "aud": ADMIN_AUDIENCE,
        "admin": True,
        "iat": int(issued),
        "exp": int(issued + ttl_s),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def _is_admin(secret: str, token: str) -> bool:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=ADMIN_AUDIENCE,
            options={"require": ["exp", "aud"]},
        )
    except jwt.InvalidTokenError:
        return False
    return claims.get("admin") is True


def session_access(secret: str, session_id: str, query: str, authorization: str | None) -> None:
    """Raise :class:`Refusal` unless the request may read ``session_id``'s transcript.

    With ``AUTH_SECRET`` set: the room token of that session, or an admin token
    (:func:`mint_admin_token`), from ``?token=`` or ``Authorization: Bearer``.
    """
    if not secret:
        return
    token = token_from(query, authorization)
    if token is None:
        raise Refusal(401, "token_missing", "a token is needed (?token= or Authorization)")
    if _is_admin(secret, token):
        return
    verify_token(secret, token, session_id)


def read_session(path: str | Path | None, session_id: str) -> dict[str, Any] | None:
    """One session from the file at ``path`` (None: the default); None if unknown."""
    where = Path(path) if path else default_transcript_path()
    if not where.exists():
        return None
    store = TranscriptStore(where)
    # Not connect(): a reader neither creates the schema nor changes the journal mode.
    store._conn = sqlite3.connect(where, timeout=10.0)
    try:
        return store.session(session_id)
    except sqlite3.OperationalError:
        return None  # a file without the tables yet
    finally:
        store.close()
