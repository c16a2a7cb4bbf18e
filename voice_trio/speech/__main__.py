"""Measure the offline speech blocks on this machine: ``python -m voice_trio.speech``.

Prints model load time and RSS, ASR real-time factor on 2-4 s clips, VAD cost per
32 ms window (one room, and batched across rooms), VAD memory per room, and TTS time
to the first audio byte.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import numpy as np
import trio

from .asr import Recognizer
from .tts import EspeakTts
from .vad import Resampler, SileroVad, VadStream

CLIPS = (
    "Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ.",
    "Cảm ơn bạn, hẹn gặp lại vào ngày mai.",
    "Số điện thoại của tôi là không chín tám.",
)


def _rss() -> int:
    """Resident set size in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _tts(repeats: int) -> tuple[list[bytes], dict[str, float]]:
    tts = EspeakTts()
    clips = [await tts.synthesize(text) for text in CLIPS]
    figures = {}
    for label, text in (
        ("tts_first_audio_ms_short_clause", "Xin chào. Tôi có thể giúp gì cho bạn?"),
        ("tts_first_audio_ms_long_clause", CLIPS[0] + " " + CLIPS[1]),
    ):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            stream = tts.stream(text)
            await stream.__anext__()
            times.append((time.perf_counter() - start) * 1e3)
            await stream.aclose()
        figures[label] = statistics.median(times)
    return clips, figures


def _vad(audio16: np.ndarray, rooms: tuple[int, ...]) -> dict[str, float]:
    figures = {}
    gc.collect()
    before = _rss()
    model = SileroVad()
    figures["vad_model_rss_mb"] = (_rss() - before) / 1e6
    windows = len(audio16) // 512
    stream = VadStream(model)
    stream.process(audio16[:512])  # warm up
    start = time.perf_counter()
    for i in range(0, len(audio16), 1600):  # 100 ms frames, one session.run per window
        stream.process(audio16[i : i + 1600])
    figures["vad_us_per_window_single_incl_python"] = (time.perf_counter() - start) * 1e6 / windows
    rows = np.random.default_rng(0).normal(0, 0.05, (max(rooms), 576)).astype(np.float32)
    for n in rooms:
        h = np.zeros((1, n, 128), np.float32)
        reps = max(3, 3000 // n)
        start = time.perf_counter()
        for _ in range(reps):
            model.run(rows[:n], h, h)
        figures[f"vad_us_per_window_batch_{n}"] = (time.perf_counter() - start) * 1e6 / (reps * n)
    gc.collect()
    before = _rss()
    streams = [VadStream(model) for _ in range(10_000)]
    for s in streams:
        s.take_windows(audio16[:100])
    figures["vad_bytes_per_room"] = (_rss() - before) / len(streams)
    before = _rss()
    resamplers = [Resampler() for _ in range(2_000)]
    for r in resamplers:
        r.process(b"\x00\x00" * 2400)
    figures["resampler_bytes_per_room"] = (_rss() - before) / len(resamplers)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m voice_trio.speech", description=__doc__)
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="ASR runs per clip")
    args = parser.parse_args()

    clips, figures = trio.run(_tts, 10)
    audio16 = [Resampler().process(pcm, last=True) for pcm in clips]

    gc.collect()
    before = _rss()
    start = time.perf_counter()
    recognizer = Recognizer(cpu_threads=args.cpu_threads)
    figures["asr_load_s"] = time.perf_counter() - start
    figures["asr_model_rss_mb_after_load"] = (_rss() - before) / 1e6
    recognizer.transcribe_sync(audio16[0])  # first call allocates the working buffers
    figures["asr_model_rss_mb_after_first_call"] = (_rss() - before) / 1e6
    for audio, text in zip(audio16, CLIPS, strict=True):
        seconds = len(audio) / 16_000
        times = []
        heard = ""
        for _ in range(args.repeats):
            start = time.perf_counter()
            heard = recognizer.transcribe_sync(audio)
            times.append(time.perf_counter() - start)
        compute = statistics.median(times)
        figures[f"asr_rtf_{seconds:.1f}s_clip"] = compute / seconds
        print(f"# {seconds:.2f} s clip, {compute:.2f} s compute: {text!r} -> {heard!r}")

    figures |= _vad(np.concatenate([np.zeros(16_000, np.float32), *audio16]), (1, 10, 100, 1000))
    for name, value in figures.items():
        print(f"{name:45s} {value:10.3f}")


if __name__ == "__main__":
    main()
