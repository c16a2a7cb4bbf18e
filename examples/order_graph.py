"""A two-node agent graph that takes a drink order (docs/customise.md, "Write an agent graph").

Run it (the embedded brain, offline)::

    AGENT_GRAPH=examples.order_graph:build_order_graph .venv/bin/voice-trio serve
    .venv/bin/voice-trio serve --graph examples.order_graph:build_order_graph

then type or say "cho tôi hai ly trà đào", "có". The same graph drives Azure
OpenAI Realtime: the model reads the instructions and calls the two tools.

- node ``order``: waits for a drink; a rule picks it (and how many) and goes to
- node ``confirm``: reads the order back; "có" places it through the tool
  ``place_order`` (its transition goes back to ``order``), "không" goes back.
- tools: ``get_menu`` (no arguments) and ``place_order`` (a JSON schema: the
  drink from the menu, a quantity from 1 to 20); their handlers are async.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from voice_trio.agent import Conversation, Graph, Node, Rule, Say, Tool, ToolError, Utterance
from voice_trio.agent.vietnamese import parse_number, yes_or_no

__all__ = ["MENU", "Cafe", "Order", "build_order_graph"]

#: Drink -> price in dong. A phrase written with its tone marks also matches
#: the same words typed without them ("tra dao"), as speech recognition may give.
MENU = {"cà phê sữa đá": 29_000, "trà đào": 35_000, "nước cam": 40_000}
MAX_CUPS = 20


@dataclass(frozen=True, slots=True)
class Order:
    number: int
    session_id: str
    drink: str
    quantity: int
    total: int


class Cafe:
    """The shop behind the graph: its menu and the orders taken (one per process)."""

    def __init__(self) -> None:
        self.orders: list[Order] = []
        self._numbers = itertools.count(1)

    # ------------------------------------------------------------ the tools' handlers

    async def get_menu(self, conversation: Conversation) -> dict[str, Any]:
        return {"drinks": [{"name": name, "price_vnd": price} for name, price in MENU.items()]}

    async def place_order(
        self, conversation: Conversation, *, drink: str, quantity: int
    ) -> dict[str, Any]:
        # The schema has checked the types, the enum and the range already; a
        # ToolError is what the caller (the model, or a rule) is told.
        if conversation.slots.get("placed", 0) >= 3:
            raise ToolError("this call has placed three orders already; ask the staff")
        total = MENU[drink] * quantity
        order = Order(next(self._numbers), conversation.session_id, drink, quantity, total)
        self.orders.append(order)
        conversation.slots["placed"] = conversation.slots.get("placed", 0) + 1
        return {"order_number": order.number, "total_vnd": order.total}

    def tools(self) -> list[Tool]:
        return [
            Tool("get_menu", "The drinks and their prices in dong.", self.get_menu),
            Tool(
                "place_order",
                "Place the caller's order, once they have confirmed it.",
                self.place_order,
                parameters={
                    "type": "object",
                    "properties": {
                        "drink": {"type": "string", "enum": list(MENU)},
                        "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_CUPS},
                    },
                    "required": ["drink", "quantity"],
                    "additionalProperties": False,
                },
            ),
        ]

    # ------------------------------------------------------------ the rules (local brain)

    @staticmethod
    def drink_in(utterance: Utterance) -> str | None:
        return next((name for name in MENU if utterance.has(name)), None)

    @staticmethod
    def cups_in(utterance: Utterance) -> int:
        """The first number said ("hai ly", "2 ly"), else one."""
        for word in utterance.words:
            n = parse_number(word.text)
            if n is not None and 1 <= n <= MAX_CUPS:
                return n
        return 1

    async def pick(self, conversation: Conversation, utterance: Utterance) -> str:
        drink = self.drink_in(utterance)
        assert drink is not None  # the rule's matcher said so
        quantity = self.cups_in(utterance)
        conversation.slots.update(drink=drink, quantity=quantity)
        total = MENU[drink] * quantity
        ask = self.ask_confirm(conversation)
        return f"Dạ, {quantity} ly {drink}, {total // 1000} nghìn đồng. {ask}"

    @staticmethod
    def ask_confirm(conversation: Conversation) -> str:
        return "Anh chị xác nhận giúp em nhé?"

    async def place(self, conversation: Conversation, utterance: Utterance) -> str:
        slots = conversation.slots
        result = await conversation.call_tool(
            "place_order", drink=slots["drink"], quantity=slots["quantity"]
        )
        if not result.ok:
            conversation.goto("order")
            return f"Xin lỗi, em chưa ghi được đơn: {result.error}."
        value = result.value
        return (
            f"Em đã ghi đơn số {value['order_number']}, tổng cộng "
            f"{value['total_vnd'] // 1000} nghìn đồng. Anh chị dùng thêm gì nữa không ạ?"
        )

    async def change(self, conversation: Conversation, utterance: Utterance) -> str:
        return "Dạ, vậy anh chị muốn đổi sang món gì ạ?"

    async def thanks(self, conversation: Conversation, utterance: Utterance) -> str:
        return "Dạ, cảm ơn anh chị. Chào anh chị ạ!"

    async def menu(self, conversation: Conversation, utterance: Utterance) -> Say:
        names = ", ".join(MENU)
        return Say(f"Quán có {names}. Anh chị dùng gì ạ?", understood=False)


def build_order_graph() -> Graph:
    """The graph (AGENT_GRAPH=examples.order_graph:build_order_graph)."""
    cafe = Cafe()
    order = Node(
        name="order",
        instructions="Hỏi khách muốn uống gì và mấy ly.",
        rules=[
            Rule("pick", lambda c, u: cafe.drink_in(u) is not None, cafe.pick, goto="confirm"),
            Rule("done", lambda c, u: yes_or_no(u) is False, cafe.thanks),
        ],
        fallback=cafe.menu,
    )
    confirm = Node(
        name="confirm",
        instructions="Đọc lại đơn và chờ khách xác nhận rồi mới gọi place_order.",
        rules=[
            Rule("change", lambda c, u: cafe.drink_in(u) is not None, cafe.pick),
            Rule("yes", lambda c, u: yes_or_no(u) is True, cafe.place),
            Rule("no", lambda c, u: yes_or_no(u) is False, cafe.change, goto="order"),
        ],
        transitions={"place_order": "order"},  # after a successful call
        prompt=cafe.ask_confirm,
    )
    return Graph(
        nodes=[order, confirm],
        start="order",
        instructions=(
            "Bạn là nhân viên quán cà phê Trio, nhận đơn qua điện thoại bằng tiếng Việt, "
            "ngắn gọn và lịch sự. Gọi get_menu để biết món và giá; đọc lại đơn cho khách "
            "xác nhận rồi mới gọi place_order, sau đó đọc số đơn và tổng tiền."
        ),
        greeting="Xin chào, quán cà phê Trio xin nghe. Anh chị muốn uống gì ạ?",
        tools=cafe.tools(),
    )
