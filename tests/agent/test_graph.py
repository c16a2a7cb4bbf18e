"""The graph API on a small graph of its own: routing, transitions, tools, export, figures."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from voice_trio.agent import (
    Conversation,
    Graph,
    Node,
    Rule,
    Say,
    Tool,
    ToolError,
    Utterance,
    phrases,
)


async def _add(conversation: Conversation, *, a: int, b: int = 0) -> dict[str, Any]:
    conversation.slots["sum"] = a + b
    return {"sum": a + b}


async def _fail(conversation: Conversation, *, why: str) -> None:
    if why == "expected":
        raise ToolError("the shop is closed")
    raise RuntimeError("disk on fire")


async def _leave(conversation: Conversation) -> str:
    conversation.goto("end")
    return "bye"


ADD = Tool(
    name="add",
    description="Add two integers.",
    handler=_add,
    parameters={
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    },
)
FAIL = Tool(
    name="fail",
    description="Fails.",
    handler=_fail,
    parameters={
        "type": "object",
        "properties": {"why": {"type": "string", "enum": ["expected", "bug"]}},
        "required": ["why"],
    },
)
LEAVE = Tool(name="leave", description="Leave.", handler=_leave)


async def _say(text: str) -> str:
    return text


def _reply(text: str) -> Any:
    async def action(conversation: Conversation, utterance: Utterance) -> str:
        return text

    return action


async def _sum_rule(conversation: Conversation, utterance: Utterance) -> str:
    numbers = [int(w.text) for w in utterance.words if w.text.isdigit()]
    result = await conversation.call_tool("add", a=numbers[0], b=numbers[1])
    return f"tổng là {result.value['sum']}"


async def _counting_fallback(conversation: Conversation, utterance: Utterance) -> Say:
    return Say("đếm: nói một con số", understood=False)


def build() -> Graph:
    start = Node(
        name="start",
        instructions="Chào khách.",
        rules=[
            Rule("count", phrases("đếm"), _reply("bắt đầu đếm"), goto="counting"),
            Rule("sum", phrases("cộng"), _sum_rule),
        ],
        tools=[FAIL],
    )
    counting = Node(
        name="counting",
        instructions=lambda conversation: f"Đang đếm cho {conversation.session_id}.",
        rules=[Rule("number", lambda c, u: any(w.text.isdigit() for w in u.words), _reply("ok"))],
        tools=[LEAVE],
        transitions={"add": "start"},
        prompt=lambda conversation: "Số tiếp theo?",
        fallback=_counting_fallback,
    )
    end = Node(name="end", final=True)
    return Graph(
        nodes=[start, counting, end],
        start="start",
        instructions="Bạn là trợ lý.",
        tools=[ADD],
        rules=[
            Rule("bye", phrases("tạm biệt"), _reply("tạm biệt"), goto="end"),
            Rule("time", phrases("mấy giờ"), _reply("9 giờ")),
        ],
        greeting="xin chào",
    )


async def test_rules_route_and_transition() -> None:
    conv = build().conversation(session_id="r1")
    assert conv.greeting() == "xin chào"
    reply = await conv.handle_transcript("Đếm đi")
    assert (reply.text, reply.node, reply.rule, reply.understood) == (
        "bắt đầu đếm",
        "counting",
        "count",
        True,
    )
    # Plain words reach the node's rules; without tone marks too.
    assert (await conv.handle_transcript("3")).text == "ok"
    # A global rule answers an aside and the node's question follows.
    aside = await conv.handle_transcript("may gio roi")
    assert (aside.text, aside.node, aside.rule) == ("9 giờ Số tiếp theo?", "counting", "time")
    # The node's own fallback: not understood, no prompt appended.
    other = await conv.handle_transcript("hừm")
    assert (other.text, other.understood, other.rule) == ("đếm: nói một con số", False, None)
    bye = await conv.handle_transcript("tạm biệt")
    assert bye.end and bye.node == "end"
    # After a final node the next turn starts over at the start node.
    again = await conv.handle_transcript("xyz")
    assert again.node == "start" and not again.end and not again.understood
    assert again.text == "Xin lỗi, tôi chưa hiểu ý của bạn."


async def test_rules_call_tools_through_the_dispatcher() -> None:
    conv = build().conversation(session_id="r1")
    reply = await conv.handle_transcript("cộng 2 với 3")
    assert reply.text == "tổng là 5"
    (call,) = reply.tool_calls
    assert (call.name, call.arguments, call.ok, call.value, call.output) == (
        "add",
        {"a": 2, "b": 3},
        True,
        {"sum": 5},
        '{"sum":5}',
    )
    assert conv.slots["sum"] == 5


async def test_node_transition_after_a_successful_tool_call() -> None:
    conv = build().conversation(session_id="r1")
    await conv.handle_transcript("đếm")
    assert conv.node.name == "counting" and conv.revision == 1
    assert json.loads(await conv.handle_tool_call("add", '{"a": "x"}')) == {
        "error": "argument 'a' must be integer, not string"
    }
    assert conv.node.name == "counting"  # a failed call does not move
    assert await conv.handle_tool_call("add", '{"a": 1, "b": 2}') == '{"sum":3}'
    assert conv.node.name == "start" and conv.revision == 2


async def test_a_handler_that_moves_wins_over_declared_transitions() -> None:
    conv = build().conversation(session_id="r1")
    await conv.handle_transcript("đếm")
    assert await conv.handle_tool_call("leave", "") == "bye"
    assert conv.node.name == "end"


async def test_tool_errors_become_outputs() -> None:
    conv = build().conversation(session_id="r1")
    expected = await conv.handle_tool_call("fail", '{"why": "expected"}')
    assert json.loads(expected) == {"error": "the shop is closed"}
    bug = await conv.handle_tool_call("fail", '{"why": "bug"}')
    assert json.loads(bug) == {"error": "tool 'fail' failed: RuntimeError: disk on fire"}
    enum = await conv.handle_tool_call("fail", '{"why": "other"}')
    assert json.loads(enum) == {"error": 'argument \'why\' must be one of "expected", "bug"'}
    # "leave" belongs to another node.
    elsewhere = json.loads(await conv.handle_tool_call("leave", "{}"))
    assert elsewhere == {"error": "unknown tool 'leave' (tools: add, fail)"}
    stats = conv.statistics()
    assert (stats.tool_calls, stats.tool_errors) == (4, 4)


async def test_session_update_fields_follow_the_node() -> None:
    conv = build().conversation(session_id="r1")
    fields = conv.session_update_fields()
    assert fields["instructions"] == "Bạn là trợ lý.\n\nChào khách."
    assert [t["name"] for t in fields["tools"]] == ["add", "fail"]
    assert fields["tools"][0] == {
        "type": "function",
        "name": "add",
        "description": "Add two integers.",
        "parameters": ADD.parameters,
    }
    await conv.handle_transcript("đếm")
    fields = conv.session_update_fields()
    assert fields["instructions"] == "Bạn là trợ lý.\n\nĐang đếm cho r1."
    assert [t["name"] for t in fields["tools"]] == ["add", "leave"]
    assert fields["tools"][1]["parameters"] == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }


def test_no_tools_no_tool_choice() -> None:
    graph = Graph(nodes=[Node(name="only")], start="only")
    assert graph.conversation(session_id="x").session_update_fields() == {
        "instructions": "",
        "tools": [],
    }


def test_graph_checks_its_declaration() -> None:
    with pytest.raises(ValueError, match="start node 'nowhere'"):
        Graph(nodes=[Node(name="a")], start="nowhere")
    with pytest.raises(ValueError, match="two nodes are named 'a'"):
        Graph(nodes=[Node(name="a"), Node(name="a")], start="a")
    with pytest.raises(ValueError, match="goes to unknown node 'b'"):
        Graph(nodes=[Node(name="a", rules=[Rule("r", phrases("x"), _reply("y"), "b")])], start="a")
    with pytest.raises(ValueError, match="transition on unknown tool 'add'"):
        Graph(nodes=[Node(name="a", transitions={"add": "a"})], start="a")
    with pytest.raises(ValueError, match="tool 'add' is declared twice"):
        Graph(nodes=[Node(name="a", tools=[ADD])], start="a", tools=[ADD])
    with pytest.raises(ValueError, match="tool name"):
        Tool(name="add numbers", description="", handler=_add)
    with pytest.raises(ValueError, match="type object"):
        Tool(name="x", description="", handler=_add, parameters={"type": "array"})


async def test_conversations_are_separate() -> None:
    graph = build()
    one = graph.conversation(session_id="r1")
    two = graph.conversation(session_id="r2")
    await one.handle_transcript("đếm")
    await two.handle_transcript("cộng 1 và 1")
    assert one.node.name == "counting" and two.node.name == "start"
    assert "sum" not in one.slots and two.slots["sum"] == 2
    assert [e.text for e in one.history] == ["đếm", "bắt đầu đếm"]
    assert graph.statistics().conversations == 2 and graph.statistics().turns == 2


async def test_history_is_bounded() -> None:
    graph = Graph(nodes=[Node(name="a")], start="a", history_max=4)
    conv = graph.conversation(session_id="r")
    for i in range(10):
        await conv.handle_transcript(f"câu {i}")
    assert len(conv.history) == 4
    assert conv.history[-2].text == "câu 9" and conv.history[-2].role == "user"


async def test_turns_are_handled_one_at_a_time() -> None:
    order: list[str] = []
    release = trio.Event()

    async def slow(conversation: Conversation, utterance: Utterance) -> str:
        order.append(f"start {utterance.raw}")
        if utterance.raw == "một":
            await release.wait()
        order.append(f"end {utterance.raw}")
        return utterance.raw

    graph = Graph(nodes=[Node(name="a", rules=[Rule("any", lambda c, u: True, slow)])], start="a")
    conv = graph.conversation(session_id="r")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conv.handle_transcript, "một")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(conv.handle_transcript, "hai")
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert order == ["start một", "end một", "start hai", "end hai"]


async def test_respond_is_the_local_brains_responder() -> None:
    conv = build().conversation(session_id="r1")
    assert await conv.respond("đếm") == "bắt đầu đếm"
    assert conv.statistics().turns == 1


async def test_hints_follow_the_node_and_the_conversation() -> None:
    async def ask_day(conversation: Conversation, utterance: Utterance) -> str:
        conversation.slots["asked"] = "day"
        conversation.goto("ask")
        return "which day?"

    def expected(conversation: Conversation) -> list[str]:
        return ["monday", " next   week ", "", "monday"] if conversation.slots["asked"] else []

    graph = Graph(
        nodes=[
            Node("menu", rules=[Rule("book", phrases("book"), ask_day)], hints=("book", "bye")),
            Node("ask", rules=[Rule("done", phrases("monday"), _bye, goto="end")], hints=expected),
            Node("end", final=True, hints=("never heard",)),
        ],
        start="menu",
    )
    conversation = graph.conversation(session_id="h")
    assert conversation.hints() == ("book", "bye")
    await conversation.handle_transcript("book")
    # Worked out from the conversation, tidied, each once, in order.
    assert conversation.hints() == ("monday", "next week")
    await conversation.handle_transcript("monday")
    assert conversation.node.name == "end"
    assert conversation.hints() == ("book", "bye")  # the next turn starts at the start node
    assert graph.conversation(session_id="other").hints() == ("book", "bye")


async def _bye(conversation: Conversation, utterance: Utterance) -> str:
    return "bye"


async def test_a_turn_is_rewound_unless_a_tool_ran_in_it() -> None:
    """What the embedded brain does when a user goes on before hearing the reply."""
    conv = build().conversation(session_id="rw")
    before = conv.checkpoint()
    assert before is not None
    assert (await conv.handle_transcript("Đếm đi")).node == "counting"
    revision = conv.revision
    assert conv.rewind(before)
    assert conv.node.name == "start" and conv.turns == 0 and conv.history == ()
    assert conv.revision > revision  # the model's session fields change back too
    # The whole turn is then answered as one, from where it began.
    assert (await conv.handle_transcript("Đếm đi, rồi cộng")).node == "counting"
    # A turn that called a tool is not forgotten: what the tool did stays done.
    conv = build().conversation(session_id="rw2")
    before = conv.checkpoint()
    assert before is not None
    assert (await conv.handle_transcript("cộng 2 với 3")).text == "tổng là 5"
    assert not conv.rewind(before)
    assert conv.slots["sum"] == 5 and conv.turns == 1


async def test_a_rewound_turn_is_not_counted() -> None:
    """A turn taken back (the user went on before hearing its reply) is not in the
    figures: neither a turn, nor a turn not understood, nor a transition."""
    graph = build()
    conv = graph.conversation(session_id="rw3")
    assert (await conv.handle_transcript("Đếm đi")).node == "counting"
    figures, totals = conv.statistics(), graph.statistics()
    before = conv.checkpoint()
    assert before is not None
    reply = await conv.handle_transcript("à thì")  # half a sentence: not understood
    assert not reply.understood
    assert (await conv.handle_transcript("tạm biệt")).node == "end"  # and a transition
    assert conv.rewind(before)
    assert conv.statistics() == figures
    assert graph.statistics() == totals
