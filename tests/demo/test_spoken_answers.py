"""The receptionist and recognition: the hints each question gives the recogniser, and
what the rules make of a short answer heard only roughly (tone-insensitive, near misses
confirmed, names confirmed when unsure; nothing the caller did not say is booked)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from voice_trio.agent import Conversation, Graph
from voice_trio.agent.vietnamese import near_miss, parse_day, parse_time, yes_or_no

from .conftest import NOW
from .helpers import rows, talk

TO_DAY = ("Tôi muốn đặt lịch hẹn", "Tên tôi là Nguyễn Văn An")


async def test_each_question_gives_the_answers_it_waits_for(
    receptionist: Graph, db_path: Path
) -> None:
    conversation = receptionist.conversation(session_id="hints")
    assert "tôi muốn đặt lịch hẹn" in conversation.hints()
    await talk(conversation, "Tôi muốn đặt lịch hẹn")
    # How a name is given; no list of names (Whisper writes such a list out).
    assert conversation.hints() == ("tôi tên là",)
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
    assert "hủy lịch hẹn" in conversation.hints()  # back at the main menu
    assert [(r["name"], r["time"]) for r in rows(db_path)] == [("Nguyễn Văn An", "10:00")]


def booked(db_path: Path) -> list[dict[str, object]]:
    return rows(db_path) if db_path.exists() else []


async def heard(conversation: Conversation, *turns: str) -> list[str]:
    """Say each turn as a transcript (the way the local brain hands them over)."""
    return [(await conversation.handle_transcript(t, heard=True)).text for t in turns]


def test_near_misses_of_expected_answers() -> None:
    days = ["thứ Hai", "thứ Ba", "thứ Tư", "thứ Năm", "thứ Sáu", "thứ Bảy", "ngày mai"]
    # What Whisper base wrote for eSpeak's "thứ sáu", "thứ hai", "vào thứ năm".
    assert near_miss("Tư sau.", days) == "thứ Sáu"
    assert near_miss("Tư Hai", days) == "thứ Hai"
    assert near_miss("Vào tư năm.", days) == "thứ Năm"
    yes_no = ["vâng, đúng rồi", "có", "không", "sai rồi"]
    assert near_miss("Vân cũng rồi.", yes_no) == "vâng, đúng rồi"
    # Free speech and noise are near no answer.
    assert near_miss("Con mèo nhà tôi rất thích ăn cá", days) is None
    assert near_miss("Tổ.", yes_no) is None
    assert near_miss("", days) is None


async def test_a_day_heard_roughly_is_confirmed_before_it_is_kept(receptionist: Graph) -> None:
    conversation = receptionist.conversation(session_id="near")
    await talk(conversation, *TO_DAY)
    (reply,) = await heard(conversation, "Tư, sau.")
    assert "có phải quý khách nói thứ Sáu" in reply
    assert conversation.slots.get("day") is None  # not kept yet
    assert {yes_or_no(a) for a in conversation.hints()} == {True, False}  # a yes or a no
    (reply,) = await heard(conversation, "Vâng, đúng rồi.")
    assert conversation.slots["day"] == dt.date(2025, 11, 28) and "mấy giờ" in reply
    # A no keeps nothing and asks again; the same near miss typed is not guessed at.
    (reply,) = await heard(conversation, "Nước giờ sáng")
    assert "có phải quý khách nói mười giờ sáng" in reply
    (reply,) = await heard(conversation, "Không phải")
    assert conversation.slots.get("time") is None and "mấy giờ" in reply
    reply = (await conversation.handle_transcript("Nước giờ sáng")).text
    assert "chưa nghe rõ" in reply


async def test_a_name_the_recogniser_may_have_garbled_is_confirmed(
    receptionist: Graph, db_path: Path
) -> None:
    conversation = receptionist.conversation(session_id="names")
    await talk(conversation, "Tôi muốn đặt lịch hẹn")
    (reply,) = await heard(conversation, "Tôi tên là Lãnh.")
    assert reply == "Dạ, tên người đặt lịch là Lãnh, đúng không ạ?"
    assert conversation.slots.get("name") is None
    (reply,) = await heard(conversation, "không phải.")
    assert "nói lại tên" in reply and conversation.slots.get("name") is None
    # Another mark than the known name's: read back as the known name, for a yes.
    (reply,) = await heard(conversation, "Lần.")
    assert reply == "Dạ, tên người đặt lịch là Lan, đúng không ạ?"
    # Neither yes nor no ("Sai rồi" heard as "Saigon"): the same question again.
    (reply,) = await heard(conversation, "Saigon.")
    assert reply == "Xin lỗi, tôi chưa nghe rõ. Dạ, tên người đặt lịch là Lan, đúng không ạ?"
    (reply,) = await heard(conversation, "Vâng, đúng rồi.")
    assert conversation.slots["name"] == "Lan" and "ngày nào" in reply
    # A known name heard with other marks ("mình" is "I"), said after an intro, is asked.
    again = receptionist.conversation(session_id="marks")
    await talk(again, "Tôi muốn đặt lịch hẹn")
    (reply,) = await heard(again, "Tôi tên là mình.")
    assert reply == "Dạ, tên người đặt lịch là Minh, đúng không ạ?"
    await heard(again, "Đúng rồi.")
    assert again.slots["name"] == "Minh"
    # A family name alone (what a prompt may pull in) is asked about too.
    other = receptionist.conversation(session_id="family")
    await talk(other, "Tôi muốn đặt lịch hẹn")
    (reply,) = await heard(other, "Nguyễn.")
    assert "là Nguyễn, đúng không" in reply and other.slots.get("name") is None
    # A known name heard plainly is kept; a typed name is never doubted.
    await heard(other, "Tôi là Minh.")
    assert other.slots["name"] == "Minh"
    typed = receptionist.conversation(session_id="typed")
    await talk(typed, "Tôi muốn đặt lịch hẹn", "Tôi tên là Lãnh")
    assert typed.slots["name"] == "Lãnh"
    assert booked(db_path) == []


async def test_a_yes_word_in_a_garbled_turn_books_nothing(
    receptionist: Graph, db_path: Path
) -> None:
    conversation = receptionist.conversation(session_id="garbled")
    await talk(conversation, *TO_DAY, "thứ sáu", "mười giờ sáng")
    assert conversation.node.name == "booking_confirm"
    # Heard for "Tôi muốn đặt lịch hẹn": "phải" is a yes word, the turn is no yes.
    (reply,) = await heard(conversation, "Tôn muốn phải li hệ.")
    assert booked(db_path) == [] and "đúng rồi để xác nhận" in reply
    await heard(conversation, "Vâng, đúng rồi.")
    assert [r["name"] for r in rows(db_path)] == ["Nguyễn Văn An"]
