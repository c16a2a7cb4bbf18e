"""A conversation's own state, apart from the connection that carries it.

The app builds one :class:`Session` for each room and hands it to the brain and
voice factories, which read what they need from it (the session id, the
client's options) and keep the agent graph's conversation in it across
upstream restarts. It is also what a resumed conversation restores.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .config import OUTPUT_SAMPLE_RATE, SUPPORTED_INPUT_RATES
from .errors import ProtocolError
from .providers.base import SessionOptions

__all__ = ["Session"]


class Session:
    """One conversation: who it is, what the client chose, what the agent knows."""

    __slots__ = ("session_id", "options", "input_rate", "conversation")

    def __init__(self, session_id: str, options: SessionOptions) -> None:
        self.session_id = session_id
        #: What the client chose with ``session.config`` (or the server's defaults).
        self.options = options
        #: The sample rate of the client's audio.
        self.input_rate = OUTPUT_SAMPLE_RATE
        #: The agent graph's conversation (made by the brain factory that needs one).
        self.conversation: Any = None

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
