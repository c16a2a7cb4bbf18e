"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from voice_trio.config import Settings
from voice_trio.providers.local import LocalSpeech


@pytest.fixture(scope="session")
def local_speech() -> LocalSpeech:
    """The embedded speech models, loaded once for the whole run (as a server does)."""
    return LocalSpeech.load_sync(Settings())
