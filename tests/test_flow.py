"""Interrupt, backpressure, slow consumers, lazy upstream and idle teardown."""

from __future__ import annotations

import json

import trio

from .support import BOTH_PATHS, running_server, tone


async def _read_after_interrupt(client, rid: str) -> tuple[int, list[dict]]:
    """Read until our `response.done`; count binary frames after `interrupted`."""
    after = 0
    seen_interrupted = False
    events = []
    while True:
        message = await client.recv()
        if isinstance(message, bytes):
            if seen_interrupted:
                after += 1
            continue
        event = json.loads(message)
        events.append(event)
        if event["type"] == "interrupted":
            assert event["response_id"] == rid
            seen_interrupted = True
        if event["type"] == "response.started" and seen_interrupted:
            seen_interrupted = False  # a new response may legitimately speak
        if event["type"] == "response.done" and event["response_id"] == rid:
            return after, events


@BOTH_PATHS
async def test_interrupt_mid_response_stops_audio_and_reports_it(asgi: bool) -> None:
    async with running_server(asgi=asgi) as server:
        async with server.connect("barge") as client:
            await client.send_audio(tone(4800, seed=1))
            started = await client.expect("response.started")
            rid = started["response_id"]
            assert len(await client.recv()) == 9600
            await client.send_json(type="interrupt", played_ms=120)
            after, events = await _read_after_interrupt(client, rid)
            assert after == 0
            kinds = [e["type"] for e in events]
            assert kinds == ["interrupted", "response.done"], kinds
            assert events[-1]["status"] == "interrupted"
            assert await server.metric("voice_trio_interrupts_total") == 1
            # The next audio starts a fresh response.
            await client.send_audio(tone(4800, seed=2))
            nxt = await client.expect("response.started")
            assert nxt["response_id"] != rid


async def test_client_vad_speech_start_interrupts_while_the_agent_speaks() -> None:
    async with running_server() as server:
        async with server.connect("vad") as client:
            await client.send_audio(tone(4800, seed=1))
            rid = (await client.expect("response.started"))["response_id"]
            await client.recv()
            await client.send_json(type="client_vad_speech_start")
            after, events = await _read_after_interrupt(client, rid)
            assert after == 0
            assert events[0] == {"type": "interrupted", "response_id": rid}


@BOTH_PATHS
async def test_interrupt_with_a_full_outbox_sends_no_stale_audio(asgi: bool) -> None:
    # A client that stops reading while the agent speaks: the outbox fills behind
    # the socket. It then barges in; not one frame of the old response may follow.
    async with running_server(
        asgi=asgi,
        ws_outgoing_max=8,
        ws_tts_chunk_bytes=96_000,
        ws_incoming_audio_max=400,
        slow_client_timeout_s=60,
    ) as server:
        async with server.connect("full", message_queue_size=1) as client:
            frame = tone(48_000, seed=5)  # 2 s per frame
            for _ in range(300):  # ~29 MB: far more than the socket buffers hold
                await client.send_audio(frame)
            with trio.fail_after(30):
                while await server.metric("voice_trio_outbox_depth_max") < 8:
                    await trio.sleep(0.05)
            await client.send_json(type="interrupt", played_ms=1000)
            # Now read everything: audio of the response, then `interrupted`, then nothing stale.
            with trio.fail_after(60):
                first = await client.expect("response.started")
                after, events = await _read_after_interrupt(client, first["response_id"])
            assert after == 0
            assert [e["type"] for e in events][:2] == ["interrupted", "response.done"]
            samples = await server.get("/metrics")
            assert "voice_trio_interrupts_total 1" in samples.text


async def test_droppable_deltas_are_dropped_and_counted_but_done_carries_the_text() -> None:
    # The echo brain streams one delta per word without waiting: with room for
    # two messages, most deltas are dropped; the `done` event still has it all.
    words = " ".join(f"từ{i}" for i in range(40))
    async with running_server(ws_outgoing_max=2) as server:
        async with server.connect("drops") as client:
            await client.send_json(type="text", text=words)
            events, _ = await client.until("response.done")
            kinds = [e["type"] for e in events]
            assert kinds[0] == "response.started"
            assert kinds[-2:] == ["response.text.done", "response.done"]
            deltas = [e["delta"] for e in events if e["type"] == "response.text.delta"]
            assert 0 < len(deltas) < 40
            assert events[-2]["text"] == words
            dropped = await server.metric(
                'voice_trio_outbox_dropped_total{kind="response.text.delta"}'
            )
            assert dropped == 40 - len(deltas)


async def test_inbound_audio_is_dropped_and_counted_when_the_brain_lags() -> None:
    async with running_server(
        ws_outgoing_max=2,
        ws_tts_chunk_bytes=96_000,
        ws_incoming_audio_max=5,
        slow_client_timeout_s=60,
    ) as server:
        async with server.connect("in-drops", message_queue_size=1) as client:
            frame = tone(48_000, seed=6)
            for _ in range(300):  # the client does not read: the pump waits, the queue fills
                await client.send_audio(frame)
            with trio.fail_after(30):
                while await server.metric("voice_trio_incoming_audio_dropped_total") < 1:
                    await trio.sleep(0.05)
            await client.send_json(type="commit_audio")
            with trio.fail_after(60):
                events, audio = await client.until("response.done")
            dropped = await server.metric("voice_trio_incoming_audio_dropped_total")
            # Everything not dropped came back, in order, whole frames only.
            assert len(audio) == (300 - dropped) * len(frame)
            assert audio[: len(frame)] == frame


async def test_slow_consumer_is_closed_with_1013() -> None:
    # Real time, not autojump_clock: with real sockets virtual time runs on while the
    # kernel moves bytes, which made an upper bound flaky on a busy machine. The outbox
    # cannot fill before the first send, so the close comes no sooner than 2 s after it.
    async with running_server(
        ws_outgoing_max=4, ws_tts_chunk_bytes=96_000, slow_client_timeout_s=2
    ) as server:
        async with server.connect("slow", message_queue_size=1) as client:
            frame = tone(48_000, seed=7)
            start = trio.current_time()
            for _ in range(300):
                await client.send_audio(frame)
            # Not reading: the server gives up after 2 s of a full outbox ...
            with trio.fail_after(60):
                while not await server.metric("voice_trio_slow_consumer_closes_total"):
                    await trio.sleep(0.05)
            assert trio.current_time() - start >= 2
            # ... and the client that reads now gets the rest of the cut frame and the close.
            code, reason = await client.closed()
            assert code == 1013
            assert reason == "slow consumer: outbox full for 2 s"
        with trio.fail_after(30):
            while await server.metric("voice_trio_rooms_open"):
                await trio.sleep(0.1)


# The tests below run in real time with short deadlines: a server's start-up and its
# sockets are real I/O, over which autojump_clock's virtual time would jump.


async def test_lazy_upstream_starts_on_activity_and_stops_when_idle() -> None:
    async with running_server(upstream_idle_s=3, session_idle_s=600) as server:
        async with server.connect("lazy") as client:
            await client.ping()  # pings and config do not start the brain
            assert await server.metric("voice_trio_upstreams_live") == 0
            await client.send_json(type="text", text="chào")
            await client.until("response.done")
            assert await server.metric("voice_trio_upstreams_live") == 1
            with trio.fail_after(30):  # torn down once idle for 3 s
                while await server.metric("voice_trio_upstreams_live"):
                    await trio.sleep(0.1)
            await client.send_audio(tone(2400))
            await client.send_json(type="commit_audio")
            await client.until("response.done")
            assert await server.metric("voice_trio_upstreams_live") == 1


async def test_idle_room_closes_with_1000() -> None:
    async with running_server(upstream_idle_s=1, session_idle_s=2) as server:
        async with server.connect("idle") as client:
            await client.send_json(type="text", text="chào")
            await client.until("response.done")
            start = trio.current_time()
            with trio.fail_after(30):
                code, reason = await client.closed()
            assert code == 1000
            assert "idle" in reason
            assert trio.current_time() - start >= 1.9  # not before its deadline
        assert await server.metric("voice_trio_rooms_open") == 0
        assert await server.metric("voice_trio_upstreams_live") == 0


async def test_metrics_events_arrive_while_active_and_stop_when_idle() -> None:
    async with running_server(room_metrics_interval_s=0.5) as server:
        async with server.connect("figures") as client:
            await client.send_json(type="text", text="chào")
            await client.until("response.done")
            events, _ = await client.until("metrics")
            m = events[-1]
            assert m["messages_in"] >= 1 and m["messages_out"] >= 5
            assert m["upstream_live"] is True
            assert m["outbox_depth"] >= 0 and m["outbox_dropped"] == 0
            # No activity for a while (four intervals): no more metrics events.
            await trio.sleep(2)
            await client.send_json(type="ping")
            assert await client.event(skip_metrics=False) == {"type": "pong"}


async def test_a_client_that_never_reads_again_does_not_hold_its_room() -> None:
    # Hypercorn's socket writes are shielded; the kernel's send deadline
    # (TCP_USER_TIMEOUT = slow-client timeout + margin) frees the room anyway.
    async with running_server(
        ws_outgoing_max=4, ws_tts_chunk_bytes=96_000, slow_client_timeout_s=1
    ) as server:
        async with server.connect("gone", message_queue_size=1) as client:
            frame = tone(48_000, seed=8)
            for _ in range(300):
                await client.send_audio(frame)
            with trio.fail_after(30):
                while await server.metric("voice_trio_rooms_open"):
                    await trio.sleep(0.25)
            assert await server.metric("voice_trio_slow_consumer_closes_total") == 1
            await client.ws.aclose()
