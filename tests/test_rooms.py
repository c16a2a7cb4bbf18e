"""Many rooms: replacement, the session limit, 200 at once, /metrics, shutdown."""

from __future__ import annotations

import pytest
import trio
import trio_websocket

from .support import BOTH_PATHS, open_client, prom_samples, running_server, tone

DESIGN_METRICS = [
    "voice_trio_rooms_open",
    "voice_trio_upstreams_live",
    'voice_trio_loop_lag_seconds{quantile="0.5"}',
    'voice_trio_loop_lag_seconds{quantile="0.99"}',
    'voice_trio_loop_lag_seconds{quantile="1"}',
    "voice_trio_outbox_depth_max",
    'voice_trio_outbox_dropped_total{kind="response.text.delta"}',
    'voice_trio_outbox_dropped_total{kind="metrics"}',
    "voice_trio_incoming_audio_dropped_total",
    "voice_trio_slow_consumer_closes_total",
    "voice_trio_interrupts_total",
    'voice_trio_messages_total{direction="in"}',
    'voice_trio_messages_total{direction="out"}',
    'voice_trio_time_to_first_audio_seconds_bucket{le="+Inf"}',
    "voice_trio_time_to_first_audio_seconds_count",
    "voice_trio_time_to_first_audio_seconds_sum",
    "process_resident_memory_bytes",
]


async def test_metrics_endpoint_has_every_design_name() -> None:
    async with running_server() as server:
        async with server.connect("m") as client:
            await client.send_json(type="text", text="chào bạn")
            await client.until("response.done")
            response = await server.get("/metrics")
            assert response.headers["content-type"].startswith("text/plain")
            samples = prom_samples(response.text)
            for name in DESIGN_METRICS:
                assert name in samples, name
            assert samples["voice_trio_rooms_open"] == 1
            assert samples["voice_trio_upstreams_live"] == 1
            assert samples['voice_trio_messages_total{direction="in"}'] == 1
            # session.ready, started, 2 deltas, text.done, done
            assert samples['voice_trio_messages_total{direction="out"}'] == 6
            assert samples["process_resident_memory_bytes"] > 10_000_000
            assert "# TYPE voice_trio_loop_lag_seconds summary" in response.text
            assert "# TYPE voice_trio_time_to_first_audio_seconds histogram" in response.text


@BOTH_PATHS
async def test_a_second_connection_with_the_same_id_replaces_the_first(asgi: bool) -> None:
    async with running_server(asgi=asgi) as server:
        async with server.connect("same") as first:
            await first.send_json(type="text", text="một")
            await first.until("response.done")
            async with server.connect("same") as second:
                code, reason = await first.closed()
                assert (code, reason) == (4000, "replaced")
                await second.send_json(type="text", text="hai")
                events, _ = await second.until("response.done")
                assert events[0]["type"] == "response.started"
                assert await server.metric("voice_trio_rooms_open") == 1
        assert await server.metric("voice_trio_rooms_open") == 0


@BOTH_PATHS
async def test_max_sessions_refuses_new_rooms_with_1013(asgi: bool) -> None:
    async with running_server(asgi=asgi, max_sessions=2) as server:
        async with server.connect("r1"), server.connect("r2") as r2:
            async with trio_websocket.open_websocket_url(f"{server.ws_base}/ws/r3") as ws:
                try:
                    while True:
                        await ws.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    assert exc.reason.code == 1013
                    assert "full" in exc.reason.reason
            # Replacing an existing room is not a new room.
            async with server.connect("r2") as again:
                assert (await r2.closed())[0] == 4000
                await again.ping()
            assert await server.metric("voice_trio_rooms_open") == 1
        async with server.connect("r3") as r3:  # room again now
            await r3.ping()


@BOTH_PATHS
async def test_200_rooms_each_get_exactly_their_own_audio(asgi: bool) -> None:
    results: dict[int, bytes] = {}

    async def one_room(server, i: int) -> None:
        async with server.connect(f"crowd-{i}") as client:
            frames = [tone(2400, seed=i * 100 + k) for k in range(6)]
            for frame in frames:
                await client.send_audio(frame)
                await trio.sleep(0.01)
            await client.send_json(type="commit_audio")
            events, audio = await client.until("response.done")
            assert events[-1]["status"] == "completed"
            results[i] = audio
            assert audio == b"".join(frames), f"room {i} got audio that is not its own"

    async with running_server(asgi=asgi) as server:
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(one_room, server, i)
        assert len(results) == 200
        assert len(set(results.values())) == 200
        assert await server.metric("voice_trio_incoming_audio_dropped_total") == 0


async def test_graceful_shutdown_lets_the_turn_end_then_closes_with_1001() -> None:
    with trio.fail_after(20):
        async with running_server(shutdown_grace_s=30, drain=True) as server:
            async with server.connect("leaving") as client:
                await client.send_audio(tone(4800, seed=1))
                await client.expect("response.started")
                server.shutdown.set()
                await trio.sleep(0.2)
                # No new rooms while draining: refused, or closed with 1001.
                with pytest.raises(
                    (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed)
                ):
                    async with open_client(f"{server.ws_base}/ws/late"):
                        pass
                # The running turn may finish: the user's turn ends, the response completes.
                await client.send_json(type="commit_audio")
                events, audio = await client.until("response.done")
                assert events[-1]["status"] == "completed"
                assert len(audio) == 9600
                code, reason = await client.closed()
                assert code == 1001
                assert "shutting down" in reason
        # Leaving the block means serve() returned: the server stopped by itself, long
        # before its 30 s grace period.


async def test_graceful_shutdown_closes_a_lingering_turn_after_the_grace_period() -> None:
    # Real time: a server's start-up and sockets are real I/O (see tests/test_flow.py).
    async with running_server(shutdown_grace_s=3, drain=True) as server:
        async with server.connect("lingering") as client:
            await client.send_audio(tone(4800, seed=1))
            await client.expect("response.started")
            server.shutdown.set()
            start = trio.current_time()
            with trio.fail_after(30):
                code, _ = await client.closed()
            assert code == 1001
            assert 2.9 <= trio.current_time() - start <= 20  # after the grace period
