"""The demo graph: a Vietnamese receptionist ("lễ tân") that books appointments.

It greets, tells the time and date, books an appointment (name, day, hour:
it asks again for what is missing and reads the booking back for a "có" or
"không"), stores it in SQLite under a random six-digit booking code, reads it
back, cancels it, says goodbye, and says plainly when it did not understand,
with what the caller can say.

The local brain walks it by rules (nodes ``main``, ``booking``,
``booking_confirm``, ``identify``, ``cancel_confirm``, ``goodbye``); the Azure
brain gets the same four tools (``get_time``, ``book_appointment``,
``find_appointment``, ``cancel_appointment``) through function calling, with
instructions that carry today's date.

Its parts: :class:`Receptionist` here (the graph, and the talk that is not
booking: greetings, the clock, goodbye), :class:`~.booking.BookingFlow` (booking),
:class:`~.lookup.LookupFlow` (reading back, cancelling), :class:`~.tools.BookingTools`
(the tools, and the privacy rules they enforce), :class:`~.store.AppointmentStore`
(SQLite), :class:`~.clinic.Clinic` (the business, its hours and clock) and
:mod:`.wording` (the phrases).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Sequence

from ..agent.graph import Conversation, Graph, Node, Rule, Say, phrases
from ..agent.vietnamese import Utterance, code_span, format_date, format_time, say_number
from .booking import BookingFlow
from .clinic import Clinic, Clock, vietnam_now
from .lookup import LookupFlow
from .store import AppointmentStore
from .tools import BookingTools
from .wording import (
    ANYTHING_ELSE,
    ASK_DATE,
    ASK_HOURS,
    ASK_TIME,
    BOOK,
    CANCEL,
    CLOSING,
    FORGOT_CODE,
    GOODBYE,
    HELLO,
    HELP,
    LOOKUP,
    LOOKUP_WEAK,
    MAIN_HINTS,
    NAME_INTRO,
    STOP_LOOKUP,
    THANKS,
    YES_NO_HINTS,
    core,
    no,
    yes,
)

__all__ = ["Receptionist", "build_receptionist"]

#: A booking code is read digit by digit: "bốn tám hai chín một ba".
DIGIT_WORDS = tuple(say_number(d) for d in range(10))


class Receptionist:
    """The graph, and the actions of its ``main`` node and global rules; booking and
    look-ups are handed to their own flows, which share the clinic and the tools."""

    def __init__(self, store: AppointmentStore, clinic: Clinic) -> None:
        self.clinic = clinic
        self.tools = BookingTools(store, clinic)
        self.booking = BookingFlow(clinic)
        self.lookups = LookupFlow()

    # ---------------------------------------------------------------- the model's view

    def instructions(self, conversation: Conversation) -> str:
        now, business = self.clinic.now(), self.clinic.business
        return (
            f"Bạn là lễ tân ảo của {business}, nói chuyện qua điện thoại bằng tiếng Việt "
            'tự nhiên, lịch sự và ngắn gọn (một hai câu mỗi lượt); xưng "tôi", gọi người gọi '
            'là "quý khách".\n'
            "Việc bạn làm: chào hỏi; cho biết giờ và ngày (gọi get_time); đặt lịch hẹn: cần đủ "
            "tên, ngày và giờ, hỏi lại điều còn thiếu, đọc lại để quý khách xác nhận rồi mới gọi "
            "book_appointment, rồi đọc cho quý khách mã lịch hẹn (6 chữ số, đọc từng số) và dặn "
            "ghi lại; xem lại lịch hẹn (find_appointment); hủy lịch hẹn: tìm bằng "
            "find_appointment, hỏi quý khách xác nhận, rồi gọi cancel_appointment với mã (code) "
            "và tên.\n"
            "Bảo mật: chỉ đọc lại hay hủy lịch hẹn đã đặt trong chính cuộc gọi này "
            "(find_appointment không tham số), hoặc khi quý khách nói cả mã lịch hẹn và tên "
            "người đã đặt lịch (gọi find_appointment với code và name). Chỉ biết tên thì không "
            "đủ: hỏi thêm mã; không bao giờ nói có hay không có lịch hẹn của ai.\n"
            f"{business} nhận lịch {self.clinic.hours_text()}.\n"
            f"Hôm nay là {format_date(now.date())} năm {now.year}, bây giờ là "
            f"{format_time(now.time())} (giờ Việt Nam). Gửi ngày cho công cụ theo dạng "
            "YYYY-MM-DD và giờ theo dạng HH:MM (24 giờ).\n"
            "Khi công cụ trả về lỗi, nói rõ cho quý khách bằng lời đơn giản; không bịa thông tin. "
            "Khi không hiểu, nói thẳng là chưa hiểu và gợi ý những việc bạn làm được. Khi quý "
            "khách chào tạm biệt, chào lại ngắn gọn."
        )

    def greeting(self, conversation: Conversation) -> str:
        business = self.clinic.business
        return (
            f"Xin chào, {business} xin nghe. Tôi là lễ tân ảo, có thể giúp quý khách đặt "
            "lịch hẹn, xem lại hoặc hủy lịch hẹn. Quý khách cần giúp gì ạ?"
        )

    # ---------------------------------------------------------------- global actions

    async def goodbye(self, conversation: Conversation, utterance: Utterance) -> str:
        self.booking.clear(conversation)
        result = await conversation.call_tool("find_appointment")
        upcoming = result.value["appointments"] if result.ok else []
        see_you = f" Hẹn gặp quý khách lúc {upcoming[0]['spoken']}." if upcoming else ""
        return (
            f"Cảm ơn quý khách đã gọi cho {self.clinic.business}.{see_you} Chúc quý khách một ngày "
            "tốt lành, tạm biệt ạ!"
        )

    async def clock_answer(self, conversation: Conversation, utterance: Utterance) -> str:
        result = await conversation.call_tool("get_time")
        now = result.value
        time_asked = utterance.has(*ASK_TIME)
        date_asked = utterance.has(*ASK_DATE)
        parts = []
        if time_asked or not date_asked:
            parts.append(f"Bây giờ là {now['spoken_time']}.")
        if date_asked:
            parts.append(f"Hôm nay là {now['spoken_date']}.")
        return " ".join(parts)

    async def opening_hours(self, conversation: Conversation, utterance: Utterance) -> str:
        return f"Dạ, {self.clinic.business} nhận lịch {self.clinic.hours_text()} ạ."

    async def thanks(self, conversation: Conversation, utterance: Utterance) -> str:
        if conversation.node.name == "main":
            return f"Dạ, không có gì ạ. {ANYTHING_ELSE}"
        return "Dạ, không có gì ạ."

    async def hello(self, conversation: Conversation, utterance: Utterance) -> str:
        if conversation.node.name != "main":
            return "Dạ, xin chào quý khách."
        return (
            "Xin chào quý khách! Tôi có thể giúp quý khách đặt lịch hẹn, xem lại hoặc hủy lịch "
            "hẹn. Quý khách cần gì ạ?"
        )

    async def help(self, conversation: Conversation, utterance: Utterance) -> str:
        return (
            "Tôi có thể đặt lịch hẹn cho quý khách, đọc lại hoặc hủy lịch hẹn đã đặt, và cho "
            "biết ngày giờ. Quý khách cứ nói, ví dụ: tôi muốn đặt lịch chín giờ sáng mai."
        )

    async def not_understood(self, conversation: Conversation, utterance: Utterance) -> Say:
        return Say(
            "Xin lỗi, tôi chưa hiểu ý quý khách. Quý khách có thể nói, ví dụ: tôi muốn đặt lịch "
            "hẹn, xem lại lịch hẹn của tôi, hủy lịch hẹn, hoặc hỏi bây giờ là mấy giờ.",
            understood=False,
        )

    # ---------------------------------------------------------------- main

    async def accept_offer(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.slots.pop("offer_turn", None)
        name = conversation.slots.pop("offer_name", None)
        self.booking.clear(conversation)
        found = self.booking.extract(utterance)
        if name is not None:
            found.setdefault("name", name)
        return self.booking.fill(conversation, found)

    async def decline_offer(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.slots.pop("offer_turn", None)
        return f"Dạ vâng. {ANYTHING_ELSE}"

    async def no_more(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.goto("goodbye")
        return await self.goodbye(conversation, utterance)

    async def yes_what(self, conversation: Conversation, utterance: Utterance) -> str:
        return "Dạ, quý khách cần gì ạ? Tôi có thể đặt lịch hẹn, xem lại hoặc hủy lịch hẹn."

    # ---------------------------------------------------------------- matchers

    def wants(self, *choices: str) -> Callable[[Conversation, Utterance], bool]:
        def match(conversation: Conversation, utterance: Utterance) -> bool:
            return core(utterance).has(*choices)

        return match

    def nothing_more(self, conversation: Conversation, utterance: Utterance) -> bool:
        """A plain no to "anything else?": "không", "dạ không cần đâu ạ" (not "không biết")."""
        return no(conversation, utterance) and all(
            utterance.word_is(i, *CLOSING) for i in range(len(utterance))
        )

    def offered(self, conversation: Conversation) -> bool:
        """The previous reply offered to book ("có muốn đặt lịch mới không ạ?")."""
        return conversation.slots.get("offer_turn") == conversation.turns - 1

    # ---------------------------------------------------------------- the graph

    def graph(self) -> Graph:
        main = Node(
            name="main",
            instructions="Hỏi quý khách cần gì: đặt lịch, xem lại hoặc hủy lịch hẹn.",
            rules=[
                Rule("accept_offer", lambda c, u: self.offered(c) and yes(c, u),
                     self.accept_offer),
                Rule("decline_offer", lambda c, u: self.offered(c) and no(c, u),
                     self.decline_offer),
                Rule("goodbye", phrases(*GOODBYE), self.goodbye, goto="goodbye"),
                Rule("cancel", self.wants(*CANCEL), self.lookups.cancel),
                Rule("lookup", self.wants(*LOOKUP), self.lookups.lookup),
                Rule("book", self.wants(*BOOK), self.booking.start),
                Rule("lookup", self.wants(*LOOKUP_WEAK), self.lookups.lookup),
                Rule("lookup", lambda c, u: code_span(u) is not None, self.lookups.lookup),
                Rule("book", self.booking.says_slots, self.booking.start),
                Rule("no_more", self.nothing_more, self.no_more),
                Rule("yes", lambda c, u: len(u) <= 3 and yes(c, u), self.yes_what),
            ],
            hints=MAIN_HINTS,
        )  # fmt: skip
        booking = Node(
            name="booking",
            instructions="Đang đặt lịch: hỏi tên, ngày và giờ còn thiếu.",
            rules=[
                Rule("confirm_heard", self.booking.confirms_unsure, self.booking.accept_unsure),
                Rule("deny_heard", self.booking.denies_unsure, self.booking.reject_unsure),
                Rule("stop_booking", self.booking.stops, self.booking.stop),
                Rule("change_slot", self.booking.changes_slot, self.booking.change_slot),
                Rule("fill_slots", self.booking.says_slots, self.booking.fill_slots),
                # Everything is filled (the read-back was refused): another "no" asks again.
                Rule(
                    "reject",
                    lambda c, u: self.booking.missing(c) is None and no(c, u),
                    self.booking.reject,
                ),
            ],
            prompt=self.booking.ask,
            fallback=self.booking.fallback,
            hints=self.booking.hints,
        )
        booking_confirm = Node(
            name="booking_confirm",
            instructions="Đọc lại lịch hẹn và chờ quý khách xác nhận trước khi đặt.",
            rules=[
                Rule("change_slot", self.booking.changes_slot, self.booking.change_slot),
                Rule("correct", self.booking.corrects, self.booking.confirm_changes),
                Rule("stop_booking", self.booking.stops, self.booking.stop),
                Rule("reject", no, self.booking.reject),
                Rule("confirm", self.booking.confirms, self.booking.book),
            ],
            transitions={"book_appointment": "main"},
            prompt=self.booking.confirm_question,
            fallback=self.booking.confirm_fallback,
            hints=self.booking.confirm_hints,
        )
        identify = Node(
            name="identify",
            instructions=(
                "Để bảo mật, hỏi mã lịch hẹn và tên người đã đặt lịch; cần cả hai mới tìm được."
            ),
            rules=[
                Rule("forgot", phrases(*FORGOT_CODE), self.lookups.forgot_code),
                Rule("stop", phrases(*STOP_LOOKUP), self.lookups.stop_identify),
                Rule(
                    "credentials",
                    lambda c, u: any(self.lookups.credentials(u)),
                    self.lookups.identified,
                ),
            ],
            prompt=self.lookups.ask_credentials,
            fallback=self.lookups.identify_fallback,
            hints=("mã lịch hẹn", *DIGIT_WORDS, NAME_INTRO),
        )
        cancel_confirm = Node(
            name="cancel_confirm",
            instructions="Hỏi quý khách xác nhận trước khi hủy lịch hẹn.",
            rules=[
                Rule("keep", no, self.lookups.keep),
                Rule("cancel", lambda c, u: yes(c, u) or u.has(*CANCEL), self.lookups.do_cancel),
            ],
            transitions={"cancel_appointment": "main"},
            prompt=self.lookups.cancel_question,
            fallback=self.lookups.cancel_fallback,
            hints=YES_NO_HINTS,
        )
        goodbye = Node(name="goodbye", instructions="Chào tạm biệt quý khách.", final=True)
        return Graph(
            nodes=[main, booking, booking_confirm, identify, cancel_confirm, goodbye],
            start="main",
            instructions=self.instructions,
            greeting=self.greeting,
            tools=self.tools.graph_tools(),
            rules=[
                Rule("goodbye", phrases(*GOODBYE), self.goodbye, goto="goodbye"),
                Rule("opening_hours", phrases(*ASK_HOURS), self.opening_hours),
                Rule("clock", phrases(*ASK_TIME, *ASK_DATE), self.clock_answer),
                Rule("thanks", phrases(*THANKS), self.thanks),
                Rule("hello", phrases(*HELLO), self.hello),
                Rule("help", phrases(*HELP), self.help),
            ],
            fallback=self.not_understood,
        )


def build_receptionist(
    db_path: str | os.PathLike[str],
    *,
    clock: Clock = vietnam_now,
    business: str = "Phòng khám Bình An",
    opens: dt.time = dt.time(8, 0),
    closes: dt.time = dt.time(17, 0),
    closed_weekdays: Sequence[int] = (6,),
) -> Graph:
    """The receptionist graph, storing appointments in the SQLite file ``db_path``.

    ``clock`` returns "now" (an aware datetime; a naive one is read as Vietnam
    time). Appointments may start from ``opens`` to ``closes`` inclusive, on
    days whose ``weekday()`` is not in ``closed_weekdays`` (default: Sunday).
    """
    clinic = Clinic(business, opens, closes, frozenset(closed_weekdays), clock)
    return Receptionist(AppointmentStore(db_path), clinic).graph()
