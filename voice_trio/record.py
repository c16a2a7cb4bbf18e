"""What a room tells the world outside it: the records of a conversation (issue #14).

A room hands each record to the app's :class:`Recorder` as it happens: a user's
finished turn, an assistant response as the user heard it, an error, the room's
opening and closing (with its usage). A recorder only *enqueues*: every method is
synchronous, returns at once and never raises into the room; the transcript
store, the background jobs and the analytics stream drain their own bounded
queues off the event loop.

Times are wall-clock seconds since the epoch (``time.time()``), as stored.
"""

from __future__ import annotations

import abc
from typing import Literal, Protocol

import msgspec

__all__ = [
    "AssistantTurn",
    "ErrorRecord",
    "NullRecorder",
    "QueueRecorder",
    "Record",
    "Recorder",
    "RoomClosed",
    "RoomOpened",
    "TurnStages",
    "Usage",
    "UserTurn",
]


class RoomOpened(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    instance_id: str
    at: float
    brain: str
    voice: str
    #: The conversation was restored from the session store (a reconnect).
    resumed: bool = False


class UserTurn(msgspec.Struct, frozen=True, kw_only=True):
    """A finished user turn: the final transcript of speech, or typed text."""

    session_id: str
    text: str
    source: Literal["voice", "text"]
    #: When the user started speaking (None: not known, e.g. typed text).
    started_at: float | None
    ended_at: float
    #: It is the whole of the turn the last user record began (the user went on before
    #: hearing its reply): it replaces that record.
    amends: bool = False


class TurnStages(msgspec.Struct, frozen=True, kw_only=True):
    """Where a reply's time went (ms) from the end of the user's speech, each stage None
    when not known.

    ``end_of_turn``: the end of the user's speech (when the last voiced audio
    reached the brain, as the embedded brain says; or where Azure's server VAD
    says it ended in the audio sent) to the end of the user's turn, as the brain
    decided it; ``asr``: that to
    the final transcript (near 0 with the embedded brain, which decides the end of
    a turn from its transcript: the recognition is in ``end_of_turn``); ``brain``:
    that (or the end of a typed turn) to the reply's first text; ``tts``: that to
    its first audio sent; ``total``: the end of the user's speech (else of the
    turn) to first audio. A stage is known when both its ends happened, in that
    order, before the first audio (with Azure the transcript usually comes after
    the reply has started, and its audio may come before its text); the known
    stages of the chain sum to ``total``.
    """

    end_of_turn: float | None = None
    asr: float | None = None
    brain: float | None = None
    tts: float | None = None
    total: float | None = None


class AssistantTurn(msgspec.Struct, frozen=True, kw_only=True):
    """An assistant response as the user heard it."""

    session_id: str
    response_id: str
    #: The text as heard: cut at the interrupt point when interrupted.
    text: str
    #: All the text the brain produced for it.
    full_text: str
    status: Literal["completed", "interrupted"]
    started_at: float
    ended_at: float
    #: Of its audio: how much was sent and how much the user heard (ms).
    audio_ms: int
    heard_ms: int
    #: Time to first audio from the end of the user's turn (None: not a reply, or no audio).
    ttfa_ms: float | None = None
    #: The stages of that time (None: not a reply, or no audio).
    stages: TurnStages | None = None
    #: It corrects the earlier record of this response (recorded as heard whole when
    #: all its audio was made, then cut while that audio still played).
    amends: bool = False


class ErrorRecord(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    code: str
    at: float
    fatal: bool = False


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """What a room used, for billing."""

    audio_in_s: float
    audio_out_s: float
    user_turns: int
    responses: int
    interrupts: int
    brain: str
    voice: str
    duration_s: float


class RoomClosed(msgspec.Struct, frozen=True, kw_only=True):
    session_id: str
    instance_id: str
    at: float
    duration_s: float
    close_code: int
    reason: str
    usage: Usage


class Recorder(Protocol):
    """Where a room's records go. Every method only enqueues; none may block or raise."""

    def room_opened(self, record: RoomOpened) -> None: ...

    def user_turn(self, record: UserTurn) -> None: ...

    def assistant_turn(self, record: AssistantTurn) -> None: ...

    def error(self, record: ErrorRecord) -> None: ...

    def room_closed(self, record: RoomClosed) -> None: ...


Record = RoomOpened | UserTurn | AssistantTurn | ErrorRecord | RoomClosed


class QueueRecorder(abc.ABC):
    """A recorder that puts every record, whatever its kind, in one queue (:meth:`put`)."""

    __slots__ = ()

    @abc.abstractmethod
    def put(self, record: Record) -> None:
        """Enqueue ``record`` (never block, never raise)."""

    def room_opened(self, record: RoomOpened) -> None:
        self.put(record)

    def user_turn(self, record: UserTurn) -> None:
        self.put(record)

    def assistant_turn(self, record: AssistantTurn) -> None:
        self.put(record)

    def error(self, record: ErrorRecord) -> None:
        self.put(record)

    def room_closed(self, record: RoomClosed) -> None:
        self.put(record)


class NullRecorder:
    """Keeps nothing (a room built without a recorder)."""

    __slots__ = ()

    def room_opened(self, record: RoomOpened) -> None:
        pass

    def user_turn(self, record: UserTurn) -> None:
        pass

    def assistant_turn(self, record: AssistantTurn) -> None:
        pass

    def error(self, record: ErrorRecord) -> None:
        pass

    def room_closed(self, record: RoomClosed) -> None:
        pass
