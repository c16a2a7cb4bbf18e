"""Provider faults (issue #10): every room survives, or closes with a clear reason.

The breaker and backoff logic is tested on a clock the test drives; each fault
is then injected by the stand-in servers (tests/fakes) and observed over real
sockets: what the room's client sees, how many connection attempts the fake
counted (no reconnect storm, Pipecat #871 / #3711), and what /metrics says.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
import trio

from voice_trio.app import VoiceTrioApp
from voice_trio.metrics import count_tasks
from voice_trio.providers.azure_realtime import AzureRealtimeBrain
from voice_trio.providers.breaker import Backoff, BreakerState, CircuitBreaker, CircuitOpen
from voice_trio.providers.cartesia import CartesiaPool, CartesiaVoice
from voice_trio.providers.local import LocalSpeech
from voice_trio.speech.asr import RecognizerError

from .fakes.azure_realtime import FakeAzureRealtime, open_fake_azure
from .fakes.cartesia import audio_for, open_fake_cartesia
from .support import Client, RunningServer, prom_samples, running_server

AZURE_OPEN = 'voice_trio_circuit_open{provider="azure"}'
AZURE_ERRORS = 'voice_trio_upstream_errors_total{provider="azure"}'


# ------------------------------------------------------------------ the logic


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_opens_after_consecutive_failures_only() -> None:
    clock = Clock()
    breaker = CircuitBreaker("azure", threshold=3, cooldown_s=10.0, clock=clock)
    for _ in range(2):
        breaker.admit().failed("HTTP 503")
    breaker.admit().succeeded()  # a success in between resets the count
    for _ in range(2):
        breaker.admit().failed("HTTP 503")
    assert breaker.state is BreakerState.CLOSED and not breaker.is_open()
    breaker.admit().failed("HTTP 429")
    assert breaker.state is BreakerState.OPEN and breaker.is_open()
    with pytest.raises(CircuitOpen) as refused:
        breaker.admit()
    assert refused.value.reason == "HTTP 429" and refused.value.retry_in_s == 10.0
    stats = breaker.statistics()
    assert (stats.failures_total, stats.opened_total, stats.refused_total) == (5, 1, 1)
    assert breaker.errors["azure"] == 5


def test_after_the_cool_down_one_probe_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker("cartesia", threshold=1, cooldown_s=10.0, clock=clock)
    breaker.admit().failed("HTTP 503")
    clock.now += 9.9
    with pytest.raises(CircuitOpen):
        breaker.admit()
    clock.now += 0.1
    probe = breaker.admit()
    assert probe.probe and breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpen):  # one probe at a time; the others are refused
        breaker.admit()
    probe.failed("HTTP 503")  # the probe failed: another whole cool-down
    assert breaker.state is BreakerState.OPEN
    clock.now += 5
    with pytest.raises(CircuitOpen):
        breaker.admit()
    clock.now += 5
    probe = breaker.admit()
    probe.release()  # the room went away: says nothing; the next caller probes
    probe = breaker.admit()
    assert probe.probe
    probe.succeeded()
    probe.failed("late")  # settled once: ignored
    assert breaker.state is BreakerState.CLOSED
    assert not breaker.admit().probe


def test_a_failure_seen_outside_an_attempt_counts_too() -> None:
    breaker = CircuitBreaker("azure", threshold=2, cooldown_s=1.0, clock=Clock())
    breaker.record_failure("session stalled")
    breaker.count_error()  # an error event: counted, not a health signal
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure("session dropped")
    assert breaker.state is BreakerState.OPEN
    assert breaker.errors["azure"] == 3


def test_backoff_is_exponential_capped_and_jittered() -> None:
    backoff = Backoff(base_s=0.5, max_s=8.0, jitter=0.5)
    rng = random.Random(7)
    assert backoff.delay(0, rng) == 0.0
    for failures, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (50, 8.0)]:
        delays = [backoff.delay(failures, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, min(delays))
        assert max(delays) - min(delays) > ceiling / 4  # rooms that fail together spread out


async def test_the_breaker_runs_on_trios_clock(autojump_clock: Any) -> None:
    breaker = CircuitBreaker("asr", threshold=1, cooldown_s=30.0)
    breaker.admit().failed("boom")
    await trio.sleep(29)
    with pytest.raises(CircuitOpen) as refused:
        breaker.admit()
    assert refused.value.retry_in_s == pytest.approx(1.0)
    await trio.sleep(1)
    breaker.admit().succeeded()
    assert not breaker.is_open()


# ------------------------------------------------------------------ Azure


def azure_app(fake: FakeAzureRealtime, **brain: Any) -> type:
    """Rooms on the real brain against ``fake``, all sharing the app's breaker."""

    class AzureApp(VoiceTrioApp):
        def make_brain(self, room: Any) -> AzureRealtimeBrain:
            options = {
                "endpoint": fake.endpoint,
                "api_key": fake.api_key,
                "deployment": "gpt-realtime",
                "output": "audio",
                "turn_detection": "none",
                "backoff_s": 0.02,
                "stable_after_s": 0.2,
                "breaker": self.azure_breaker,
                **brain,
            }
            return AzureRealtimeBrain(room.options, **options)

    return AzureApp


@asynccontextmanager
async def azure_server(
    fake_options: Any = None, breaker: Any = None, **brain: Any
) -> AsyncIterator[tuple[FakeAzureRealtime, RunningServer]]:
    async with open_fake_azure() as fake:
        for knob, value in (fake_options or {}).items():
            assert hasattr(fake, knob), knob
            setattr(fake, knob, value)
        app_class = azure_app(fake, **brain)
        # The breaker's settings, as PROVIDER_BREAKER_THRESHOLD / _COOLDOWN_S give them.
        fields = {f"provider_breaker_{k}": v for k, v in (breaker or {}).items()}
        async with running_server(app_class=app_class, ws_tts_chunk_bytes=4800, **fields) as server:
            yield fake, server


async def metrics(server: RunningServer) -> dict[str, float]:
    return prom_samples((await server.get("/metrics")).text)


async def first_error(client: Client) -> dict[str, Any]:
    while True:
        event = await client.event()
        if event["type"] == "error":
            return event


async def wait_for_tasks(server: RunningServer, baseline: int) -> None:
    """The room and everything it ran are gone: the task count is back where it was."""
    while server.app.rooms or count_tasks() > baseline:
        await trio.sleep(0.02)


async def test_a_session_dropped_mid_reply_ends_that_reply_and_the_next_turn_works() -> None:
    with trio.fail_after(30):
        async with azure_server() as (fake, server):
            baseline = count_tasks()
            async with server.connect("drop") as client:
                fake.drop_after_deltas = 2
                await client.send_json(type="text", text="một")
                events, _ = await client.until("response.done")
                assert [e["code"] for e in events if e["type"] == "error"] == [
                    "upstream_interrupted"
                ]
                # What was said is kept, and the reply is marked as cut.
                assert events[-2]["type"] == "response.text.done" and events[-2]["text"]
                assert events[-1]["status"] == "interrupted"
                await client.send_json(type="text", text="hai")
                events, _ = await client.until("response.done")
                assert events[-1]["status"] == "completed"
                assert not [e for e in events if e["type"] == "error"]
            await wait_for_tasks(server, baseline)
            assert len(fake.sessions) == 2 and fake.sessions[0].closed_by == "dropped"
            assert (await metrics(server))[AZURE_ERRORS] == 1  # the drop


async def test_a_stalled_session_is_given_up_and_no_client_waits_forever() -> None:
    with trio.fail_after(30):
        async with azure_server(stall_timeout_s=0.5) as (fake, server):
            baseline = count_tasks()
            async with server.connect("stall") as client:
                fake.stall_after_deltas = 2
                await client.send_json(type="text", text="một")
                rid = (await client.expect("response.started"))["response_id"]
                started = trio.current_time()
                events, audio = await client.until("response.done")
                assert trio.current_time() - started < 10
                errors = [e for e in events if e["type"] == "error"]
                assert errors == [
                    {
                        "type": "error",
                        "code": "upstream_stalled",
                        "message": "the model stopped answering for 0.5 s; reconnecting",
                        "fatal": False,
                    }
                ]
                assert events[-1]["response_id"] == rid and len(audio) == 2 * 4800
                assert events[-1]["status"] == "interrupted"
                # A fresh session answers the next turn.
                await client.send_json(type="text", text="hai")
                events, _ = await client.until("response.done")
                assert events[-1]["status"] == "completed"
            await wait_for_tasks(server, baseline)
            assert len(fake.sessions) == 2 and fake.sessions[0].closed_by == "stalled"
            assert (await metrics(server))[AZURE_ERRORS] == 1


async def test_an_idle_session_is_not_a_stall() -> None:
    with trio.fail_after(30):
        async with azure_server(stall_timeout_s=0.3) as (fake, server):
            async with server.connect("quiet") as client:
                await client.send_json(type="text", text="một")
                await client.until("response.done")
                await trio.sleep(1.0)  # nothing owed: silence is fine
                await client.send_json(type="text", text="hai")
                events, _ = await client.until("response.done")
                assert not [e for e in events if e["type"] == "error"]
            assert len(fake.sessions) == 1


async def test_error_events_reach_the_client_and_are_counted() -> None:
    with trio.fail_after(30):
        async with azure_server() as (fake, server):
            async with server.connect("errors") as client:
                fake.error_next_response = ("server_error", "The server had an error")
                await client.send_json(type="text", text="một")
                error = await client.expect("error")
                assert error["code"] == "upstream_server_error" and not error["fatal"]
                await client.send_json(type="text", text="hai")
                events, _ = await client.until("response.done")
                assert events[-1]["status"] == "completed"
            figures = await metrics(server)
            assert figures[AZURE_ERRORS] == 1 and figures[AZURE_OPEN] == 0


async def test_a_slow_handshake_times_out_a_bounded_number_of_times() -> None:
    with trio.fail_after(30):
        async with azure_server(
            {"handshake_delay_s": 30.0}, connect_timeout_s=0.3, reconnect_tries=2
        ) as (fake, server):
            async with server.connect("slow") as client:
                await client.send_json(type="text", text="một")
                error = await first_error(client)
                assert error["code"] == "upstream_unavailable" and not error["fatal"]
                assert "after 3 attempts (handshake timed out)" in error["message"]
                await client.ping()  # the room is still up
            assert fake.handshakes == 3
            assert (await metrics(server))[AZURE_ERRORS] == 3


async def test_accept_then_close_counts_as_failure_and_does_not_loop() -> None:
    # Pipecat #3711: the handshake succeeds, the service closes at once (a bad
    # key); counting only failed handshakes would reconnect forever.
    with trio.fail_after(30):
        async with azure_server(
            {"close_after_accept": True}, breaker={"threshold": 100}, reconnect_tries=3
        ) as (fake, server):
            async with server.connect("flap") as client:
                await client.send_json(type="text", text="một")
                error = await first_error(client)
                assert error["code"] == "upstream_unavailable"
                assert "after 4 attempts (session dropped after opening)" in error["message"]
                await trio.sleep(0.5)
                await client.ping()
            assert fake.handshakes == len(fake.sessions) == 4
            assert server.app.azure_breaker.statistics().consecutive_failures == 4


async def test_twenty_rooms_against_a_dead_azure_make_no_storm_and_a_probe_recovers() -> None:
    # A cool-down long enough that a busy machine still sees the breaker open below.
    breaker = {"threshold": 3, "cooldown_s": 5.0}
    with trio.fail_after(60):
        async with azure_server(breaker=breaker, reconnect_tries=5) as (fake, server):
            fake.reject_status = 503
            codes: list[str] = []

            async def room(i: int) -> None:
                async with server.connect(f"dead-{i}") as client:
                    await client.send_json(type="text", text="xin chào")
                    error = await first_error(client)
                    assert not error["fatal"] and fake.api_key not in error["message"]
                    codes.append(error["code"])
                    await client.ping()  # the room survives its provider

            async with trio.open_nursery() as nursery:
                for i in range(20):
                    nursery.start_soon(room, i)
            # Without the shared breaker: 20 rooms x 6 tries = 120 attempts.
            attempts = fake.handshakes
            assert attempts <= 20 + breaker["threshold"], attempts
            assert len(codes) == 20
            assert set(codes) <= {"upstream_circuit_open", "upstream_unavailable"}
            assert "upstream_circuit_open" in codes
            figures = await metrics(server)
            assert figures[AZURE_OPEN] == 1 and figures[AZURE_ERRORS] == attempts

            # While open, a new room is told at once and Azure is not touched.
            async with server.connect("while-open") as client:
                await client.send_json(type="text", text="xin chào")
                error = await first_error(client)
                assert error["code"] == "upstream_circuit_open"
                assert "HTTP 503" in error["message"]
            assert fake.handshakes == attempts

            # Azure is back; after the cool-down one probe closes the breaker.
            fake.reject_status = None
            await trio.sleep(breaker["cooldown_s"] + 0.1)
            async with server.connect("probe") as client:
                await client.send_json(type="text", text="xin chào")
                events, _ = await client.until("response.done")
                assert events[-1]["status"] == "completed"
                while (await metrics(server))[AZURE_OPEN]:
                    await trio.sleep(0.05)  # the session is stable after 0.2 s
            assert fake.handshakes == attempts + 1
            assert server.app.azure_breaker.state is BreakerState.CLOSED


async def test_refused_handshakes_from_one_room_back_off() -> None:
    with trio.fail_after(30):
        async with azure_server(breaker={"threshold": 100}, reconnect_tries=4, backoff_s=0.1) as (
            fake,
            server,
        ):
            fake.reject_status = 429
            async with server.connect("backoff") as client:
                started = trio.current_time()
                await client.send_json(type="text", text="một")
                error = await first_error(client)
                took = trio.current_time() - started
            assert error["code"] == "upstream_unavailable" and fake.rejected == 5
            # Waits of at least half of 0.1, 0.2, 0.4, 0.8 s between the five attempts.
            assert took >= 0.75


# ------------------------------------------------------------------ Cartesia


@asynccontextmanager
async def voiced_server(
    pool_options: Any = None, **fields: Any
) -> AsyncIterator[tuple[Any, CartesiaPool, RunningServer]]:
    async with (
        open_fake_azure() as azure,
        open_fake_cartesia() as cartesia,
        trio.open_nursery() as nursery,
    ):
        pool_options = {"stall_timeout_s": 0.5, "backoff_s": 0.05, **(pool_options or {})}
        breaker = pool_options.pop("breaker", {})
        pool = CartesiaPool(
            api_key=cartesia.api_key,
            base_url=cartesia.base_url,
            breaker=CircuitBreaker("cartesia", **breaker),
            **pool_options,
        )
        await nursery.start(pool.run)

        class VoicedApp(VoiceTrioApp):
            def make_brain(self, room: Any) -> AzureRealtimeBrain:
                return AzureRealtimeBrain(
                    room.options,
                    endpoint=azure.endpoint,
                    api_key=azure.api_key,
                    deployment="gpt-realtime",
                    output="text",
                    turn_detection="none",
                    breaker=self.azure_breaker,
                )

            def make_voice(self, room: Any) -> CartesiaVoice:
                return CartesiaVoice(pool, room.options, voice_id=cartesia.voice_id)

        async with running_server(app_class=VoicedApp, **fields) as server:
            server.app.cartesia = pool  # the app's metrics read its pool's breaker
            pool.breaker.errors = server.app.metrics.upstream_errors
            yield cartesia, pool, server
        nursery.cancel_scope.cancel()


CARTESIA_ERRORS = 'voice_trio_upstream_errors_total{provider="cartesia"}'
CARTESIA_OPEN = 'voice_trio_circuit_open{provider="cartesia"}'


async def test_a_cartesia_error_ends_that_reply_only() -> None:
    with trio.fail_after(30):
        async with voiced_server() as (cartesia, pool, server):
            cartesia.error_on_word = "lỗi"
            async with server.connect("tts-error") as client:
                await client.send_json(type="text", text="lỗi")
                events, _ = await client.until("response.done")
                errors = [e for e in events if e["type"] == "error"]
                assert [(e["code"], e["fatal"]) for e in errors] == [("tts_failed", False)]
                assert "synthesis failed" in errors[0]["message"]
                assert events[-1]["status"] == "interrupted"
                await client.send_json(type="text", text="tốt")
                events, audio = await client.until("response.done")
                assert events[-1]["status"] == "completed"
                assert audio == audio_for("Dạ, bạn vừa nói: tốt")
            figures = await metrics(server)
            assert figures[CARTESIA_ERRORS] == 1 and figures[CARTESIA_OPEN] == 0


async def test_a_stalled_cartesia_context_fails_alone_and_is_cancelled() -> None:
    with trio.fail_after(30):
        async with voiced_server() as (cartesia, pool, server):
            cartesia.stall_on_word = "chậm"
            async with server.connect("tts-stall") as client:
                await client.send_json(type="text", text="chậm")
                events, _ = await client.until("response.done")
                errors = [e for e in events if e["type"] == "error"]
                assert [e["code"] for e in errors] == ["tts_stalled"]
                assert events[-1]["status"] == "interrupted"
                await client.send_json(type="text", text="nhanh")
                events, audio = await client.until("response.done")
                assert events[-1]["status"] == "completed" and audio
            stalled = [c for c in cartesia.contexts.values() if "chậm" in c.text]
            assert len(stalled) == 1 and stalled[0].cancelled and not stalled[0].done
            assert pool.statistics().contexts == 0
            assert (await metrics(server))[CARTESIA_ERRORS] == 1


async def test_a_cartesia_that_refuses_connections_is_not_hammered() -> None:
    # Pipecat #871: over Cartesia's concurrency limit (429), every call retried at
    # once and forever. Here the pool backs off and its breaker opens.
    pool_options = {"max_sockets": 4, "breaker": {"threshold": 3, "cooldown_s": 30.0}}
    with trio.fail_after(60):
        async with voiced_server(pool_options) as (cartesia, pool, server):
            cartesia.reject_status = 429
            codes: list[str] = []

            async def room(i: int) -> None:
                async with server.connect(f"busy-{i}") as client:
                    for turn in range(3):
                        await client.send_json(type="text", text=f"phòng {i} lượt {turn}")
                        error = await first_error(client)
                        codes.append(error["code"])
                        await client.until("response.done")

            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(room, i)
            assert len(codes) == 30
            assert set(codes) <= {"tts_unavailable", "tts_circuit_open"}
            assert codes.count("tts_circuit_open") >= 20
            # 30 replies wanted a socket; at most threshold + the sockets opening at once tried.
            assert cartesia.handshakes <= 3 + 4, cartesia.handshakes
            figures = await metrics(server)
            assert figures[CARTESIA_OPEN] == 1
            assert figures[CARTESIA_ERRORS] == cartesia.handshakes


# ------------------------------------------------------------------ recognizer


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("CTranslate2: std::bad_alloc")


async def test_a_failing_model_is_a_recognizer_error_then_a_brain_error(
    local_speech: LocalSpeech, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_speech.recognizer.model, "encode", _boom)
    monkeypatch.setattr(local_speech, "breaker", CircuitBreaker("asr", threshold=2))
    audio = (np.sin(np.arange(16_000) / 5) * 0.3).astype(np.float32)
    before = local_speech.recognizer.statistics()
    with pytest.raises(RecognizerError) as raised:
        local_speech.recognizer.transcribe_sync(audio)
    assert isinstance(raised.value.__cause__, RuntimeError)
    assert "bad_alloc" not in str(raised.value)  # the class only, for users
    codes = []
    for _ in range(3):
        try:
            await local_speech.transcribe(audio, language="vi")
        except Exception as exc:
            codes.append(getattr(exc, "code", type(exc).__name__))
    assert codes == ["asr_failed", "asr_failed", "asr_unavailable"]
    after = local_speech.recognizer.statistics()
    # The direct call and two through the breaker; the third was refused before the model.
    assert after.failures - before.failures == 3
    assert local_speech.breaker.errors["asr"] == 2


async def test_a_room_whose_recognizer_fails_says_so_and_goes_on(
    local_speech: LocalSpeech, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from voice_trio.demo import build_receptionist
    from voice_trio.speech.tts import EspeakTts

    from .test_local import Conversation

    speech = await EspeakTts().synthesize("Xin chào, tôi muốn đặt lịch hẹn.")
    monkeypatch.setattr(local_speech.recognizer.model, "encode", _boom)
    monkeypatch.setattr(local_speech.recognizer.model, "transcribe", _boom)
    monkeypatch.setattr(local_speech, "breaker", CircuitBreaker("asr", threshold=1))
    graph = build_receptionist(tmp_path / "a.sqlite3")
    with trio.fail_after(90):
        async with running_server(
            voice_brain="local",
            speech=local_speech,
            agent=graph,
            agent_greeting=False,
            asr_partial_interval_s=60.0,  # no partials: the final turn is the one that fails
        ) as server:
            async with server.connect("asr-fails") as client:
                talk = Conversation(client)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(talk.read)
                    await talk.speak(speech, before_s=0.3, after_s=0.3)
                    await client.send_json(type="commit_audio")
                    error = await talk.wait_for("error")
                    # The pause's early recognition may fail first (silently: it is only a
                    # look-ahead) and open the breaker: the turn is then refused as unavailable.
                    assert error in (
                        {
                            "type": "error",
                            "code": "asr_failed",
                            "message": "speech recognition failed on that turn; "
                            "please say it again",
                            "fatal": False,
                        },
                        {
                            "type": "error",
                            "code": "asr_unavailable",
                            "message": "speech recognition is failing; please type instead, "
                            "or try again in 30 s",
                            "fatal": False,
                        },
                    ), error
                    figures = await metrics(server)
                    assert figures['voice_trio_upstream_errors_total{provider="asr"}'] == 1
                    assert figures['voice_trio_circuit_open{provider="asr"}'] == 1
                    # Typing still works: the room and its brain are up.
                    mark = len(talk.events)
                    await client.send_json(type="text", text="Tôi muốn đặt lịch hẹn")
                    done = await talk.wait_for("response.done", after=mark)
                    assert done["status"] == "completed"
                    nursery.cancel_scope.cancel()
