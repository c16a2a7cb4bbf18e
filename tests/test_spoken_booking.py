"""A whole booking by voice (#16): the caller's every turn is speech, the row lands in SQLite.

A real ``voice-trio serve`` room with the local brain and the real models (Whisper base,
Silero VAD, eSpeak NG). Each caller's turns are synthesised by eSpeak NG at the caller's
speed and streamed at real-time pace, each one after the agent's reply has been heard
(its audio played out at real time). The caller answers what the agent says, as a person
would by ear: the question asked, a name or a value read back right ("đúng rồi") or
wrong ("không", then says it again another way). Callers differ in phrasing and speed
and talk in rooms of the same server at the same time. Done when every caller's booking
is in the SQLite file under the right name, day and hour, and nothing else is.

``SPOKEN_BOOKING_ALL=1`` runs every phrasing at both speeds and prints the success rate
(bench/README.md), asserting only that nothing is booked wrong: Whisper base never hears
eSpeak's "Hoa" or "Nam" (they come out "Tôi tên là.", "hâm", "Đầm"), so those callers
are left unbooked after their turns. By default four callers run (two phrasings, two
speeds), and all must be booked.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from voice_trio.agent.vietnamese import name_key, parse_day, parse_time
from voice_trio.demo import VIETNAM, build_receptionist
from voice_trio.speech.tts import EspeakOptions, EspeakTts

from .support import running_server
from .test_local import Conversation as Talk
from .test_voice import assert_speech

# Tuesday 25 November 2025, 10:30 in Hanoi.
NOW = dt.datetime(2025, 11, 25, 10, 30, tzinfo=VIETNAM)
SPEEDS = (150, 185)  # eSpeak NG words per minute
MAX_TURNS = 18


@dataclass(frozen=True)
class Phrasing:
    """How one caller says things; each list is tried in turn when the agent asks again."""

    name: str  # the name to be booked under
    day: dt.date
    time: dt.time
    opener: str
    names: tuple[str, ...]
    days: tuple[str, ...]
    times: tuple[str, ...]
    yes: tuple[str, ...] = ("Vâng, đúng rồi", "Đúng rồi")
    no: tuple[str, ...] = ("Không phải", "Sai rồi")


PHRASINGS = [
    Phrasing("Lan", dt.date(2025, 11, 28), dt.time(10), "Tôi muốn đặt lịch hẹn",
             ("Tôi tên là Lan", "Tên tôi là Lan", "Lan"),
             ("Thứ sáu", "Vào thứ sáu", "Thứ sáu tuần này"),
             ("Mười giờ sáng", "Lúc mười giờ sáng", "Mười giờ")),
    Phrasing("Minh", dt.date(2025, 11, 26), dt.time(14), "Xin chào, tôi muốn đặt lịch khám",
             ("Tôi là Minh", "Tôi tên là Minh", "Minh"),
             ("Ngày mai", "Mai", "Ngày mai nhé"),
             ("Hai giờ chiều", "Lúc hai giờ chiều", "Hai giờ")),
    Phrasing("Hoa", dt.date(2025, 12, 1), dt.time(9, 30), "Cho tôi đặt lịch hẹn",
             ("Tôi tên là Hoa", "Tên tôi là Hoa", "Hoa"),
             ("Thứ hai", "Thứ hai tuần sau", "Vào thứ hai"),
             ("Chín giờ rưỡi sáng", "Lúc chín giờ rưỡi", "Chín rưỡi")),
    Phrasing("Nam", dt.date(2025, 11, 29), dt.time(8), "Tôi muốn đặt lịch",
             ("Tôi tên là Nam", "Tên tôi là Nam", "Nam"),
             ("Thứ bảy", "Vào thứ bảy", "Thứ bảy này"),
             ("Tám giờ sáng", "Lúc tám giờ sáng", "Tám giờ")),
]  # fmt: skip


@dataclass
class Call:
    """One caller's call: what was said and heard, and how it ended."""

    phrasing: Phrasing
    speed: int
    session_id: str
    lines: list[str] = field(default_factory=list)
    tries: dict[str, int] = field(default_factory=dict)
    booked: bool = False
    read_back_right: bool = False
    wrong: list[str] = field(default_factory=list)  # what the last read-back got wrong

    def next(self, kind: str) -> str:
        """The next way to say ``kind`` (each ask again gets another wording)."""
        choices: tuple[str, ...] = getattr(self.phrasing, kind)
        n = self.tries.get(kind, 0)
        self.tries[kind] = n + 1
        return choices[n % len(choices)]


def answer(call: Call, reply: str) -> str | None:
    """What the caller says to the agent's ``reply`` (None: the booking is done)."""
    p, text = call.phrasing, reply.lower()
    if "đã đặt lịch hẹn" in text:
        return None
    if m := re.search(r"tên người đặt lịch là (.+?), đúng không", reply):
        return call.next("yes" if name_key(m.group(1)) == name_key(p.name) else "no")
    if m := re.search(r"có phải quý khách nói (.+?) không ạ", reply):
        said = m.group(1)
        day, time = parse_day(said, NOW.date()), parse_time(said, daytime=True)
        return call.next("yes" if day == p.day or time == p.time else "no")
    if m := re.search(r"xác nhận lịch hẹn cho (.+?) lúc (.+?)\. đúng không", reply, re.I):
        wrong = [
            kind
            for kind, ok in (
                ("names", name_key(m.group(1)) == name_key(p.name)),
                ("days", parse_day(m.group(2), NOW.date()) == p.day),
                ("times", parse_time(m.group(2), daytime=True) == p.time),
            )
            if not ok
        ]
        call.wrong = wrong
        right = call.read_back_right = not wrong
        return call.next("yes" if right else "no")
    if "để xác nhận" in text:  # asked again for a yes or a no to the read-back
        return call.next("yes" if call.read_back_right else "no")
    if "sửa tên, ngày hay giờ" in text:  # says again what the read-back got wrong
        return call.next(call.wrong[0] if call.wrong else "names")
    if "nói lại tên" in text or "xin tên" in text:
        return call.next("names")
    if "ngày nào" in text or "đã qua" in text or "nghỉ vào" in text:
        return call.next("days")
    if "mấy giờ" in text or "chỉ nhận lịch" in text:
        return call.next("times")
    return p.opener  # not understood at all: start again


async def hear_reply(talk: Talk, mark: int) -> str | None:
    """Wait for the reply after ``mark`` and for its audio to play out; its text."""
    with trio.move_on_after(60):
        started = await talk.wait_for("response.started", after=mark)
        heard_from = trio.current_time()
        done = await talk.wait_for("response.done", after=mark)
        text = (await talk.wait_for("response.text.done", after=mark))["text"]
        audio = bytes(talk.audio[started["response_id"]])
        assert done["status"] == "completed", done
        assert_speech(audio, min_seconds=0.5)
        await trio.sleep_until(heard_from + len(audio) / 48_000 + 0.3)
        return str(text)
    return None


async def run_call(server: Any, tts: EspeakTts, call: Call) -> None:
    options = EspeakOptions(speed_wpm=call.speed)
    async with server.connect(call.session_id) as client:
        talk = Talk(client)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(talk.read)
            said: str | None = call.phrasing.opener
            for _ in range(MAX_TURNS):
                assert said is not None
                mark = len(talk.events)
                # A microphone sends silence too: 2 s of it after the words, more than the
                # longest wait at a pause that sounds unfinished (VAD_MAX_END_SILENCE_MS).
                await talk.speak(await tts.synthesize(said, options=options), after_s=2.0)
                reply = await hear_reply(talk, mark)
                heard = [e["text"] for e in talk.events[mark:] if e["type"] == "input.transcript"
                         and e["final"]]  # fmt: skip
                call.lines.append(f"  caller: {said!r} heard as {heard}")
                call.lines.append(f"  agent:  {reply!r}")
                if reply is None:  # nothing understood as speech: say it again
                    continue
                said = answer(call, reply)
                if said is None:
                    call.booked = True
                    break
            nursery.cancel_scope.cancel()


def calls() -> list[Call]:
    every = os.environ.get("SPOKEN_BOOKING_ALL") == "1"
    chosen = [(p, s) for p in PHRASINGS for s in SPEEDS] if every else [
        (PHRASINGS[0], SPEEDS[0]), (PHRASINGS[0], SPEEDS[1]),
        (PHRASINGS[1], SPEEDS[0]), (PHRASINGS[1], SPEEDS[1]),
    ]  # fmt: skip
    return [Call(p, s, f"voice-{p.name.lower()}-{s}") for p, s in chosen]


async def test_a_booking_spoken_entirely_by_voice_lands_in_sqlite(
    local_speech: Any, tmp_path: Path
) -> None:
    db = tmp_path / "appointments.sqlite3"
    graph = build_receptionist(db, clock=lambda: NOW)
    tts = EspeakTts()
    callers = calls()
    with trio.fail_after(900):
        async with running_server(
            voice_brain="local",
            speech=local_speech,
            agent=graph,
            agent_greeting=False,
            tts_speed_wpm=230,  # the agent talks briskly: every reply is still heard out
        ) as server:
            async with trio.open_nursery() as nursery:
                for call in callers:
                    nursery.start_soon(run_call, server, tts, call)
    rows = (
        sqlite3.connect(db)
        .execute("select session_id, name, day, time, status from appointments")
        .fetchall()
    )
    by_session = {r[0]: r[1:] for r in rows}
    report = []
    for call in callers:
        p = call.phrasing
        want = (p.name, p.day.isoformat(), p.time.strftime("%H:%M"), "booked")
        got = by_session.get(call.session_id)
        report.append(f"{call.session_id}: {'OK' if got == want else 'FAILED'} {got}")
        report += call.lines
    print("\n".join(report))

    def right(call: Call) -> bool:
        p = call.phrasing
        want = (p.name, p.day.isoformat(), p.time.strftime("%H:%M"), "booked")
        return by_session.get(call.session_id) == want

    ok = sum(right(c) for c in callers)
    print(f"booked right: {ok}/{len(callers)}")
    # Nothing booked that a caller did not ask for, and no booking under another name,
    # day or hour: a caller the recogniser never heard right is left unbooked.
    assert len(rows) == len(by_session) <= len(callers), rows
    assert all(got in {c.session_id for c in callers} for got in by_session), rows
    wrong = [c.session_id for c in callers if c.session_id in by_session and not right(c)]
    assert not wrong, "\n".join(report)
    if os.environ.get("SPOKEN_BOOKING_ALL") != "1":  # the full set reports its rate
        assert ok == len(callers), "\n".join(report)
