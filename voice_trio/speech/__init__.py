"""Offline Vietnamese speech building blocks for the local brain and voice.

- :mod:`.asr`: Whisper base (faster-whisper, int8) from installed packages:
  :class:`Recognizer` (one per process), :class:`Utterance` (one per room's turn).
- :mod:`.vad`: Silero VAD v6, one shared ONNX session (:class:`SileroVad`), per-room
  :class:`VadStream`, cross-room batching (:func:`feed_many`, :class:`VadBatcher`),
  and the streaming :class:`Resampler` to 16 kHz (one per room and client rate).
- :mod:`.tts`: :class:`EspeakTts`, streamed clause-by-clause eSpeak NG (a separate
  GPL program, run as a subprocess).
- :mod:`.textcut`: the clause cutter the TTS uses.

Names are loaded lazily, so importing this package does not import faster-whisper or
onnxruntime until they are used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .asr import (
        DecodeOptions,
        Recognizer,
        RecognizerStatistics,
        Utterance,
        assemble_whisper_base,
    )
    from .textcut import ClauseCutter, split_clauses
    from .tts import VIETNAMESE_VOICES, EspeakNotFoundError, EspeakOptions, EspeakTts, TtsError
    from .vad import (
        Resampler,
        SileroVad,
        VadBatcher,
        VadConfig,
        VadEvent,
        VadResult,
        VadStream,
        feed_many,
    )

_WHERE = {
    "DecodeOptions": "asr",
    "Recognizer": "asr",
    "RecognizerStatistics": "asr",
    "Utterance": "asr",
    "assemble_whisper_base": "asr",
    "ClauseCutter": "textcut",
    "split_clauses": "textcut",
    "VIETNAMESE_VOICES": "tts",
    "EspeakNotFoundError": "tts",
    "EspeakOptions": "tts",
    "EspeakTts": "tts",
    "TtsError": "tts",
    "Resampler": "vad",
    "SileroVad": "vad",
    "VadBatcher": "vad",
    "VadConfig": "vad",
    "VadEvent": "vad",
    "VadResult": "vad",
    "VadStream": "vad",
    "feed_many": "vad",
}

__all__ = [
    "VIETNAMESE_VOICES",
    "ClauseCutter",
    "DecodeOptions",
    "EspeakNotFoundError",
    "EspeakOptions",
    "EspeakTts",
    "Recognizer",
    "RecognizerStatistics",
    "Resampler",
    "SileroVad",
    "TtsError",
    "Utterance",
    "VadBatcher",
    "VadConfig",
    "VadEvent",
    "VadResult",
    "VadStream",
    "assemble_whisper_base",
    "feed_many",
    "split_clauses",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
