"""Azure OpenAI Realtime on the wire: the events the brain sends and reads, as pure functions.

No I/O and no state here. ``azure_realtime.py`` sends the text frames these
functions return and hands :func:`decode_server_event` what it receives; the
tests check both directions against the openai package's own pydantic types
(``tests/test_azure_wire.py``). The facts come from ../shared/PROVIDERS.md.

Two dialects of the API: GA (``/openai/v1/realtime``) and preview
(``/openai/realtime?api-version=``). They differ in ``session.update`` (GA
nests the audio settings under ``session.audio`` and takes one output modality;
preview is flat), in the assistant content type of a restored item
(``output_text`` / ``text``) and in the names of the response delta events,
which :func:`decode_server_event` maps to the same types.

Client events are msgspec Structs in one tagged union, encoded by one module
encoder; server events decode into the tagged union :data:`ServerEvent`, and
an event of any other type into :class:`IgnoredEvent`, so that a new event
Azure adds is not an error. A known event whose fields do not fit is.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from ..errors import ProviderError

__all__ = [
    "COMMIT",
    "AudioDeltaEvent",
    "CommittedEvent",
    "Dialect",
    "ErrorDetails",
    "ErrorEvent",
    "IgnoredEvent",
    "Output",
    "OutputItem",
    "Response",
    "ResponseCreatedEvent",
    "ResponseDoneEvent",
    "ServerEvent",
    "SessionConfig",
    "SpeechStartedEvent",
    "SpeechStoppedEvent",
    "TextDeltaEvent",
    "TranscriptionCompletedEvent",
    "TranscriptionDeltaEvent",
    "TranscriptionFailedEvent",
    "TurnDetection",
    "append",
    "decode_server_event",
    "function_call_output",
    "history_item",
    "response_cancel",
    "response_create",
    "session_update",
    "heard_item",
    "item_delete",
    "truncate",
    "user_text",
]

Dialect = Literal["ga", "preview"]
Output = Literal["audio", "text"]
TurnDetection = Literal["server_vad", "semantic_vad", "none"]

#: PCM16 mono at 24 kHz both ways (``pcm16`` in preview, ``audio/pcm`` in GA).
SAMPLE_RATE = 24000


# ------------------------------------------------------------ client events


class _ClientEvent(msgspec.Struct, tag_field="type"):
    """A client event; ``type`` is its tag."""


class _Append(_ClientEvent, tag="input_audio_buffer.append"):
    audio: bytes  # msgspec writes bytes as base64


class _Commit(_ClientEvent, tag="input_audio_buffer.commit"):
    pass


class _TextPart(msgspec.Struct):
    type: Literal["input_text", "output_text", "text"]
    text: str


class _Message(msgspec.Struct, tag_field="type", tag="message"):
    role: Literal["user", "assistant", "system"]
    content: list[_TextPart]


class _FunctionCallOutput(msgspec.Struct, tag_field="type", tag="function_call_output"):
    call_id: str
    output: str


class _ItemCreate(_ClientEvent, tag="conversation.item.create", omit_defaults=True):
    item: _Message | _FunctionCallOutput
    #: Where it goes (after this item); none: at the end.
    previous_item_id: str | None = None


class _ItemDelete(_ClientEvent, tag="conversation.item.delete"):
    item_id: str


class _ResponseCreate(_ClientEvent, tag="response.create"):
    #: Ours, so that an ``error`` about this request can be told apart.
    event_id: str


class _ResponseCancel(_ClientEvent, tag="response.cancel"):
    response_id: str


class _Truncate(_ClientEvent, tag="conversation.item.truncate"):
    item_id: str
    content_index: int  # all three are required; 0 is the audio part
    audio_end_ms: int


# session.update, GA: {type: realtime, output_modalities, instructions, audio: {input, output}, ...}


class _Pcm(msgspec.Struct):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: int = SAMPLE_RATE


class _Transcription(msgspec.Struct, omit_defaults=True):
    model: str
    language: str
    prompt: str | None = None  # the agent graph's recognition hints for this step


class _Detection(msgspec.Struct):
    type: Literal["server_vad", "semantic_vad"]
    create_response: bool = True
    interrupt_response: bool = True


class _GaInput(msgspec.Struct):
    format: _Pcm
    transcription: _Transcription
    turn_detection: _Detection | None  # null turns server VAD off


class _GaOutput(msgspec.Struct, omit_defaults=True):
    format: _Pcm
    voice: str | None = None  # only before the session has spoken


class _GaAudio(msgspec.Struct, omit_defaults=True):
    input: _GaInput
    output: _GaOutput | None = None  # text out: no audio output settings


class _GaSession(msgspec.Struct, tag_field="type", tag="realtime", omit_defaults=True):
    output_modalities: list[Output]
    instructions: str
    audio: _GaAudio
    tools: Sequence[Mapping[str, Any]]  # JSON Schemas, as the agent graph gives them
    tool_choice: str | None = None


# session.update, preview: flat.


class _PreviewSession(msgspec.Struct, omit_defaults=True):
    modalities: list[Output]
    instructions: str
    input_audio_format: Literal["pcm16"]
    output_audio_format: Literal["pcm16"]
    input_audio_transcription: _Transcription
    turn_detection: _Detection | None
    tools: Sequence[Mapping[str, Any]]
    voice: str | None = None
    tool_choice: str | None = None


class _SessionUpdate(_ClientEvent, tag="session.update"):
    session: _GaSession | _PreviewSession


_encoder = msgspec.json.Encoder()


def _frame(event: _ClientEvent) -> str:
    # A text frame: Azure reads JSON only from those.
    return _encoder.encode(event).decode()


@dataclasses.dataclass(frozen=True, slots=True)
class SessionConfig:
    """What a ``session.update`` sets, in either dialect."""

    output: Output
    instructions: str
    #: The user's language, for the input transcription.
    language: str
    transcription_model: str
    turn_detection: TurnDetection
    #: None leaves the session's voice alone: it is fixed once the session has spoken.
    voice: str | None = None
    tools: Sequence[Mapping[str, Any]] = ()
    #: Sent only with tools.
    tool_choice: str = "auto"
    #: The transcription's ``prompt``: what the conversation expects to hear next.
    transcription_prompt: str | None = None


def session_update(dialect: Dialect, config: SessionConfig) -> str:
    """The ``session.update`` that sets ``config``, in ``dialect``."""
    transcription = _Transcription(
        model=config.transcription_model,
        language=config.language,
        prompt=config.transcription_prompt or None,
    )
    detection = None if config.turn_detection == "none" else _Detection(config.turn_detection)
    tools = list(config.tools)
    tool_choice = config.tool_choice if tools else None
    session: _GaSession | _PreviewSession
    if dialect == "preview":
        session = _PreviewSession(
            # Preview has no audio without text.
            modalities=["text"] if config.output == "text" else ["audio", "text"],
            instructions=config.instructions,
            input_audio_format="pcm16",
            output_audio_format="pcm16",
            input_audio_transcription=transcription,
            turn_detection=detection,
            tools=tools,
            voice=config.voice,
            tool_choice=tool_choice,
        )
    else:
        pcm = _Pcm()
        output = _GaOutput(format=pcm, voice=config.voice) if config.output == "audio" else None
        session = _GaSession(
            output_modalities=[config.output],  # GA: one of them, not both
            instructions=config.instructions,
            audio=_GaAudio(_GaInput(pcm, transcription, detection), output),
            tools=tools,
            tool_choice=tool_choice,
        )
    return _frame(_SessionUpdate(session))


def append(pcm: bytes) -> str:
    """``input_audio_buffer.append`` of 24 kHz PCM16 (Azure does not acknowledge it)."""
    return _frame(_Append(pcm))


#: ``input_audio_buffer.commit``: the user's turn has ended.
COMMIT = _frame(_Commit())


def user_text(text: str) -> str:
    """A typed user turn, as a ``conversation.item.create``."""
    return _frame(_ItemCreate(_Message("user", [_TextPart("input_text", text)])))


def history_item(dialect: Dialect, role: str, text: str) -> str:
    """A line of the conversation's history, restored into a fresh session.

    The assistant's words are ``output_text`` (GA) or ``text`` (preview); a role
    the API does not have (an agent's own notes) becomes a system line naming it.
    """
    if role == "user":
        message = _Message("user", [_TextPart("input_text", text)])
    elif role == "assistant":
        kind: Literal["output_text", "text"] = "text" if dialect == "preview" else "output_text"
        message = _Message("assistant", [_TextPart(kind, text)])
    else:
        message = _Message("system", [_TextPart("input_text", f"({role}) {text}")])
    return _frame(_ItemCreate(message))


def heard_item(dialect: Dialect, text: str, previous_item_id: str | None = None) -> str:
    """The assistant's words the user heard of a cut text response, in its item's place."""
    kind: Literal["output_text", "text"] = "text" if dialect == "preview" else "output_text"
    message = _Message("assistant", [_TextPart(kind, text)])
    return _frame(_ItemCreate(message, previous_item_id))


def item_delete(item_id: str) -> str:
    """Make the model forget ``item_id`` (a cut text response: text cannot be truncated)."""
    return _frame(_ItemDelete(item_id))


def function_call_output(call_id: str, output: str) -> str:
    """A tool's answer to the model's function call."""
    return _frame(_ItemCreate(_FunctionCallOutput(call_id, output)))


def response_create(event_id: str) -> str:
    return _frame(_ResponseCreate(event_id))


def response_cancel(response_id: str) -> str:
    return _frame(_ResponseCancel(response_id))


def truncate(item_id: str, audio_end_ms: int) -> str:
    """Make the model forget the audio of ``item_id`` after ``audio_end_ms`` (the unheard part,
    and its transcript)."""
    return _frame(_Truncate(item_id, 0, audio_end_ms))


# ------------------------------------------------------------ server events
#
# Only the fields the brain reads; Azure's others are skipped by the decoder.
# Every field is optional, as the brain has always read them: a missing id or
# a null delta is a normal event to skip, not a protocol error.


class _ServerEvent(msgspec.Struct, tag_field="type"):
    """A server event; ``type`` is its tag."""


class SpeechStartedEvent(_ServerEvent, tag="input_audio_buffer.speech_started"):
    """Server VAD heard the user start speaking."""


class SpeechStoppedEvent(_ServerEvent, tag="input_audio_buffer.speech_stopped"):
    #: Where the speech ended in the session's input audio (ms of all appended).
    audio_end_ms: int | None = None


class CommittedEvent(_ServerEvent, tag="input_audio_buffer.committed"):
    """The input buffer became a user item (the client's commit, or server VAD's)."""


class TranscriptionDeltaEvent(
    _ServerEvent, tag="conversation.item.input_audio_transcription.delta"
):
    item_id: str | None = None
    delta: str | None = None


class TranscriptionCompletedEvent(
    _ServerEvent, tag="conversation.item.input_audio_transcription.completed"
):
    item_id: str | None = None
    transcript: str | None = None


class TranscriptionFailedEvent(
    _ServerEvent, tag="conversation.item.input_audio_transcription.failed"
):
    pass


class OutputItem(msgspec.Struct):
    """An item of a response's output; the brain reads its function calls."""

    type: str | None = None
    id: str | None = None
    name: str | None = None
    call_id: str | None = None
    arguments: str | None = None


class _StatusError(msgspec.Struct):
    code: str | None = None
    message: str | None = None


class _StatusDetails(msgspec.Struct):
    type: str | None = None
    reason: str | None = None
    error: _StatusError | None = None


class Response(msgspec.Struct):
    id: str | None = None
    #: ``in_progress``, then ``completed``, ``cancelled``, ``failed`` or ``incomplete``.
    status: str | None = None
    output: list[OutputItem] | None = None
    status_details: _StatusDetails | None = None

    @property
    def error_message(self) -> str | None:
        """Why a failed response failed, in Azure's words."""
        details = self.status_details
        error = details.error if details is not None else None
        return error.message if error is not None else None

    @property
    def function_calls(self) -> list[OutputItem]:
        return [o for o in self.output or () if o.type == "function_call" and o.name]


class ResponseCreatedEvent(_ServerEvent, tag="response.created"):
    response: Response | None = None


class ResponseDoneEvent(_ServerEvent, tag="response.done"):
    response: Response | None = None


class TextDeltaEvent(_ServerEvent, tag="response.output_text.delta"):
    """Words of a response: its text (text out) or the transcript of its audio."""

    delta: str | None = None
    #: The assistant item they belong to (a cut text response's item is replaced).
    item_id: str | None = None


class _TranscriptDelta(TextDeltaEvent, tag="response.output_audio_transcript.delta"):
    pass


class _PreviewTextDelta(TextDeltaEvent, tag="response.text.delta"):
    pass


class _PreviewTranscriptDelta(TextDeltaEvent, tag="response.audio_transcript.delta"):
    pass


class AudioDeltaEvent(_ServerEvent, tag="response.output_audio.delta"):
    #: 24 kHz PCM16, decoded from base64 by the decoder itself.
    delta: bytes | None = None
    #: The assistant item it belongs to (what a truncate names).
    item_id: str | None = None


class _PreviewAudioDelta(AudioDeltaEvent, tag="response.audio.delta"):
    pass


class ErrorDetails(msgspec.Struct):
    type: str | None = None
    code: str | None = None
    message: str | None = None
    #: The client event it is about (our ``response.create`` ids).
    event_id: str | None = None


class ErrorEvent(_ServerEvent, tag="error"):
    error: ErrorDetails | None = None


class IgnoredEvent(msgspec.Struct):
    """An event of a type the brain does not read (``session.updated``, ``rate_limits.updated``)."""

    type: str


ServerEvent = (
    SpeechStartedEvent
    | SpeechStoppedEvent
    | CommittedEvent
    | TranscriptionDeltaEvent
    | TranscriptionCompletedEvent
    | TranscriptionFailedEvent
    | ResponseCreatedEvent
    | ResponseDoneEvent
    | TextDeltaEvent
    | _TranscriptDelta
    | _PreviewTextDelta
    | _PreviewTranscriptDelta
    | AudioDeltaEvent
    | _PreviewAudioDelta
    | ErrorEvent
)

_decoder = msgspec.json.Decoder(ServerEvent)
_kind_decoder = msgspec.json.Decoder(IgnoredEvent)
_KNOWN = frozenset(member.__struct_config__.tag for member in typing.get_args(ServerEvent))


def decode_server_event(raw: str | bytes) -> ServerEvent | IgnoredEvent:
    """One server event; ``upstream_protocol`` if it is not JSON, has no type, or a known
    event's fields do not fit."""
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError:
        pass  # an event type not in the union, or a known one that does not fit
    try:
        other = _kind_decoder.decode(raw)
    except msgspec.DecodeError:
        other = None
    if other is None or other.type in _KNOWN:
        raise ProviderError(
            "upstream_protocol", "Azure OpenAI sent an event this server cannot read"
        ) from None
    return other
