"""PCM16 helpers: input validation and resampling, output chunking."""

from __future__ import annotations

import numpy as np
import soxr  # type: ignore[import-untyped]

from .config import OUTPUT_SAMPLE_RATE, SUPPORTED_INPUT_RATES

__all__ = ["Chunker", "InputResampler", "pcm16_from_ints"]


def pcm16_from_ints(samples: list[int]) -> bytes:
    """JSON audio (already range-checked ints) as PCM16 little-endian bytes."""
    return np.asarray(samples, dtype="<i2").tobytes()


class InputResampler:
    """Turns a room's input audio into 24 kHz PCM16, keeping filter state
    across frames so that frame edges do not click."""

    __slots__ = ("rate", "_stream")

    def __init__(self, rate: int) -> None:
        if rate not in SUPPORTED_INPUT_RATES:
            raise ValueError(f"unsupported input rate {rate}")
        self.rate = rate
        self._stream = (
            None
            if rate == OUTPUT_SAMPLE_RATE
            else soxr.ResampleStream(rate, OUTPUT_SAMPLE_RATE, 1, dtype="int16", quality="HQ")
        )

    def convert(self, pcm: bytes) -> bytes:
        if self._stream is None:
            return pcm
        out = self._stream.resample_chunk(np.frombuffer(pcm, dtype="<i2"))
        return bytes(out.astype("<i2", copy=False).tobytes())

    def flush(self) -> bytes:
        """The filter's tail at the end of a turn; the next frame starts afresh."""
        if self._stream is None:
            return b""
        out = self._stream.resample_chunk(np.zeros(0, dtype="<i2"), last=True)
        self._stream.clear()
        return bytes(out.astype("<i2", copy=False).tobytes())


class Chunker:
    """Re-cuts a stream of PCM bytes into chunks of exactly ``size`` bytes."""

    __slots__ = ("size", "_buf")

    def __init__(self, size: int) -> None:
        self.size = size
        self._buf = bytearray()

    def push(self, pcm: bytes) -> list[bytes]:
        """Add audio; return the whole chunks now available (often none)."""
        size = self.size
        if not self._buf and len(pcm) == size:
            return [pcm]
        self._buf += pcm
        if len(self._buf) < size:
            return []
        whole = len(self._buf) - len(self._buf) % size
        view = bytes(self._buf[:whole])
        del self._buf[:whole]
        return [view[i : i + size] for i in range(0, whole, size)]

    @property
    def pending(self) -> int:
        """Bytes held back, waiting for a whole chunk."""
        return len(self._buf)

    def flush(self) -> bytes:
        """What is left (shorter than a chunk), and forget it."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest

    def clear(self) -> None:
        self._buf.clear()
