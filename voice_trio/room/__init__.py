"""The room runtime: one connection, one nursery (DESIGN.md section 1; docs/architecture.md).

- :mod:`.room`: :class:`Room`, the room's life, its reader and its turns;
- :mod:`.outbox`: the bounded outbox and the writer, the only sender;
- :mod:`.upstream`: the brain and voice, started lazily, torn down when idle;
- :mod:`.turn`: :class:`RoomTurn`, one response and its state;
- :mod:`.limits`: the room's inbound rate limits.
"""

from .outbox import AudioChunk, Outbox
from .room import CloseCode, Room
from .turn import RoomTurn, TurnState
from .upstream import AudioFrame, BrainFactory, Commit, TextTurn, Upstream, VoiceFactory

__all__ = [
    "AudioChunk",
    "AudioFrame",
    "BrainFactory",
    "CloseCode",
    "Commit",
    "Outbox",
    "Room",
    "RoomTurn",
    "TextTurn",
    "TurnState",
    "Upstream",
    "VoiceFactory",
]
