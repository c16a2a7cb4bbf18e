"""Settings: one msgspec Struct, filled from environment variables.

Every field's environment variable is its name in upper case
(``ws_outgoing_max`` <- ``WS_OUTGOING_MAX``). A bad value stops start-up with a
:class:`ConfigError` that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

__all__ = ["ConfigError", "Settings", "SUPPORTED_INPUT_RATES", "OUTPUT_SAMPLE_RATE"]

#: Rates a client may declare in ``session.config``; the room resamples to 24 kHz.
SUPPORTED_INPUT_RATES = (8000, 16000, 24000, 48000)
#: The room's internal and outgoing audio rate (PCM16 mono).
OUTPUT_SAMPLE_RATE = 24000

Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What a server process runs with. Code may build one directly."""

    # Outbound: bounded outbox per room (messages), and the size of audio chunks sent.
    ws_outgoing_max: Positive = 64
    ws_tts_chunk_bytes: Annotated[int, msgspec.Meta(ge=2, multiple_of=2)] = 9600
    # Inbound: bounded audio queue per room (frames); the reader drops when it is full.
    ws_incoming_audio_max: Positive = 50
    # Any WebSocket message above this size closes the room with code 1009.
    ws_max_message_bytes: Positive = 1_048_576
    # One audio frame above this size gets an ``invalid_audio`` error (the room stays).
    ws_max_audio_frame_bytes: Positive = 96_000
    # A text turn longer than this gets a ``text_too_long`` error.
    ws_max_text_chars: Positive = 4000
    # A room whose outbox stays full this long is closed with 1013 (slow consumer).
    slow_client_timeout_s: Seconds = 5.0
    # The brain session is torn down after this long without activity.
    upstream_idle_s: Seconds = 30.0
    # The room closes (1000) after this long without activity.
    session_idle_s: Seconds = 300.0
    max_sessions: Positive = 10_000
    # Per-room ``metrics`` events, while the room is active.
    room_metrics_interval_s: Seconds = 2.0
    # On SIGTERM/SIGINT, how long running turns may go on before rooms close (1001).
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    voice_brain: Literal["echo"] = "echo"
    voice_tts: Literal["none"] = "none"
    voice_language: Annotated[str, msgspec.Meta(min_length=2, max_length=16)] = "vi"

    def __post_init__(self) -> None:
        if self.ws_max_audio_frame_bytes > self.ws_max_message_bytes:
            raise ConfigError("WS_MAX_AUDIO_FRAME_BYTES must not exceed WS_MAX_MESSAGE_BYTES")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every field from ``environ`` (default: ``os.environ``)."""
        env = os.environ if environ is None else environ
        raw: dict[str, str] = {}
        for name in cls.__struct_fields__:
            value = env.get(name.upper())
            if value is not None and value.strip() != "":
                raw[name] = value.strip()
        try:
            return msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise ConfigError(_name_the_variable(str(exc), raw)) from None

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(variable, default, meaning) for every setting, for ``--help``."""
        defaults = cls()
        rows = []
        for name in cls.__struct_fields__:
            rows.append((name.upper(), str(getattr(defaults, name)), _HELP.get(name, "")))
        return rows


def _name_the_variable(message: str, raw: Mapping[str, str]) -> str:
    # msgspec says e.g. "Expected `int` >= 1 - at `$.ws_outgoing_max`".
    if " - at `$." not in message:
        return message
    reason, _, where = message.rpartition(" - at `$.")
    field = where.rstrip("`")
    return f"{field.upper()}={raw.get(field, '')!r} is not valid: {reason}"


_HELP = {
    "ws_outgoing_max": "messages queued per room toward the client",
    "ws_tts_chunk_bytes": "bytes per assistant audio frame (even; 9600 = 200 ms)",
    "ws_incoming_audio_max": "inbound audio frames queued per room before dropping",
    "ws_max_message_bytes": "larger WebSocket messages close the room with 1009",
    "ws_max_audio_frame_bytes": "larger audio frames get an invalid_audio error",
    "ws_max_text_chars": "longer text turns get a text_too_long error",
    "slow_client_timeout_s": "outbox full this long closes the room with 1013",
    "upstream_idle_s": "idle seconds before the brain session is torn down",
    "session_idle_s": "idle seconds before the room closes with 1000",
    "max_sessions": "rooms per process; more are refused with 1013",
    "room_metrics_interval_s": "seconds between per-room metrics events",
    "shutdown_grace_s": "seconds running turns may finish on SIGTERM",
    "voice_brain": "the brain: echo (azure and local are not in this release yet)",
    "voice_tts": "the voice: none (the brain's own audio)",
    "voice_language": "language code passed to the brain and voice",
}
