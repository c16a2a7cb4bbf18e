"""The two provider protocols (DESIGN.md section 3).

A :class:`Brain` is one realtime conversation session. The room feeds it audio
and turns; it answers through the :class:`BrainEvents` the room hands to
:meth:`Brain.run`. A :class:`Voice` turns a response's text into PCM16.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import msgspec
import trio

from ..errors import ProviderError

__all__ = ["Brain", "BrainEvents", "ProviderError", "SessionOptions", "Turn", "Voice"]


class SessionOptions(msgspec.Struct, kw_only=True):
    """What the client chose with ``session.config`` (or the server's defaults)."""

    language: str
    voice: str | None = None
    instructions: str | None = None


class Turn(Protocol):
    """One assistant response, as the room exposes it to a brain or voice."""

    response_id: str
    #: Cancelled on interrupt. The room enters it once, around the voice that
    #: speaks the turn (a CancelScope may be entered only once): a brain keeps a
    #: scope of its own for its work and cancels it in ``cancel_response``.
    scope: trio.CancelScope

    @property
    def closed(self) -> bool: ...

    async def text_delta(self, delta: str) -> None: ...

    async def audio(self, pcm: bytes) -> None:
        """24 kHz PCM16 of this response; dropped once the turn is interrupted."""
        ...

    async def finish(self) -> None:
        """End the response normally (``response.text.done`` and ``response.done``)."""
        ...

    async def abort(self) -> None:
        """End the response as cut short by the provider (``response.done`` interrupted)."""
        ...


class BrainEvents(Protocol):
    """What the room offers the brain it runs."""

    async def speech_started(self) -> None: ...

    async def speech_stopped(self) -> None: ...

    async def transcript(self, text: str, *, final: bool, joined: bool = False) -> None:
        """What the user said; ``joined``: a final transcript of the whole turn the last
        final one began (the user went on before hearing its reply)."""
        ...

    async def barge_in(self) -> None:
        """The brain heard the user start speaking: interrupt the agent if it speaks."""
        ...

    async def start_response(self, *, reply: bool = True) -> Turn:
        """Open a new response (any open one is finished first).

        ``reply=False`` says it does not answer a user turn, so it is left out
        of the time-to-first-audio figures.
        """
        ...

    async def error(self, code: str, message: str, *, fatal: bool = False) -> None: ...


class Brain(Protocol):
    """A realtime conversation session: audio and text in; events out."""

    name: str
    #: The input sample rates it takes as they are. The room resamples a client's
    #: audio at any other rate to 24 kHz, once, before it reaches the brain.
    input_rates: frozenset[int]

    async def run(
        self, events: BrainEvents, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Connect, call ``task_status.started()`` once ready, then serve until cancelled."""
        ...

    async def send_audio(self, pcm: bytes, *, rate: int = 24000) -> None:
        """User audio, PCM16 mono at ``rate`` (24 kHz, or one of ``input_rates``)."""
        ...

    async def commit_audio(self) -> None:
        """The client says the user's spoken turn has ended."""
        ...

    async def send_text(self, text: str) -> None:
        """A typed user turn."""
        ...

    async def cancel_response(self, response_id: str, *, played_ms: int) -> None:
        """The user barged in; ``played_ms`` of the response's audio were heard."""
        ...

    def configure(self, options: SessionOptions) -> None:
        """The client changed language, voice or instructions mid-session."""
        ...


class Voice(Protocol):
    """Text in, PCM16 out, for one response at a time."""

    name: str

    async def speak(
        self, text: trio.MemoryReceiveChannel[str], emit: Callable[[bytes], Awaitable[None]]
    ) -> None:
        """Synthesize the text chunks as they arrive; ``emit`` each 24 kHz PCM16 piece."""
        ...
