"""eSpeak NG TTS: real audio, streaming order, voices, cancellation, errors."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import numpy as np
import psutil  # type: ignore[import-untyped]
import pytest
import trio
import trio.lowlevel

from voice_trio.errors import ConfigError
from voice_trio.speech.tts import (
    VIETNAMESE_VOICES,
    EspeakNotFoundError,
    EspeakOptions,
    EspeakTts,
    parse_wav,
)

SENTENCE = "Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ."
LONG = " ".join(["Tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ sáng với bác sĩ"] * 6)


def espeak_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "espeak" in p.name()]


def assert_speech(pcm: bytes, min_s: float, max_s: float) -> None:
    assert len(pcm) % 2 == 0
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    seconds = len(samples) / 24_000
    assert min_s <= seconds <= max_s, seconds
    rms = float(np.sqrt(np.mean(samples**2)))
    assert rms > 500, rms  # not silence
    assert np.abs(samples).max() < 32767  # headroom: no clipping
    voiced = np.mean(np.abs(samples) > 1000)
    assert voiced > 0.2, voiced


@pytest.mark.trio
async def test_sentence_becomes_24k_speech() -> None:
    tts = EspeakTts()
    pcm = await tts.synthesize(SENTENCE)
    assert_speech(pcm, 2.0, 6.0)
    stats = tts.statistics()
    assert stats.clauses == 1 and stats.running == 0
    assert stats.audio_seconds == pytest.approx(len(pcm) / 48_000)


@pytest.mark.trio
async def test_wav_from_espeak_parses_at_22050() -> None:
    tts = EspeakTts()
    rate, samples = parse_wav(await tts.synthesize_wav("Xin chào."))
    assert rate == 22_050 and samples.dtype == np.dtype("<i2") and 0.3 < len(samples) / rate < 2.0


@pytest.mark.trio
async def test_first_clause_arrives_before_later_clauses_are_synthesised() -> None:
    tts = EspeakTts(chunk_bytes=4800)
    text = "Xin chào. Tôi là lễ tân của phòng khám. Bạn cần gì ạ?"
    seen: list[int] = []
    chunks: list[bytes] = []
    start = time.perf_counter()
    first_at = 0.0
    async for chunk in tts.stream(text):
        if not chunks:
            first_at = time.perf_counter() - start
        seen.append(tts.statistics().clauses)
        chunks.append(chunk)
    assert seen[0] == 1 and seen[-1] == 3  # one clause done when audio first flows
    assert all(len(c) <= 4800 for c in chunks)
    assert first_at < 0.5
    assert_speech(b"".join(chunks), 3.0, 9.0)


@pytest.mark.trio
async def test_deltas_give_the_same_audio_as_whole_text() -> None:
    tts = EspeakTts()
    text = "Xin chào. Bạn muốn đặt lịch hẹn vào ngày nào?"

    async def deltas() -> AsyncIterator[str]:
        for i in range(0, len(text), 3):
            await trio.lowlevel.checkpoint()
            yield text[i : i + 3]

    streamed = b"".join([c async for c in tts.stream_deltas(deltas())])
    assert streamed == await tts.synthesize(text)


@pytest.mark.trio
@pytest.mark.parametrize("voice", VIETNAMESE_VOICES)
async def test_each_vietnamese_voice_speaks(voice: str) -> None:
    pcm = await EspeakTts(options=EspeakOptions(voice=voice)).synthesize("Cảm ơn bạn rất nhiều.")
    assert_speech(pcm, 0.8, 4.0)


@pytest.mark.trio
async def test_speed_changes_duration() -> None:
    tts = EspeakTts()
    slow = await tts.synthesize(SENTENCE, options=EspeakOptions(speed_wpm=120))
    fast = await tts.synthesize(SENTENCE, options=EspeakOptions(speed_wpm=260))
    assert len(slow) > 1.5 * len(fast)


@pytest.mark.trio
async def test_cancel_mid_sentence_kills_espeak_at_once() -> None:
    tts = EspeakTts()
    got: list[bytes] = []
    killed_after = -1.0
    with trio.move_on_after(20) as timeout:
        async with trio.open_nursery() as nursery:

            async def speak() -> None:
                async for chunk in tts.stream(LONG):
                    got.append(chunk)

            nursery.start_soon(speak)
            # wait until audio flowed and the next clause's espeak-ng is running, then cut
            while not (got and espeak_children()):  # noqa: ASYNC110 - polling the OS
                await trio.sleep(0.0005)
            t = time.perf_counter()
            nursery.cancel_scope.cancel()
        killed_after = time.perf_counter() - t
    assert not timeout.cancelled_caught
    assert got
    assert espeak_children() == []
    assert tts.statistics().running == 0
    assert killed_after < 0.2  # SIGKILL, not SIGTERM + grace period


@pytest.mark.trio
async def test_abandoned_iterator_leaves_no_process() -> None:
    tts = EspeakTts()
    stream = tts.stream(LONG)
    assert await stream.__anext__()
    assert espeak_children() == []
    await stream.aclose()


def test_missing_espeak_names_the_debian_package() -> None:
    with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng"):
        EspeakTts(executable="espeak-ng-not-installed")


@pytest.mark.parametrize(
    "kwargs",
    [{"voice": "-x"}, {"voice": "vi vn"}, {"speed_wpm": 10}, {"pitch": 100}, {"amplitude": -1}],
)
def test_bad_options_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        EspeakOptions(**kwargs)  # type: ignore[arg-type]


def test_a_bad_chunk_size_is_refused() -> None:
    with pytest.raises(ConfigError, match="positive even number"):
        EspeakTts(chunk_bytes=9601)
