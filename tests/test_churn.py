"""A closed room is freed by reference counting: churn leaves no reference cycles (#10).

A room in a cycle (the turn pointing back at the room, audio left in the
outbox naming its turn, Hypercorn's TCPServer and its protocol) is freed only
by a full collection, which the server's collector settings defer for a long
time and which then stops the loop for as long as it walks the heap. Here the
collector is off while rooms come and go, so whatever is not freed by its
reference count is still there at the end to be counted.
"""

from __future__ import annotations

import collections
import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from voice_trio import app as app_module
from voice_trio.app import GC_FREEZE_INTERVAL_S, freeze_survivors, record_gc_pauses
from voice_trio.metrics import Histogram
from voice_trio.room import Room, RoomTurn

from .support import RawClient, RunningServer, running_server

CYCLES = 300
#: Types whose instances must all be gone once every room has closed.
WATCHED_PREFIXES = (
    "voice_trio.",
    "wsproto.",
    "hypercorn.trio.tcp_server.",
    "hypercorn.protocol.",
)


@contextmanager
def collector_off() -> Iterator[None]:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def survivors(prefixes: tuple[str, ...]) -> collections.Counter[str]:
    found: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        if name.startswith(prefixes):
            found[name] += 1
    return found


def closed_rooms_and_turns(server: RunningServer) -> collections.Counter[str]:
    """Rooms the app has let go of (closed and served), and their turns, still in memory."""

    def gone(room: Room) -> bool:
        # Only this server's rooms: another test's may still be alive in this process.
        return (
            room.metrics is server.app.metrics
            and room.closed.is_set()
            and server.app.rooms.get(room.session_id) is not room
        )

    found: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        if isinstance(obj, Room) and gone(obj):
            found["Room"] += 1
        elif isinstance(obj, RoomTurn) and gone(obj.room):
            found["RoomTurn"] += 1
    return found


async def one_cycle(server: RunningServer, i: int) -> None:
    """Connect and leave, five ways: ping, talk and interrupt, drop TCP, bad input, HTTP."""
    kind = i % 5
    if kind == 4:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while await stream.receive_some(65536):
                pass
        return
    client = await RawClient.handshake(server.port, f"/ws/churn-{i}")
    async with client.stream:
        assert (await client.read_event())["type"] == "session.ready"
        if kind == 1:
            await client.send_frame(0x2, b"\x01\x00" * 2400)
            await client.send_frame(0x1, b'{"type":"text","text":"xin chao"}')
            while (await client.read_event())["type"] != "response.started":
                pass
            await client.send_frame(0x2, b"\x01\x00" * 2400)
            await client.send_frame(0x1, b'{"type":"interrupt"}')
        elif kind == 2:
            await client.send_frame(0x2, b"\x01\x00" * 2400)
            await client.send_frame(0x1, b'{"type":"text","text":"mot hai ba"}')
            return  # TCP dropped with audio and a response on their way
        elif kind == 3:
            await client.send_frame(0x1, b'{"type":"nope"}')
            assert (await client.read_event())["type"] == "error"
        await client.send_frame(0x1, b'{"type":"ping"}')
        while (await client.read_event())["type"] != "pong":
            pass
        await client.send_frame(0x8, b"\x03\xe8")
        await client.read_close()


def leftovers(
    server: RunningServer, before: collections.Counter[str], prefixes: tuple[str, ...]
) -> dict[str, int]:
    """What the connections left: closed rooms and their turns, and every watched type
    beyond the baseline, less one room's worth for each room still open."""
    left = dict(closed_rooms_and_turns(server))
    still_open = len(server.app.rooms)
    for name, n in survivors(prefixes).items():
        extra = n - before[name] - (still_open if name.startswith("voice_trio.") else 0)
        if extra > 0 and name not in left:
            left[name] = extra
    return left


async def churn(server: RunningServer, prefixes: tuple[str, ...]) -> dict[str, int]:
    """CYCLES connections with the collector off; what is still there after them."""
    for i in range(5):  # warm-up: first-use objects of every path
        await one_cycle(server, i)
    with collector_off():
        before = survivors(prefixes)
        with trio.fail_after(120):
            for i in range(CYCLES):
                await one_cycle(server, i)
        left = leftovers(server, before, prefixes)
        with trio.move_on_after(10):  # the last connections' tasks may still be unwinding
            while left:
                await trio.sleep(0.05)
                left = leftovers(server, before, prefixes)
    return left


async def test_connections_that_come_and_go_leave_nothing_behind() -> None:
    async with running_server() as server:
        left = await churn(server, WATCHED_PREFIXES)
    assert left == {}, f"after {CYCLES} connections, still in memory: {left}"


async def test_closed_rooms_are_freed_under_plain_hypercorn() -> None:
    # Hypercorn's TCPServer and its protocol point at each other; voice_trio._hypercorn
    # lets go of the protocol when a connection ends, under plain hypercorn too.
    # wsproto's frame parser (a generator that points back at its protocol) is still
    # a cycle there: Hypercorn's WebSocket holds one per connection.
    async with running_server(asgi=True) as server:
        left = await churn(server, tuple(p for p in WATCHED_PREFIXES if p != "wsproto."))
    assert left == {}, f"after {CYCLES} connections, closed but still in memory: {left}"


async def test_every_collection_pause_is_recorded() -> None:
    pauses = Histogram((0.001, 0.01, 0.1))
    with record_gc_pauses(pauses):
        gc.collect()
        gc.collect(0)
    assert pauses.count == 2
    assert pauses.sum > 0
    gc.collect()  # out of the block: not recorded
    assert pauses.count == 2


class _Node:
    def __init__(self) -> None:
        self.me = self


async def test_survivors_are_frozen_and_frozen_cycles_are_collected_by_the_backstop(
    autojump_clock: trio.abc.Clock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    frozen_at_start = gc.get_freeze_count()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(freeze_survivors, lambda: 0)
            node = _Node()
            dead = weakref.ref(node)
            del node  # a cycle: only a collection frees it
            await trio.sleep(GC_FREEZE_INTERVAL_S * 1.5)
            assert gc.get_freeze_count() > frozen_at_start
            gc.collect()
            assert dead() is not None, "frozen: no collection reaches it"
            monkeypatch.setattr(app_module, "GC_BACKSTOP_OBJECTS", -(10**9))
            await trio.sleep(GC_FREEZE_INTERVAL_S)
            assert dead() is None, "the backstop's full collection freed it"
            assert "a full collection freed" in caplog.text
            nursery.cancel_scope.cancel()
    finally:
        gc.unfreeze()  # this test process collects as usual again
