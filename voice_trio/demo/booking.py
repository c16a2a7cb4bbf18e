"""Booking an appointment: the slots (name, day, hour), what to ask for next, and the
read-back the caller confirms before anything is stored.

The ``booking`` node fills the slots (asking again for what is missing or cannot be
booked); ``booking_confirm`` reads the booking back for a "có" or "không", and books
through the ``book_appointment`` tool, so the local brain books as Azure's model does.

Spoken turns (``conversation.heard``) are read with doubt: each question hands the
recogniser the answers it expects (:meth:`BookingFlow.hints`); a near miss of one ("Tư
sau" for "thứ sáu") and a name that is not a known name word are read back for a yes
before they are kept (:meth:`BookingFlow.unsure`), so nothing is booked under a
garbled name or a guessed hour unasked.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..agent.graph import Conversation, Say
from ..agent.vietnamese import (
    WEEKDAYS,
    Utterance,
    extract_name,
    format_code,
    format_date,
    format_time,
    name_key,
    near_miss,
    parse_day,
    parse_time,
    yes_or_no,
)
from .clinic import Clinic
from .wording import (
    ANYTHING_ELSE,
    ASK_DAY,
    ASK_NAME,
    CHANGE,
    CHANGE_WHAT,
    FAMILY_NAMES,
    KNOWN_NAME_WORDS,
    NAME_INTRO,
    QUESTION,
    RELATIVE_DAYS,
    SAY_NAME_AGAIN,
    STOP,
    YES_NO_HINTS,
    core,
)

__all__ = ["BookingFlow"]

_SLOTS = ("name", "day", "time")
_UNSURE = "unsure"  # the slot holding (turn, slot, value) a heard answer made us unsure of
_KNOWN_EXACT = frozenset(KNOWN_NAME_WORDS)
_KNOWN: dict[str, str] = {}  # marks ignored -> the first known spelling ("hoa" -> "Hoa")
for _word in KNOWN_NAME_WORDS:
    _KNOWN.setdefault(name_key(_word), _word)


class BookingFlow:
    """The actions and matchers of the ``booking`` and ``booking_confirm`` nodes."""

    def __init__(self, clinic: Clinic) -> None:
        self.clinic = clinic

    # ---------------------------------------------------------------- actions

    async def start(self, conversation: Conversation, utterance: Utterance) -> str:
        self.clear(conversation)
        return self.fill(conversation, self.extract(utterance))

    async def fill_slots(self, conversation: Conversation, utterance: Utterance) -> str:
        return self.fill(conversation, self.extract(utterance))

    async def change_slot(self, conversation: Conversation, utterance: Utterance) -> str:
        for slot in self._slots_named(utterance):
            conversation.slots[slot] = None
        conversation.goto("booking")
        return f"Dạ vâng. {self.ask(conversation)}"

    async def stop(self, conversation: Conversation, utterance: Utterance) -> str:
        self.clear(conversation)
        conversation.goto("main")
        return f"Dạ, tôi đã dừng việc đặt lịch. {ANYTHING_ELSE}"

    async def fallback(self, conversation: Conversation, utterance: Utterance) -> Say:
        held = self.pending(conversation)
        if held is not None and extract_name(utterance) is None:
            # Neither a yes nor a no to "..., đúng không ạ?": ask it again (not a new
            # guess at a garbled "sai rồi": measured, "Saigon").
            self.unsure(conversation, *held)
            return Say(
                f"Xin lỗi, tôi chưa nghe rõ. {self.unsure_question(*held)}", understood=False
            )
        slot = self.missing(conversation)
        if slot == "name":
            name = extract_name(utterance, bare=True)
            if name is not None:
                return Say(self.fill(conversation, {"name": name}))
            if conversation.heard and (known := self.known_name_in(utterance)) is not None:
                # "Tôi tên là mình" for "Minh": a known name with other marks, to confirm.
                self.unsure(conversation, "name", known)
                return Say(self.unsure_question("name", known))
        if slot != "name" and conversation.heard:
            # Heard roughly: the closest expected answer, if one is close, for a yes
            # (all filled, after a refused read-back: a new hour or day).
            kinds = [slot] if slot is not None else ["time", "day"]
            for kind in kinds:
                choices = self.day_hints() if kind == "day" else self.time_choices()
                near = near_miss(utterance, choices)
                value = None if near is None else self.extract(Utterance.of(near)).get(kind)
                if value is not None:
                    self.unsure(conversation, kind, value)
                    return Say(f"Xin lỗi, {self.unsure_question(kind, value)}")
        return Say(f"Xin lỗi, tôi chưa nghe rõ. {self.ask(conversation)}", understood=False)

    # ---------------------------------------------------------------- unsure answers

    def unsure(self, conversation: Conversation, slot: str, value: Any) -> None:
        """Hold a value heard only roughly until the caller says yes to it (next turn only)."""
        conversation.slots[_UNSURE] = (conversation.turns, slot, value)

    def unsure_question(self, slot: str, value: Any) -> str:
        """The question that reads a value heard only roughly back to the caller."""
        if slot == "name":
            return f"Dạ, tên người đặt lịch là {value}, đúng không ạ?"
        said = format_time(value, words=True) if slot == "time" else WEEKDAYS[value.weekday()]
        if slot == "day" and (value - self.clinic.now().date()).days in (1, 2):
            said = {1: "ngày mai", 2: "ngày kia"}[(value - self.clinic.now().date()).days]
        return f"có phải quý khách nói {said} không ạ?"

    def pending(self, conversation: Conversation) -> tuple[str, Any] | None:
        """The value the previous reply asked the caller to confirm, if it did."""
        held = conversation.slots.get(_UNSURE)
        if held is None or held[0] != conversation.turns - 1:
            return None
        return held[1], held[2]

    def confirms_unsure(self, conversation: Conversation, utterance: Utterance) -> bool:
        return self.pending(conversation) is not None and yes_or_no(utterance) is True

    def denies_unsure(self, conversation: Conversation, utterance: Utterance) -> bool:
        return self.pending(conversation) is not None and yes_or_no(utterance) is False

    async def accept_unsure(self, conversation: Conversation, utterance: Utterance) -> str:
        held = self.pending(conversation)
        conversation.slots.pop(_UNSURE, None)
        assert held is not None  # the rule's matcher checked it
        slot, value = held
        return self.fill(conversation, {slot: value}, sure=True)

    async def reject_unsure(self, conversation: Conversation, utterance: Utterance) -> str:
        held = self.pending(conversation)
        conversation.slots.pop(_UNSURE, None)
        if held is not None and held[0] == "name":
            return SAY_NAME_AGAIN
        return f"Xin lỗi quý khách. {self.ask(conversation)}"

    def sure_name(self, conversation: Conversation, name: str) -> str | None:
        """The name as it may be kept without asking: every word a known name word
        (written as known), or a name already said in this call; else None."""
        for key in ("offer_name", "whose"):
            said = conversation.slots.get(key)
            if isinstance(said, str) and name_key(said) == name_key(name):
                return said
        words = name.split()
        if words[-1] in FAMILY_NAMES:
            return None  # "Nguyễn" alone: a family name, or a recogniser's guess
        if all(w in _KNOWN_EXACT for w in words):
            return name
        return None

    def known_name_in(self, utterance: Utterance) -> str | None:
        """The one given name of :data:`KNOWN_NAME_WORDS` that a word of a short turn is,
        marks ignored ("mình" -> "Minh"), or None."""
        if len(utterance) > 5:
            return None
        found = {
            _KNOWN[w.plain]
            for w in utterance.words
            if w.plain in _KNOWN and _KNOWN[w.plain] not in FAMILY_NAMES
        }
        return found.pop() if len(found) == 1 else None

    def known_spelling(self, name: str) -> str:
        """The name with each word as the known name words write it ("Lăn" -> "Lan")."""
        return " ".join(_KNOWN.get(name_key(w), w) for w in name.split())

    async def confirm_changes(self, conversation: Conversation, utterance: Utterance) -> str:
        return self.fill(conversation, self.extract(utterance))

    async def book(self, conversation: Conversation, utterance: Utterance) -> str:
        slots = conversation.slots
        result = await conversation.call_tool(
            "book_appointment",
            name=slots["name"],
            day=slots["day"].isoformat(),
            time=slots["time"].strftime("%H:%M"),
        )
        self.clear(conversation)
        if not result.ok:
            conversation.goto("main")
            return (
                "Xin lỗi, tôi chưa đặt được lịch hẹn này do hệ thống gặp sự cố. Quý khách vui "
                "lòng thử lại sau ít phút ạ."
            )
        booked = result.value["booked"]
        return (
            f"Dạ, tôi đã đặt lịch hẹn cho {booked['name']} lúc {booked['spoken']}. Mã lịch hẹn "
            f"của quý khách là {format_code(booked['code'])}; quý khách vui lòng ghi lại mã này "
            f"để xem lại hoặc hủy lịch khi gọi lại. {ANYTHING_ELSE}"
        )

    async def reject(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.goto("booking")
        return f"Dạ, {CHANGE_WHAT[0].lower()}{CHANGE_WHAT[1:]}"

    async def confirm_fallback(self, conversation: Conversation, utterance: Utterance) -> Say:
        return Say(
            "Xin lỗi, quý khách vui lòng nói đúng rồi để xác nhận, hoặc không để sửa lại ạ.",
            understood=False,
        )

    # ---------------------------------------------------------------- recognition hints

    def hints(self, conversation: Conversation) -> list[str]:
        """What the answer to the current question may be: the ``booking`` node's hints."""
        if self.pending_now(conversation):
            return list(YES_NO_HINTS)
        slot = self.missing(conversation)
        if slot == "name":
            return self.name_hints(conversation)
        if slot == "day":
            return self.day_hints()
        if slot == "time":
            return self.time_hints()
        # All filled, the read-back refused ("sửa tên, ngày hay giờ?"): a new hour or
        # day, not a yes (measured: with yes/no as the prompt, "mười giờ" came out
        # "Đúng rồi.").
        return [NAME_INTRO, *self.time_hints(), *self.day_hints()]

    def name_hints(self, conversation: Conversation) -> list[str]:
        """How a name is given, and the names already said in this call."""
        known = [
            name
            for key in ("offer_name", "whose")
            if isinstance(name := conversation.slots.get(key), str)
        ]
        return [NAME_INTRO, *known]

    def pending_now(self, conversation: Conversation) -> bool:
        """The last reply asked the caller to confirm a value (the next turn answers it)."""
        held = conversation.slots.get(_UNSURE)
        return held is not None and held[0] == conversation.turns

    def day_hints(self) -> list[str]:
        """The weekdays the clinic is open, and "ngày mai", "ngày kia", "tuần sau"."""
        closed = self.clinic.closed_weekdays
        return [WEEKDAYS[d] for d in range(7) if d not in closed] + list(RELATIVE_DAYS)

    def time_hints(self) -> list[str]:
        """Every whole hour the clinic takes, as said ("tám giờ sáng"), and a half past."""
        hours = range(self.clinic.opens.hour, self.clinic.closes.hour + 1)
        spoken = [format_time(dt.time(h), words=True) for h in hours]
        half = dt.time(self.clinic.opens.hour + 1, 30)
        return [*spoken, format_time(half, words=True)]

    def time_choices(self) -> list[str]:
        """Every hour and half hour the clinic takes, in words: what a time is matched to."""
        opens, closes = self.clinic.opens, self.clinic.closes
        times = [dt.time(h, m) for h in range(opens.hour, closes.hour + 1) for m in (0, 30)]
        return [format_time(t, words=True) for t in times if opens <= t <= closes]

    def confirm_hints(self, conversation: Conversation) -> list[str]:
        """Yes or no to the read-back (``booking_confirm``)."""
        return list(YES_NO_HINTS)

    # ---------------------------------------------------------------- slots

    def missing(self, conversation: Conversation) -> str | None:
        for slot in _SLOTS:
            if conversation.slots.get(slot) is None:
                return slot
        return None

    def ask(self, conversation: Conversation) -> str:
        """The question for the first missing slot."""
        slot = self.missing(conversation)
        if slot == "name":
            return ASK_NAME
        if slot == "day":
            return ASK_DAY
        if slot == "time":
            return (
                f"Quý khách muốn đến lúc mấy giờ ạ? Chúng tôi nhận lịch {self.clinic.hours_text()}."
            )
        return CHANGE_WHAT  # all filled, here in ``booking``: the read-back was refused

    def confirm_question(self, conversation: Conversation) -> str:
        slots = conversation.slots
        when = (
            f"{format_time(slots['time'])}, {format_date(slots['day'], self.clinic.now().date())}"
        )
        return f"Tôi xin xác nhận lịch hẹn cho {slots['name']} lúc {when}. Đúng không ạ?"

    def extract(self, utterance: Utterance) -> dict[str, Any]:
        """The booking slots said in this turn."""
        if utterance.has(*QUESTION):
            return {}
        found: dict[str, Any] = {}
        if (name := extract_name(utterance)) is not None:
            found["name"] = name
        if (day := parse_day(utterance, self.clinic.now().date())) is not None:
            found["day"] = day
        if (time := parse_time(utterance, daytime=True)) is not None:
            found["time"] = time
        return found

    def fill(self, conversation: Conversation, found: dict[str, Any], *, sure: bool = False) -> str:
        """Put the values in the slots (those that can be booked); the reply to say.

        A name heard (not typed) that is not :meth:`sure_name` is not kept: it is read
        back for a yes first (never booked under a garbled name unasked).
        """
        slots = conversation.slots
        said: list[str] = []
        doubt: str | None = None
        if "name" in found and conversation.heard and not sure:
            kept = self.sure_name(conversation, found["name"])
            if kept is None:
                doubt = self.known_spelling(found.pop("name"))
            else:
                found["name"] = kept
        if "name" in found:
            slots["name"] = found["name"]
        if "day" in found:
            problem = self.clinic.problem(found["day"], None)
            slots["day"] = None if problem else found["day"]
            if problem:
                said.append(problem)
        time = found.get("time", slots.get("time"))
        if time is not None:
            # Checked again when only the day changed: 9:00 is fine tomorrow, not today at 10.
            problem = self.clinic.problem(slots.get("day"), time)
            slots["time"] = None if problem else time
            if problem:
                said.append(problem)
        if doubt is not None:
            slots["name"] = None
            conversation.goto("booking")
            self.unsure(conversation, "name", doubt)
            return " ".join([*said, self.unsure_question("name", doubt)])
        if self.missing(conversation) is None:
            conversation.goto("booking_confirm")
            return " ".join([*said, self.confirm_question(conversation)])
        conversation.goto("booking")
        if not said:
            noted = []
            if "name" in found:
                noted.append(f"tên {found['name']}")
            if slots.get("day") is not None and "day" in found:
                noted.append(format_date(slots["day"], self.clinic.now().date()))
            if slots.get("time") is not None and "time" in found:
                noted.append(f"lúc {format_time(slots['time'])}")
            if noted:
                said.append(f"Dạ, tôi đã ghi nhận {', '.join(noted)}.")
        return " ".join([*said, self.ask(conversation)])

    def clear(self, conversation: Conversation) -> None:
        for slot in _SLOTS:
            conversation.slots.pop(slot, None)

    # ---------------------------------------------------------------- matchers

    def confirms(self, conversation: Conversation, utterance: Utterance) -> bool:
        """A yes to the read-back. Heard (not typed), only a short answer counts: a yes
        word in a longer turn the recogniser garbled ("... phải ...") is no yes."""
        return yes_or_no(utterance) is True and (not conversation.heard or len(utterance) <= 4)

    def says_slots(self, conversation: Conversation, utterance: Utterance) -> bool:
        return bool(self.extract(utterance))

    def changes_slot(self, conversation: Conversation, utterance: Utterance) -> bool:
        return bool(core(utterance).has(*CHANGE) and self._slots_named(utterance))

    def _slots_named(self, utterance: Utterance) -> list[str]:
        named = {"name": ("tên",), "day": ("ngày", "hôm"), "time": ("giờ", "tiếng")}
        found = self.extract(utterance)
        return [s for s, words in named.items() if utterance.has(*words) and s not in found]

    def stops(self, conversation: Conversation, utterance: Utterance) -> bool:
        if self.missing(conversation) == "name" and utterance.plain == "huy":
            return False  # a caller named Huy, answering "tên gì ạ?"
        return core(utterance).has(*STOP)

    def corrects(self, conversation: Conversation, utterance: Utterance) -> bool:
        found = self.extract(utterance)
        return any(conversation.slots.get(k) != v for k, v in found.items())
