"""Issue #12: a booking is read or changed only from the session that made it, or with its
booking code together with the name it was made under. Tried as an attacker would, through
the same two ways in as the callers: text turns (the local brain's rules) and tool calls
(the Azure brain's function calling). The clock is fixed: Tuesday 25 November 2025, 10:30.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from voice_trio.agent import Conversation, Graph
from voice_trio.demo import MAX_CODE_TRIES, NO_MATCH, TOO_MANY_TRIES, build_receptionist

from .helpers import Clock, rows, talk

VICTIM = "Nguyễn Văn An"
# What must never reach anyone but the victim: the day, the hour (and the code, per test).
SECRETS = ("26 tháng 11", "ngày mai", "9 giờ", "thứ Tư")
ASK_CODE = (
    "Để bảo mật thông tin, quý khách cho tôi xin thêm mã lịch hẹn ạ? Đó là mã sáu chữ số tôi "
    "đã đọc khi đặt lịch."
)
ASK_BOTH = (
    "Để bảo mật thông tin, quý khách vui lòng cho tôi biết mã lịch hẹn và tên người đã đặt lịch ạ."
)
ANYTHING_ELSE = "Quý khách cần tôi giúp gì thêm không ạ?"


async def book_victim(graph: Graph, db_path: Path) -> tuple[Conversation, str]:
    """The victim books from session "victim"; the conversation and the booking code."""
    victim = graph.conversation(session_id="victim")
    await talk(victim, f"đặt lịch ngày mai 9 giờ sáng, tên tôi là {VICTIM}", "đúng rồi")
    (row,) = rows(db_path, "name = ?", [VICTIM])
    return victim, str(row["code"])


def other_code(*taken: str) -> str:
    """A six-digit code nobody has."""
    return next(c for c in (str(n) for n in range(100_000, 100_100)) if c not in taken)


def assert_nothing_leaked(conversation: Conversation, code: str) -> None:
    for entry in conversation.history:
        if entry.role == "user":
            continue
        for secret in (*SECRETS, code, " ".join(code)):
            assert secret not in entry.text, (secret, entry)


# ------------------------------------------------------------ the local brain's rules


async def test_knowing_only_a_name_another_session_hears_nothing(
    receptionist: Graph, db_path: Path
) -> None:
    _, code = await book_victim(receptionist, db_path)
    attacker = receptionist.conversation(session_id="attacker")
    ask, stop = await talk(attacker, f"xem lại lịch hẹn của {VICTIM}", "thôi")
    assert ask.node == "identify" and ask.text == ASK_CODE
    # The same answer for a name nobody booked: it does not tell whether a booking exists.
    nobody = receptionist.conversation(session_id="other")
    (ask_nobody,) = await talk(nobody, "xem lại lịch hẹn của Trần Văn Bình")
    assert ask_nobody.text == ask.text
    # Without any name: the session has no booking of its own, so both are asked for.
    (mine,) = await talk(attacker, "xem lại lịch hẹn của tôi")
    assert mine.text == ASK_BOTH
    _, bare = await talk(attacker, "thôi", "kiểm tra lịch hẹn")
    (name_only,) = await talk(attacker, f"dạ {VICTIM}")  # a bare name, answering the question
    assert name_only.node == "identify" and name_only.text == ASK_CODE
    (bye,) = await talk(attacker, "tạm biệt")
    assert "Hẹn gặp" not in bye.text
    assert_nothing_leaked(attacker, code)


async def test_knowing_only_a_name_another_session_cannot_cancel(
    receptionist: Graph, db_path: Path
) -> None:
    _, code = await book_victim(receptionist, db_path)
    attacker = receptionist.conversation(session_id="attacker")
    replies = await talk(
        attacker,
        f"hủy lịch hẹn của {VICTIM}",
        "có",
        "hủy đi",
        f"tôi muốn hủy lịch, tên tôi là {VICTIM}",
        "đúng rồi, hủy",
    )
    assert replies[0].text == ASK_CODE and replies[3].text == ASK_CODE
    assert all(r.node != "cancel_confirm" for r in replies)
    assert all(c.name != "cancel_appointment" for r in replies for c in r.tool_calls)
    assert rows(db_path)[0]["status"] == "booked"
    assert_nothing_leaked(attacker, code)


async def test_the_code_and_the_name_from_another_session_read_and_cancel(
    receptionist: Graph, db_path: Path
) -> None:
    victim, code = await book_victim(receptionist, db_path)
    (own,) = await talk(victim, "xem lại lịch hẹn của tôi")
    caller = receptionist.conversation(session_id="victim-calls-again")
    # Marks and case ignored; the code in numerals, spaced as read out.
    (read,) = await talk(caller, f"xem lịch hẹn mã {' '.join(code)}, tên nguyen van an")
    assert read.text == own.text
    assert read.text == (
        f"Quý khách có một lịch hẹn: {VICTIM}, lúc 9 giờ sáng, ngày mai, thứ Tư, ngày 26 tháng "
        f"11, mã lịch hẹn {' '.join(code)}. {ANYTHING_ELSE}"
    )
    # One piece per turn: the name, then the code.
    ask, name, confirm, done = await talk(
        caller, "hủy lịch hẹn", f"tên là {VICTIM}", f"mã số {code}", "có"
    )
    assert ask.text == ASK_BOTH
    assert name.text == ASK_CODE
    assert confirm.node == "cancel_confirm" and VICTIM in confirm.text
    assert done.text.startswith(f"Dạ, tôi đã hủy lịch hẹn của {VICTIM}")
    assert rows(db_path)[0]["status"] == "cancelled"


async def test_a_wrong_code_or_name_is_answered_as_an_unknown_one(
    receptionist: Graph, db_path: Path
) -> None:
    _, code = await book_victim(receptionist, db_path)
    other = receptionist.conversation(session_id="someone-else")
    await talk(other, "đặt lịch thứ sáu 2 giờ chiều, tên tôi là Lê Thị Hoa", "đúng rồi")
    (hoa,) = rows(db_path, "name = ?", ["Lê Thị Hoa"])
    unknown = other_code(code, hoa["code"])
    tries = {
        "unknown code and name": (unknown, "Trần Văn Bình"),
        "wrong code, right name": (unknown, VICTIM),
        "right code, wrong name": (code, "Trần Văn Bình"),
        "right code, a near name": (code, "Nguyễn Văn Anh"),
        "someone else's code, the victim's name": (hoa["code"], VICTIM),
    }
    looked: dict[str, str] = {}
    cancelled: dict[str, str] = {}
    for label, (try_code, name) in tries.items():
        attacker = receptionist.conversation(session_id=f"look {label}")
        (reply,) = await talk(attacker, f"xem lịch hẹn mã {try_code} tên {name}")
        looked[label] = reply.text
        assert_nothing_leaked(attacker, code)
        attacker = receptionist.conversation(session_id=f"cancel {label}")
        first, then = await talk(attacker, f"hủy lịch hẹn của {name}", f"mã {try_code}")
        assert first.text == ASK_CODE
        cancelled[label] = then.text
        assert_nothing_leaked(attacker, code)
    assert set(looked.values()) == {f"{NO_MATCH} Quý khách có muốn đặt lịch mới không ạ?"}
    assert set(cancelled.values()) == {f"{NO_MATCH} {ANYTHING_ELSE}"}
    assert [r["status"] for r in rows(db_path)] == ["booked", "booked"]


async def test_the_session_that_booked_needs_no_code(receptionist: Graph, db_path: Path) -> None:
    victim, code = await book_victim(receptionist, db_path)
    mine, by_name = await talk(victim, "xem lại lịch hẹn của tôi", f"xem lịch hẹn của {VICTIM}")
    assert mine.text.startswith(f"Quý khách có một lịch hẹn: {VICTIM}, lúc 9 giờ sáng, ngày mai")
    assert f"mã lịch hẹn {' '.join(code)}" in mine.text and by_name.text == mine.text
    confirm, done = await talk(victim, "hủy lịch hẹn", "có")
    assert confirm.node == "cancel_confirm"
    assert done.text.startswith(f"Dạ, tôi đã hủy lịch hẹn của {VICTIM} lúc 9 giờ sáng")
    assert rows(db_path)[0]["status"] == "cancelled"


async def test_too_many_wrong_tries_end_the_look_ups_of_a_session(
    receptionist: Graph, db_path: Path
) -> None:
    _, code = await book_victim(receptionist, db_path)
    attacker = receptionist.conversation(session_id="attacker")
    for n in range(MAX_CODE_TRIES):
        (wrong,) = await talk(attacker, f"xem lịch hẹn mã {other_code(code)} tên {VICTIM}")
        assert wrong.text.startswith(NO_MATCH), n
    # Now even the right pair is refused, the same way as a wrong one would be.
    (right,) = await talk(attacker, f"hủy lịch hẹn mã {code} tên {VICTIM}")
    assert right.text == f"{TOO_MANY_TRIES} {ANYTHING_ELSE}"
    (wrong,) = await talk(attacker, f"xem lịch hẹn mã {other_code(code)} tên {VICTIM}")
    assert wrong.text == right.text
    assert rows(db_path)[0]["status"] == "booked"
    assert_nothing_leaked(attacker, code)
    # The session's own bookings are still its own.
    await talk(attacker, "đặt lịch thứ sáu 3 giờ chiều, tên tôi là Minh", "đúng rồi")
    (own,) = await talk(attacker, "xem lại lịch hẹn của tôi")
    assert own.text.startswith("Quý khách có một lịch hẹn: Minh, lúc 3 giờ chiều")


async def test_forgotten_code(receptionist: Graph, db_path: Path) -> None:
    _, code = await book_victim(receptionist, db_path)
    caller = receptionist.conversation(session_id="caller")
    _, forgot = await talk(caller, f"xem lịch hẹn của {VICTIM}", "tôi quên mã rồi")
    assert forgot.node == "main"
    assert forgot.text == (
        "Dạ, để bảo mật thông tin, khi không có mã lịch hẹn tôi chỉ xem lại hoặc hủy được lịch "
        f"hẹn đã đặt trong chính cuộc gọi này thôi ạ. {ANYTHING_ELSE}"
    )
    assert_nothing_leaked(caller, code)


# ------------------------------------------------------------ the tools the model calls


async def call(conversation: Conversation, tool: str, **arguments: str) -> dict[str, object]:
    output: dict[str, object] = json.loads(
        await conversation.handle_tool_call(tool, json.dumps(arguments))
    )
    return output


async def test_the_tools_refuse_directly(receptionist: Graph, db_path: Path) -> None:
    _, code = await book_victim(receptionist, db_path)
    unknown = other_code(code)
    attacker = receptionist.conversation(session_id="attacker")
    # Without both: only this session's own bookings, of which there are none.
    empty = await call(attacker, "find_appointment")
    assert empty["appointments"] == [] and "code" in str(empty["note"])
    assert await call(attacker, "find_appointment", name=VICTIM) == empty
    assert await call(attacker, "find_appointment", name="Trần Văn Bình") == empty
    assert await call(attacker, "find_appointment", code=code) == empty
    # Both, not matching one booking: one error, whatever was wrong.
    refusals = [
        await call(attacker, "find_appointment", code=unknown, name="Trần Văn Bình"),
        await call(attacker, "find_appointment", code=unknown, name=VICTIM),
        await call(attacker, "find_appointment", code=code, name="nguyen van anh"),
        await call(attacker, "cancel_appointment", code=code),
        await call(attacker, "cancel_appointment", code=code, name="Lan"),
    ]
    assert set(map(json.dumps, refusals)) == {json.dumps(refusals[0])}
    error = str(refusals[0]["error"])
    assert error.endswith(f"Tell the caller: {NO_MATCH}")
    for output in [empty, *refusals]:
        text = json.dumps(output, ensure_ascii=False)
        assert VICTIM not in text and code not in text and "2025-11-26" not in text
    assert rows(db_path)[0]["status"] == "booked"
    # With both right (marks and case ignored), from a session that has not used up its
    # tries (those five were all of them): found, then cancelled.
    caller = receptionist.conversation(session_id="victim-calls-again")
    found = await call(caller, "find_appointment", code=code, name="nguyễn văn AN")
    assert found["count"] == 1
    done = await call(caller, "cancel_appointment", code=code, name="nguyen van an")
    assert done["cancelled"] == {
        "code": code,
        "name": VICTIM,
        "day": "2025-11-26",
        "time": "09:00",
        "status": "cancelled",
        "spoken": "9 giờ sáng, ngày mai, thứ Tư, ngày 26 tháng 11",
    }


async def test_the_tools_count_wrong_tries(receptionist: Graph, db_path: Path) -> None:
    _, code = await book_victim(receptionist, db_path)
    attacker = receptionist.conversation(session_id="attacker")
    for _ in range(MAX_CODE_TRIES):
        await call(attacker, "cancel_appointment", code=other_code(code), name=VICTIM)
    locked = await call(attacker, "cancel_appointment", code=code, name=VICTIM)
    assert str(locked["error"]).endswith(f"Tell the caller: {TOO_MANY_TRIES}")
    assert await call(attacker, "find_appointment", code=code, name=VICTIM) == locked
    assert rows(db_path)[0]["status"] == "booked"


async def test_the_model_is_told_the_rule(receptionist: Graph) -> None:
    fields = receptionist.conversation(session_id="azure").session_update_fields()
    tools = {tool["name"]: tool for tool in fields["tools"]}
    find = tools["find_appointment"]["parameters"]
    assert set(find["properties"]) == {"code", "name"} and "required" not in find
    cancel = tools["cancel_appointment"]["parameters"]
    assert set(cancel["properties"]) == {"code", "name"} and cancel["required"] == ["code"]
    assert cancel["properties"]["code"]["type"] == "string"
    assert "cả mã lịch hẹn (code) và tên" in tools["find_appointment"]["description"]
    assert "Chỉ biết tên thì không đủ" in fields["instructions"]


# ------------------------------------------------------------ the file


async def test_a_file_from_before_codes_gets_them(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "CREATE TABLE appointments (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT "
            "NOT NULL, name TEXT NOT NULL, day TEXT NOT NULL, time TEXT NOT NULL, created_at "
            "TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'booked', name_key TEXT NOT NULL)"
        )
        conn.executemany(
            "INSERT INTO appointments (session_id, name, day, time, created_at, name_key) "
            "VALUES (?, ?, '2025-11-26', '09:00', '2025-11-24T08:00:00+07:00', ?)",
            [("old-1", "Lan", "lan"), ("old-2", "Hoa", "hoa")],
        )
    conn.close()
    graph = build_receptionist(path, clock=clock)
    own = await call(graph.conversation(session_id="old-1"), "find_appointment")
    codes = [r["code"] for r in rows(path)]
    assert len(set(codes)) == 2 and all(len(c) == 6 and c.isdigit() for c in codes)
    assert [a["code"] for a in own["appointments"]] == codes[:1]  # type: ignore[attr-defined]
    # The other caller's old booking: by its new code and its name only.
    found = await call(graph.conversation(session_id="new"), "find_appointment", code=codes[1],
                       name="Hoa")  # fmt: skip
    assert found["count"] == 1
