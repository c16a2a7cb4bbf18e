"""Settings: one msgspec Struct, filled from environment variables.

Every field's environment variable is its name in upper case
(``ws_outgoing_max`` <- ``WS_OUTGOING_MAX``). A bad value stops start-up with a
:class:`ConfigError` that names the variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from .errors import ConfigError

__all__ = [
    "ConfigError",
    "OUTPUT_SAMPLE_RATE",
    "SUPPORTED_INPUT_RATES",
    "Settings",
    "default_db_path",
]

#: Rates a client may declare in ``session.config``; the room resamples to 24 kHz.
SUPPORTED_INPUT_RATES = (8000, 16000, 24000, 48000)
#: The room's internal and outgoing audio rate (PCM16 mono).
OUTPUT_SAMPLE_RATE = 24000

Positive = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


def default_db_path() -> Path:
    """Where the demo receptionist keeps its appointments when AGENT_DB_PATH is empty."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voice-trio" / "appointments.sqlite3"


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
    # A message sent in more frames than this closes the room with 1009.
    ws_max_fragments: Positive = 1024
    # A room whose outbox stays full this long is closed with 1013 (slow consumer).
    slow_client_timeout_s: Seconds = 5.0
    # The brain session is torn down after this long without activity.
    upstream_idle_s: Seconds = 30.0
    # The room closes (1000) after this long without activity.
    session_idle_s: Seconds = 300.0
    max_sessions: Positive = 10_000
    # Open connections (WebSocket, HTTP, half-open heads) from one client address.
    max_connections_per_ip: Positive = 256
    # Open connections of the whole process; 0: the file-descriptor limit less a reserve.
    max_connections: Annotated[int, msgspec.Meta(ge=0)] = 0
    # The listening socket's backlog (the kernel caps it at net.core.somaxconn).
    listen_backlog: Positive = 1024
    # Room tokens (HS256 JWT, voice_trio.security): set, every room needs one.
    auth_secret: str = ""
    # Serve rooms without tokens on a non-loopback address (refused at start otherwise).
    allow_unauthenticated: bool = False
    # Comma-separated browser origins that may open rooms; empty: the request's own host.
    allowed_origins: str = ""
    # Comma-separated addresses or CIDRs of proxies whose X-Forwarded-For is believed.
    trusted_proxies: str = ""
    # Rooms open at once from one client address (429 at the handshake past it).
    max_rooms_per_ip: Positive = 20
    # WebSocket handshakes per client address: sustained per second, and the burst.
    handshake_rate_per_ip: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    handshake_burst_per_ip: Positive = 20
    # Per room: inbound messages a second (sustained; twice that in a burst), and inbound
    # audio as a multiple of real time (twice that in a burst: 8 s of audio at 4x). Over
    # either: the excess is dropped with a `rate_limited` error; over them in this many
    # seconds running: 1008.
    room_message_rate: Annotated[float, msgspec.Meta(gt=0)] = 100.0
    room_audio_rate: Annotated[float, msgspec.Meta(gt=0)] = 4.0
    rate_limit_close_s: Positive = 5
    # Per-room ``metrics`` events, while the room is active.
    room_metrics_interval_s: Seconds = 2.0
    # On SIGTERM/SIGINT, how long running turns may go on before rooms close (1001).
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    # Garbage collector: thresholds set after start-up (when the start-up objects
    # are also frozen out of collections); "off": Python's defaults, nothing frozen.
    gc_thresholds: Annotated[str, msgspec.Meta(pattern=r"^(off|\d+,\d+,\d+)$")] = "50000,20,100"
    # None: azure when the Azure settings are present, else local.
    voice_brain: Literal["local", "azure", "echo"] | None = None
    # None: local with the local brain; cartesia with azure when Cartesia is set, else none.
    voice_tts: Literal["local", "cartesia", "none"] | None = None
    voice_language: Annotated[str, msgspec.Meta(min_length=2, max_length=16)] = "vi"
    # The embedded brain and voice (VOICE_BRAIN=local, VOICE_TTS=local).
    asr_model_dir: str = ""
    asr_workers: Positive = 1
    asr_cpu_threads: Positive = 2
    asr_queue_max: Positive = 32
    asr_max_wait_s: Seconds = 8.0
    asr_partial_interval_s: Seconds = 1.5
    asr_window_pad_s: Annotated[float, msgspec.Meta(ge=0, le=30)] = 5.0
    vad_end_silence_ms: Annotated[int, msgspec.Meta(ge=100, le=5000)] = 500
    tts_voice: Literal["vi", "vi-vn-x-central", "vi-vn-x-south"] = "vi"
    tts_speed_wpm: Annotated[int, msgspec.Meta(ge=80, le=450)] = 175
    agent_db_path: str = ""
    agent_greeting: bool = True
    # Azure OpenAI Realtime (VOICE_BRAIN=azure).
    azure_openai_endpoint: str = ""
    azure_openai_api_key: str = ""
    azure_openai_deployment: str = ""
    # Empty: the GA URL form; a preview version (e.g. 2025-04-01-preview): the preview form.
    azure_openai_api_version: str = ""
    azure_voice: str = "alloy"
    azure_session_max_s: Annotated[float, msgspec.Meta(ge=60, le=1800)] = 1500.0
    # Cartesia streaming TTS (VOICE_TTS=cartesia).
    cartesia_api_key: str = ""
    cartesia_voice_id: str = ""
    cartesia_model: str = "sonic-3"
    cartesia_base_url: str = "https://api.cartesia.ai"
    cartesia_version: str = "2025-04-16"
    cartesia_max_sockets: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    # A provider reply owed and silent this long is given up (the session or context replaced).
    azure_stall_timeout_s: Seconds = 20.0
    cartesia_stall_timeout_s: Seconds = 15.0
    # One circuit breaker per provider per process: it opens after this many failures
    # in a row, for this long (rooms get an error at once), then lets one probe through.
    provider_breaker_threshold: Positive = 5
    provider_breaker_cooldown_s: Seconds = 30.0
    # Many instances (voice_trio.cluster): set, presence and the cross-instance kick
    # run through this Redis; empty: a single instance, nothing is sent anywhere.
    redis_url: str = ""
    # This instance's name in Redis; empty: hostname:port under voice-trio serve
    # (hostname:pid under another server); a worker of --workers appends its pid.
    instance_id: Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[^@\s]*$")] = ""
    redis_prefix: Annotated[str, msgspec.Meta(max_length=100)] = "voice-trio:"
    # Deadline of each Redis call on a room's path; past it the room goes on as on
    # a single instance.
    redis_timeout_s: Seconds = 0.2
    # A room's presence key lives this long unless refreshed; all of an instance's
    # keys are refreshed together this often.
    presence_ttl_s: Annotated[int, msgspec.Meta(ge=2)] = 20
    presence_refresh_s: Seconds = 5.0
    # Phone calls (voice_trio.telephony: Twilio Media Streams on /telephony/twilio).
    twilio_auth_token: Annotated[
        str,
        msgspec.Meta(
            description="Twilio auth token: set, the voice webhook and the stream must carry a "
            "valid X-Twilio-Signature (a secret: never shown)"
        ),
    ] = ""
    twilio_public_url: Annotated[
        str,
        msgspec.Meta(
            pattern=r"^(https?://[^/?#\s]+)?$",
            description="https://host Twilio reaches this server at (signatures, the stream URL "
            "in the TwiML); empty: the request's own host",
        ),
    ] = ""
    twilio_lead_ms: Annotated[
        int,
        msgspec.Meta(
            ge=120, le=2000, description="agent audio sent ahead of real time on a phone line (ms)"
        ),
    ] = 200
    twilio_dtmf_gap_ms: Annotated[
        int,
        msgspec.Meta(
            ge=100,
            le=10_000,
            description="keypad digits end a turn after this long without another (or on #)",
        ),
    ] = 1000

    def __post_init__(self) -> None:
        if self.auth_secret and len(self.auth_secret.encode()) < 32:
            raise ConfigError("AUTH_SECRET must be at least 32 bytes (e.g. `openssl rand -hex 32`)")
        if self.ws_max_audio_frame_bytes > self.ws_max_message_bytes:
            raise ConfigError("WS_MAX_AUDIO_FRAME_BYTES must not exceed WS_MAX_MESSAGE_BYTES")
        if self.presence_refresh_s * 2 > self.presence_ttl_s:
            raise ConfigError("PRESENCE_REFRESH_S must be at most half of PRESENCE_TTL_S")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        if self.brain == "azure":
            self._require(
                "VOICE_BRAIN=azure",
                "azure_openai_endpoint",
                "azure_openai_api_key",
                "azure_openai_deployment",
            )
        if self.voice == "cartesia":
            self._require("VOICE_TTS=cartesia", "cartesia_api_key", "cartesia_voice_id")

    def __repr__(self) -> str:
        # Secrets are never shown, wherever a Settings is printed or logged.
        fields = ", ".join(
            f"{name}={'<set>' if name in SECRET_FIELDS and value else repr(value)}"
            for name in self.__struct_fields__
            if (value := getattr(self, name)) != getattr(_DEFAULTS, name, None)
        )
        return f"Settings({fields})"

    def _require(self, what: str, *names: str) -> None:
        missing = [name.upper() for name in names if not getattr(self, name)]
        if missing:
            raise ConfigError(f"{what} needs {', '.join(missing)}")

    @property
    def brain(self) -> str:
        """The brain in use, with the default resolved."""
        if self.voice_brain is not None:
            return self.voice_brain
        azure = self.azure_openai_endpoint and self.azure_openai_api_key
        return "azure" if azure and self.azure_openai_deployment else "local"

    @property
    def voice(self) -> str:
        """The voice in use, with the default resolved."""
        if self.voice_tts is not None:
            return self.voice_tts
        brain = self.brain
        if brain == "local":
            return "local"
        if brain == "azure" and self.cartesia_api_key and self.cartesia_voice_id:
            return "cartesia"
        return "none"

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


#: Settings whose values are secrets: never printed, logged or shown as a default.
SECRET_FIELDS: frozenset[str] = frozenset(
    # REDIS_URL may hold a password (redis://:password@host).
    ("auth_secret", "azure_openai_api_key", "cartesia_api_key", "redis_url", "twilio_auth_token")
)
_DEFAULTS = Settings()


def _name_the_variable(message: str, raw: Mapping[str, str]) -> str:
    # msgspec says e.g. "Expected `int` >= 1 - at `$.ws_outgoing_max`".
    if " - at `$." not in message:
        return message
    reason, _, where = message.rpartition(" - at `$.")
    field = where.rstrip("`")
    shown = "<secret>" if field in SECRET_FIELDS else repr(raw.get(field, ""))
    return f"{field.upper()}={shown} is not valid: {reason}"


_HELP = {
    "ws_outgoing_max": "messages queued per room toward the client",
    "ws_tts_chunk_bytes": "bytes per assistant audio frame (even; 9600 = 200 ms)",
    "ws_incoming_audio_max": "inbound audio frames queued per room before dropping",
    "ws_max_message_bytes": "larger WebSocket messages close the room with 1009",
    "ws_max_audio_frame_bytes": "larger audio frames get an invalid_audio error",
    "ws_max_text_chars": "longer text turns get a text_too_long error",
    "ws_max_fragments": "a message in more frames than this closes the room with 1009",
    "slow_client_timeout_s": "outbox full this long closes the room with 1013",
    "upstream_idle_s": "idle seconds before the brain session is torn down",
    "session_idle_s": "idle seconds before the room closes with 1000",
    "max_sessions": "rooms per process; more are refused with 1013",
    "max_connections_per_ip": "open connections per client address; more are refused at accept",
    "max_connections": "open connections per process; 0: the fd limit less a reserve",
    "listen_backlog": "the listening socket's backlog (capped by net.core.somaxconn)",
    "auth_secret": "HS256 key (32+ bytes) for room tokens; set: every room needs a token",
    "allow_unauthenticated": "serve rooms without tokens on a non-loopback address (true/false)",
    "allowed_origins": "comma-separated origins that may open rooms; empty: the request's host",
    "trusted_proxies": "comma-separated proxy addresses/CIDRs whose X-Forwarded-For is used",
    "max_rooms_per_ip": "rooms open at once from one client address; more get 429",
    "handshake_rate_per_ip": "WebSocket handshakes per second per client address, sustained",
    "handshake_burst_per_ip": "WebSocket handshakes per client address in a burst",
    "room_message_rate": "inbound messages per second per room (twice that in a burst)",
    "room_audio_rate": "inbound audio per room, in multiples of real time (2 s of it in a burst)",
    "rate_limit_close_s": "seconds running over a room's limits before it closes with 1008",
    "room_metrics_interval_s": "seconds between per-room metrics events",
    "shutdown_grace_s": "seconds running turns may finish on SIGTERM",
    "gc_thresholds": "gen0,gen1,gen2 collector thresholds after start-up; off: defaults",
    "voice_brain": "the brain: local, azure or echo; empty: azure if its settings are set",
    "voice_tts": "the voice: local, cartesia or none; empty: chosen by the brain",
    "voice_language": "language code passed to the brain and voice",
    "asr_model_dir": "where the Whisper model is assembled; empty: ~/.cache/voice-trio",
    "asr_workers": "speech recognitions running at once (worker threads)",
    "asr_cpu_threads": "CPU threads per speech recognition",
    "asr_queue_max": "rooms waiting for recognition before new turns are refused",
    "asr_max_wait_s": "a turn that waited this long for recognition gets an error",
    "asr_partial_interval_s": "seconds of new speech between partial transcripts",
    "asr_window_pad_s": "padding after the speech in Whisper's window; 30: the full window",
    "vad_end_silence_ms": "silence that ends the user's turn (server VAD)",
    "tts_voice": "eSpeak NG voice: vi, vi-vn-x-central or vi-vn-x-south",
    "tts_speed_wpm": "speaking rate of the embedded voice, words per minute",
    "agent_db_path": "SQLite file of the demo receptionist; empty: ~/.local/share/voice-trio",
    "agent_greeting": "the local brain greets when a conversation opens (true/false)",
    "azure_openai_endpoint": "https://<resource>.openai.azure.com (http://host:port: plain ws)",
    "azure_openai_api_key": "the Azure OpenAI key (sent as the api-key header)",
    "azure_openai_deployment": "the realtime model deployment, e.g. gpt-realtime",
    "azure_openai_api_version": "empty: the GA URL; a preview version: the preview URL",
    "azure_voice": "Azure's voice when it speaks itself (VOICE_TTS=none)",
    "azure_session_max_s": "rotate to a fresh Azure session after this long (Azure cuts at 30 min)",
    "cartesia_api_key": "the Cartesia key",
    "cartesia_voice_id": "the Cartesia voice (a UUID)",
    "cartesia_model": "the Cartesia model; sonic-3 speaks Vietnamese",
    "cartesia_base_url": "https://api.cartesia.ai (ws://host:port for a local stand-in)",
    "cartesia_version": "the Cartesia-Version header",
    "cartesia_max_sockets": "Cartesia sockets per process, shared by all rooms",
    "azure_stall_timeout_s": "an Azure reply silent this long is given up; the session replaced",
    "cartesia_stall_timeout_s": "a Cartesia context silent this long fails (tts_stalled)",
    "provider_breaker_threshold": "failures in a row that open a provider's circuit breaker",
    "provider_breaker_cooldown_s": "seconds an open breaker refuses before one probe",
    "redis_url": "redis://host:port/db: presence and cross-instance kick; empty: one instance",
    "instance_id": "this instance's name in Redis; empty: hostname:port (workers add :pid)",
    "redis_prefix": "prefix of every Redis key and channel of this deployment",
    "redis_timeout_s": "deadline of a Redis call on a room's path (then: as one instance)",
    "presence_ttl_s": "seconds a room's presence key lives unless refreshed",
    "presence_refresh_s": "seconds between two refreshes of all of an instance's presence keys",
}
