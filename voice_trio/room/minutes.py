"""The minutes of a room: what it hands the app's :class:`~voice_trio.record.Recorder`.

The room opening and closing (with its usage for billing), each finished user
turn, each response as the user heard it, each error. Times are wall-clock; a
recorder only enqueues, so none of this waits.
"""

from __future__ import annotations

import bisect
import time
from typing import TYPE_CHECKING, Literal

import trio

from ..config import OUTPUT_SAMPLE_RATE, Settings
from ..record import (
    AssistantTurn,
    ErrorRecord,
    Recorder,
    RoomClosed,
    RoomOpened,
    TurnStages,
    Usage,
    UserTurn,
)

if TYPE_CHECKING:
    from ..metrics import ServerMetrics
    from ..resume import SessionKeeper
    from ..session import Session
    from .turn import RoomTurn

__all__ = ["Minutes", "turn_stages"]

#: The close code recorded when the client closed the room (RFC 6455: no status here).
CLOSED_BY_CLIENT = 1005


class Minutes:
    """A room's records, and the counts its usage is made of."""

    __slots__ = (
        "session", "recorder", "keeper", "opened_at", "audio_in_s", "user_turns", "responses",
        "interrupts", "heard_at", "_settings", "_speech_started_at", "_last_user",
        "_last_user_started",
    )  # fmt: skip

    def __init__(
        self,
        session: Session,
        settings: Settings,
        recorder: Recorder,
        keeper: SessionKeeper | None = None,
    ) -> None:
        #: The conversation: each turn as heard goes into it, and it is kept for resume.
        self.session = session
        self.recorder = recorder
        self.keeper = keeper
        self.opened_at = trio.current_time()
        #: Seconds of the user's audio the room took (at whatever rate it came).
        self.audio_in_s = 0.0
        self.user_turns = self.responses = self.interrupts = 0
        self._settings = settings
        self._speech_started_at: float | None = None
        #: When the last final transcript came (the clock): a reply's ASR stage ends there.
        self.heard_at: float | None = None
        # The last user turn's text and start (a joined final transcript amends it).
        self._last_user: str | None = None
        self._last_user_started: float | None = None

    @property
    def session_id(self) -> str:
        return self.session.session_id

    def _heard(self, role: str, text: str) -> None:
        self.session.hear(role, text)
        if self.keeper is not None:
            self.keeper.mark(self.session)

    def _amend_heard(self, role: str, was: str, now: str) -> None:
        self.session.amend_heard(role, was, now)
        if self.keeper is not None:
            self.keeper.mark(self.session)

    def opened(self) -> None:
        settings = self._settings
        self.recorder.room_opened(
            RoomOpened(
                session_id=self.session_id,
                instance_id=settings.instance_id,
                at=time.time(),
                brain=settings.brain,
                voice=settings.voice,
                resumed=self.session.resumed,
            )
        )

    def closed(self, code: int | None, reason: str, audio_out_bytes: int) -> None:
        settings = self._settings
        duration = round(trio.current_time() - self.opened_at, 3)
        if code is None:  # the client closed it
            code, reason = CLOSED_BY_CLIENT, "closed by the client"
        usage = Usage(
            audio_in_s=round(self.audio_in_s, 3),
            audio_out_s=round(audio_out_bytes / (2 * OUTPUT_SAMPLE_RATE), 3),
            user_turns=self.user_turns,
            responses=self.responses,
            interrupts=self.interrupts,
            brain=settings.brain,
            voice=settings.voice,
            duration_s=duration,
        )
        self.recorder.room_closed(
            RoomClosed(
                session_id=self.session_id,
                instance_id=settings.instance_id,
                at=time.time(),
                duration_s=duration,
                close_code=code,
                reason=reason,
                usage=usage,
            )
        )

    def speech_started(self) -> None:
        self._speech_started_at = trio.current_time()

    def user_turn(
        self, text: str, source: Literal["voice", "text"], *, amends: bool = False
    ) -> None:
        """A user turn's final transcript or typed text; ``amends``: the whole of the last
        one (the user went on before hearing its reply), which this record replaces."""
        if amends and self._last_user is not None:
            self._amend_heard("user", self._last_user, text)
        else:
            amends = False
            self.user_turns += 1
            self._heard("user", text)
        started, self._speech_started_at = self._speech_started_at, None
        if amends:
            started = self._last_user_started  # the whole turn began with its first part
        self._last_user, self._last_user_started = text, started
        now, wall = trio.current_time(), time.time()
        if source == "voice":
            self.heard_at = now
        self.recorder.user_turn(
            UserTurn(
                session_id=self.session_id,
                text=text,
                source=source,
                started_at=None if started is None else wall - (now - started),
                ended_at=wall,
                amends=amends,
            )
        )

    def response(
        self, turn: RoomTurn, heard_ms: int | None = None, *, amends: bool = False
    ) -> None:
        """A response ended, heard whole (``heard_ms`` None) or cut at ``heard_ms``.

        ``amends``: it was recorded as heard whole (done, its audio still playing) and
        has been cut since; this record replaces that one.
        """
        full = "".join(turn.text)
        sent_ms = turn.sent_ms
        if heard_ms is None:  # done: all its audio is queued and goes out (some may not be yet)
            sent_ms = max(sent_ms, turn.queued_bytes * 1000 // (2 * OUTPUT_SAMPLE_RATE))
        heard = sent_ms if heard_ms is None else heard_ms
        text = full if heard_ms is None else text_heard(full, heard, turn)
        if amends:
            self._amend_heard("assistant", full, text)
        else:
            self.responses += 1
            self._heard("assistant", text)
        now, wall = trio.current_time(), time.time()
        self.recorder.assistant_turn(
            AssistantTurn(
                session_id=self.session_id,
                response_id=turn.response_id,
                text=text,
                full_text=full,
                status=turn.status,
                started_at=wall - (now - turn.started_at),
                ended_at=wall,
                audio_ms=sent_ms,
                heard_ms=heard,
                ttfa_ms=turn.ttfa_ms,
                stages=turn.stages,
                amends=amends,
            )
        )

    def error(self, code: str, *, fatal: bool) -> None:
        self.recorder.error(
            ErrorRecord(session_id=self.session_id, code=code, at=time.time(), fatal=fatal)
        )


def turn_stages(turn: RoomTurn, first_audio: float, metrics: ServerMetrics) -> TurnStages | None:
    """A reply's stages as its first audio leaves (``first_audio``), observed in ``metrics``.

    The marks are the end of the user's speech (``speech_end``, when the brain
    says it), the end of the user's turn (``reply_to``), the final transcript
    (``heard_at``) and the first text (``first_text_at``), all by the clock. A
    mark that is missing or out of order (a transcript of an earlier turn, one
    that came after the reply began, text after the audio) leaves its stages
    unknown; the known ones of the chain then still sum to the total.
    """
    end = turn.reply_to
    if end is None:
        return None
    spoken = turn.speech_end
    if spoken is not None and not spoken <= end:
        spoken = None
    heard, text = turn.heard_at, turn.first_text_at
    if heard is not None and not end <= heard <= (text if text is not None else first_audio):
        heard = None
    if text is not None and not end <= text <= first_audio:
        text = None
    seconds = {
        "end_of_turn": None if spoken is None else end - spoken,
        "asr": None if heard is None else heard - end,
        "brain": None if text is None else text - (end if heard is None else heard),
        "tts": None if text is None else first_audio - text,
        "total": first_audio - (end if spoken is None else spoken),
    }
    for stage, value in seconds.items():
        if value is not None:
            metrics.turn_stages[stage].observe(value)
    return TurnStages(
        **{stage: None if v is None else round(v * 1000, 1) for stage, v in seconds.items()}
    )


def text_heard(text: str, heard_ms: int, turn: RoomTurn) -> str:
    """The words of ``text`` the user heard: its share of the audio made so far, by words.

    With a voice's word timestamps (Cartesia), the words whose audio had ended by
    ``heard_ms``; else the audio queued so far speaks a prefix of the text (all of it
    once the voice is done), and the share of it that was played is taken, cut at a
    word boundary.
    """
    if not text or heard_ms <= 0:
        return ""
    ends = turn.word_ends
    if ends:
        # The voice said when each word ends (Cartesia's timestamps): the words ended by
        # then, counted in the text (the voice's words are the text's, space-separated).
        said = text.split()
        heard = bisect.bisect_right(ends, heard_ms)
        if heard_ms <= ends[-1] or len(ends) >= len(said):
            return text if heard >= len(said) else " ".join(said[:heard])
    made_ms = max(turn.queued_bytes * 1000 // (2 * OUTPUT_SAMPLE_RATE), turn.sent_ms, 1)
    share = heard_ms / made_ms
    if share >= 1.0:
        return text
    cut = int(len(text) * share)
    space = text.rfind(" ", 0, cut + 1)
    return text[: space if space > 0 else cut].rstrip()
