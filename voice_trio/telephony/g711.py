"""G.711 mu-law and A-law (ITU-T G.711), by lookup tables: no per-sample Python loop.

Telephone networks carry 8 kHz audio as one byte per sample: mu-law in North
America and Japan (Twilio Media Streams, ``audio/x-mulaw``), A-law nearly
everywhere else (``audio/x-alaw``, e.g. carriers in Vietnam). Decoding is a
256-entry table indexed by the bytes; encoding a 65,536-entry table indexed by
the PCM16 samples seen as unsigned, so both are one numpy ``take`` per frame
(a 20 ms frame of 160 samples costs a few microseconds either way).

The tables are built once, vectorised, from the reference algorithm of Sun's
``g711.c`` (the one CPython's ``audioop`` uses: 14-bit mu-law with a bias of
0x84 and clipping at 8159, 13-bit A-law), so the codes match ``audioop``'s
exactly (tests/test_telephony.py compares every value).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_decode",
    "alaw_encode",
    "ulaw_decode",
    "ulaw_encode",
]

#: The code of a zero sample: what pads a frame (it decodes to 0 and 8 respectively).
ULAW_SILENCE: Final = 0xFF
ALAW_SILENCE: Final = 0xD5

_BIAS: Final = 0x84
_ULAW_CLIP: Final = 8159  # on 14-bit magnitudes
#: Upper bounds of the eight segments (mu-law on 14-bit magnitudes, A-law on 13-bit).
_ULAW_SEGMENT_ENDS: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEGMENT_ENDS: Final = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])

Array = np.ndarray[Any, Any]


def _all_samples() -> Array:
    """Every int16 value, in the order of its unsigned 16-bit pattern (the table's index)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int64)


def _ulaw_encode_table() -> Array:
    pcm = _all_samples() >> 2  # 14-bit, as g711.c's linear2ulaw is given
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    magnitude = np.minimum(np.abs(pcm), _ULAW_CLIP) + (_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, magnitude, side="left")
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0xF)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _ulaw_decode_table() -> Array:
    code = ~np.arange(256, dtype=np.int64) & 0xFF
    t = (((code & 0x0F) << 3) + _BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _BIAS - t, t - _BIAS).astype("<i2")


def _alaw_encode_table() -> Array:
    pcm = _all_samples() >> 3  # 13-bit, as g711.c's linear2alaw is given
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    magnitude = np.where(pcm >= 0, pcm, -pcm - 1)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude, side="left")
    shift = np.where(segment < 2, 1, np.minimum(segment, 7))
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> shift) & 0xF)
    code = np.where(segment >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _alaw_decode_table() -> Array:
    code = np.arange(256, dtype=np.int64) ^ 0x55
    t = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    t = np.where(segment == 0, t + 8, t + 0x108)
    t = np.where(segment > 1, t << np.maximum(segment - 1, 0), t)
    return np.where(code & 0x80, t, -t).astype("<i2")


_ULAW_ENCODE: Final = _ulaw_encode_table()
_ULAW_DECODE: Final = _ulaw_decode_table()
_ALAW_ENCODE: Final = _alaw_encode_table()
_ALAW_DECODE: Final = _alaw_decode_table()


def ulaw_encode(pcm: bytes) -> bytes:
    """PCM16 little-endian mono -> mu-law, one byte per sample."""
    return bytes(_ULAW_ENCODE[np.frombuffer(pcm, dtype="<u2")].tobytes())


def ulaw_decode(data: bytes) -> bytes:
    """mu-law -> PCM16 little-endian mono."""
    return bytes(_ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes())


def alaw_encode(pcm: bytes) -> bytes:
    """PCM16 little-endian mono -> A-law, one byte per sample."""
    return bytes(_ALAW_ENCODE[np.frombuffer(pcm, dtype="<u2")].tobytes())


def alaw_decode(data: bytes) -> bytes:
    """A-law -> PCM16 little-endian mono."""
    return bytes(_ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes())
