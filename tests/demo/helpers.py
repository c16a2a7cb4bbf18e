"""Helpers for driving a conversation by text and reading the receptionist's SQLite file."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voice_trio.agent import Conversation, Reply


class Clock:
    """A settable "now" for the graph's clock."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


async def talk(conversation: Conversation, *turns: str) -> list[Reply]:
    """Say each turn in order; the replies."""
    return [await conversation.handle_transcript(text) for text in turns]


async def dialogue(conversation: Conversation, turns: Sequence[str]) -> list[str]:
    """The conversation as lines, for reading in a failure report."""
    lines = []
    for text in turns:
        reply = await conversation.handle_transcript(text)
        lines += [f"U: {text}", f"A: {reply.text}  [{reply.node}]"]
    return lines


def rows(db_path: Path, where: str = "1", args: Sequence[Any] = ()) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        cursor = conn.execute(f"SELECT * FROM appointments WHERE {where} ORDER BY id", args)
        return [dict(row) for row in cursor]
    finally:
        conn.close()
