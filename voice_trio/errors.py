"""The project's one exception tree, and the one helper that unwraps exception groups.

Everything voice-trio raises on purpose derives from :class:`VoiceTrioError`::

    VoiceTrioError
    ├── ConfigError          a setting the server cannot run with (also a ValueError)
    │   └── DeployError      a deployment file cannot be written from these arguments
    ├── ProtocolError        a client message the room cannot take (an ``error`` event)
    ├── Refusal              a handshake refused (an HTTP status before the upgrade)
    ├── ProviderError        a brain, voice or recognizer failed (an ``error`` event)
    ├── CircuitOpen          a provider's breaker refused an attempt (becomes a ProviderError)
    ├── ModelAssemblyError   the embedded Whisper model is missing or cannot be assembled
    ├── RecognizerError      the embedded recognizer failed inside the model (ditto)
    └── TtsError             eSpeak NG failed (ditto)
        └── EspeakNotFoundError
    ├── ToolError            an agent tool's expected failure (its output for the model)
    │   └── ArgumentError    the tool's arguments do not fit its schema

A task nursery wraps what its children raise in an exception group; :func:`leaves`
is how code finds the failures of one kind in such a group (cancellations aside).
"""

from __future__ import annotations

from typing import TypeVar

import trio

__all__ = ["VoiceTrioError", "ConfigError", "ProtocolError", "ProviderError", "leaves", "sole"]

E = TypeVar("E", bound=BaseException)


class VoiceTrioError(Exception):
    """The root of every exception voice-trio raises on purpose."""


class ConfigError(VoiceTrioError, ValueError):
    """A setting has a value the server cannot run with."""


class ProtocolError(VoiceTrioError):
    """A client message the room cannot take; ``code`` goes on the ``error`` event."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ProviderError(VoiceTrioError):
    """A provider failure the room reports to its client as an ``error`` event.

    Raised by brains, voices and the embedded recognizer. The room stays open; the
    upstream is torn down and starts again on the next activity. ``fatal`` closes
    the room as well.
    """

    def __init__(self, code: str, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal


def leaves(exc: BaseException, kind: type[E] | tuple[type[E], ...]) -> list[E] | None:
    """The ``kind`` exceptions in ``exc`` (a group, nested or not, or one exception).

    None when anything else is in it (``trio.Cancelled`` aside, which a cancelled
    sibling leaves behind): the group is then not only failures of that kind.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return [exc] if isinstance(exc, kind) else None
    found: list[E] = []
    for inner in exc.exceptions:
        if isinstance(inner, trio.Cancelled):
            continue
        more = leaves(inner, kind)
        if more is None:
            return None
        found.extend(more)
    return found


def sole(exc: BaseException, kind: type[E] | tuple[type[E], ...]) -> E | None:
    """The one ``kind`` exception a group holds (cancellations aside), else None."""
    found = leaves(exc, kind)
    return found[0] if found is not None and len(found) == 1 else None
