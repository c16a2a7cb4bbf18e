"""A conversation's own state, apart from the connection that carries it.

The app builds one :class:`Session` for each room and hands it to the brain and
voice factories, which read what they need from it (the session id, the
client's options) and keep the agent graph's conversation in it across
upstream restarts. It is also what a resumed conversation restores: a room
opened for a session id the app still keeps (voice_trio.resume) gets the
session back, on this instance or another: the agent graph's node and slots,
the recent turns as heard, the client's options.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any

import msgspec

from .config import OUTPUT_SAMPLE_RATE, SUPPORTED_INPUT_RATES
from .errors import ProtocolError
from .providers.base import SessionOptions
from .ratelog import RateLimitedLog

if TYPE_CHECKING:
    from .agent import Graph

__all__ = ["Session"]

log = logging.getLogger("voice_trio.session")
# A graph whose slots hold what cannot be kept would say so after every turn.
_unkeepable = RateLimitedLog(log, level=logging.WARNING)

#: The recent turns a session keeps as heard, for a resumed conversation: at most this
#: many, and this many characters in all.
HEARD_TURNS_MAX = 20
HEARD_CHARS_MAX = 16_000
_SNAPSHOT_VERSION = 1
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class Session:
    """One conversation: who it is, what the client chose, what the agent knows."""

    __slots__ = (
        "session_id",
        "options",
        "input_rate",
        "conversation",
        "heard",
        "_heard_chars",
        "resumed",
    )

    def __init__(self, session_id: str, options: SessionOptions) -> None:
        self.session_id = session_id
        #: What the client chose with ``session.config`` (or the server's defaults).
        self.options = options
        #: The sample rate of the client's audio.
        self.input_rate = OUTPUT_SAMPLE_RATE
        #: The agent graph's conversation (made by the brain factory that needs one).
        self.conversation: Any = None
        #: The recent turns as the user heard them: (role, text), oldest first.
        #: (Made with the first turn: an idle room's session holds none.)
        self.heard: collections.deque[tuple[str, str]] | None = None
        self._heard_chars = 0
        #: Restored from a room before this one (or another instance's).
        self.resumed = False

    def hear(self, role: str, text: str) -> None:
        """A turn as heard (the user's, or a response cut where it was interrupted)."""
        if not text:
            return
        heard = self.heard
        if heard is None:
            heard = self.heard = collections.deque()
        heard.append((role, text))
        self._heard_chars += len(text)
        while len(heard) > HEARD_TURNS_MAX or self._heard_chars > HEARD_CHARS_MAX:
            self._heard_chars -= len(heard.popleft()[1])

    def amend_heard(self, role: str, was: str, now: str) -> None:
        """The latest turn of ``role`` heard as ``was`` was heard only as ``now`` (cut)."""
        heard = self.heard
        if heard is None:
            return
        for i in range(len(heard) - 1, -1, -1):
            if heard[i] == (role, was):
                self._heard_chars -= len(was) - len(now)
                if now:
                    heard[i] = (role, now)
                else:
                    del heard[i]
                while self._heard_chars > HEARD_CHARS_MAX:  # a joined turn is longer
                    self._heard_chars -= len(heard.popleft()[1])
                return

    def snapshot(self) -> bytes | None:
        """What resume keeps of it (JSON), or None when its conversation cannot be kept."""
        conversation = None
        if self.conversation is not None:
            try:
                conversation = self.conversation.snapshot()
            except (AttributeError, TypeError) as exc:
                _unkeepable.log("snapshot", "a session cannot be kept for resume: %s", exc)
                return None
        return _encoder.encode(
            {
                "v": _SNAPSHOT_VERSION,
                "options": msgspec.structs.asdict(self.options),
                "input_rate": self.input_rate,
                "heard": list(self.heard or ()),
                "conversation": conversation,
            }
        )

    @classmethod
    def restore(cls, session_id: str, data: bytes, graph: Graph | None) -> Session | None:
        """The session a snapshot describes (None when it is not one this version reads)."""
        from .agent import Conversation

        try:
            state = _decoder.decode(data)
            if not isinstance(state, dict) or state.get("v") != _SNAPSHOT_VERSION:
                return None
            session = cls(session_id, msgspec.convert(state["options"], SessionOptions))
            rate = state.get("input_rate")
            if rate in SUPPORTED_INPUT_RATES:
                session.input_rate = rate
            for role, text in state.get("heard", []):
                session.hear(str(role), str(text))
            kept = state.get("conversation")
            if kept is not None and graph is not None:
                session.conversation = Conversation.restore(
                    graph, session_id=session_id, state=kept
                )
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, TypeError, ValueError):
            log.warning("session %s: its kept state is unreadable; starting afresh", session_id)
            return None
        session.resumed = True
        return session

    def configure(
        self,
        *,
        input_sample_rate: int | None = None,
        language: str | None = None,
        voice: str | None = None,
        instructions: str | None = None,
    ) -> bool:
        """Apply a ``session.config``; True when the brain's options changed.

        Raises :class:`ProtocolError` (and changes nothing) for a rate it cannot take.
        """
        if input_sample_rate is not None:
            if input_sample_rate not in SUPPORTED_INPUT_RATES:
                rates = ", ".join(str(r) for r in SUPPORTED_INPUT_RATES)
                raise ProtocolError(
                    "unsupported_sample_rate",
                    f"input_sample_rate {input_sample_rate} is not supported; use one of {rates}",
                )
            self.input_rate = input_sample_rate
        changes = {
            k: v
            for k, v in (("language", language), ("voice", voice), ("instructions", instructions))
            if v is not None
        }
        if changes:
            self.options = msgspec.structs.replace(self.options, **changes)
        return bool(changes)
