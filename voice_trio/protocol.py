"""The room's wire protocol (DESIGN.md section 2) as msgspec tagged unions.

Client messages are decoded by one module-level :data:`client_decoder`;
server events are encoded by one :data:`encoder`. Decoding is strict
(``forbid_unknown_fields``) so a client finds its bug from the ``error`` event.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from .errors import ProtocolError
from .record import TurnStages

__all__ = [
    "AudioIn",
    "ClientMessage",
    "ClientVadSpeechStart",
    "CommitAudio",
    "Error",
    "InputSpeechStarted",
    "InputSpeechStopped",
    "InputTranscript",
    "Interrupt",
    "Interrupted",
    "Metrics",
    "Ping",
    "Pong",
    "ProtocolError",
    "ResponseDone",
    "ResponseStarted",
    "ResponseTextDelta",
    "ResponseTextDone",
    "SessionConfig",
    "SessionReady",
    "TextIn",
    "decode_client",
    "encode",
]

Int16 = Annotated[int, msgspec.Meta(ge=-32768, le=32767)]


class _In(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    pass


class AudioIn(_In, tag="audio"):
    audio: list[Int16]


class TextIn(_In, tag="text"):
    text: str


class CommitAudio(_In, tag="commit_audio"):
    pass


class Interrupt(_In, tag="interrupt"):
    played_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None


class ClientVadSpeechStart(_In, tag="client_vad_speech_start"):
    #: What the user had heard of the current response then (the client's player).
    played_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None


class SessionConfig(_In, tag="session.config"):
    input_sample_rate: int | None = None
    language: Annotated[str, msgspec.Meta(min_length=2, max_length=16)] | None = None
    voice: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    instructions: Annotated[str, msgspec.Meta(max_length=20_000)] | None = None


class Ping(_In, tag="ping"):
    pass


ClientMessage = (
    AudioIn | TextIn | CommitAudio | Interrupt | ClientVadSpeechStart | SessionConfig | Ping
)

CLIENT_TYPES: frozenset[str] = frozenset(
    str(cls.__struct_config__.tag)
    for cls in (AudioIn, TextIn, CommitAudio, Interrupt, ClientVadSpeechStart, SessionConfig, Ping)
)


class _Out(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class SessionReady(_Out, tag="session.ready", omit_defaults=True):
    session_id: str
    input_sample_rate: int
    output_sample_rate: int
    brain: str
    voice: str
    #: The instance holding the room, with REDIS_URL only (omitted on a single instance).
    instance_id: str | None = None
    #: The conversation was resumed (a room before this one had it); omitted otherwise.
    resumed: bool | None = None
    #: How many recent turns (as heard) it resumed with.
    turns_restored: int | None = None


class InputSpeechStarted(_Out, tag="input.speech_started"):
    pass


class InputSpeechStopped(_Out, tag="input.speech_stopped"):
    pass


class InputTranscript(_Out, tag="input.transcript", omit_defaults=True):
    text: str
    final: bool
    #: This final transcript is of the whole turn the previous final one began (the
    #: user went on before hearing its reply, which was dropped): it replaces it.
    joined: bool = False


class ResponseStarted(_Out, tag="response.started"):
    response_id: str


class ResponseTextDelta(_Out, tag="response.text.delta"):
    response_id: str
    delta: str


class ResponseTextDone(_Out, tag="response.text.done"):
    response_id: str
    text: str


class ResponseDone(_Out, tag="response.done", omit_defaults=True):
    response_id: str
    status: str
    #: A reply's stages (record.TurnStages), once its first audio went out; omitted otherwise.
    stages_ms: TurnStages | None = None


class Interrupted(_Out, tag="interrupted"):
    response_id: str


class Metrics(_Out, tag="metrics"):
    outbox_depth: int
    outbox_dropped: int
    incoming_audio_dropped: int
    stale_audio_dropped: int
    messages_in: int
    messages_out: int
    ttfa_ms: float | None
    upstream_live: bool


class Error(_Out, tag="error"):
    code: str
    message: str
    fatal: bool = False


class Pong(_Out, tag="pong"):
    pass


_client_decoder = msgspec.json.Decoder(ClientMessage)
# The explaining path reads only the top level: values stay raw, never built.
_top_decoder = msgspec.json.Decoder(dict[str, msgspec.Raw])
# Checks that a text is JSON at all, building nothing.
_raw_decoder = msgspec.json.Decoder(msgspec.Raw)
_loose_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()

#: Longest piece of the client's own input quoted back in an error message.
QUOTE_CHARS = 40
#: Longest error message (the decoder's own words included).
MESSAGE_CHARS = 300


def encode(event: _Out) -> str:
    """One server event as the text of a WebSocket frame."""
    return _encoder.encode(event).decode()


def decode_client(text: str) -> ClientMessage:
    """Decode one client text frame, or raise :class:`ProtocolError` saying why.

    Any text at all gives a message or a :class:`ProtocolError`: deep nesting,
    numbers out of range and cut-off JSON included; the error quotes at most
    :data:`QUOTE_CHARS` characters of the client's input.
    """
    try:
        message: ClientMessage = _client_decoder.decode(text)
        return message
    except msgspec.ValidationError as exc:
        raise _explain(text, exc) from None
    except msgspec.DecodeError as exc:
        raise _not_json(exc) from None
    except RecursionError:
        raise _too_deep() from None


def _explain(text: str, exc: msgspec.ValidationError) -> ProtocolError:
    # Only on the error path: look again, at the top level only, to say what is wrong.
    # The strict decoder stops at the first thing it refuses, so the text may also
    # be cut off or malformed further on: that is said first.
    try:
        fields = _top_decoder.decode(text)
    except msgspec.ValidationError:
        # Refused at its first byte: only valid JSON is "not an object" ("[", "1 2" are not).
        try:
            _raw_decoder.decode(text)
        except msgspec.DecodeError as decode_error:
            return _not_json(decode_error)
        except RecursionError:
            return _too_deep()
        return ProtocolError("invalid_message", "a message must be a JSON object")
    except msgspec.DecodeError as decode_error:
        return _not_json(decode_error)
    except RecursionError:
        return _too_deep()
    raw_kind = fields.get("type")
    if raw_kind is None:
        return ProtocolError("invalid_message", "the message has no `type` field")
    kind: Any
    try:
        kind = _loose_decoder.decode(raw_kind)
    except (msgspec.MsgspecError, RecursionError):
        kind = None  # e.g. a number out of range, or nesting too deep
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        known = ", ".join(sorted(CLIENT_TYPES))
        shown = _quote(bytes(raw_kind).decode("utf-8", "replace"))
        return ProtocolError("unknown_type", f"unknown message type {shown}; known: {known}")
    detail = _short(str(exc))
    if kind == "audio" and "`$.audio[" in detail:
        return ProtocolError("invalid_audio", f"JSON audio must be int16 samples: {detail}")
    return ProtocolError("invalid_message", f"bad {kind!r} message: {detail}")


def _not_json(exc: msgspec.DecodeError) -> ProtocolError:
    return ProtocolError("invalid_json", f"not valid JSON: {_short(str(exc))}")


def _too_deep() -> ProtocolError:
    return ProtocolError("invalid_message", "the message is nested too deeply")


def _quote(value: str) -> str:
    """The client's value as it may be quoted back: at most QUOTE_CHARS characters."""
    if len(value) <= QUOTE_CHARS:
        return value
    return f"{value[:QUOTE_CHARS]}... ({len(value)} characters)"


def _short(message: str) -> str:
    """A decoder's message, with any long name or value of the client's cut short."""
    # msgspec quotes names in backticks, e.g. "Object contains unknown field `x`".
    parts = message.split("`")
    for i in range(1, len(parts), 2):
        parts[i] = _quote(parts[i])
    message = "`".join(parts)
    return message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 3] + "..."
