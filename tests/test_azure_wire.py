"""Azure's wire functions (``providers/azure_wire.py``) against the openai package's types.

What the brain sends is validated with the openai pydantic models of its dialect
(``openai.types.realtime`` for GA, ``openai.types.beta.realtime`` for preview),
strictly: a key no model declares fails too. What it reads is built with those
models and decoded. The documented rules the schema does not carry (one GA output
modality, PCM at 24 kHz, the voice only before the session has spoken) are
asserted on the JSON.
"""

from __future__ import annotations

import base64
import itertools
import json
import typing
from typing import Any

import openai.types.beta.realtime as preview
import openai.types.realtime as ga
import pytest
from pydantic import BaseModel, ValidationError

from voice_trio.errors import ProviderError
from voice_trio.providers import azure_wire as wire

from .fakes.azure_realtime import GA_CLIENT, PREVIEW_CLIENT, unknown_keys
from .support import tone

PCM = tone(480, seed=5)  # 10 ms of 24 kHz PCM16
TOOL = {
    "type": "function",
    "name": "book",
    "description": "Book an appointment.",
    "parameters": {
        "type": "object",
        "properties": {"day": {"type": "string"}},
        "required": ["day"],
    },
}


def strict(model: type[BaseModel], frame: str) -> Any:
    """``frame`` as ``model``; fails on a key the model does not declare."""
    parsed = model.model_validate(json.loads(frame))
    assert unknown_keys(parsed) == [], frame
    return parsed


def client_event(dialect: wire.Dialect, frame: str) -> Any:
    """``frame`` as one of the dialect's client events (any type), strictly."""
    parsed = (GA_CLIENT if dialect == "ga" else PREVIEW_CLIENT).validate_json(frame)
    assert unknown_keys(parsed) == [], frame
    return parsed


# ------------------------------------------------------------ session.update

CONFIGS = [
    wire.SessionConfig(
        output=output,
        instructions="Trả lời ngắn gọn.",
        language="vi",
        transcription_model="gpt-4o-mini-transcribe",
        turn_detection=detection,
        voice=voice,
        tools=tools,
    )
    for output, detection, voice, tools in itertools.product(
        ("audio", "text"),
        ("server_vad", "semantic_vad", "none"),
        ("marin", None),
        ((), (TOOL,)),
    )
]


def config_id(config: wire.SessionConfig) -> str:
    tools = "tools" if config.tools else "no-tools"
    return f"{config.output}-{config.turn_detection}-{config.voice or 'no-voice'}-{tools}"


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_ga_session_update_is_a_realtime_session_update(config: wire.SessionConfig) -> None:
    frame = wire.session_update("ga", config)
    event = strict(ga.SessionUpdateEvent, frame)
    session = event.session
    assert isinstance(session, ga.RealtimeSessionCreateRequest)
    assert session.type == "realtime"
    assert session.output_modalities == [config.output]  # one, not both (GA)
    assert session.instructions == config.instructions
    assert session.audio is not None and session.audio.input is not None
    audio_in = session.audio.input
    assert audio_in.transcription is not None
    assert audio_in.transcription.language == "vi"
    assert audio_in.transcription.model == "gpt-4o-mini-transcribe"
    if config.turn_detection == "none":
        assert audio_in.turn_detection is None
    else:
        assert audio_in.turn_detection is not None
        assert audio_in.turn_detection.type == config.turn_detection
        assert audio_in.turn_detection.interrupt_response is True
    raw = json.loads(frame)["session"]
    assert raw["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    # turn_detection null is what turns server VAD off: it must be on the wire.
    assert "turn_detection" in raw["audio"]["input"]
    if config.output == "audio":
        assert raw["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert raw["audio"]["output"].get("voice") == config.voice
    else:
        assert "output" not in raw["audio"]
    assert raw["tools"] == list(config.tools)
    assert raw.get("tool_choice") == ("auto" if config.tools else None)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_preview_session_update_is_flat(config: wire.SessionConfig) -> None:
    frame = wire.session_update("preview", config)
    session = strict(preview.SessionUpdateEvent, frame).session
    expected = ["text"] if config.output == "text" else ["audio", "text"]
    assert session.modalities == expected
    assert session.input_audio_format == "pcm16" and session.output_audio_format == "pcm16"
    assert session.input_audio_transcription.language == "vi"
    assert session.voice == config.voice
    raw = json.loads(frame)["session"]
    assert "audio" not in raw and "type" not in raw
    if config.turn_detection == "none":
        assert "turn_detection" in raw and raw["turn_detection"] is None
    else:
        assert raw["turn_detection"]["type"] == config.turn_detection
    assert ("voice" in raw) == (config.voice is not None)
    assert raw["tools"] == list(config.tools)
    assert raw.get("tool_choice") == ("auto" if config.tools else None)


def test_the_dialects_are_not_interchangeable() -> None:
    """A GA update is not a preview one, and back: the brain must pick by URL."""
    config = CONFIGS[0]
    with pytest.raises((ValidationError, AssertionError)):
        strict(preview.SessionUpdateEvent, wire.session_update("ga", config))
    with pytest.raises((ValidationError, AssertionError)):
        strict(ga.SessionUpdateEvent, wire.session_update("preview", config))


# ------------------------------------------------------------ client events


@pytest.mark.parametrize("dialect", ["ga", "preview"])
def test_audio_and_turn_events(dialect: wire.Dialect) -> None:
    append = client_event(dialect, wire.append(PCM))
    assert append.type == "input_audio_buffer.append"
    assert base64.b64decode(append.audio, validate=True) == PCM
    assert client_event(dialect, wire.COMMIT).type == "input_audio_buffer.commit"
    create = client_event(dialect, wire.response_create("create_7"))
    assert create.type == "response.create" and create.event_id == "create_7"
    cancel = client_event(dialect, wire.response_cancel("resp_3"))
    assert cancel.type == "response.cancel" and cancel.response_id == "resp_3"
    cut = client_event(dialect, wire.truncate("item_9", 1250))
    assert cut.type == "conversation.item.truncate"
    assert (cut.item_id, cut.content_index, cut.audio_end_ms) == ("item_9", 0, 1250)


@pytest.mark.parametrize("dialect", ["ga", "preview"])
def test_user_turns_and_tool_outputs_are_items(dialect: wire.Dialect) -> None:
    text = client_event(dialect, wire.user_text("Cho tôi đặt lịch thứ Ba"))
    assert text.type == "conversation.item.create"
    assert (text.item.type, text.item.role) == ("message", "user")
    assert [(c.type, c.text) for c in text.item.content] == [
        ("input_text", "Cho tôi đặt lịch thứ Ba")
    ]
    output = client_event(dialect, wire.function_call_output("call_1", '{"ok": true}'))
    assert output.item.type == "function_call_output"
    assert (output.item.call_id, output.item.output) == ("call_1", '{"ok": true}')


@pytest.mark.parametrize(
    ("dialect", "other"), [("ga", "preview"), ("preview", "ga")], ids=["ga", "preview"]
)
def test_restored_history_speaks_the_dialect(dialect: wire.Dialect, other: wire.Dialect) -> None:
    user = client_event(dialect, wire.history_item(dialect, "user", "xin chào"))
    assert user.item.role == "user" and user.item.content[0].type == "input_text"
    said = wire.history_item(dialect, "assistant", "Dạ, chào bạn")
    assistant = client_event(dialect, said)
    assert assistant.item.role == "assistant"
    kind = "output_text" if dialect == "ga" else "text"
    assert [(c.type, c.text) for c in assistant.item.content] == [(kind, "Dạ, chào bạn")]
    # The other dialect's models refuse this one's assistant content.
    with pytest.raises(ValidationError):
        client_event(other, said)
    note = client_event(dialect, wire.history_item(dialect, "tool", "booked Tuesday 10:00"))
    assert note.item.role == "system"
    assert note.item.content[0].text == "(tool) booked Tuesday 10:00"


# ------------------------------------------------------------ server events


def dump(model: BaseModel) -> str:
    return model.model_dump_json()  # optional fields as null, as a server may send them


def tag(model: type[BaseModel]) -> str:
    """The ``type`` an openai event model is for."""
    (kind,) = typing.get_args(model.model_fields["type"].annotation)
    return str(kind)


def response(**fields: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "realtime.response", "output": [], **fields}


def test_deltas_of_either_dialect_decode_to_the_same_types() -> None:
    where = {"event_id": "e1", "response_id": "resp_1", "item_id": "item_2"}
    where |= {"output_index": 0, "content_index": 0}
    audio = base64.b64encode(PCM).decode()
    for model in (ga.ResponseAudioDeltaEvent, preview.ResponseAudioDeltaEvent):
        event = wire.decode_server_event(dump(model(type=tag(model), delta=audio, **where)))
        assert isinstance(event, wire.AudioDeltaEvent)
        assert (event.delta, event.item_id) == (PCM, "item_2")
    for model in (
        ga.ResponseTextDeltaEvent,
        ga.ResponseAudioTranscriptDeltaEvent,
        preview.ResponseTextDeltaEvent,
        preview.ResponseAudioTranscriptDeltaEvent,
    ):
        event = wire.decode_server_event(dump(model(type=tag(model), delta="Dạ, ", **where)))
        assert isinstance(event, wire.TextDeltaEvent) and event.delta == "Dạ, "


def test_speech_and_transcription_events() -> None:
    started = ga.InputAudioBufferSpeechStartedEvent(
        type="input_audio_buffer.speech_started", event_id="e", audio_start_ms=200, item_id="i1"
    )
    assert isinstance(wire.decode_server_event(dump(started)), wire.SpeechStartedEvent)
    stopped = preview.InputAudioBufferSpeechStoppedEvent(
        type="input_audio_buffer.speech_stopped", event_id="e", audio_end_ms=900, item_id="i1"
    )
    assert isinstance(wire.decode_server_event(dump(stopped)), wire.SpeechStoppedEvent)
    committed = ga.InputAudioBufferCommittedEvent(
        type="input_audio_buffer.committed", event_id="e", item_id="i1", previous_item_id=None
    )
    assert isinstance(wire.decode_server_event(dump(committed)), wire.CommittedEvent)
    name = "conversation.item.input_audio_transcription"
    delta = ga.ConversationItemInputAudioTranscriptionDeltaEvent(
        type=f"{name}.delta", event_id="e", item_id="i1", content_index=0, delta="xin"
    )
    assert wire.decode_server_event(dump(delta)) == wire.TranscriptionDeltaEvent(
        item_id="i1", delta="xin"
    )
    completed = ga.ConversationItemInputAudioTranscriptionCompletedEvent.model_validate(
        {
            "type": f"{name}.completed",
            "event_id": "e",
            "item_id": "i1",
            "content_index": 0,
            "transcript": "xin chào",
            "usage": {"type": "duration", "seconds": 1.0},
        }
    )
    assert wire.decode_server_event(dump(completed)) == wire.TranscriptionCompletedEvent(
        item_id="i1", transcript="xin chào"
    )
    failed = preview.ConversationItemInputAudioTranscriptionFailedEvent.model_validate(
        {
            "type": f"{name}.failed",
            "event_id": "e",
            "item_id": "i1",
            "content_index": 0,
            "error": {"message": "no speech"},
        }
    )
    assert isinstance(wire.decode_server_event(dump(failed)), wire.TranscriptionFailedEvent)


def test_responses_carry_their_id_status_calls_and_failure() -> None:
    created = ga.ResponseCreatedEvent.model_validate(
        {"type": "response.created", "event_id": "e", "response": response(status="in_progress")}
    )
    event = wire.decode_server_event(dump(created))
    assert isinstance(event, wire.ResponseCreatedEvent) and event.response is not None
    assert (event.response.id, event.response.status) == ("resp_1", "in_progress")

    call = {
        "id": "item_5",
        "type": "function_call",
        "object": "realtime.item",
        "status": "completed",
        "name": "book",
        "call_id": "call_5",
        "arguments": '{"day": "Tuesday"}',
    }
    said = {
        "id": "item_4",
        "type": "message",
        "role": "assistant",
        "object": "realtime.item",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Dạ"}],
    }
    done = ga.ResponseDoneEvent.model_validate(
        {
            "type": "response.done",
            "event_id": "e",
            "response": response(status="completed", output=[said, call]),
        }
    )
    event = wire.decode_server_event(dump(done))
    assert isinstance(event, wire.ResponseDoneEvent) and event.response is not None
    assert [(c.name, c.call_id, c.arguments) for c in event.response.function_calls] == [
        ("book", "call_5", '{"day": "Tuesday"}')
    ]

    failed = preview.ResponseDoneEvent.model_validate(
        {
            "type": "response.done",
            "event_id": "e",
            "response": response(
                status="failed",
                status_details={
                    "type": "failed",
                    "error": {"type": "server_error", "code": "x", "message": "overloaded"},
                },
            ),
        }
    )
    event = wire.decode_server_event(dump(failed))
    assert isinstance(event, wire.ResponseDoneEvent) and event.response is not None
    assert event.response.status == "failed"
    assert event.response.error_message == "overloaded"
    assert event.response.function_calls == []


def test_error_events_name_the_request_they_refuse() -> None:
    error = {
        "type": "invalid_request_error",
        "code": "conversation_already_has_active_response",
        "message": "Conversation already has an active response",
        "param": None,
        "event_id": "create_3",
    }
    for model in (ga.RealtimeErrorEvent, preview.ErrorEvent):
        built = model.model_validate({"type": "error", "event_id": "e", "error": error})
        event = wire.decode_server_event(dump(built))
        assert event == wire.ErrorEvent(
            error=wire.ErrorDetails(
                type="invalid_request_error",
                code="conversation_already_has_active_response",
                message="Conversation already has an active response",
                event_id="create_3",
            )
        )


def test_events_the_brain_does_not_read_are_ignored_not_errors() -> None:
    updated = ga.SessionUpdatedEvent.model_validate(
        {"type": "session.updated", "event_id": "e", "session": {"type": "realtime"}}
    )
    limits = preview.RateLimitsUpdatedEvent.model_validate(
        {
            "type": "rate_limits.updated",
            "event_id": "e",
            "rate_limits": [{"name": "tokens", "limit": 10, "remaining": 9, "reset_seconds": 1}],
        }
    )
    added = ga.ConversationItemAdded.model_validate(
        {
            "type": "conversation.item.added",
            "event_id": "e",
            "item": {"type": "message", "role": "user", "content": []},
        }
    )
    for model in (updated, limits, added):
        assert wire.decode_server_event(dump(model)) == wire.IgnoredEvent(type=model.type)
    # A new event type, with fields of shapes the brain's events do not have.
    novel = '{"type": "response.novelty", "delta": {"x": 1}, "response": 5}'
    assert wire.decode_server_event(novel) == wire.IgnoredEvent(type="response.novelty")


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '{"delta": "no type"}',
        '{"type": 7}',
        '{"type": "response.output_text.delta", "delta": 5}',
        '{"type": "response.output_audio.delta", "delta": "not base64!"}',
        '{"type": "response.done", "response": "done"}',
        '{"type": "error", "error": ["x"]}',
    ],
)
def test_an_event_that_cannot_be_read_is_a_protocol_error(raw: str) -> None:
    with pytest.raises(ProviderError) as caught:
        wire.decode_server_event(raw)
    assert caught.value.code == "upstream_protocol"
    assert raw not in caught.value.message  # the event is not echoed to the user
