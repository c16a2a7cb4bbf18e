"""Session-scoped speech fixtures: real models and real audio, loaded once."""

from __future__ import annotations

import pytest
import trio

from voice_trio.speech.asr import Recognizer
from voice_trio.speech.tts import EspeakTts
from voice_trio.speech.vad import SileroVad

from .support import SENTENCES


@pytest.fixture(scope="session")
def recognizer() -> Recognizer:
    return trio.run(Recognizer.load)


@pytest.fixture(scope="session")
def vad_model() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="session")
def clips() -> dict[str, bytes]:
    """Each sentence synthesised once: 24 kHz PCM16."""

    async def build() -> dict[str, bytes]:
        tts = EspeakTts()
        return {sentence: await tts.synthesize(sentence) for sentence in SENTENCES}

    return trio.run(build)
