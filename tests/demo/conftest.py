from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from voice_trio.agent import Graph
from voice_trio.demo import VIETNAM, build_receptionist

from .helpers import Clock

# Tuesday 25 November 2025, 10:30 in Hanoi.
NOW = dt.datetime(2025, 11, 25, 10, 30, tzinfo=VIETNAM)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "agent.db"  # the folder does not exist yet


@pytest.fixture
def receptionist(db_path: Path, clock: Clock) -> Graph:
    return build_receptionist(db_path, clock=clock)
