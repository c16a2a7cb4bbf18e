"""Silero VAD: the batched graph matches the original, turn events on real speech."""

from __future__ import annotations

import numpy as np
import onnxruntime  # type: ignore[import-untyped]
import pytest
import trio

from voice_trio.errors import ConfigError
from voice_trio.speech.vad import (
    CONTEXT_SAMPLES,
    WINDOW_SAMPLES,
    Resampler,
    SileroVad,
    TurnDetector,
    VadBatcher,
    VadConfig,
    VadStream,
    feed_many,
    silero_model_path,
)

from .support import SENTENCES, with_silence

SENTENCE = next(iter(SENTENCES))
BEFORE_S, AFTER_S = 1.0, 1.5


def speech_bounds(audio16: np.ndarray) -> tuple[float, float]:
    """First and last sample louder than -40 dBFS, in seconds."""
    loud = np.flatnonzero(np.abs(audio16) > 0.01)
    return loud[0] / 16_000, loud[-1] / 16_000


def original_probabilities(audio16: np.ndarray) -> np.ndarray:
    """The unmodified model, one window per call, state carried: the reference."""
    session = onnxruntime.InferenceSession(
        str(silero_model_path()), providers=["CPUExecutionProvider"]
    )
    h = np.zeros((1, 1, 128), np.float32)
    c = np.zeros((1, 1, 128), np.float32)
    context = np.zeros(CONTEXT_SAMPLES, np.float32)
    out = []
    for i in range(0, len(audio16) - WINDOW_SAMPLES + 1, WINDOW_SAMPLES):
        window = audio16[i : i + WINDOW_SAMPLES].astype(np.float32)
        row = np.concatenate([context, window])[None]
        p, h, c = session.run(None, {"input": row, "h": h, "c": c})
        out.append(float(p[0]))
        context = window[-CONTEXT_SAMPLES:]
    return np.array(out)


def test_model_io_is_as_documented(vad_model: SileroVad) -> None:
    session = onnxruntime.InferenceSession(
        str(silero_model_path()), providers=["CPUExecutionProvider"]
    )
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        ("input", ["seq_len", 576]),
        ("h", [1, 1, 128]),
        ("c", [1, 1, 128]),
    ]
    assert [o.name for o in session.get_outputs()] == ["speech_probs", "hn", "cn"]
    # The original reads rows as time: stacking two rooms would chain their state.
    rows = np.random.default_rng(1).normal(0, 0.1, (2, 576)).astype(np.float32)
    zeros = np.zeros((1, 1, 128), np.float32)
    together = session.run(None, {"input": rows, "h": zeros, "c": zeros})[0]
    alone = session.run(None, {"input": rows[1:], "h": zeros, "c": zeros})[0]
    assert together[1] != alone[0]
    # The rewritten session treats rows as independent streams.
    batched, _, _ = vad_model.run(
        rows, np.zeros((1, 2, 128), np.float32), np.zeros((1, 2, 128), np.float32)
    )
    single, _, _ = vad_model.run(rows[1:], zeros, zeros)
    assert batched[1] == single[0]


def test_batched_streams_match_the_original_model(
    vad_model: SileroVad, clips: dict[str, bytes]
) -> None:
    a = with_silence(clips[SENTENCE], 0.5, 0.5)
    b = with_silence(clips[list(SENTENCES)[1]], 0.2, 0.9)
    n = min(len(a), len(b))
    s1, s2 = VadStream(vad_model), VadStream(vad_model)
    p1: list[float] = []
    p2: list[float] = []
    rng = np.random.default_rng(7)
    pos = 0
    while pos < n:  # odd frame sizes, both rooms in one batch each time
        size = min(int(rng.integers(1, 3000)), n - pos)
        jobs = [
            (s1, s1.take_windows(a[pos : pos + size])),
            (s2, s2.take_windows(b[pos : pos + size])),
        ]
        vad_model.process(jobs)
        p1 += s1.pop_result().probabilities
        p2 += s2.pop_result().probabilities
        pos += size
    np.testing.assert_allclose(p1, original_probabilities(a[:n]), atol=1e-5)
    np.testing.assert_allclose(p2, original_probabilities(b[:n]), atol=1e-5)


@pytest.mark.trio
async def test_turn_events_on_synthetic_speech(
    vad_model: SileroVad, clips: dict[str, bytes]
) -> None:
    audio = with_silence(clips[SENTENCE], BEFORE_S, AFTER_S)
    onset, offset = speech_bounds(audio)
    stream = VadStream(vad_model)
    events = []
    for i in range(0, len(audio), 1600):  # 100 ms frames
        result = await stream.feed(audio[i : i + 1600])
        assert len(result.probabilities) in ((3, 4) if i + 1600 <= len(audio) else (0, 1, 2, 3))
        events += [(e, (i + 1600) / 16_000) for e in result.events]
    assert [e.kind for e, _ in events] == ["speech_started", "speech_stopped"]
    (started, started_at), (stopped, stopped_at) = events
    assert onset - 0.1 <= started.seconds <= onset + 0.3, (started, onset)
    assert started_at - started.seconds <= 0.2 + 0.1 + 0.032  # min_speech_ms + a frame + a window
    assert offset - 0.3 <= stopped.seconds <= offset + 0.3, (stopped, offset)
    assert 0.5 <= stopped_at - stopped.seconds <= 0.5 + 0.1 + 0.032  # end_silence_ms
    assert not stream.speaking


@pytest.mark.trio
async def test_silence_and_hum_are_not_speech(vad_model: SileroVad) -> None:
    t = np.arange(16_000 * 3) / 16_000
    hum = (0.05 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    for audio in (np.zeros(16_000 * 3, np.float32), hum):
        stream = VadStream(vad_model)
        result = await stream.feed(audio)
        assert result.events == () and max(result.probabilities) < 0.5


def test_turn_detector_hysteresis() -> None:
    cfg = VadConfig(start_threshold=0.5, end_threshold=0.35, min_speech_ms=96, end_silence_ms=160)
    det = TurnDetector(cfg)

    def run(probs: list[float]) -> list[tuple[str, int]]:
        return [(e.kind, e.sample // 512) for p in probs if (e := det.observe(p)) is not None]

    assert run([0.9, 0.9, 0.1]) == []  # 64 ms blip: too short
    assert run([0.9, 0.4, 0.9, 0.9]) == [("speech_started", 3)]  # 0.4 neither counts nor resets
    assert run([0.4] * 10) == []  # between thresholds: still speaking
    assert run([0.1, 0.1, 0.1, 0.1, 0.9]) == []  # 128 ms pause < 160 ms
    assert run([0.1] * 5) == [("speech_stopped", 22)]
    assert not det.speaking


@pytest.mark.trio
async def test_batcher_serves_many_rooms_concurrently(
    vad_model: SileroVad, clips: dict[str, bytes]
) -> None:
    audio = with_silence(clips[SENTENCE], BEFORE_S, AFTER_S)
    reference = VadStream(vad_model).process(audio).probabilities
    batcher = VadBatcher(vad_model)
    rooms = 20
    results: dict[int, list[float]] = {r: [] for r in range(rooms)}
    kinds: dict[int, list[str]] = {r: [] for r in range(rooms)}
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)

        async def room(r: int) -> None:
            stream = VadStream(vad_model)
            for i in range(0, len(audio), 1600):
                out = await batcher.feed(stream, audio[i : i + 1600])
                results[r] += out.probabilities
                kinds[r] += [e.kind for e in out.events]

        async with trio.open_nursery() as rooms_nursery:
            for r in range(rooms):
                rooms_nursery.start_soon(room, r)
        nursery.cancel_scope.cancel()
    for r in range(rooms):
        np.testing.assert_allclose(results[r], reference, atol=1e-5)
        assert kinds[r] == ["speech_started", "speech_stopped"]
    stats = batcher.statistics()
    assert stats.max_batch > 1 and stats.waiting == 0
    with pytest.raises(trio.ClosedResourceError):
        await batcher.feed(VadStream(vad_model), audio[:1600])


@pytest.mark.trio
async def test_feed_many_equals_separate_feeds(
    vad_model: SileroVad, clips: dict[str, bytes]
) -> None:
    audio = with_silence(clips[SENTENCE], 0.3, 0.3)
    streams = [VadStream(vad_model) for _ in range(3)]
    offsets = [0, 512 * 5, 777]
    results = await feed_many([(s, audio[o:]) for s, o in zip(streams, offsets, strict=True)])
    for o, result in zip(offsets, results, strict=True):
        assert result.probabilities == VadStream(vad_model).process(audio[o:]).probabilities


def test_resampler_keeps_continuity() -> None:
    t = np.arange(24_000) / 24_000
    tone = (np.sin(2 * np.pi * 440 * t) * 12_000).astype(np.int16)
    whole = Resampler().process(tone.tobytes(), last=True)
    r = Resampler()
    pieces = np.concatenate(
        [
            r.process(tone[i : i + 2400].tobytes(), last=i + 2400 >= len(tone))
            for i in range(0, len(tone), 2400)
        ]
    )
    assert abs(len(whole) - 16_000) <= 2 and abs(len(pieces) - 16_000) <= 2
    n = min(len(whole), len(pieces))
    assert np.max(np.abs(whole[:n] - pieces[:n])) < 1e-3
    assert whole.dtype == np.float32 and 0.3 < np.max(np.abs(whole)) < 0.4


def test_bad_audio_is_refused() -> None:
    stream_input = b"\x00\x01\x02"
    with pytest.raises(ValueError, match="even number of bytes"):
        Resampler().process(stream_input)
    with pytest.raises(ConfigError):
        VadConfig(start_threshold=0.3, end_threshold=0.5)
