"""Fuzzing the room's protocol (README.md "Wire protocol") against a live server (issue #10).

Each hypothesis example is one connection and a batch of messages: valid
messages of every client type, in any order (interrupt before any response,
commit without audio, ``session.config`` in the middle of a turn), and mutations
of them (wrong types, unknown and missing fields, numbers out of range, deep
nesting, cut-off and invalid JSON, random unicode, sizes near the limits,
binary frames of odd, even and oversized lengths). A ``{"type":"ping"}`` after
each message marks where its answer ends; the batch is written by a thread
while the test reads, so nothing waits on anything.

What a client must observe, checked for every message:

- the room never closes (no 1011) and keeps answering ``ping`` with ``pong``;
- a bad message gets exactly one ``error`` event, ``fatal`` false, with a code
  of README.md's list: the code an oracle of the wire protocol expects
  (:func:`judge_text`); a good one gets none (or ``busy``);
- a neighbour room keeps getting its echo back;
- afterwards the server's tasks return to where they were, its RSS stays
  bounded and its log holds no traceback.

The soak: ``HYPOTHESIS_PROFILE=soak bash scripts/test.sh tests/test_fuzz_protocol.py``.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

from .fuzz_support import (
    ERROR_CODES,
    OP_BINARY,
    OP_CLOSE,
    PING,
    InputCounter,
    Neighbour,
    ServerClosed,
    ServerProcess,
    WireClient,
    frame,
    serve_subprocess,
    text_frame,
)

MAX_TEXT_CHARS = 4000
MAX_AUDIO_FRAME_BYTES = 96_000
MAX_MESSAGE_BYTES = 1 << 20
SUPPORTED_RATES = (8000, 16000, 24000, 48000)

#: Batches (hypothesis examples) of the fuzz test, from the profile's ``max_examples``
#: (ci: 100 -> 400 batches of ~300 messages: 120,000+ inputs).
BATCHES = settings().max_examples * 4


# -------------------------------------------------------------------- the oracle


@dataclass(frozen=True)
class Expect:
    """What one message must get: one of ``codes`` (None: no error), and a pong if a ping."""

    codes: frozenset[str | None]
    pong: bool = False


def _only(*codes: str | None, pong: bool = False) -> Expect:
    return Expect(frozenset(codes), pong)


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Duplicate
    return dict(pairs)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# A \uD800-\uDFFF escape: Python's json takes a lone surrogate, msgspec does not.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


#: Nesting deeper than this may meet a decoder's recursion limit (msgspec's is the
#: interpreter's, so it depends on the server's stack).
DEEP = 200


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text`` (strings skipped)."""
    if text.count("[") + text.count("{") <= DEEP:
        return 0  # the common case, without a loop in Python
    data = np.frombuffer(_STRING.sub("", text).encode("utf-8", "replace"), dtype=np.uint8)
    steps = np.isin(data, _OPEN).astype(np.int64) - np.isin(data, _CLOSE)
    return int(steps.cumsum().max(initial=0))


_OPEN = np.frombuffer(b"[{", dtype=np.uint8)
_CLOSE = np.frombuffer(b"]}", dtype=np.uint8)


def _has_inf(value: Any) -> bool:
    stack = [value]  # not recursive: Python's json takes deeper nesting than its stack
    while stack:
        v = stack.pop()
        if isinstance(v, float) and math.isinf(v):
            return True
        if isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
    return False


def _is_int(value: Any) -> bool:
    return type(value) is int


def _is_str(value: Any, low: int = 0, high: int = 1 << 30) -> bool:
    return type(value) is str and low <= len(value) <= high


_OPTIONAL = {
    "interrupt": {"played_ms": lambda v: _is_int(v) and v >= 0},
    "session.config": {
        "input_sample_rate": _is_int,
        "language": lambda v: _is_str(v, 2, 16),
        "voice": lambda v: _is_str(v, 0, 200),
        "instructions": lambda v: _is_str(v, 0, 20_000),
    },
}
_REQUIRED = {"audio": "audio", "text": "text"}
CLIENT_TYPES = (
    "audio",
    "text",
    "commit_audio",
    "interrupt",
    "client_vad_speech_start",
    "session.config",
    "ping",
)


def judge_text(text: str) -> Expect | None:
    """The wire protocol's answer to one text message; None for the odd case it leaves open.

    An independent reading of README.md (Python's json, not the server's msgspec):
    where the two decoders may differ (numbers out of range, lone surrogates,
    nesting past either's limit) both answers are allowed.
    """
    # Past a decoder's stack, "too deep" and "not JSON" are both fair answers.
    deep = _depth(text) > DEEP
    try:
        value = json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicates)
    except _Duplicate:
        return None  # which duplicate wins is the decoder's choice
    except RecursionError:
        return _only("invalid_json", "invalid_message")
    except ValueError:
        return _only("invalid_json", "invalid_message") if deep else _only("invalid_json")
    either_json = _SURROGATE_ESCAPE.search(text) is not None
    out_of_range = _has_inf(value)
    expect = _judge_value(value)
    codes = set(expect.codes)
    if either_json:
        codes.add("invalid_json")
    if deep:  # no field takes nesting: some error, and "too deep" may come first
        codes |= {"invalid_json", "invalid_message"}
        codes.discard(None)
    if out_of_range:  # msgspec refuses 1e400 (valid JSON) as out of range
        codes |= {"invalid_json", "invalid_message", "invalid_audio"}
        codes.discard(None)
    return Expect(frozenset(codes), expect.pong and not either_json)


def _judge_value(value: Any) -> Expect:
    if not isinstance(value, dict):
        return _only("invalid_message")
    if "type" not in value:
        return _only("invalid_message")
    if value["type"] is None:  # no type, or a type that is not one: both say it
        return _only("invalid_message", "unknown_type")
    kind = value["type"]
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        return _only("unknown_type")
    fields = {k: v for k, v in value.items() if k != "type"}
    problems: set[str] = set()
    required = _REQUIRED.get(kind)
    optional = _OPTIONAL.get(kind, {})
    for name, v in fields.items():
        if name == required:
            continue
        check = optional.get(name)
        if check is None:
            problems.add("invalid_message")  # an unknown field
        elif v is not None and not check(v):
            problems.add("invalid_message")
    if required is not None:
        if required not in fields:
            problems.add("invalid_message")
        elif kind == "text" and type(fields["text"]) is not str:
            problems.add("invalid_message")
        elif kind == "audio":
            samples = fields["audio"]
            if type(samples) is not list:
                problems.add("invalid_message")
            elif not all(_is_int(s) and -32768 <= s <= 32767 for s in samples):
                problems.add("invalid_audio")
    if problems:
        # The strict decoder says the first thing it finds, in the input's own order.
        return Expect(frozenset(problems))
    return _semantics(kind, fields)


def _semantics(kind: str, fields: dict[str, Any]) -> Expect:
    if kind == "text":
        text = fields["text"]
        if len(text) > MAX_TEXT_CHARS:
            return _only("text_too_long")
        if not text.strip():
            return _only("invalid_message")
        return _only(None, "busy")
    if kind == "commit_audio":
        return _only(None, "busy")
    if kind == "session.config":
        rate = fields.get("input_sample_rate")
        if rate is not None and rate not in SUPPORTED_RATES:
            return _only("unsupported_sample_rate")
        return _only(None)
    if kind == "audio" and len(fields["audio"]) * 2 > MAX_AUDIO_FRAME_BYTES:
        return _only("invalid_audio")
    return _only(None, pong=kind == "ping")


def judge_binary(size: int) -> Expect:
    if size % 2 or size > MAX_AUDIO_FRAME_BYTES:
        return _only("invalid_audio")
    return _only(None)


# ---------------------------------------------------------------- the inputs

_chars = st.characters(exclude_categories=("Cs",))  # a str that encodes to UTF-8
_short_text = st.text(_chars, max_size=12)
_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _short_text,
)
_json_value = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_short_text, inner, max_size=3),
    max_leaves=6,
)
# Numbers written straight into the JSON text (json.dumps cannot write 1e400).
_RAW_NUMBERS = (
    "1e400",
    "-1e400",
    "1e308",
    "4.9e-324",
    "-0",
    "0.0",
    "1.5",
    "-1",
    "32768",
    "-32769",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "-9223372036854775809",
    "1" + "0" * 40,
    "1E2",
    "0e0",
)
_RAW = "\x00raw{}\x00"


def _size_near(limit: int) -> st.SearchStrategy[int]:
    return st.sampled_from((limit - 1, limit, limit + 1)) | st.integers(0, 64)


_fields_of: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "audio": st.fixed_dictionaries({"audio": st.lists(st.integers(-32768, 32767), max_size=40)}),
    "text": st.fixed_dictionaries(
        {
            "text": st.text(_chars, min_size=1, max_size=30)
            | _size_near(MAX_TEXT_CHARS).map("a".__mul__)
        }
    ),
    "commit_audio": st.just({}),
    "interrupt": st.fixed_dictionaries(
        {},
        optional={"played_ms": st.integers(0, 10**6) | st.sampled_from([0, 2**63, 10**30])},
    ),
    "client_vad_speech_start": st.just({}),
    "session.config": st.fixed_dictionaries(
        {},
        optional={
            "input_sample_rate": st.sampled_from((*SUPPORTED_RATES, 44100, 0, -1, 22050)),
            "language": st.sampled_from(("vi", "en", "vi-VN", "x", "a" * 16, "a" * 17)),
            "voice": st.sampled_from(("vi", "vi-vn-x-south", "", "v" * 200, "v" * 201)),
            "instructions": st.text(_chars, max_size=40),
        },
    ),
    "ping": st.just({}),
}


@st.composite
def valid_message(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(CLIENT_TYPES))
    return {"type": kind, **draw(_fields_of[kind])}


@st.composite
def mutated_object(draw: st.DrawFn) -> str:
    """A valid message changed at the JSON level, then written (maybe with raw numbers)."""
    message = draw(valid_message())
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(("drop", "add", "retype", "number", "nest", "type", "reorder")))
        keys = list(message)
        if how == "drop" and keys:
            del message[draw(st.sampled_from(keys))]
        elif how == "add":
            message[draw(_short_text | st.sampled_from(("played_ms", "audio", "text", "x")))] = (
                draw(_json_value)
            )
        elif how == "retype" and keys:
            message[draw(st.sampled_from(keys))] = draw(_json_value)
        elif how == "number" and keys:
            message[draw(st.sampled_from(keys))] = _RAW.format(draw(st.sampled_from(_RAW_NUMBERS)))
        elif how == "nest" and keys:
            key = draw(st.sampled_from(keys))
            depth = draw(st.sampled_from((1, 2, 30, 200, 1000, 3000)))
            message[key] = _RAW.format("[" * depth + json.dumps(message[key]) + "]" * depth)
        elif how == "type":
            message["type"] = draw(
                st.sampled_from(("nope", "", "PING", "ping ", "text\x00", "session_config"))
                | _json_value
            )
        elif how == "reorder":
            items = list(message.items())
            message = dict(draw(st.permutations(items)))
    text = json.dumps(message, ensure_ascii=draw(st.booleans()))
    # Raw pieces were written as JSON strings: put them in unquoted.
    return re.sub(r'"\\u0000raw(.*?)\\u0000"', lambda m: m.group(1), text)


_JUNK = ("}", "]", ",", '"', " ", "x", "\\", "{}", "\n", "\t", "\x7f", "é", "\u2028", "\ufeff")


def mutate_text(text: str, rng: random.Random) -> str:
    """One cheap text-level change (the volume multiplier: no hypothesis draws)."""
    how = rng.randrange(7)
    n = len(text)
    if how == 0 and n:  # cut off
        return text[: rng.randrange(n)]
    if how == 1:  # junk after
        return text + rng.choice(_JUNK)
    if how == 2 and n:  # a character gone
        i = rng.randrange(n)
        return text[:i] + text[i + 1 :]
    if how == 3:  # a character put in
        i = rng.randrange(n + 1)
        return text[:i] + rng.choice(_JUNK) + text[i:]
    if how == 4 and n:  # a character replaced
        i = rng.randrange(n)
        return text[:i] + rng.choice(_JUNK) + text[i + 1 :]
    if how == 5:  # wrapped
        depth = rng.choice((1, 3, 100, 1500))
        return "[" * depth + text + "]" * rng.choice((0, depth))
    return text[: n // 2] + text  # doubled front


_deep = st.sampled_from(
    (
        "[" * 1000,
        "[" * 1000 + "]" * 1000,
        "{" * 500,
        '{"a":' * 2000,
        '{"type":' + "[" * 5000 + "]" * 5000 + "}",
        '{"type":"ping","x":' + "[" * 3000 + "]" * 3000 + "}",
        '{"type":"nope",',
        '{"type":"ping","x":1}}',
        '{"type":"interrupt","played_ms":1e400}',
        '{"type":"text","text":"\\ud800"}',
        '{"type":"ping"} ',
        ' {"type":"ping"}',
        '{"type":"ping"}{"type":"ping"}',
        "",
        " ",
        "null",
        "[]",
        '"ping"',
        "NaN",
        '{"type":NaN}',
        '{"type":"session.config","input_sample_rate":1e400}',
    )
)
_not_objects = _json_value.map(json.dumps) | st.text(_chars, max_size=40)
_near_limit = st.sampled_from(
    (
        MAX_MESSAGE_BYTES - 64,
        MAX_MESSAGE_BYTES - 20,
        MAX_MESSAGE_BYTES // 2,
        20_001,
        MAX_TEXT_CHARS * 4 + 20,
    )
).map(lambda size: json.dumps({"type": "text", "text": "b" * (size - 22)}))


@dataclass(frozen=True)
class Item:
    """One fuzz input: a text message or a binary frame of ``size`` bytes."""

    text: str | None = None
    size: int = 0

    def wire(self) -> bytes:
        if self.text is None:
            return frame(OP_BINARY, bytes([1, 2]) * (self.size // 2) + b"\x03" * (self.size % 2))
        return text_frame(self.text.encode("utf-8"))

    def expect(self) -> Expect | None:
        return judge_binary(self.size) if self.text is None else judge_text(self.text)

    def __repr__(self) -> str:
        if self.text is None:
            return f"<binary frame of {self.size} bytes>"
        shown = self.text if len(self.text) <= 300 else self.text[:300] + f"... ({len(self.text)})"
        return repr(shown)


_binary = st.sampled_from(
    (
        0,
        1,
        2,
        3,
        4799,
        4800,
        9600,
        MAX_AUDIO_FRAME_BYTES - 1,
        MAX_AUDIO_FRAME_BYTES,
        MAX_AUDIO_FRAME_BYTES + 1,
        MAX_AUDIO_FRAME_BYTES + 2,
        200_000,
    )
) | st.integers(0, 5000)

_base = st.one_of(
    valid_message().map(json.dumps),
    valid_message().map(json.dumps),
    mutated_object(),
    mutated_object(),
    mutated_object(),
    _deep,
    _not_objects,
)


@st.composite
def batch(draw: st.DrawFn) -> list[Item]:
    """Messages drawn by hypothesis, each followed by cheap variants from a drawn seed."""
    items: list[Item] = []
    for _ in range(draw(st.integers(1, 40))):  # (1: a failure shrinks to one message)
        pick = draw(st.integers(0, 19))
        if pick < 3:
            items.append(Item(size=draw(_binary)))
            continue
        if pick == 3 and draw(st.integers(0, 9)) == 0:
            items.append(Item(text=draw(_near_limit)))
            continue
        text = draw(_base)
        items.append(Item(text=text))
        rng = random.Random(draw(st.integers(0, 2**32)))
        for _ in range(draw(st.integers(0, 40))):
            items.append(Item(text=mutate_text(text, rng)))
    return items


# -------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve_subprocess(tmp_path_factory.mktemp("fuzz-protocol")) as proc:
        yield proc


@pytest.fixture(scope="module")
def counter(request: pytest.FixtureRequest) -> Iterator[InputCounter]:
    count = InputCounter("room protocol fuzz")
    yield count
    count.write(request.config)


@pytest.fixture(scope="module")
def baseline(server: ServerProcess) -> Iterator[dict[str, float]]:
    """The server's tasks and RSS before any fuzzing (and with no room open)."""
    warm = WireClient(server.port, "warm-up")
    warm.read_event("session.ready")
    warm.send(text_frame(b'{"type":"text","text":"hi"}') + text_frame(PING))
    warm.read_event("pong")
    warm.close()
    server.wait_for("voice_trio_rooms_open", 0)
    yield {"tasks": server.metric("voice_trio_tasks"), "rss": float(server.rss())}


@pytest.fixture(scope="module")
def neighbour(server: ServerProcess, baseline: dict[str, float]) -> Iterator[Neighbour]:
    room = Neighbour(server.port)
    room.start()
    yield room
    room.stop()


def run_batch(server: ServerProcess, items: list[Item], session_id: str) -> int:
    """Send ``items`` on one connection, a ping after each; check each one's answer."""
    expects = [item.expect() for item in items]
    kept = [(item, e) for item, e in zip(items, expects, strict=True) if e is not None]
    client = WireClient(server.port, session_id)
    try:
        client.read_event("session.ready")
        wire = b"".join(item.wire() + text_frame(PING) for item, _ in kept)
        client.send_in_background(wire)
        for index, (item, expect) in enumerate(kept):
            _check_one(client, index, item, expect)
        client.join_sender()
        client.send(frame(OP_CLOSE, struct.pack("!H", 1000)))
        closed = client.read_close()
        assert closed.code == 1000, f"after the batch, the room closed {closed} instead of 1000"
    finally:
        client.close()
    return len(kept)


def _check_one(client: WireClient, index: int, item: Item, expect: Expect) -> None:
    pongs_due = 1 + expect.pong
    errors: list[dict[str, Any]] = []
    try:
        while pongs_due:
            message = client.read_message()
            if isinstance(message, bytes):
                continue
            if message["type"] == "pong":
                pongs_due -= 1
            elif message["type"] == "error":
                errors.append(message)
    except ServerClosed as closed:
        # Pipelined: the message that killed the room may be this one or one sent after it.
        raise AssertionError(
            f"the room closed ({closed}) before the answer to message {index} {item!r} "
            "or to one sent after it"
        ) from None
    assert len(errors) <= 1, f"message {index} {item!r}: {len(errors)} errors: {errors}"
    for error in errors:
        assert error["code"] in ERROR_CODES, f"{item!r}: unknown code in {error}"
        assert error["fatal"] is False, f"{item!r}: fatal error {error}"
        assert isinstance(error["message"], str) and error["message"], error
    got = errors[0]["code"] if errors else None
    assert got in expect.codes, (
        f"message {index} {item!r}: got {errors[0] if errors else 'no error'}, "
        f"expected one of {sorted(expect.codes, key=str)}"
    )


# ------------------------------------------------------------------- tests


def test_the_issue_10_inputs_get_an_error_event(server: ServerProcess, baseline: Any) -> None:
    """The minimal inputs of issue #10, each on its own room."""
    try:
        for n, text in enumerate(
            [
                '{"type":"nope",',
                '{"type":"ping","x":1}}',
                '{"type":"interrupt","played_ms":1e400}',
                "[" * 1000,
            ]
        ):
            run_batch(server, [Item(text=text)], f"issue-10-{n}")
        server.assert_healthy()
    finally:
        server.new_log()  # a failure here is this test's, not the next one's


@settings(max_examples=BATCHES)
@given(items=batch())
def test_fuzzed_messages_get_error_events_and_the_room_stays_up(
    server: ServerProcess, neighbour: Neighbour, counter: InputCounter, items: list[Item]
) -> None:
    counter.examples += 1
    passed = False
    try:
        counter.inputs += run_batch(server, items, f"fuzz-protocol-{counter.examples}")
        passed = True
    finally:
        # The room is gone (only the neighbour's is open) before its log is read, so
        # a traceback is this example's, never the next one's.
        server.wait_for("voice_trio_rooms_open", 1)
        if passed:
            server.assert_healthy()
        else:
            server.new_log()
    assert not neighbour.failures, neighbour.failures


def test_after_the_fuzzing_the_server_is_as_it_was(
    server: ServerProcess, neighbour: Neighbour, baseline: dict[str, float], counter: InputCounter
) -> None:
    neighbour.stop()
    assert not neighbour.failures, neighbour.failures
    assert neighbour.round_trips > 0
    # Generous: each echo took at most this long while the fuzzing went on.
    assert neighbour.slowest_s < 30, neighbour.slowest_s
    server.wait_for("voice_trio_rooms_open", 0)
    tasks = server.wait_for("voice_trio_tasks", baseline["tasks"])
    assert tasks <= baseline["tasks"], f"tasks {tasks} > {baseline['tasks']} before the fuzzing"
    grown = server.rss() - baseline["rss"]
    assert grown < 64 << 20, f"RSS grew by {grown / 2**20:.1f} MiB"
    server.assert_healthy()
