"""A room's upstream: its brain and voice, started lazily, torn down when idle.

The upstream starts on the room's first audio frame or turn (an idle room has
none), runs the brain session and the pump that feeds it from the room's
bounded inbox, and lives until the room's sweeper finds it idle, a provider
fails, or the room ends. The next activity starts a fresh one.

The inbox carries typed messages (:data:`Inbound`): :class:`AudioFrame`,
:class:`TextTurn`, :class:`Commit`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec
import trio

from .. import protocol as p
from ..errors import ProviderError, leaves
from ..providers.base import Brain, Voice
from ..session import Session

if TYPE_CHECKING:
    from .room import Room
    from .turn import RoomTurn

__all__ = [
    "AudioFrame",
    "BrainFactory",
    "Commit",
    "Inbound",
    "TextTurn",
    "Upstream",
    "VoiceFactory",
]

BrainFactory = Callable[[Session], Brain]
VoiceFactory = Callable[[Session], "Voice | None"]

# Room for a few turns beyond the audio bound, so that a turn is not refused
# just because audio filled the queue.
_CONTROL_HEADROOM = 8


class AudioFrame(msgspec.Struct, gc=False):
    """User audio on its way to the brain, at ``rate`` (24 kHz or one the brain takes)."""

    pcm: bytes
    rate: int


class TextTurn(msgspec.Struct, gc=False):
    """A typed user turn, and when it arrived."""

    text: str
    at: float


class Commit(msgspec.Struct, gc=False):
    """The client ended the user's spoken turn (``input_audio_buffer.commit``)."""

    at: float


Inbound = AudioFrame | TextTurn | Commit


class Upstream:
    """The brain and voice of one room, and the inbox that feeds the brain."""

    __slots__ = (
        "_room",
        "_make_brain",
        "_make_voice",
        "_inbox",
        "_scope",
        "_nursery",
        "brain",
        "voice",
        "user_turn_ended_at",
        "user_speech_ended_at",
    )

    def __init__(self, room: Room, make_brain: BrainFactory, make_voice: VoiceFactory) -> None:
        self._room = room
        self._make_brain = make_brain
        self._make_voice = make_voice
        # Made with the first audio or turn (an idle room never needs it).
        self._inbox: (
            tuple[trio.MemorySendChannel[Inbound], trio.MemoryReceiveChannel[Inbound]] | None
        ) = None
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        #: The live brain (None until it is connected, and after it is gone).
        self.brain: Brain | None = None
        #: The voice of the live upstream (None: the brain's own audio).
        self.voice: Voice | None = None
        #: When the user's last turn ended (for time to first audio).
        self.user_turn_ended_at: float | None = None
        #: When the user's speech in it ended, if the brain said (``turn_ended``).
        self.user_speech_ended_at: float | None = None

    @property
    def live(self) -> bool:
        return self.brain is not None

    @property
    def running(self) -> bool:
        return self._scope is not None

    def nursery(self) -> trio.Nursery:
        """Where a turn's voice runs: it lives and dies with the upstream."""
        if self._nursery is None:
            raise RuntimeError("the room's upstream is not running")
        return self._nursery

    def send(self, message: Inbound, *, room_nursery: trio.Nursery) -> bool:
        """Queue a message for the brain, starting the upstream; False when the inbox is full."""
        if self._scope is None:
            self._scope = trio.CancelScope()
            room_nursery.start_soon(self._run, self._scope)
        try:
            self._channel()[0].send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    def audio_backlog(self) -> int:
        return 0 if self._inbox is None else self._inbox[0].statistics().current_buffer_used

    def detach(self) -> None:
        """The room has ended: let go of it (no cycle left: it is freed by refcount)."""
        del self._room

    def stop(self) -> None:
        """Idle teardown: the next activity starts a fresh upstream at once."""
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None

    def _channel(
        self,
    ) -> tuple[trio.MemorySendChannel[Inbound], trio.MemoryReceiveChannel[Inbound]]:
        if self._inbox is None:
            self._inbox = trio.open_memory_channel[Inbound](
                self._room.settings.ws_incoming_audio_max + _CONTROL_HEADROOM
            )
        return self._inbox

    async def _run(self, scope: trio.CancelScope) -> None:
        room = self._room
        brain = self._make_brain(room.session)
        nursery: trio.Nursery | None = None
        try:
            with scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.voice = self._make_voice(room.session)
                    await nursery.start(brain.run, RoomEvents(room))
                    self.brain = brain
                    nursery.start_soon(self._pump, brain)
        except* ProviderError as group:
            for exc in leaves(group, ProviderError) or ():
                await room.error(exc.code, exc.message, fatal=exc.fatal)
        finally:
            # A newer upstream may already run (the idle sweeper let go of this
            # one): clear only what is still this one's.
            if self._nursery is nursery:
                self._nursery = None
                self.voice = None
            if self.brain is brain:
                self.brain = None
            if self._scope is scope:
                self._scope = None
        if self._scope is None:
            # The brain is gone (idle teardown or a provider failure) and the room goes
            # on: a response it left open ends here, so the client is not left waiting.
            await room.end_turn()

    async def _pump(self, brain: Brain) -> None:
        receive = self._channel()[1].receive
        while True:
            match await receive():
                case AudioFrame(pcm, rate):
                    await brain.send_audio(pcm, rate=rate)
                case TextTurn(text, at):
                    self.user_turn_ended_at, self.user_speech_ended_at = at, None
                    await brain.send_text(text)
                case Commit(at):
                    self.user_turn_ended_at = at
                    await brain.commit_audio()


class RoomEvents:
    """The room as a brain sees it (``providers.BrainEvents``)."""

    __slots__ = ("_room",)

    def __init__(self, room: Room) -> None:
        self._room = room

    async def speech_started(self) -> None:
        self._room.minutes.speech_started()
        await self._room.outbox.put(p.InputSpeechStarted())

    async def speech_stopped(self) -> None:
        upstream = self._room.upstream
        upstream.user_turn_ended_at, upstream.user_speech_ended_at = trio.current_time(), None
        await self._room.outbox.put(p.InputSpeechStopped())

    def turn_ended(self, *, speech_ended_at: float | None, at: float | None = None) -> None:
        """The brain decided the user's turn is over (``at``, else now); its speech had
        ended at ``speech_ended_at`` (by the clock). For the reply's stages; a brain that
        does not say so has its turns end at ``speech_stopped`` (or the client's commit)."""
        upstream = self._room.upstream
        upstream.user_turn_ended_at = trio.current_time() if at is None else at
        upstream.user_speech_ended_at = speech_ended_at

    async def transcript(self, text: str, *, final: bool, joined: bool = False) -> None:
        await self._room.transcript(text, final=final, joined=joined)

    async def start_response(self, *, reply: bool = True) -> RoomTurn:
        return await self._room.start_response(reply=reply)

    async def barge_in(self) -> None:
        await self._room.barge_in()

    def text_heard(self, played_ms: int) -> str:
        """The words of the current (cut) response the user heard in ``played_ms``."""
        from .minutes import text_heard

        turn = self._room.turn
        return "" if turn is None else text_heard("".join(turn.text), played_ms, turn)

    def reply_heard_by(self, at: float) -> bool:
        """Whether the current response's audio had begun to play on the client by ``at``
        (the clock): a brain asks before it joins speech to the turn that response answers."""
        turn = self._room.turn
        if turn is None:
            return False
        began = turn.first_sent_at
        if began is None and self._room.upstream.voice is None:
            began = turn.first_text_at  # a room without a voice: its text is what is heard
        return began is not None and began <= at

    async def drop_reply(self) -> None:
        """The user went on before hearing the reply to their turn: drop it, unheard."""
        await self._room.drop_reply()

    def agent_speaking(self) -> bool:
        """Whether the user hears the agent now (a brain that confirms barge-ins asks)."""
        turn = self._room.turn
        return turn is not None and turn.speaking

    async def error(self, code: str, message: str, *, fatal: bool = False) -> None:
        await self._room.error(code, message, fatal=fatal)
