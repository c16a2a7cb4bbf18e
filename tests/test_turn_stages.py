"""Per-stage turn timings (#14): where a reply's time to first audio went.

The embedded brain in a real room, spoken to in Vietnamese (eSpeak's voice) and
then typed to, with the analytics stream on a real redis-server: each reply's
``turn.completed`` event and its ``response.done`` on the wire carry
``stages_ms`` (end_of_turn, asr, brain, tts, total), the stages follow the order
of the events on the wire and sum to the total, and ``/metrics`` has the same
figures in ``voice_trio_turn_stage_seconds{stage}``. No speed is asserted.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from voice_trio.metrics import TURN_STAGES, ServerMetrics
from voice_trio.room.minutes import turn_stages
from voice_trio.speech.tts import EspeakTts

from .support import prom_samples
from .test_analytics import read_stream
from .test_cluster import RedisServer
from .test_local import local_room

_names = itertools.count()


async def replies(redis: RedisServer, stream: str, n: int) -> list[dict[str, Any]]:
    """The first ``n`` assistant ``turn.completed`` events of the stream (waiting for them)."""
    while True:
        events = [
            e
            for e in await read_stream(redis.url, stream)
            if e["type"] == "turn.completed" and e["role"] == "assistant"
        ]
        if len(events) >= n:
            return events
        await trio.sleep(0.05)


def stage_metrics(text: str) -> dict[str, tuple[float, float]]:
    samples = prom_samples(text)
    return {
        stage: (
            samples[f'voice_trio_turn_stage_seconds_count{{stage="{stage}"}}'],
            samples[f'voice_trio_turn_stage_seconds_sum{{stage="{stage}"}}'],
        )
        for stage in TURN_STAGES
    }


async def test_a_spoken_and_a_typed_reply_carry_their_stages(
    local_speech: Any, redis: RedisServer, tmp_path: Path
) -> None:
    stream = f"stages{next(_names)}:events"
    speech = await EspeakTts().synthesize("Xin chào, tôi muốn đặt lịch hẹn vào thứ hai.")
    fields = {
        "agent_greeting": False, "analytics_sink": "redis", "analytics_redis_url": redis.url,
        "analytics_stream": stream, "transcript_db_path": str(tmp_path / "t.sqlite3"),
    }  # fmt: skip
    with trio.fail_after(180):
        async with local_room(local_speech, tmp_path / "a.sqlite3", "staged", **fields) as (
            server,
            talk,
        ):
            # The wire's own clock: when each mark reached the client.
            await talk.speak(speech, before_s=1.0, after_s=1.5)
            stopped = await talk.wait_for("input.speech_stopped")
            final = await talk.wait_for("input.transcript", final=True)
            started = await talk.wait_for("response.started", after=talk.events.index(final))
            text = await talk.wait_for("response.text.delta", after=talk.events.index(started))
            done = await talk.wait_for("response.done", after=talk.events.index(started))
            order = [talk.events.index(e) for e in (stopped, final, started, text)]
            assert order == sorted(order)
            assert talk.audio[started["response_id"]], "the reply was not spoken"
            (spoken,) = await replies(redis, stream, 1)

            mark = len(talk.events)
            await talk.client.send_json(type="text", text="Tôi muốn đặt lịch hẹn")
            typed_done = await talk.wait_for("response.done", after=mark)
            typed = (await replies(redis, stream, 2))[1]
            metrics = stage_metrics((await server.get("/metrics")).text)
            # Typed turns whose answer eSpeak makes whole before its first audio has
            # left: their response.done still carries the stages (made as it leaves).
            more = []
            for _ in range(3):
                mark = len(talk.events)
                await talk.client.send_json(type="text", text="Bây giờ là mấy giờ rồi?")
                more.append(await talk.wait_for("response.done", after=mark))

    stages = spoken["stages_ms"]
    assert set(stages) == set(TURN_STAGES)
    assert all(isinstance(stages[s], float) for s in TURN_STAGES), stages
    # The client has the same figures on the reply's response.done.
    assert done["stages_ms"] == stages and typed_done["stages_ms"] == typed["stages_ms"]
    # The end of the turn was decided from a pause and its transcript (Whisper took
    # time there); each stage is a span of a clock that only goes forward.
    assert stages["end_of_turn"] > 0 and stages["asr"] >= 0
    assert stages["brain"] >= 0 and stages["tts"] > 0
    # ttfa_ms counts from the end of the turn, total from the end of the speech.
    assert stages["total"] == pytest.approx(spoken["ttfa_ms"] + stages["end_of_turn"], abs=0.2)
    known = [stages[s] for s in TURN_STAGES if s != "total"]
    assert abs(sum(known) - stages["total"]) <= 0.3
    # A typed turn has no speech and no recognition: the brain's stage starts at its end.
    t = typed["stages_ms"]
    assert t["end_of_turn"] is None and t["asr"] is None
    assert t["brain"] is not None and t["tts"] is not None
    assert t["total"] == typed["ttfa_ms"]
    assert abs(t["brain"] + t["tts"] - t["total"]) <= 0.2
    for ended in more:
        assert ended["stages_ms"]["tts"] is not None and ended["stages_ms"]["total"] > 0, ended
    # /metrics: two replies timed, one of them spoken, with the same figures.
    counts = {s: n for s, (n, _) in metrics.items()}
    assert counts == {"end_of_turn": 1, "asr": 1, "brain": 2, "tts": 2, "total": 2}
    for stage in ("end_of_turn", "asr"):
        assert metrics[stage][1] * 1000 == pytest.approx(stages[stage], abs=0.1)
    for stage in ("brain", "tts", "total"):
        assert metrics[stage][1] * 1000 == pytest.approx(stages[stage] + t[stage], abs=0.2)


def marks(
    end: float | None, heard: float | None, text: float | None, spoken: float | None = None
) -> Any:
    return SimpleNamespace(reply_to=end, heard_at=heard, first_text_at=text, speech_end=spoken)


def test_marks_out_of_order_leave_their_stages_unknown() -> None:
    metrics = ServerMetrics()
    # In order (the embedded brain): every stage, summing to the total.
    s = turn_stages(marks(10.0, 10.5, 10.75), 11.0, metrics)
    assert s is not None and (s.asr, s.brain, s.tts, s.total) == (500.0, 250.0, 250.0, 1000.0)
    # Azure: its transcript comes after the reply began; the model's time is the brain's.
    s = turn_stages(marks(10.0, 10.9, 10.5), 11.0, metrics)
    assert s is not None and (s.asr, s.brain, s.tts, s.total) == (None, 500.0, 500.0, 1000.0)
    # Audio before any text: only the total (and a transcript that came before it).
    s = turn_stages(marks(10.0, 10.25, 11.5), 11.0, metrics)
    assert s is not None and (s.asr, s.brain, s.tts, s.total) == (250.0, None, None, 1000.0)
    # The transcript of an earlier turn is not this one's.
    s = turn_stages(marks(10.0, 9.0, 10.5), 11.0, metrics)
    assert s is not None and (s.asr, s.brain) == (None, 500.0)
    # The end of the speech before the end of the turn: the total counts from it.
    s = turn_stages(marks(10.0, 10.0, 10.25, spoken=9.5), 11.0, metrics)
    assert s is not None and (s.end_of_turn, s.asr, s.total) == (500.0, 0.0, 1500.0)
    # One said after the end of the turn is not this turn's speech.
    s = turn_stages(marks(10.0, 10.5, 10.75, spoken=10.2), 11.0, metrics)
    assert s is not None and (s.end_of_turn, s.total) == (None, 1000.0)
    # Not a reply (a greeting): no stages, nothing observed.
    assert turn_stages(marks(None, 9.0, 10.5), 11.0, metrics) is None
    counts = {stage: h.count for stage, h in metrics.turn_stages.items()}
    assert counts == {"end_of_turn": 1, "asr": 4, "brain": 5, "tts": 5, "total": 6}
