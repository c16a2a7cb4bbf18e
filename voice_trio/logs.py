"""Logs: JSON lines for machines, readable lines for people, the room on every line.

:func:`configure` sets up the stdlib ``logging`` of a server process once:
one handler on stderr, JSON lines when stderr is not a terminal (a container,
systemd, CI) or ``LOG_FORMAT=json``, readable lines on a terminal or with
``LOG_FORMAT=text``. voice-trio's own loggers log at ``LOG_LEVEL`` (info),
every other library at warning and worse.

Every line logged inside :func:`room_context` carries that room's session id and
the instance id: the room's task enters it, and Trio hands a task's context
variables to the tasks it starts, so the reader, the writer, the upstream and
the providers' lines all name their room without being told.

No secret in a log: the values of the secret settings (``AUTH_SECRET``, the API
keys, ``REDIS_URL`` and its password) are replaced by ``<secret>`` in every
formatted line, tracebacks included, whatever code logged them.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import TextIO

import msgspec

from .config import SECRET_FIELDS, Settings

__all__ = ["JsonFormatter", "Masker", "TextFormatter", "configure", "room_context", "secrets_of"]

#: (session id, instance id) of the room whose task is running, or None.
_room: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "voice_trio_room", default=None
)

#: Shorter secrets are not masked: replacing every "ab" would garble the logs
#: (AUTH_SECRET is at least 32 bytes; real API keys are far longer than this).
MIN_SECRET_CHARS = 8

_encode = msgspec.json.Encoder().encode


@contextlib.contextmanager
def room_context(session_id: str, instance_id: str = "") -> Iterator[None]:
    """Lines logged in this block (and in tasks started from it) name this room."""
    token = _room.set((session_id, instance_id))
    try:
        yield
    finally:
        _room.reset(token)


class _RoomFilter(logging.Filter):
    """Puts the current room's ids on each record (None outside a room)."""

    def filter(self, record: logging.LogRecord) -> bool:
        room = _room.get()
        record.session_id, record.instance_id = room if room is not None else (None, None)
        return True


class Masker:
    """Replaces the secrets it was given (those of MIN_SECRET_CHARS or more) in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a password inside a URL does not leave the URL's rest half-masked.
        self.secrets = sorted(
            {s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "<secret>")
        return text


class _Masking(logging.Formatter):
    """A formatter that replaces the secrets it was given, wherever they appear."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.mask = Masker(secrets)

    def details(self, record: logging.LogRecord) -> str:
        """The traceback and stack of a record, if any."""
        parts = []
        if record.exc_info:
            parts.append(self.formatException(record.exc_info))
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        return "\n".join(parts)


class JsonFormatter(_Masking):
    """One JSON object a line: time, level, logger, message, pid, the room's ids, error."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.mask(record.getMessage()),
            "pid": record.process,
        }
        session_id = getattr(record, "session_id", None)
        if session_id is not None:
            line["session_id"] = session_id
            line["instance_id"] = getattr(record, "instance_id", None) or None
        details = self.details(record)
        if details:
            line["error"] = self.mask(details)
        return _encode(line).decode()


class TextFormatter(_Masking):
    """``2026-12-01 11:32:37.123 INFO voice_trio.room [demo-42 @ host:8000] message``."""

    def format(self, record: logging.LogRecord) -> str:
        room = ""
        session_id = getattr(record, "session_id", None)
        if session_id is not None:
            instance_id = getattr(record, "instance_id", None)
            room = f" [{session_id} @ {instance_id}]" if instance_id else f" [{session_id}]"
        text = (
            f"{_local(record.created)} {record.levelname} {record.name}{room} {record.getMessage()}"
        )
        details = self.details(record)
        return self.mask(text + ("\n" + details if details else ""))


def secrets_of(settings: Settings) -> list[str]:
    """The secret values of ``settings``: the secret fields, and a Redis URL's password."""
    values = [str(getattr(settings, name)) for name in SECRET_FIELDS]
    if settings.redis_url:
        with contextlib.suppress(ValueError):
            password = urllib.parse.urlsplit(settings.redis_url).password
            if password:
                values += [password, urllib.parse.unquote(password)]
    return [v for v in values if v]


def configure(settings: Settings | None = None, *, stream: TextIO | None = None) -> None:
    """Set up the process's logging from ``settings`` (the defaults when None).

    Replaces the root logger's handlers, so a second call (a worker process, a
    test) leaves one handler, not two.
    """
    settings = settings if settings is not None else Settings()
    out = stream if stream is not None else sys.stderr
    fmt = settings.log_format
    if fmt is None:
        fmt = "text" if _isatty(out) else "json"
    secrets = secrets_of(settings)
    handler = logging.StreamHandler(out)
    handler.addFilter(_RoomFilter())
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("voice_trio").setLevel(settings.log_level.upper())
    # Python's warnings (deprecations) go through the same handler, as JSON too.
    logging.captureWarnings(True)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _utc(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created * 1000) % 1000:03d}Z"


def _local(created: float) -> str:
    seconds = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
    return f"{seconds}.{int(created * 1000) % 1000:03d}"
