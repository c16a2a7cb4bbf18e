"""The receptionist and recognition: the hints each question gives the recogniser, and
what the rules make of a short answer heard only roughly (tone-insensitive, near misses
confirmed, names confirmed when unsure; nothing the caller did not say is booked)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from voice_trio.agent import Graph
from voice_trio.agent.vietnamese import parse_day, parse_time, yes_or_no

from .conftest import NOW
from .helpers import rows, talk

TO_DAY = ("Tôi muốn đặt lịch hẹn", "Tên tôi là Nguyễn Văn An")


async def test_each_question_gives_the_answers_it_waits_for(
    receptionist: Graph, db_path: Path
) -> None:
    conversation = receptionist.conversation(session_id="hints")
    assert "đặt lịch hẹn" in conversation.hints()
    await talk(conversation, "Tôi muốn đặt lịch hẹn")
    assert conversation.hints()[0] == "tôi tên là"
    assert "Nguyễn" in conversation.hints()
    await talk(conversation, "Tên tôi là Nguyễn Văn An")
    days = conversation.hints()
    # The days the clinic is open (Sunday is closed), each one the day parser reads,
    # and "tuần sau", which goes with one ("thứ ba tuần sau").
    assert "Chủ nhật" not in days and "thứ Bảy" in days and "ngày mai" in days
    assert [day for day in days if parse_day(day, NOW.date()) is None] == ["tuần sau"]
    await talk(conversation, "thứ sáu")
    hours = conversation.hints()
    # Every hour from opening to closing, in words, as the time parser reads them.
    assert hours[0] == "tám giờ sáng" and "năm giờ chiều" in hours
    times = [parse_time(hour, daytime=True) for hour in hours]
    assert all(t is not None and dt.time(8) <= t <= dt.time(17) for t in times)
    await talk(conversation, "mười giờ sáng")
    answers = conversation.hints()
    assert {yes_or_no(a) for a in answers} == {True, False}
    await talk(conversation, "đúng rồi")
    assert "đặt lịch hẹn" in conversation.hints()  # back at the main menu
    assert [(r["name"], r["time"]) for r in rows(db_path)] == [("Nguyễn Văn An", "10:00")]
