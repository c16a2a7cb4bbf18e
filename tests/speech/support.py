"""Helpers for the speech tests: reference sentences and a fuzzy transcript check."""

from __future__ import annotations

import difflib
import re
import unicodedata

import numpy as np

from voice_trio.speech.vad import Resampler

# Sentences whisper base reads reliably from eSpeak's robotic "vi" voice, with key
# phrases it got right in every trial (see the report); at least `min_hits` must appear.
SENTENCES: dict[str, tuple[tuple[str, ...], int]] = {
    "Xin chào, tôi muốn đặt lịch hẹn vào thứ hai lúc mười giờ.": (
        ("xin chào", "tôi muốn", "vào thứ hai"),
        2,
    ),
    "Cảm ơn bạn, hẹn gặp lại vào ngày mai.": (("cảm ơn", "hẹn gặp lại"), 2),
    "Số điện thoại của tôi là không chín tám.": (("của tôi là",), 1),
}
MIN_SIMILARITY = 0.5  # character similarity to the reference; wrong sentences score < 0.45


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFC", text).lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def check_heard(transcript: str, reference: str) -> None:
    """Assert the transcript is a fuzzy but real match for the reference sentence."""
    keywords, min_hits = SENTENCES[reference]
    heard = normalize(transcript)
    hits = [k for k in keywords if k in heard]
    similarity = difflib.SequenceMatcher(None, normalize(reference), heard).ratio()
    assert len(hits) >= min_hits and similarity >= MIN_SIMILARITY, (
        f"heard {transcript!r} for {reference!r}: key phrases {hits} of {keywords}, "
        f"similarity {similarity:.2f}"
    )


def with_silence(pcm24: bytes, before_s: float, after_s: float) -> np.ndarray:
    """24 kHz PCM16 with silence around it, resampled to 16 kHz float32 like a room does."""
    resampler = Resampler()
    return np.concatenate(
        [
            resampler.process(bytes(int(24_000 * before_s) * 2)),
            resampler.process(pcm24),
            resampler.process(bytes(int(24_000 * after_s) * 2), last=True),
        ]
    )
