"""Fuzzing the server's RFC 6455 frame layer (voice_trio.websocket) over real sockets.

Each hypothesis example is one connection: a run of valid frames (messages
whole or in fragments down to 1 byte, pings and pongs between fragments,
masks of every kind, lengths in each header form) and then one ending: a
protocol fault (reserved bits, an unmasked frame, a bad opcode, a long or
fragmented control frame, an orphan continuation, a message started inside
another, a length not in its shortest form, a message over the size or
fragment limit, text or a close reason that is not UTF-8, a close frame with a
bad code), a good close frame, a frame cut off, a reset, or a clean end.

What the client must observe: the close code RFC 6455 gives the fault
(1002/1007/1009), or its own close code echoed; never 1011; pongs only for
pings it sent, in order; the events of the messages before the ending, in
order; TCP closed after the close frame. The server logs no traceback, a
neighbour room keeps getting its echo back, and afterwards the server's tasks
are back where they were and its RSS is bounded (also after a message of
1-byte fragments, issue #10's amplification).

The soak: ``HYPOTHESIS_PROFILE=soak bash scripts/test.sh tests/test_fuzz_frames.py``.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from .fuzz_support import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    PATIENCE_S,
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
from .test_fuzz_protocol import judge_text

MAX_MESSAGE_BYTES = 1 << 20
MAX_FRAGMENTS = 1024
#: Connections (hypothesis examples), from the profile's ``max_examples`` (ci: 2,000).
CONNECTIONS = settings().max_examples * 20

_VALID_CLOSE = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999)
_INVALID_CLOSE = (0, 1, 999, 1004, 1005, 1006, 1012, 1014, 1015, 1016, 2000, 2999, 5000, 65535)


@dataclass
class Plan:
    """The frames of one connection and what the server must answer."""

    frames: list[bytes] = field(default_factory=list)
    #: Ping payloads sent, in order (the server may answer a burst with one pong).
    pings: list[bytes] = field(default_factory=list)
    #: For each message that gets a JSON answer, the answers it may get ("pong" or a code).
    answers: list[frozenset[str | None]] = field(default_factory=list)
    #: How it ends: "clean", "fault", "close", "cut", "reset".
    end: str = "clean"
    #: Close codes the server may send (None: an empty close frame) for "fault" and "close".
    close: frozenset[int | None] = frozenset()
    why: str = ""
    #: Written in pieces of at most this many bytes (0: in one write).
    dribble: int = 0
    #: The message left open before the ending (its opcode, frames so far; -1: none).
    open_op: int = -1
    open_fragments: int = 0

    @property
    def inputs(self) -> int:
        """Frames sent, a flood of identical fragments counted once."""
        flood = MAX_FRAGMENTS - 5 if self.why == "too-many-fragments" else 0
        return len(self.frames) - flood

    def __repr__(self) -> str:
        size = sum(map(len, self.frames))
        return (
            f"Plan(end={self.end!r}, why={self.why!r}, close={sorted(self.close, key=str)}, "
            f"{len(self.frames)} frames / {size} bytes, pings={len(self.pings)}, "
            f"answers={[sorted(a, key=str) for a in self.answers]}, dribble={self.dribble}, "
            f"head={b''.join(self.frames)[:200]!r})"
        )


_keys = st.sampled_from(
    (b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x37\xfa\x21\x3d")
) | st.binary(min_size=4, max_size=4)
_chars = st.characters(exclude_categories=("Cs",))

# Text messages whose JSON answer is one known event (a pong or an error).
_texts = st.one_of(
    st.just(PING),
    st.sampled_from((b"[", b'{"type":"nope"}', b'{"type":"ping","x":1}', b'{"type":"text"}')),
    st.text(_chars, max_size=60).map(lambda t: t.encode()),
    st.integers(126, 70_000).map(lambda n: b'{"type":"text","text":"' + b"a" * n + b'"}'),
)


def _answer_of(payload: bytes, opcode: int) -> frozenset[str | None] | None:
    """The JSON answer of a whole message (None: it gets none, or none that is sure)."""
    if opcode == OP_BINARY:
        return frozenset({"invalid_audio"}) if len(payload) % 2 else None
    if payload == PING:
        return frozenset({"pong"})
    expect = judge_text(payload.decode())
    if expect is None or None in expect.codes:
        return None
    return expect.codes


@st.composite
def _fragments(draw: st.DrawFn, size: int) -> list[int]:
    """Fragment sizes that add up to ``size`` (1-byte fragments are common)."""
    how = draw(st.sampled_from(("whole", "whole", "ones", "two", "random")))
    if how == "whole" or size == 0:
        return [size]
    if how == "ones" and size <= MAX_FRAGMENTS:
        return [1] * size
    if how == "two":
        cut = draw(st.integers(0, size))
        return [cut, size - cut]
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=12)))
    edges = [0, *cuts, size]
    return [b - a for a, b in zip(edges, edges[1:], strict=False)]


@st.composite
def _control(draw: st.DrawFn, plan: Plan, key: bytes) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return frame(OP_PONG, draw(st.binary(max_size=125)), key=key)
    payload = b"p%d:" % len(plan.pings) + draw(st.binary(max_size=100))
    plan.pings.append(payload)
    return frame(OP_PING, payload, key=key)


@st.composite
def _valid_run(draw: st.DrawFn, plan: Plan) -> None:
    """Valid frames: messages (maybe fragmented, controls between) and lone controls."""
    for _ in range(draw(st.integers(0, 12))):
        key = draw(_keys)
        kind = draw(st.integers(0, 9))
        if kind < 2:
            plan.frames.append(draw(_control(plan, key)))
            continue
        if kind < 4:
            opcode = OP_BINARY
            payload = draw(st.binary(max_size=300) | st.integers(0, 9600).map(bytes))
        else:
            opcode, payload = OP_TEXT, draw(_texts)
        sizes = draw(_fragments(len(payload)))
        at = 0
        for i, n in enumerate(sizes):
            last = i == len(sizes) - 1
            plan.frames.append(
                frame(OP_CONT if i else opcode, payload[at : at + n], fin=last, key=draw(_keys))
            )
            at += n
            if not last and len(sizes) < 50 and draw(st.integers(0, 4)) == 0:
                plan.frames.append(draw(_control(plan, draw(_keys))))
        answer = _answer_of(payload, opcode)
        if answer is not None:
            plan.answers.append(answer)


def _fault_frames(draw: st.DrawFn, plan: Plan, open_message: bool) -> None:
    """One frame (or a few) that breaks RFC 6455; sets ``plan.close`` to the code it must get."""
    key = draw(_keys)
    op = draw(st.sampled_from((OP_TEXT, OP_BINARY, OP_PING, OP_PONG, OP_CLOSE)))
    data_op = OP_CONT if open_message else draw(st.sampled_from((OP_TEXT, OP_BINARY)))
    small = draw(st.binary(max_size=20))
    faults = [
        "rsv",
        "unmasked",
        "opcode",
        "long-control",
        "fragmented-control",
        "non-minimal-16",
        "non-minimal-64",
        "top-bit-64",
        "over-size",
        "close-one-byte",
        "close-bad-code",
        "close-bad-reason",
        "bad-utf8",
        "orphan" if not open_message else "new-message",
        "too-many-fragments",
    ]
    fault = draw(st.sampled_from(faults))
    plan.why = fault
    code = {1002}
    if fault == "rsv":
        target = op if op >= OP_CLOSE else data_op
        payload = small if target != OP_CLOSE else struct.pack("!H", 1000)
        plan.frames.append(frame(target, payload, rsv=draw(st.integers(1, 7)), key=key))
    elif fault == "unmasked":
        plan.frames.append(frame(data_op if op < OP_CLOSE else OP_PING, small, masked=False))
    elif fault == "opcode":
        bad = draw(st.sampled_from((3, 4, 5, 6, 7, 11, 12, 13, 14, 15)))
        plan.frames.append(frame(bad, small, key=key))
    elif fault == "long-control":
        n = draw(st.integers(126, 300))
        plan.frames.append(
            frame(draw(st.sampled_from((OP_PING, OP_PONG, OP_CLOSE))), bytes(n), key=key)
        )
    elif fault == "fragmented-control":
        plan.frames.append(
            frame(draw(st.sampled_from((OP_PING, OP_PONG))), small, fin=False, key=key)
        )
    elif fault == "non-minimal-16":
        n = draw(st.integers(0, 125))
        plan.frames.append(struct.pack("!BBH", 0x80 | data_op, 0x80 | 126, n) + key + bytes(n))
    elif fault == "non-minimal-64":
        n = draw(st.integers(0, 65535))
        plan.frames.append(struct.pack("!BBQ", 0x80 | data_op, 0x80 | 127, n) + key + bytes(n))
    elif fault == "top-bit-64":
        plan.frames.append(struct.pack("!BBQ", 0x80 | data_op, 0x80 | 127, (1 << 63) | 70000) + key)
    elif fault == "over-size":
        n = draw(st.integers(MAX_MESSAGE_BYTES + 1, 1 << 40))
        # Only the header: the server must refuse it from that.
        plan.frames.append(frame(data_op, b"", length=n, key=key))
        code = {1009}
    elif fault == "close-one-byte":
        plan.frames.append(frame(OP_CLOSE, draw(st.binary(min_size=1, max_size=1)), key=key))
    elif fault == "close-bad-code":
        bad = draw(st.sampled_from(_INVALID_CLOSE))
        plan.frames.append(frame(OP_CLOSE, struct.pack("!H", bad) + b"bye", key=key))
    elif fault == "close-bad-reason":
        reason = draw(st.sampled_from((b"\xc3\x28", b"\xff", b"ok\xed\xa0\x80", b"\xe2\x82")))
        good = draw(st.sampled_from(_VALID_CLOSE))
        plan.frames.append(frame(OP_CLOSE, struct.pack("!H", good) + reason, key=key))
        code = {1007}
    elif fault == "bad-utf8":
        bad = draw(
            st.sampled_from((b"\xc3\x28", b"\xff", b"\xed\xa0\x80", b"\xe2\x82", b"\xc0\xaf"))
        )
        body = b'{"type":"text","text":"' + bad + b'"}'
        if open_message:  # end the open message first
            plan.frames.append(frame(OP_CONT, b"", key=key))
            if plan.open_op == OP_TEXT:
                plan.answers.append(frozenset({"invalid_json"}))
        cut = draw(st.integers(0, len(body)))
        plan.frames.append(frame(OP_TEXT, body[:cut], fin=False, key=key))
        plan.frames.append(frame(OP_CONT, body[cut:], key=key))
        code = {1007}
    elif fault == "orphan":
        plan.frames.append(frame(OP_CONT, small, fin=draw(st.booleans()), key=key))
    elif fault == "new-message":
        plan.frames.append(frame(draw(st.sampled_from((OP_TEXT, OP_BINARY))), small, key=key))
    elif fault == "too-many-fragments":
        if not open_message:
            plan.frames.append(frame(OP_BINARY, b"", fin=False, key=key))
            done = 1
        else:
            done = plan.open_fragments
        one = frame(OP_CONT, b"\x00", fin=False, key=key)
        plan.frames.extend([one] * (MAX_FRAGMENTS + 1 - done))
        code = {1009}
    plan.close = frozenset(code)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    plan = Plan()
    draw(_valid_run(plan))
    # Maybe leave a message open (fragments sent, no final frame) for the ending to cut into.
    open_message = draw(st.integers(0, 3)) == 0
    if open_message:
        op = draw(st.sampled_from((OP_TEXT, OP_BINARY)))
        parts = draw(st.integers(1, 5))
        body = b'{"type":"pi' if op == OP_TEXT else b"\x00\x01"
        plan.frames.append(frame(op, body, fin=False, key=draw(_keys)))
        plan.frames.extend(frame(OP_CONT, b"", fin=False) for _ in range(parts - 1))
        plan.open_op, plan.open_fragments = op, parts
    end = draw(st.sampled_from(("fault", "fault", "fault", "close", "clean", "cut", "reset")))
    if end == "clean" and open_message:
        end = "fault"
    plan.end = end
    if end == "fault":
        _fault_frames(draw, plan, open_message)
        # Whatever follows a fault is never read.
        plan.frames.append(draw(st.binary(max_size=30)))
    elif end == "close":
        how = draw(st.integers(0, 2))
        if how == 0:
            plan.frames.append(frame(OP_CLOSE, b"", key=draw(_keys)))
            plan.close = frozenset({None})
        else:
            good = draw(st.sampled_from(_VALID_CLOSE))
            reason = draw(st.text(_chars, max_size=30)).encode()[:123]
            plan.frames.append(frame(OP_CLOSE, struct.pack("!H", good) + reason, key=draw(_keys)))
            plan.close = frozenset({good})
        plan.why = "client close"
    elif end == "cut":
        op = OP_CONT if open_message else OP_BINARY  # a valid frame, cut short
        whole = frame(op, draw(st.binary(min_size=1, max_size=200)), key=draw(_keys))
        plan.frames.append(whole[: draw(st.integers(1, len(whole) - 1))])
        plan.why = "frame cut off, then FIN"
    elif end == "reset":
        plan.why = "TCP reset after the frames"
    if draw(st.integers(0, 5)) == 0:
        plan.dribble = draw(st.integers(1, 7))
    return plan


# ---------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serve_subprocess(tmp_path_factory.mktemp("fuzz-frames")) as proc:
        yield proc


@pytest.fixture(scope="module")
def counter(request: pytest.FixtureRequest) -> Iterator[InputCounter]:
    count = InputCounter("frame layer fuzz")
    yield count
    count.write(request.config)


@pytest.fixture(scope="module")
def baseline(server: ServerProcess) -> dict[str, float]:
    warm = WireClient(server.port, "warm-up")
    warm.read_event("session.ready")
    warm.send(text_frame(PING))
    warm.read_event("pong")
    warm.close()
    server.wait_for("voice_trio_rooms_open", 0)
    return {"tasks": server.metric("voice_trio_tasks"), "rss": float(server.rss())}


@pytest.fixture(scope="module")
def neighbour(server: ServerProcess, baseline: Any) -> Iterator[Neighbour]:
    room = Neighbour(server.port, session_id="frames-neighbour")
    room.start()
    yield room
    room.stop()


def _send(client: WireClient, plan: Plan) -> None:
    data = b"".join(plan.frames)
    if not plan.dribble:
        client.send_in_background(data)
        return
    # A few bytes a write for the start (headers cut anywhere), the rest at once.
    head, rest = data[:400], data[400:]
    pieces = [head[i : i + plan.dribble] for i in range(0, len(head), plan.dribble)]
    try:
        for piece in pieces:
            client.send(piece)
    except OSError:
        return
    client.send_in_background(rest)


def _labels(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] if e["type"] == "pong" else e["code"] for e in events]


def run_plan(server: ServerProcess, plan: Plan, session_id: str) -> None:
    client = WireClient(server.port, session_id)
    events: list[dict[str, Any]] = []
    closed: ServerClosed | None = None
    try:
        client.read_event("session.ready")
        _send(client, plan)
        if plan.end == "reset":
            client.join_sender()
            client.reset()
            return
        if plan.end == "cut":
            client.join_sender()
            client.sock.shutdown(socket.SHUT_WR)
        answers = list(plan.answers)
        if plan.end == "clean":
            client.join_sender()
            client.send(text_frame(PING))  # the barrier: its pong is the last answer
            answers.append(frozenset({"pong"}))
        try:
            while True:
                message = client.read_message()
                if isinstance(message, dict) and message["type"] in ("pong", "error"):
                    events.append(message)
                    if plan.end == "clean" and len(events) == len(answers):
                        break
        except ServerClosed as exc:
            closed = exc
        labels = _labels(events)
        for i, (label, allowed) in enumerate(zip(labels, answers, strict=False)):
            assert label in allowed, f"answer {i}: {label} not in {allowed}: {plan!r}"
        assert len(labels) <= len(answers), f"answers {labels}: {plan!r}"
        for event in events:
            assert event.get("fatal") in (None, False), event
        if plan.end == "clean":
            assert closed is None, f"{closed} on a clean connection: {plan!r}"
            assert len(labels) == len(answers), f"answers {labels}: {plan!r}"
            client.send(frame(OP_CLOSE, struct.pack("!H", 1000)))
            closed = client.read_close()
            assert closed.code == 1000, f"{closed}: {plan!r}"
        _check_pongs(client, plan)
        assert closed is not None
        if plan.close != {1011}:  # (the echo of the client's own 1011 is no failure)
            assert closed.code != 1011, f"1011: {closed}: {plan!r}"
        if plan.end in ("fault", "close"):
            assert closed.code in plan.close, f"{closed}, expected {plan.close}: {plan!r}"
        elif plan.end == "cut":
            assert closed.code is None, f"{closed} after a cut frame and FIN: {plan!r}"
        assert client.at_eof()
    finally:
        client.close()


def _check_pongs(client: WireClient, plan: Plan) -> None:
    # Pongs answer pings sent, in order; the server may skip all but the newest of a burst.
    sent = iter(plan.pings)
    for pong in client.pongs:
        assert any(pong == ping for ping in sent), f"pong {pong!r} for no ping: {plan!r}"
    if plan.end == "clean" and plan.pings:
        assert client.pongs and client.pongs[-1] == plan.pings[-1], (
            f"the last ping got no pong ({client.pongs[-3:]}): {plan!r}"
        )


# --------------------------------------------------------------------- tests


@settings(max_examples=CONNECTIONS)
@given(plan=plans())
def test_frame_faults_get_the_rfc_close_and_never_1011(
    server: ServerProcess, neighbour: Neighbour, counter: InputCounter, plan: Plan
) -> None:
    counter.examples += 1
    counter.inputs += plan.inputs
    passed = False
    try:
        run_plan(server, plan, f"fuzz-frames-{counter.examples}")
        passed = True
    finally:
        # The room is gone before its log is read: a traceback is this example's.
        rooms = server.wait_for("voice_trio_rooms_open", 1)
        if passed:
            assert rooms <= 1, f"{rooms} rooms still open after a minute"
            server.assert_healthy()
        else:
            server.new_log()
    assert not neighbour.failures, neighbour.failures


def _rss_after_one_byte_fragments(server: ServerProcess, count: int) -> tuple[int, ServerClosed]:
    """Send a binary message as ``count`` 1-byte frames; the server's RSS growth, its close."""
    before = server.rss()
    client = WireClient(server.port, "one-byte-fragments")
    try:
        client.read_event("session.ready")
        one = frame(OP_CONT, b"\x00", fin=False, key=b"\x00\x00\x00\x00")
        client.send_in_background(
            frame(OP_BINARY, b"\x00", fin=False) + one * (count - 2) + frame(OP_CONT, b"\x00")
        )
        peak = before
        deadline = time.monotonic() + PATIENCE_S
        client.sock.settimeout(0.2)
        closed: ServerClosed | None = None
        while closed is None and time.monotonic() < deadline:
            peak = max(peak, server.rss())
            try:
                client.read_event("error")  # the message, if it is taken, is too long audio
                break
            except ServerClosed as exc:
                closed = exc
            except TimeoutError:
                continue
        peak = max(peak, server.rss())
        client.sock.settimeout(PATIENCE_S)
        if closed is None:
            closed = ServerClosed(0, "no close: the message was taken whole")
        return peak - before, closed
    finally:
        client.close()


def test_a_message_of_1_byte_fragments_is_bounded(
    server: ServerProcess, baseline: Any, request: pytest.FixtureRequest
) -> None:
    """Issue #10: 1 MiB as 1-byte continuation frames cost ~54 MB of RSS per room."""
    grown, closed = _rss_after_one_byte_fragments(server, MAX_MESSAGE_BYTES - 16)
    said = f"{closed}; RSS grew by {grown / 2**20:.1f} MiB for one room"
    InputCounter(f"1 MiB in 1-byte frames: {said}").write(request.config, alone=True)
    assert closed.code == 1009, said  # over WS_MAX_FRAGMENTS
    assert grown < 16 << 20, said
    # Up to the limit, 1-byte fragments are a message like any other.
    client = WireClient(server.port, "fragments-at-the-limit")
    try:
        client.read_event("session.ready")
        body = PING
        wire = frame(OP_TEXT, body[:1], fin=False)
        wire += b"".join(frame(OP_CONT, body[i : i + 1], fin=False) for i in range(1, len(body)))
        wire += b"".join(
            frame(OP_CONT, b"", fin=False) for _ in range(MAX_FRAGMENTS - len(body) - 1)
        )
        client.send(wire + frame(OP_CONT, b""))
        assert client.read_event("pong")
    finally:
        client.close()
    _settle_alone(server)


def _settle_alone(server: ServerProcess) -> None:
    server.wait_for("voice_trio_rooms_open", 1)
    server.assert_healthy()


@pytest.mark.parametrize("fragments", [1, 2, 1000])
def test_the_size_limit_is_exact(server: ServerProcess, baseline: Any, fragments: int) -> None:
    """A message of exactly the limit is taken (whole or in fragments); one byte more is 1009."""
    for size, closes in ((MAX_MESSAGE_BYTES, False), (MAX_MESSAGE_BYTES + 1, True)):
        client = WireClient(server.port, f"limit-{fragments}-{size}")
        try:
            client.read_event("session.ready")
            body = b"\x00" * size
            step = -(-size // fragments)
            pieces = [body[i : i + step] for i in range(0, size, step)]
            client.send_in_background(
                b"".join(
                    frame(OP_CONT if i else OP_BINARY, piece, fin=i == len(pieces) - 1)
                    for i, piece in enumerate(pieces)
                )
                + text_frame(PING)
            )
            if closes:
                assert client.read_close().code == 1009
            else:
                error = client.read_event("error")  # audio over WS_MAX_AUDIO_FRAME_BYTES
                assert error["code"] == "invalid_audio", error
                client.read_event("pong")
        finally:
            client.close()
    _settle_alone(server)


def test_pongs_to_a_peer_that_is_gone_fail_nothing(server: ServerProcess, baseline: Any) -> None:
    """Pings then a TCP reset: writing the pongs meets a lost peer; no room fails."""
    for n in range(20):
        client = WireClient(server.port, f"gone-{n}")
        client.read_event("session.ready")
        client.send(b"".join(frame(OP_PING, b"x" * 125) for _ in range(2000)))
        client.reset()
    _settle_alone(server)


def test_after_the_fuzzing_the_server_is_as_it_was(
    server: ServerProcess, neighbour: Neighbour, baseline: dict[str, float]
) -> None:
    neighbour.stop()
    assert not neighbour.failures, neighbour.failures
    assert neighbour.slowest_s < 30, neighbour.slowest_s
    server.wait_for("voice_trio_rooms_open", 0)
    tasks = server.wait_for("voice_trio_tasks", baseline["tasks"])
    assert tasks <= baseline["tasks"], f"tasks {tasks} > {baseline['tasks']} before the fuzzing"
    grown = server.rss() - baseline["rss"]
    assert grown < 64 << 20, f"RSS grew by {grown / 2**20:.1f} MiB"
    server.assert_healthy()
