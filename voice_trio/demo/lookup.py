"""Reading a booking back and cancelling it: this session's bookings, or the one a caller
names by its booking code and the name it was booked under.

The ``identify`` node asks for whichever of the two is missing; ``cancel_confirm`` asks
before cancelling. What may be found is decided by the tools (:mod:`.tools`), so the
replies here only word what the tools answer.
"""

from __future__ import annotations

from typing import Any

from ..agent.graph import Conversation, Say
from ..agent.vietnamese import Utterance, code_span, extract_name, format_code
from .tools import LOCKED, REFUSED
from .wording import ANYTHING_ELSE, ASK_BOTH, ASK_CODE, ASK_WHOSE, FORGOT, NO_MATCH, TOO_MANY_TRIES

__all__ = ["LookupFlow"]


class LookupFlow:
    """The actions of the ``identify`` and ``cancel_confirm`` nodes, and the look-up and
    cancel requests of ``main`` that lead there."""

    # ---------------------------------------------------------------- main

    async def lookup(self, conversation: Conversation, utterance: Utterance) -> str:
        return await self.look(conversation, "lookup", *self.credentials(utterance))

    async def cancel(self, conversation: Conversation, utterance: Utterance) -> str:
        return await self.look(conversation, "cancel", *self.credentials(utterance))

    async def look(
        self, conversation: Conversation, purpose: str, code: str | None, name: str | None
    ) -> str:
        """Find the bookings to read back or cancel (``purpose``): this session's, or the
        one with this code under this name; else ask for what is missing, or refuse."""
        conversation.goto("main")
        for slot in ("purpose", "code", "whose"):
            conversation.slots.pop(slot, None)
        arguments = {k: v for k, v in (("code", code), ("name", name)) if v is not None}
        result = await conversation.call_tool("find_appointment", **arguments)
        if not result.ok:
            return self.refusal(conversation, purpose, result.error, name)
        found: list[dict[str, Any]] = result.value["appointments"]
        if not found:
            # Nothing from this session: a code and a name are needed, whoever asks.
            conversation.slots.update(purpose=purpose, code=code, whose=name)
            conversation.goto("identify")
            return self.ask_credentials(conversation)
        if purpose == "cancel":
            return self.ask_cancel(conversation, found)
        return self.read_back(found)

    def refusal(
        self, conversation: Conversation, purpose: str, error: str | None, name: str | None
    ) -> str:
        if error == LOCKED:
            return f"{TOO_MANY_TRIES} {ANYTHING_ELSE}"
        if error != REFUSED:
            return f"Xin lỗi, tôi chưa tra được lịch hẹn lúc này. {ANYTHING_ELSE}"
        if purpose == "lookup":
            conversation.slots["offer_turn"] = conversation.turns
            conversation.slots["offer_name"] = name
            return f"{NO_MATCH} Quý khách có muốn đặt lịch mới không ạ?"
        return f"{NO_MATCH} {ANYTHING_ELSE}"

    def ask_credentials(self, conversation: Conversation) -> str:
        """What to ask for in the ``identify`` node: the code, the name, or both."""
        code, whose = conversation.slots.get("code"), conversation.slots.get("whose")
        if code is None and whose is None:
            return ASK_BOTH
        return ASK_CODE if code is None else ASK_WHOSE

    def read_back(self, found: list[dict[str, Any]]) -> str:
        if len(found) == 1:
            a = found[0]
            text = (
                f"Quý khách có một lịch hẹn: {a['name']}, lúc {a['spoken']}, mã lịch hẹn "
                f"{format_code(a['code'])}."
            )
        else:
            listed = "; ".join(f"{a['name']}, lúc {a['spoken']}" for a in found)
            text = f"Quý khách có {len(found)} lịch hẹn: {listed}."
        return f"{text} {ANYTHING_ELSE}"

    def ask_cancel(self, conversation: Conversation, found: list[dict[str, Any]]) -> str:
        target = found[0]
        conversation.slots["cancel"] = target
        conversation.goto("cancel_confirm")
        lead = (
            f"Quý khách có {len(found)} lịch hẹn. Lịch gần nhất là"
            if len(found) > 1
            else "Quý khách muốn hủy"
        )
        return f"{lead} lịch hẹn của {target['name']} lúc {target['spoken']}, đúng không ạ?"

    def credentials(
        self, utterance: Utterance, *, bare: bool = False
    ) -> tuple[str | None, str | None]:
        """The booking code and the name said in this turn ("mã 482913, tên Lan")."""
        code = None
        if (found := code_span(utterance)) is not None:
            code, span = found
            utterance = utterance.without(*span)
        name = extract_name(utterance)
        if name is None and bare:
            name = extract_name(utterance, bare=True)
        return code, name

    # ---------------------------------------------------------------- identify

    async def identified(self, conversation: Conversation, utterance: Utterance) -> str:
        return await self.identify_with(conversation, *self.credentials(utterance, bare=True))

    async def identify_with(
        self, conversation: Conversation, code: str | None, name: str | None
    ) -> str:
        """Add what this turn said to what was said before, and look again."""
        slots = conversation.slots
        code = code or slots.get("code")
        name = name or slots.get("whose")
        return await self.look(conversation, slots.get("purpose", "lookup"), code, name)

    async def identify_fallback(self, conversation: Conversation, utterance: Utterance) -> Say:
        code, name = self.credentials(utterance, bare=True)
        if code is not None or name is not None:
            return Say(await self.identify_with(conversation, code, name))
        return Say(
            f"Xin lỗi, tôi chưa nghe rõ. {self.ask_credentials(conversation)}", understood=False
        )

    async def stop_identify(self, conversation: Conversation, utterance: Utterance) -> str:
        for slot in ("purpose", "code", "whose"):
            conversation.slots.pop(slot, None)
        conversation.goto("main")
        return f"Dạ vâng. {ANYTHING_ELSE}"

    async def forgot_code(self, conversation: Conversation, utterance: Utterance) -> str:
        await self.stop_identify(conversation, utterance)
        return f"{FORGOT} {ANYTHING_ELSE}"

    # ---------------------------------------------------------------- cancel

    async def keep(self, conversation: Conversation, utterance: Utterance) -> str:
        conversation.slots.pop("cancel", None)
        conversation.goto("main")
        return f"Dạ, tôi giữ nguyên lịch hẹn của quý khách. {ANYTHING_ELSE}"

    async def do_cancel(self, conversation: Conversation, utterance: Utterance) -> str:
        target = conversation.slots.pop("cancel")
        result = await conversation.call_tool(
            "cancel_appointment", code=target["code"], name=target["name"]
        )
        if not result.ok:
            conversation.goto("main")
            return f"Xin lỗi, tôi chưa hủy được lịch hẹn này. {ANYTHING_ELSE}"
        done = result.value["cancelled"]
        return f"Dạ, tôi đã hủy lịch hẹn của {done['name']} lúc {done['spoken']}. {ANYTHING_ELSE}"

    def cancel_question(self, conversation: Conversation) -> str:
        target = conversation.slots.get("cancel") or {}
        return (
            f"Quý khách muốn hủy lịch hẹn của {target.get('name')} lúc {target.get('spoken')}, "
            "đúng không ạ?"
        )

    async def cancel_fallback(self, conversation: Conversation, utterance: Utterance) -> Say:
        return Say(
            "Xin lỗi, quý khách vui lòng nói có để hủy lịch hẹn, hoặc không để giữ lại ạ.",
            understood=False,
        )
