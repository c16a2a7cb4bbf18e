"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from voice_trio.config import Settings
from voice_trio.providers.local import LocalSpeech

if TYPE_CHECKING:
    from .test_cluster import RedisServer

# Hypothesis profiles (HYPOTHESIS_PROFILE=ci|soak|dev; ci unless set). The fuzz suites
# (tests/test_fuzz_*.py) scale their examples from max_examples: ci sends 100,000+
# inputs in a few minutes, soak about 20 times as many. No deadline: an example is a
# batch of hundreds of messages against a live server on a shared machine.
_FUZZ = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("ci", max_examples=100, **_FUZZ)
settings.register_profile("soak", max_examples=2000, **_FUZZ)
settings.register_profile("dev", max_examples=10, **_FUZZ)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Rooms keep transcripts (and the demo its appointments) under XDG_DATA_HOME unless a
# test says where: a temporary one for the run, not the home of whoever runs the tests
# (servers the tests start as processes inherit it).
_DATA_HOME = tempfile.TemporaryDirectory(prefix="voice-trio-tests-")
os.environ["XDG_DATA_HOME"] = _DATA_HOME.name


@pytest.fixture(scope="session")
def local_speech() -> LocalSpeech:
    """The embedded speech models, loaded once for the whole run (as a server does)."""
    return LocalSpeech.load_sync(Settings())


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port for the module's tests, ended by its PID."""
    from .test_cluster import REDIS, RedisServer

    if not os.path.exists(REDIS):
        pytest.fail("redis-server is not installed (scripts/setup.sh test installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
