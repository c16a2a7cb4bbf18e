"""Settings: one msgspec Struct, filled from environment variables.

Every field's environment variable is its name in upper case
(``ws_outgoing_max`` <- ``WS_OUTGOING_MAX``). A bad value stops start-up with a
:class:`ConfigError` that names the variable.

Each setting is described once, in its field's ``msgspec.Meta(description=...)``:
``voice-trio serve --help``, ``voice-trio settings`` and the README's
configuration table (``voice-trio settings --markdown``) are all made from it.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .errors import ConfigError

__all__ = [
    "ConfigError",
    "OUTPUT_SAMPLE_RATE",
    "SECRET_FIELDS",
    "SUPPORTED_INPUT_RATES",
    "Setting",
    "Settings",
    "default_db_path",
    "markdown_table",
]

#: Rates a client may declare in ``session.config``; the room resamples to 24 kHz.
SUPPORTED_INPUT_RATES = (8000, 16000, 24000, 48000)
#: The room's internal and outgoing audio rate (PCM16 mono).
OUTPUT_SAMPLE_RATE = 24000


def data_dir() -> Path:
    """Where voice-trio keeps its files by default: ``$XDG_DATA_HOME/voice-trio``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voice-trio"


def default_db_path() -> Path:
    """Where the demo receptionist keeps its appointments when AGENT_DB_PATH is empty."""
    return data_dir() / "appointments.sqlite3"


class Settings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What a server process runs with. Code may build one directly."""

    # The WebSocket: bounded queues and message limits.
    ws_outgoing_max: Annotated[
        int, Meta(ge=1, description="messages queued per room toward the client (the outbox bound)")
    ] = 64
    ws_tts_chunk_bytes: Annotated[
        int,
        Meta(
            ge=2,
            multiple_of=2,
            description="bytes per assistant audio frame (even; 9600 = 200 ms at 24 kHz)",
        ),
    ] = 9600
    ws_incoming_audio_max: Annotated[
        int,
        Meta(
            ge=1, description="inbound audio frames queued per room; more are dropped and counted"
        ),
    ] = 50
    ws_max_message_bytes: Annotated[
        int, Meta(ge=1, description="a larger WebSocket message closes the room with 1009")
    ] = 1_048_576
    ws_max_audio_frame_bytes: Annotated[
        int,
        Meta(
            ge=1,
            description="a larger audio frame gets an `invalid_audio` error (the room stays);"
            " at most `WS_MAX_MESSAGE_BYTES`",
        ),
    ] = 96_000
    ws_max_text_chars: Annotated[
        int, Meta(ge=1, description="a longer text turn gets a `text_too_long` error")
    ] = 4000
    ws_max_fragments: Annotated[
        int,
        Meta(ge=1, description="a message sent in more frames than this closes the room with 1009"),
    ] = 1024
    slow_client_timeout_s: Annotated[
        float,
        Meta(
            gt=0, description="an outbox full this long closes the room with 1013 (slow consumer)"
        ),
    ] = 5.0
    upstream_idle_s: Annotated[
        float, Meta(gt=0, description="idle seconds before the room's brain session is torn down")
    ] = 30.0
    session_idle_s: Annotated[
        float, Meta(gt=0, description="idle seconds before the room closes with 1000")
    ] = 300.0
    max_sessions: Annotated[
        int, Meta(ge=1, description="rooms per process; more are refused with 1013")
    ] = 10_000

    # The front door: connections, tokens, origins, rates.
    max_connections_per_ip: Annotated[
        int,
        Meta(
            ge=1,
            description="open connections (rooms, HTTP, heads still arriving) from one client"
            " address (IPv6: its /64); more are closed at accept",
        ),
    ] = 256
    max_connections: Annotated[
        int,
        Meta(
            ge=0,
            description="open connections per process; 0: the open-file limit (raised to its "
            "hard limit at start) less 256, less one per room with the azure "
            "brain",
        ),
    ] = 0
    listen_backlog: Annotated[
        int,
        Meta(
            ge=1,
            description="the listening socket's backlog (the kernel caps it at "
            "`net.core.somaxconn`)",
        ),
    ] = 1024
    auth_secret: Annotated[
        str,
        Meta(
            description="the HS256 key (at least 32 bytes, e.g. `openssl rand -hex 32`) that "
            'signs room tokens; set: every room needs a token (see "Security"; '
            "a secret: never shown)"
        ),
    ] = ""
    allow_unauthenticated: Annotated[
        bool,
        Meta(
            description="serve rooms without tokens on a non-loopback address (else `serve` "
            "refuses to start)"
        ),
    ] = False
    allowed_origins: Annotated[
        str,
        Meta(
            description="comma-separated browser origins that may open rooms; empty: a page's"
            " `Origin` must name the request's own host"
        ),
    ] = ""
    trusted_proxies: Annotated[
        str,
        Meta(
            description="comma-separated addresses or CIDRs of proxies whose `X-Forwarded-"
            "For` / `X-Real-IP` name the client (and which are not capped per "
            "address at accept)"
        ),
    ] = ""
    max_rooms_per_ip: Annotated[
        int,
        Meta(
            ge=1,
            description="rooms open at once from one client address; more get HTTP 429 at the"
            " handshake",
        ),
    ] = 20
    handshake_rate_per_ip: Annotated[
        float,
        Meta(
            gt=0,
            description="WebSocket handshakes a second per client address, sustained (a token"
            " bucket)",
        ),
    ] = 2.0
    handshake_burst_per_ip: Annotated[
        int,
        Meta(ge=1, description="WebSocket handshakes per client address in a burst; more get 429"),
    ] = 20
    room_message_rate: Annotated[
        float,
        Meta(
            gt=0,
            description="inbound messages a second per room, sustained (twice that in a "
            "burst); the excess is dropped with a `rate_limited` error",
        ),
    ] = 100.0
    room_audio_rate: Annotated[
        float,
        Meta(
            gt=0,
            description="inbound audio per room, in multiples of real time (twice that in a "
            "burst); the excess is dropped with a `rate_limited` error",
        ),
    ] = 4.0
    rate_limit_close_s: Annotated[
        int,
        Meta(
            ge=1, description="seconds running over a room's limits before it is closed with 1008"
        ),
    ] = 5

    # The process: metrics, shutdown, memory, logs.
    room_metrics_interval_s: Annotated[
        float,
        Meta(gt=0, description="seconds between a room's `metrics` events while it is active"),
    ] = 2.0
    shutdown_grace_s: Annotated[
        float,
        Meta(
            ge=0,
            description="seconds running turns may go on after SIGTERM or SIGINT before rooms"
            " close with 1001",
        ),
    ] = 10.0
    gc_thresholds: Annotated[
        str,
        Meta(
            pattern=r"^(off|\d+,\d+,\d+)$",
            description="the garbage collector's thresholds, set after start-up, when the "
            "start-up objects are frozen; after that everything tracked is frozen"
            " once a second (closed rooms are freed by reference counting), so a "
            "collection walks only objects under a second old; a backstop runs "
            "one full collection, with a warning, if frozen objects outgrow the "
            "rooms (`off`: Python's defaults, nothing frozen)",
        ),
    ] = "50000,20,100"
    log_format: Annotated[
        Literal["json", "text"] | None,
        Meta(
            description="`json`: one JSON object a line; `text`: readable lines; empty: "
            "`text` when the log stream (stderr) is a terminal, else `json` (see "
            '"Logs")'
        ),
    ] = None
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"],
        Meta(
            description="the level of voice-trio's own loggers (other libraries log warnings "
            "and worse)"
        ),
    ] = "info"

    # The brain and the voice.
    voice_brain: Annotated[
        Literal["local", "azure", "echo"] | None,
        Meta(
            description="the brain: `local` (embedded, offline), `azure` (Azure OpenAI "
            "Realtime) or `echo` (diagnostic); empty: `azure` when the three "
            "`AZURE_OPENAI_*` settings are set, else `local`"
        ),
    ] = None
    voice_tts: Annotated[
        Literal["local", "cartesia", "none"] | None,
        Meta(
            description="the voice: `local` (eSpeak NG), `cartesia` or `none` (the brain's "
            "own audio); empty: `local` with the local brain, `cartesia` with "
            "azure when the Cartesia key and voice are set, else `none`"
        ),
    ] = None
    voice_language: Annotated[
        str, Meta(min_length=2, max_length=16, description="language passed to the brain and voice")
    ] = "vi"

    # The embedded brain and voice (VOICE_BRAIN=local, VOICE_TTS=local).
    asr_model_dir: Annotated[
        str,
        Meta(
            description="where the Whisper model is assembled from its packages (once); "
            "empty: `~/.cache/voice-trio/whisper-base` (under `XDG_CACHE_HOME` "
            "when set)"
        ),
    ] = ""
    asr_workers: Annotated[
        int, Meta(ge=1, description="speech recognitions running at once (worker threads)")
    ] = 1
    asr_cpu_threads: Annotated[int, Meta(ge=1, description="CPU threads per recognition")] = 2
    asr_queue_max: Annotated[
        int,
        Meta(
            ge=1, description="rooms waiting for recognition before a turn gets an `asr_busy` error"
        ),
    ] = 32
    asr_max_wait_s: Annotated[
        float,
        Meta(
            gt=0,
            description="a turn that waited this long for recognition gets an `asr_timeout` error",
        ),
    ] = 8.0
    asr_partial_interval_s: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds of new speech between partial transcripts (after 2 s of speech)",
        ),
    ] = 1.5
    asr_window_pad_s: Annotated[
        float,
        Meta(
            ge=0,
            le=30,
            description="padding after the speech in Whisper's encoder window (30: Whisper's "
            "full 30 s window, ~4x slower)",
        ),
    ] = 5.0
    vad_end_silence_ms: Annotated[
        int, Meta(ge=100, le=5000, description="silence that ends the user's turn (server VAD)")
    ] = 500
    tts_voice: Annotated[
        Literal["vi", "vi-vn-x-central", "vi-vn-x-south"],
        Meta(
            description="eSpeak NG voice: `vi`, `vi-vn-x-central`, `vi-vn-x-south` (a room "
            "may pick one with `session.config` `voice`)"
        ),
    ] = "vi"
    tts_speed_wpm: Annotated[
        int,
        Meta(ge=80, le=450, description="speaking rate of the embedded voice, words per minute"),
    ] = 175
    agent_db_path: Annotated[
        str,
        Meta(
            description="the demo receptionist's SQLite file; empty: `~/.local/share/voice-"
            "trio/appointments.sqlite3` (under `XDG_DATA_HOME` when set)"
        ),
    ] = ""
    agent_greeting: Annotated[
        bool, Meta(description="the local brain greets when a conversation opens")
    ] = True

    # Azure OpenAI Realtime (VOICE_BRAIN=azure).
    azure_openai_endpoint: Annotated[
        str,
        Meta(
            description="`https://<resource>.openai.azure.com`; `http://host:port` talks "
            "plain ws (a local proxy or stand-in)"
        ),
    ] = ""
    azure_openai_api_key: Annotated[
        str,
        Meta(
            description="the Azure OpenAI key, sent as the `api-key` header (a secret: never shown)"
        ),
    ] = ""
    azure_openai_deployment: Annotated[
        str, Meta(description="the realtime model deployment, e.g. `gpt-realtime`")
    ] = ""
    azure_openai_api_version: Annotated[
        str,
        Meta(
            description="empty: the GA URL (`/openai/v1/realtime?model=`); a preview version "
            "(e.g. `2025-04-01-preview`): the preview URL"
        ),
    ] = ""
    azure_voice: Annotated[
        str,
        Meta(description="Azure's own voice, when no TTS voice is configured (`VOICE_TTS=none`)"),
    ] = "alloy"
    azure_session_max_s: Annotated[
        float,
        Meta(
            ge=60,
            le=1800,
            description="a room moves to a fresh Azure session after this long (Azure ends "
            "sessions at 30 min)",
        ),
    ] = 1500.0

    # Cartesia streaming TTS (VOICE_TTS=cartesia).
    cartesia_api_key: Annotated[
        str, Meta(description="the Cartesia key (a secret: never shown)")
    ] = ""
    cartesia_voice_id: Annotated[
        str,
        Meta(
            description="the Cartesia voice (a UUID; `voice-trio voices` lists those that "
            "speak Vietnamese)"
        ),
    ] = ""
    cartesia_model: Annotated[
        str, Meta(description="the Cartesia model; `sonic-3` and `sonic-3.5` speak Vietnamese")
    ] = "sonic-3"
    cartesia_base_url: Annotated[
        str, Meta(description="Cartesia's address; `ws://host:port` for a local stand-in")
    ] = "https://api.cartesia.ai"
    cartesia_version: Annotated[str, Meta(description="the `Cartesia-Version` header")] = (
        "2025-04-16"
    )
    cartesia_max_sockets: Annotated[
        int,
        Meta(
            ge=1, le=64, description="Cartesia sockets per process; all rooms' contexts share them"
        ),
    ] = 4

    # Providers' failures.
    azure_stall_timeout_s: Annotated[
        float,
        Meta(
            gt=0,
            description="an Azure session owed a reply and silent this long is given up "
            "(`upstream_stalled`) and replaced",
        ),
    ] = 20.0
    cartesia_stall_timeout_s: Annotated[
        float,
        Meta(
            gt=0,
            description="a Cartesia context owed audio and silent this long fails (`tts_stalled`)",
        ),
    ] = 15.0
    provider_breaker_threshold: Annotated[
        int,
        Meta(
            ge=1,
            description="failures in a row that open a provider's circuit breaker (one per "
            "provider per process)",
        ),
    ] = 5
    provider_breaker_cooldown_s: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds an open breaker refuses at once, before it lets one probe through",
        ),
    ] = 30.0

    # Many instances (voice_trio.cluster).
    redis_url: Annotated[
        str,
        Meta(
            description="`redis://host:port/db`: presence of sessions and the cross-instance "
            'kick through this Redis (see "Many instances"); empty: a single '
            "instance, nothing sent anywhere (may hold a password: never shown)"
        ),
    ] = ""
    instance_id: Annotated[
        str,
        Meta(
            max_length=200,
            pattern=r"^[^@\s]*$",
            description="this instance's name in Redis, `/healthz`, `session.ready` and every"
            " log line; empty: `hostname:port` under `voice-trio serve` "
            "(`hostname:pid` under another ASGI server); a worker of `--workers` "
            "appends `:pid`",
        ),
    ] = ""
    redis_prefix: Annotated[
        str,
        Meta(
            max_length=100, description="prefix of every Redis key and channel of this deployment"
        ),
    ] = "voice-trio:"
    redis_timeout_s: Annotated[
        float,
        Meta(
            gt=0,
            description="deadline of a Redis call on a room's path; past it the room goes on "
            "as on a single instance (counted)",
        ),
    ] = 0.2
    presence_ttl_s: Annotated[
        int, Meta(ge=2, description="seconds a room's presence key lives unless refreshed")
    ] = 20
    presence_refresh_s: Annotated[
        float,
        Meta(
            gt=0,
            description="seconds between two refreshes of all of an instance's presence keys "
            "(at most half of `PRESENCE_TTL_S`)",
        ),
    ] = 5.0
    session_resume_ttl_s: Annotated[
        float,
        Meta(
            ge=0,
            description="seconds a conversation is kept after each turn, so that a room opened "
            "again for its session id resumes it (on any instance with `REDIS_URL`); 0: never",
        ),
    ] = 600.0
    session_store_max_bytes: Annotated[
        int,
        Meta(
            ge=65_536,
            description="bytes of conversations this process keeps for resume (oldest dropped "
            "first)",
        ),
    ] = 67_108_864
    # Out of band (issue #14: voice_trio.transcripts, voice_trio.jobs, voice_trio.analytics).
    transcripts: Annotated[
        bool,
        Meta(description="keep every room's transcript in TRANSCRIPT_DB_PATH (true/false)"),
    ] = True
    transcript_db_path: Annotated[
        str,
        Meta(
            description="SQLite file of transcripts, summaries and usage; "
            "empty: ~/.local/share/voice-trio"
        ),
    ] = ""
    transcript_queue_bytes: Annotated[
        int,
        Meta(ge=65_536, description="bytes of records waiting for the transcript writer"),
    ] = 8_388_608
    celery_broker_url: Annotated[
        str,
        Meta(
            description="redis://host:port/db: summaries and usage as Celery jobs; "
            "empty: written by the server"
        ),
    ] = ""
    jobs_queue_bytes: Annotated[
        int, Meta(ge=4096, description="bytes of jobs waiting for the broker")
    ] = 1_048_576
    jobs_timeout_s: Annotated[
        float,
        Meta(gt=0, description="seconds a broker call may take before its jobs drop"),
    ] = 2.0
    azure_openai_chat_deployment: Annotated[
        str,
        Meta(description="an Azure chat deployment that writes Vietnamese summaries (the worker)"),
    ] = ""
    azure_openai_chat_api_version: Annotated[
        str, Meta(description="api-version of the chat completions calls")
    ] = "2024-10-21"
    analytics_sink: Annotated[
        Literal["none", "redis", "kafka"],
        Meta(description="room and turn events to: none, redis (a stream) or kafka"),
    ] = "none"
    analytics_redis_url: Annotated[
        str, Meta(description="the events' Redis (ANALYTICS_SINK=redis); empty: REDIS_URL")
    ] = ""
    analytics_stream: Annotated[
        str, Meta(min_length=1, description="the Redis stream of the events")
    ] = "voice-trio:events"
    analytics_stream_maxlen: Annotated[
        int, Meta(ge=1000, description="events the Redis stream keeps (MAXLEN ~)")
    ] = 1_000_000
    kafka_bootstrap_servers: Annotated[
        str, Meta(description="host:port,... of Kafka (ANALYTICS_SINK=kafka)")
    ] = ""
    kafka_topic: Annotated[str, Meta(min_length=1, description="the Kafka topic of the events")] = (
        "voice-trio.events"
    )
    analytics_queue_bytes: Annotated[
        int, Meta(ge=4096, description="bytes of events waiting for the sink")
    ] = 4_194_304
    analytics_timeout_s: Annotated[
        float,
        Meta(gt=0, description="seconds an event may take to reach the sink, then dropped"),
    ] = 5.0
    agent_graph: Annotated[
        str,
        Meta(
            pattern=r"^([A-Za-z_][\w.]*:[A-Za-z_][\w.]*)?$",
            description="the agent graph: `module:factory`, a function of no arguments that "
            "returns a `voice_trio.agent.Graph` (imported from the current directory or the "
            "installed packages); empty: the demo receptionist",
        ),
    ] = ""
    # Phone calls (voice_trio.telephony: Twilio Media Streams on /telephony/twilio).
    twilio_auth_token: Annotated[
        str,
        Meta(
            description="Twilio auth token: set, the voice webhook and the stream must carry a "
            "valid X-Twilio-Signature (a secret: never shown)"
        ),
    ] = ""
    twilio_public_url: Annotated[
        str,
        Meta(
            pattern=r"^(https?://[^/?#\s]+)?$",
            description="https://host Twilio reaches this server at (signatures, the stream URL "
            "in the TwiML); empty: the request's own host",
        ),
    ] = ""
    twilio_lead_ms: Annotated[
        int,
        Meta(
            ge=120, le=2000, description="agent audio sent ahead of real time on a phone line (ms)"
        ),
    ] = 200
    twilio_dtmf_gap_ms: Annotated[
        int,
        Meta(
            ge=100,
            le=10_000,
            description="keypad digits end a turn after this long without another (or on #)",
        ),
    ] = 1000
    vad_max_end_silence_ms: Annotated[
        int,
        Meta(
            ge=100,
            le=10000,
            description="the longest pause the embedded brain waits after an unfinished phrase "
            '(a trailing "và", "nhưng", a comma) before it ends the user\'s turn',
        ),
    ] = 1500

    def __post_init__(self) -> None:
        if self.auth_secret and len(self.auth_secret.encode()) < 32:
            raise ConfigError("AUTH_SECRET must be at least 32 bytes (e.g. `openssl rand -hex 32`)")
        if self.ws_max_audio_frame_bytes > self.ws_max_message_bytes:
            raise ConfigError("WS_MAX_AUDIO_FRAME_BYTES must not exceed WS_MAX_MESSAGE_BYTES")
        if self.presence_refresh_s * 2 > self.presence_ttl_s:
            raise ConfigError("PRESENCE_REFRESH_S must be at most half of PRESENCE_TTL_S")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
        if self.celery_broker_url and not self.transcripts:
            raise ConfigError("CELERY_BROKER_URL needs TRANSCRIPTS=true (the jobs read them)")
        if self.analytics_sink == "redis" and not (self.analytics_redis_url or self.redis_url):
            raise ConfigError("ANALYTICS_SINK=redis needs ANALYTICS_REDIS_URL or REDIS_URL")
        if self.azure_openai_chat_deployment:
            self._require(
                "AZURE_OPENAI_CHAT_DEPLOYMENT", "azure_openai_endpoint", "azure_openai_api_key"
            )
        if self.analytics_sink == "kafka":
            self._require("ANALYTICS_SINK=kafka", "kafka_bootstrap_servers")
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
    def describe(cls) -> list[Setting]:
        """Every setting with its default and its description, in field order."""
        hints = typing.get_type_hints(cls, include_extras=True)
        rows = []
        for name in cls.__struct_fields__:
            metas = [m for m in getattr(hints[name], "__metadata__", ()) if isinstance(m, Meta)]
            description = " ".join(m.description for m in metas if m.description)
            rows.append(Setting(name, getattr(_DEFAULTS, name), description))
        return rows

    def shown(self, name: str) -> str:
        """The value of setting ``name`` as it may be printed: a secret only as set or not."""
        value = getattr(self, name)
        if name in SECRET_FIELDS:
            return "(set)" if value else "(not set)"
        return _plain(value)


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of :meth:`Settings.describe`."""

    name: str
    default: Any
    description: str

    @property
    def variable(self) -> str:
        return self.name.upper()

    @property
    def secret(self) -> bool:
        return self.name in SECRET_FIELDS

    @property
    def shown_default(self) -> str:
        """The default as the README writes it: code in backticks, empty as nothing."""
        text = _plain(self.default)
        return f"`{text}`" if isinstance(self.default, str) and text else text


def _plain(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def markdown_table() -> str:
    """The README's configuration table (``voice-trio settings --markdown``)."""
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for row in Settings.describe():
        default = f" {row.shown_default} " if row.shown_default else " "
        lines.append(f"| `{row.variable}` |{default}| {row.description} |")
    return "\n".join(lines) + "\n"


#: Settings whose values are secrets: never printed, logged or shown as a default.
SECRET_FIELDS: frozenset[str] = frozenset(
    # REDIS_URL may hold a password (redis://:password@host).
    ("auth_secret", "azure_openai_api_key", "cartesia_api_key", "redis_url", "twilio_auth_token")
    # Broker and stream URLs may hold passwords too.
    + ("celery_broker_url", "analytics_redis_url")
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
