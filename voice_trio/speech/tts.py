"""Offline Vietnamese text to speech with the eSpeak NG command line.

eSpeak NG is GPL-3.0+, so it is only ever run as a separate program (one short
``espeak-ng --stdout`` process per clause), never linked or loaded. Text is cut at
clause boundaries (:mod:`.textcut`), each clause is synthesised (WAV, 22050 Hz),
resampled to 24 kHz PCM16 with one continuous ``soxr`` stream, and handed out as
bytes: the first clause plays while later ones are not yet synthesised. Cancelling
the caller's scope kills the running process at once (SIGKILL) and reaps it.

Robotic but intelligible; eSpeak's first audio comes in ~20-50 ms for a short clause.
"""

from __future__ import annotations

import re
import shutil
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import soxr  # type: ignore[import-untyped]
import trio

from ..errors import ConfigError, VoiceTrioError
from .textcut import ClauseCutter

__all__ = [
    "VIETNAMESE_VOICES",
    "EspeakNotFoundError",
    "EspeakOptions",
    "EspeakTts",
    "TtsError",
    "TtsStatistics",
    "parse_wav",
]

VIETNAMESE_VOICES = ("vi", "vi-vn-x-central", "vi-vn-x-south")
_DEBIAN_HINT = "install the Debian/Ubuntu package 'espeak-ng' (apt-get install espeak-ng)"
_VOICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")


class TtsError(VoiceTrioError):
    """eSpeak NG failed or produced audio that could not be read."""


class EspeakNotFoundError(TtsError):
    """The ``espeak-ng`` program is not installed."""


@dataclass(frozen=True, slots=True)
class EspeakOptions:
    """Voice settings: ``voice`` one of :data:`VIETNAMESE_VOICES` (Northern, Central,
    Southern) or any eSpeak voice name; ``speed_wpm`` 80-450; ``pitch`` 0-99;
    ``amplitude`` 0-200; ``word_gap`` in units of 10 ms."""

    voice: str = "vi"
    speed_wpm: int = 175
    pitch: int = 50
    amplitude: int = 80  # 100 peaks at full scale; resampling would then clip
    word_gap: int = 0

    def __post_init__(self) -> None:
        if not _VOICE_NAME.fullmatch(self.voice):
            raise ConfigError(f"invalid eSpeak voice name {self.voice!r}")
        for name, low, high in (
            ("speed_wpm", 80, 450),
            ("pitch", 0, 99),
            ("amplitude", 0, 200),
            ("word_gap", 0, 1000),
        ):
            value = getattr(self, name)
            if not low <= value <= high:
                raise ConfigError(f"EspeakOptions.{name} must be within {low}..{high}, got {value}")

    def arguments(self) -> list[str]:
        return ["-v", self.voice, "-s", str(self.speed_wpm), "-p", str(self.pitch),
                "-a", str(self.amplitude), "-g", str(self.word_gap)]  # fmt: skip


@dataclass(frozen=True, slots=True)
class TtsStatistics:
    """Totals of one :class:`EspeakTts`."""

    clauses: int
    running: int
    audio_seconds: float
    synth_seconds: float
    first_audio_seconds: float = field(default=0.0)  # of the latest stream


def parse_wav(data: bytes) -> tuple[int, npt.NDArray[np.int16]]:
    """Sample rate and mono PCM16 samples of a WAV file, tolerating the unknown
    (0x7fffffff) sizes that ``espeak-ng --stdout`` writes to a pipe."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise TtsError("espeak-ng output is not a WAV file")
    pos = 12
    rate = 0
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if tag == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, body)
            if (fmt, channels, bits) != (1, 1, 16):
                raise TtsError(f"unsupported WAV format {fmt=} {channels=} {bits=}")
        elif tag == b"data":
            if not rate:
                raise TtsError("WAV data chunk before its fmt chunk")
            end = min(body + size, len(data))
            end -= (end - body) % 2
            return rate, np.frombuffer(data, dtype="<i2", count=(end - body) // 2, offset=body)
        pos = body + size + (size & 1)
    raise TtsError("WAV file has no data chunk")


async def _kill_now(process: trio.Process) -> None:
    """deliver_cancel for run_process: SIGKILL at once (run_process then reaps it)."""
    process.kill()


class _Stream:
    """Per-stream conversion state: one soxr stream keeps clause edges continuous."""

    __slots__ = ("_resampler", "_source_rate", "out_rate")

    def __init__(self, out_rate: int) -> None:
        self.out_rate = out_rate
        self._source_rate = 0
        self._resampler: soxr.ResampleStream | None = None

    def convert(self, wav: bytes) -> bytes:
        rate, pcm = parse_wav(wav)
        if self._resampler is None:
            self._source_rate = rate
            if rate != self.out_rate:
                self._resampler = soxr.ResampleStream(
                    rate, self.out_rate, 1, dtype="int16", quality="HQ"
                )
        elif rate != self._source_rate:
            raise TtsError(f"espeak-ng changed its sample rate from {self._source_rate} to {rate}")
        if self._resampler is None:
            return pcm.tobytes()
        out: npt.NDArray[np.int16] = self._resampler.resample_chunk(pcm)
        return out.tobytes()

    def finish(self) -> bytes:
        if self._resampler is None:
            return b""
        out: npt.NDArray[np.int16] = self._resampler.resample_chunk(
            np.zeros(0, dtype=np.int16), last=True
        )
        return out.tobytes()


class EspeakTts:
    """Streamed Vietnamese TTS: text (or text deltas) in, 24 kHz PCM16 bytes out.

    One instance may serve every room; ``limiter`` bounds how many ``espeak-ng``
    processes run at once across them. Chunks are at most ``chunk_bytes`` long.
    """

    def __init__(
        self,
        *,
        options: EspeakOptions | None = None,
        sample_rate: int = 24_000,
        chunk_bytes: int = 9600,
        executable: str = "espeak-ng",
        limiter: trio.CapacityLimiter | None = None,
        comma_min_chars: int = 30,
        max_clause_chars: int = 200,
    ) -> None:
        found = shutil.which(executable)
        if found is None:
            raise EspeakNotFoundError(f"{executable!r} was not found on PATH; {_DEBIAN_HINT}")
        if chunk_bytes < 2 or chunk_bytes % 2:
            raise ConfigError("chunk_bytes must be a positive even number")
        self.executable = found
        self.options = options or EspeakOptions()
        self.sample_rate = sample_rate
        self.chunk_bytes = chunk_bytes
        self.limiter = limiter or trio.CapacityLimiter(4)
        self.comma_min_chars = comma_min_chars
        self.max_clause_chars = max_clause_chars
        self._clauses = 0
        self._running = 0
        self._audio = 0.0
        self._synth = 0.0
        self._first_audio = 0.0

    async def synthesize_wav(self, clause: str, *, options: EspeakOptions | None = None) -> bytes:
        """Run ``espeak-ng`` on one clause; return its WAV bytes (22050 Hz PCM16)."""
        command = [
            self.executable,
            *(options or self.options).arguments(),
            "-b",
            "1",
            "--stdout",
            "--stdin",
        ]
        start = time.perf_counter()
        async with self.limiter:
            self._running += 1
            try:
                result = await trio.run_process(
                    command,
                    stdin=clause.encode("utf-8"),
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                    deliver_cancel=_kill_now,
                )
            except FileNotFoundError:
                raise EspeakNotFoundError(
                    f"{self.executable!r} disappeared; {_DEBIAN_HINT}"
                ) from None
            finally:
                self._running -= 1
        if result.returncode != 0:
            detail = result.stderr.decode("utf-8", "replace").strip()
            raise TtsError(f"espeak-ng exited with {result.returncode}: {detail or 'no message'}")
        self._synth += time.perf_counter() - start
        self._clauses += 1
        return result.stdout

    def _chunks(self, pcm: bytes) -> list[bytes]:
        self._audio += len(pcm) / 2 / self.sample_rate
        size = self.chunk_bytes
        return [pcm[i : i + size] for i in range(0, len(pcm), size)]

    async def _speak(
        self, clause: str, state: _Stream, options: EspeakOptions | None
    ) -> list[bytes]:
        wav = await self.synthesize_wav(clause, options=options)
        pcm = await trio.to_thread.run_sync(state.convert, wav)
        return self._chunks(pcm)

    async def stream(
        self, text: str, *, options: EspeakOptions | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Speak a whole text, clause by clause (see :meth:`stream_deltas`)."""

        async def one() -> AsyncIterator[str]:
            yield text

        async for chunk in self.stream_deltas(one(), options=options):
            yield chunk

    async def stream_deltas(
        self, deltas: AsyncIterable[str], *, options: EspeakOptions | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Speak text arriving in pieces: each clause is synthesised as soon as it is
        complete and its audio yielded before the next clause is started.

        No process outlives an ``await`` of this iterator, so abandoning the iterator
        leaves nothing running; cancellation kills the current process at once.
        """
        cutter = ClauseCutter(comma_min_chars=self.comma_min_chars, max_chars=self.max_clause_chars)
        state = _Stream(self.sample_rate)
        start = time.perf_counter()
        first = True
        async for delta in deltas:
            for clause in cutter.feed(delta):
                for chunk in await self._speak(clause, state, options):
                    if first:
                        self._first_audio = time.perf_counter() - start
                        first = False
                    yield chunk
        for clause in cutter.flush():
            for chunk in await self._speak(clause, state, options):
                if first:
                    self._first_audio = time.perf_counter() - start
                    first = False
                yield chunk
        for chunk in self._chunks(state.finish()):
            yield chunk

    async def synthesize(self, text: str, *, options: EspeakOptions | None = None) -> bytes:
        """The whole text as one 24 kHz PCM16 buffer."""
        return b"".join([chunk async for chunk in self.stream(text, options=options)])

    def statistics(self) -> TtsStatistics:
        return TtsStatistics(
            self._clauses, self._running, self._audio, self._synth, self._first_audio
        )
