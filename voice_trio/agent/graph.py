"""The agent graph (DESIGN.md section 4): nodes, tools, rules, and a per-room dispatcher.

A :class:`Graph` is declared once per process and shared by every room; a
:class:`Conversation` is one room's walk through it (current node, slots,
history, figures). The same graph serves both brains:

- **local brain**: each final transcript goes to
  :meth:`Conversation.handle_transcript`, which tries the current node's
  :class:`Rule` s, then the graph's global rules, then a fallback, and returns
  the :class:`Reply` to speak. Rules may call tools through
  :meth:`Conversation.call_tool`, the same path the model uses.
- **Azure Realtime brain**: :meth:`Conversation.session_update_fields` gives the
  ``instructions`` and ``tools`` of a GA ``session.update``; each
  ``response.function_call_arguments.done`` goes to
  :meth:`Conversation.handle_tool_call`, whose string is the
  ``function_call_output``. When :attr:`Conversation.revision` has changed
  since the last ``session.update`` (a tool moved the conversation to another
  node), send one again.

Recognition hints: a node's ``hints`` are the answers it is waiting for (the
days it can book, yes or no, the names it knows), fixed or worked out from the
conversation; :meth:`Conversation.hints` gives the current node's, which the
local brain hands Whisper as its prompt for the next turn and the Azure brain
puts in its transcription's ``prompt``. Short answers ("có", "mười giờ") are
what a recogniser gets wrong most; a hint is a bias, never a fact: the rules
still match only what the transcript says.

Transitions: a rule's ``goto``, a node's ``transitions`` (tool name -> next
node, after a successful call), or :meth:`Conversation.goto` from a rule's
action or a tool's handler (which wins over the other two).
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import trio

from ..errors import VoiceTrioError
from .vietnamese import Utterance

__all__ = [
    "ArgumentError",
    "Checkpoint",
    "Conversation",
    "ConversationStatistics",
    "Graph",
    "GraphStatistics",
    "Hints",
    "HistoryEntry",
    "Node",
    "Reply",
    "Rule",
    "Say",
    "Tool",
    "ToolError",
    "ToolResult",
    "phrases",
]

log = logging.getLogger("voice_trio.agent")

#: ``async def handler(conversation, **arguments) -> result``: a dict, list, str or number.
ToolHandler = Callable[..., Awaitable[Any]]
#: Whether a rule applies to this turn.
Matcher = Callable[["Conversation", Utterance], bool]
#: What a rule (or a fallback) does: returns the text to speak.
Action = Callable[["Conversation", Utterance], Awaitable["str | Say"]]
#: Text that may depend on the room (today's date, a slot).
Text = str | Callable[["Conversation"], str]
#: Phrases recognition should expect next: fixed, or worked out from the conversation.
Hints = Sequence[str] | Callable[["Conversation"], Sequence[str]]

_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class ToolError(VoiceTrioError):
    """A tool's expected failure. Its message becomes the tool's output, for the model to read."""


class ArgumentError(ToolError):
    """A tool's arguments do not fit its JSON schema."""


# ------------------------------------------------------------------- tools

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def _type_name(value: Any) -> str:
    for name, types in _JSON_TYPES.items():
        if isinstance(value, types) and not (isinstance(value, bool) and name != "boolean"):
            return name
    return type(value).__name__


def _check(value: Any, schema: Mapping[str, Any], where: str) -> None:
    """The subset of JSON Schema tools use here; raises :class:`ArgumentError`."""
    kind = schema.get("type")
    if kind is not None:
        kinds = [kind] if isinstance(kind, str) else list(kind)
        ok = any(
            isinstance(value, _JSON_TYPES[k])
            and not (isinstance(value, bool) and k != "boolean")
            or (k == "integer" and isinstance(value, float) and value.is_integer())
            for k in kinds
        )
        if not ok:
            raise ArgumentError(f"{where} must be {' or '.join(kinds)}, not {_type_name(value)}")
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(_encoder.encode(c).decode() for c in schema["enum"])
        raise ArgumentError(f"{where} must be one of {choices}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise ArgumentError(
                f"{where} must not be empty" if not value else f"{where} is too short"
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ArgumentError(f"{where} is longer than {schema['maxLength']} characters")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            hint = f": {schema['description']}" if "description" in schema else ""
            raise ArgumentError(f"{where} {value!r} does not match {schema['pattern']}{hint}")
        if schema.get("format") == "date":
            try:
                dt.date.fromisoformat(value)
            except ValueError:
                raise ArgumentError(f"{where} {value!r} is not a date (YYYY-MM-DD)") from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ArgumentError(f"{where} must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ArgumentError(f"{where} must be at most {schema['maximum']}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{where}[{i}]")
    if isinstance(value, dict):
        properties: Mapping[str, Any] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                raise ArgumentError(f"missing required argument {name!r}")
        for name, item in value.items():
            if name in properties:
                _check(item, properties[name], f"argument {name!r}")
            elif schema.get("additionalProperties", True) is False:
                known = ", ".join(properties) or "none"
                raise ArgumentError(f"unknown argument {name!r} (expected: {known})")


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the agent can call: a JSON-schema signature and a Python handler.

    ``parameters`` is the JSON schema of the arguments object, exported as is to
    the model. The handler is ``async def handler(conversation, **arguments)``;
    it raises :class:`ToolError` for a failure the caller should hear about.
    """

    name: str
    description: str
    handler: ToolHandler
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}, "additionalProperties": False}
    )

    def __post_init__(self) -> None:
        if _TOOL_NAME.fullmatch(self.name) is None:
            raise ValueError(f"tool name {self.name!r} must be 1-64 of A-Z a-z 0-9 _ -")
        if self.parameters.get("type") != "object":
            raise ValueError(f"tool {self.name!r}: parameters must be a JSON schema of type object")

    def to_function(self) -> dict[str, Any]:
        """The tool in the Realtime ``session.tools`` shape."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
        }

    def check_arguments(self, arguments: Any) -> dict[str, Any]:
        """``arguments`` if they fit the schema, else an :class:`ArgumentError` saying why not."""
        if not isinstance(arguments, dict):
            raise ArgumentError(f"arguments must be a JSON object, not {_type_name(arguments)}")
        _check(arguments, self.parameters, "arguments")
        return arguments


@dataclass(frozen=True, slots=True)
class ToolResult:
    """One tool call, as the dispatcher ran it."""

    name: str
    arguments: Mapping[str, Any] | None
    ok: bool
    #: The handler's result (None on failure).
    value: Any
    #: What went wrong (None on success).
    error: str | None
    #: The string handed back to the model: the result as JSON, or ``{"error": ...}``.
    output: str


# ------------------------------------------------------------------ rules, nodes


@dataclass(frozen=True, slots=True)
class Say:
    """What an action returns when a plain string is not enough."""

    text: str
    #: False: the turn counts as not understood (the figures, and ``Reply.understood``).
    understood: bool = True


@dataclass(frozen=True, slots=True)
class Rule:
    """When ``when`` holds for a turn, run ``then``; afterwards go to ``goto`` (if set)."""

    name: str
    when: Matcher
    then: Action
    goto: str | None = None


def phrases(*choices: str) -> Matcher:
    """A matcher: any of these phrases occurs (with or without tone marks)."""

    def match(conversation: Conversation, utterance: Utterance) -> bool:
        return utterance.has(*choices)

    return match


@dataclass(frozen=True, slots=True)
class Node:
    """One step of the conversation.

    ``instructions`` go to the model (with the graph's) while the conversation
    is here. ``rules`` are tried in order before the graph's global rules.
    ``prompt`` is what the node is waiting for; it is said again after a global
    rule answers an aside ("mấy giờ rồi?") here. ``fallback`` answers what no
    rule matched (default: the graph's). A ``final`` node ends the conversation;
    the next turn starts again from the graph's start node. ``hints`` are the
    answers the node is waiting for, for recognition (:meth:`Conversation.hints`):
    keep them to what this step expects, as a recogniser also hears a hint's
    words in what was not said.
    """

    name: str
    instructions: Text = ""
    rules: Sequence[Rule] = ()
    tools: Sequence[Tool] = ()
    #: Tool name -> node to go to after a successful call of that tool here.
    transitions: Mapping[str, str] = field(default_factory=dict)
    prompt: Callable[[Conversation], str] | None = None
    fallback: Action | None = None
    final: bool = False
    hints: Hints = ()


async def _not_understood(conversation: Conversation, utterance: Utterance) -> Say:
    return Say("Xin lỗi, tôi chưa hiểu ý của bạn.", understood=False)


def _text(value: Text, conversation: Conversation) -> str:
    return value(conversation) if callable(value) else value


@dataclass(frozen=True, slots=True)
class GraphStatistics:
    """Figures over every conversation of one graph (for ``/metrics``)."""

    conversations: int
    turns: int
    not_understood: int
    tool_calls: int
    tool_errors: int
    transitions: int


class Graph:
    """The nodes, global rules and tools of an agent; shared by every room.

    ``instructions`` (the persona) go to the model in every node. ``tools`` and
    ``rules`` are available in every node, after the node's own. ``greeting``
    is what the agent says when a conversation opens.
    """

    def __init__(
        self,
        *,
        nodes: Iterable[Node],
        start: str,
        instructions: Text = "",
        tools: Sequence[Tool] = (),
        rules: Sequence[Rule] = (),
        fallback: Action = _not_understood,
        greeting: Text = "",
        history_max: int = 50,
    ) -> None:
        self.nodes: dict[str, Node] = {}
        for node in nodes:
            if node.name in self.nodes:
                raise ValueError(f"two nodes are named {node.name!r}")
            self.nodes[node.name] = node
        if start not in self.nodes:
            raise ValueError(f"start node {start!r} is not one of the nodes")
        self.start = start
        self.instructions = instructions
        self.tools = tuple(tools)
        self.rules = tuple(rules)
        self.fallback = fallback
        self.greeting = greeting
        self.history_max = history_max
        self._check()
        self._conversations = 0
        self._turns = 0
        self._not_understood = 0
        self._tool_calls = 0
        self._tool_errors = 0
        self._transitions = 0

    def _check(self) -> None:
        for rule in self.rules:
            self._check_target(rule.goto, f"global rule {rule.name!r}")
        for node in self.nodes.values():
            seen = {tool.name for tool in self.tools}
            for tool in node.tools:
                if tool.name in seen:
                    raise ValueError(f"node {node.name!r}: tool {tool.name!r} is declared twice")
                seen.add(tool.name)
            for rule in node.rules:
                self._check_target(rule.goto, f"rule {rule.name!r} of node {node.name!r}")
            for tool_name, target in node.transitions.items():
                if tool_name not in seen:
                    raise ValueError(
                        f"node {node.name!r}: transition on unknown tool {tool_name!r}"
                    )
                self._check_target(target, f"node {node.name!r}")
        names = [tool.name for tool in self.tools]
        if len(set(names)) != len(names):
            raise ValueError("two global tools have the same name")

    def _check_target(self, target: str | None, where: str) -> None:
        if target is not None and target not in self.nodes:
            raise ValueError(f"{where} goes to unknown node {target!r}")

    def conversation(self, *, session_id: str) -> Conversation:
        """A new conversation (one per room) at the start node."""
        return Conversation(self, session_id=session_id)

    def tools_at(self, node: str) -> dict[str, Tool]:
        """The tools callable at ``node``: the graph's, then the node's."""
        return {tool.name: tool for tool in (*self.tools, *self.nodes[node].tools)}

    def statistics(self) -> GraphStatistics:
        return GraphStatistics(
            conversations=self._conversations,
            turns=self._turns,
            not_understood=self._not_understood,
            tool_calls=self._tool_calls,
            tool_errors=self._tool_errors,
            transitions=self._transitions,
        )


# ------------------------------------------------------------------ conversation


@dataclass(frozen=True, slots=True)
class Reply:
    """The agent's answer to one user turn."""

    #: What to say (never empty).
    text: str
    #: The node the conversation is at after the turn.
    node: str
    #: The rule that answered; None when a fallback did.
    rule: str | None
    understood: bool
    #: The conversation reached a final node (the user said goodbye).
    end: bool
    #: Tools called while answering, in order.
    tool_calls: tuple[ToolResult, ...] = ()


@dataclass(frozen=True, slots=True)
class ConversationStatistics:
    """One room's figures."""

    node: str
    turns: int
    not_understood: int
    tool_calls: int
    tool_errors: int
    transitions: int


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One line of a conversation's history."""

    role: str  # "user", "assistant" or "tool"
    text: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A conversation's state before a turn (:meth:`Conversation.checkpoint`)."""

    node: Node
    slots: dict[str, Any]
    history: tuple[HistoryEntry, ...]
    turns: int
    tool_calls: int
    not_understood: int = 0
    transitions: int = 0


class Conversation:
    """One room's state on a :class:`Graph`, and the dispatcher of its events.

    Turns and tool calls are handled one at a time (a lock), so a rule's
    reads and writes of :attr:`slots` are never interleaved with another's.
    Handlers and actions get the conversation itself: :attr:`session_id`,
    :attr:`slots`, :attr:`node`, :meth:`goto`, :meth:`call_tool`.
    """

    def __init__(self, graph: Graph, *, session_id: str) -> None:
        self.graph = graph
        self.session_id = session_id
        #: Free-form per-room state for the graph's rules and tools.
        self.slots: dict[str, Any] = {}
        #: Bumped on every change of node: the model's session fields may have changed.
        self.revision = 0
        self._node = graph.nodes[graph.start]
        self._history: collections.deque[HistoryEntry] = collections.deque(maxlen=graph.history_max)
        self._lock = trio.Lock()
        self._moved = False  # goto() was called during the current step
        self._heard = False  # the current turn is a transcript
        self._calls: list[ToolResult] = []
        self._turns = 0
        self._not_understood = 0
        self._tool_calls = 0
        self._tool_errors = 0
        self._transitions = 0
        graph._conversations += 1

    # ----------------------------------------------------------- state

    @property
    def node(self) -> Node:
        return self._node

    @property
    def turns(self) -> int:
        """User turns handled so far (the current one included, while it runs)."""
        return self._turns

    @property
    def history(self) -> tuple[HistoryEntry, ...]:
        """The last turns (bounded by the graph's ``history_max``)."""
        return tuple(self._history)

    def goto(self, node: str) -> None:
        """Move to ``node`` (a rule's action or a tool's handler calls this)."""
        if node not in self.graph.nodes:
            raise ValueError(f"unknown node {node!r}")
        self._moved = True
        if node != self._node.name:
            self._node = self.graph.nodes[node]
            self.revision += 1
            self._transitions += 1
            self.graph._transitions += 1

    def record(self, role: str, text: str) -> None:
        """Add to the history what was said elsewhere (the Azure brain's transcripts)."""
        self._history.append(HistoryEntry(role, text))

    def amend_reply(self, heard: str, said: str | None = None) -> None:
        """The last reply (the last that said ``said``) was cut: the history keeps only
        what the user heard of it (nothing at all when nothing was heard)."""
        history = self._history
        for i in range(len(history) - 1, -1, -1):
            if history[i].role == "assistant" and said in (None, history[i].text):
                if heard:
                    history[i] = HistoryEntry("assistant", heard)
                else:
                    del history[i]
                return

    def checkpoint(self) -> Checkpoint | None:
        """Its state before a turn, to :meth:`rewind` to (None: its slots cannot be copied)."""
        try:
            slots = copy.deepcopy(self.slots)
        except Exception:  # a slot of the graph's own kind that does not copy
            return None
        return Checkpoint(
            self._node, slots, tuple(self._history), self._turns, self._tool_calls,
            self._not_understood, self._transitions,
        )  # fmt: skip

    def rewind(self, checkpoint: Checkpoint) -> bool:
        """Back to ``checkpoint``, as if the turns since were not taken: True when done.

        Refused (False) when a tool was called since: what a tool did (a booking
        made) is not undone by forgetting it. The embedded brain rewinds when the
        user went on speaking before hearing the reply to what turned out to be only
        the first part of a turn.
        """
        if self._tool_calls != checkpoint.tool_calls:
            return False
        if self._node is not checkpoint.node:
            self._node = checkpoint.node
            self.revision += 1  # the model's session fields may change back
        self.slots = checkpoint.slots
        self._history.clear()
        self._history.extend(checkpoint.history)
        graph = self.graph  # the turns taken back are not counted, here or in the graph's
        graph._turns -= self._turns - checkpoint.turns
        graph._not_understood -= self._not_understood - checkpoint.not_understood
        graph._transitions -= self._transitions - checkpoint.transitions
        self._turns = checkpoint.turns
        self._not_understood = checkpoint.not_understood
        self._transitions = checkpoint.transitions
        return True

    # ----------------------------------------------------------- resume

    def snapshot(self) -> dict[str, Any]:
        """What a resumed conversation needs of it: its node, slots, history and turn count.

        JSON-able (dates and times in slots are tagged); raises TypeError for a slot
        value of another kind (such a conversation is not kept).
        """
        return {
            "node": self._node.name,
            "slots": {name: _slot_to_json(value) for name, value in self.slots.items()},
            "history": [[entry.role, entry.text] for entry in self._history],
            "turns": self._turns,
        }

    @classmethod
    def restore(cls, graph: Graph, *, session_id: str, state: Mapping[str, Any]) -> Conversation:
        """The conversation ``snapshot()`` described, on ``graph`` (its node must still exist)."""
        conversation = cls(graph, session_id=session_id)
        node = state.get("node")
        if isinstance(node, str) and node in graph.nodes:
            conversation._node = graph.nodes[node]
        conversation.slots = {
            name: _slot_from_json(value) for name, value in dict(state.get("slots", {})).items()
        }
        for role, text in state.get("history", []):
            conversation._history.append(HistoryEntry(str(role), str(text)))
        conversation._turns = int(state.get("turns", 0))
        return conversation

    def hints(self) -> tuple[str, ...]:
        """The phrases the next user turn is expected to hold: the current node's hints
        (the start node's after a final node, where the next turn starts), in order,
        each once, spaces tidied. Empty when the node declares none."""
        node = self.graph.nodes[self.graph.start] if self._node.final else self._node
        declared = node.hints(self) if callable(node.hints) else node.hints
        tidy = (" ".join(hint.split()) for hint in declared)
        return tuple(dict.fromkeys(hint for hint in tidy if hint))

    def greeting(self) -> str:
        """What the agent says when the conversation opens (may be empty)."""
        text = _text(self.graph.greeting, self)
        if text:
            self.record("assistant", text)
        return text

    def statistics(self) -> ConversationStatistics:
        return ConversationStatistics(
            node=self._node.name,
            turns=self._turns,
            not_understood=self._not_understood,
            tool_calls=self._tool_calls,
            tool_errors=self._tool_errors,
            transitions=self._transitions,
        )

    # ----------------------------------------------------------- local brain

    @property
    def heard(self) -> bool:
        """The turn being handled came from a recogniser (not typed): what it holds may
        not be what was said, so a rule may confirm what it is unsure of."""
        return self._heard

    async def respond(self, text: str) -> str:
        """The reply text to one typed user turn (the local brain's ``Responder``)."""
        return (await self.handle_transcript(text)).text

    async def respond_heard(self, text: str) -> str:
        """The reply text to one recognised (spoken) turn."""
        return (await self.handle_transcript(text, heard=True)).text

    async def handle_transcript(self, text: str, *, heard: bool = False) -> Reply:
        """Decide the reply to one final transcript (``heard``) or typed turn by the rules."""
        async with self._lock:
            self._heard = heard
            try:
                return await self._turn(text)
            finally:
                self._heard = False

    async def _turn(self, text: str) -> Reply:
        graph = self.graph
        self._turns += 1
        graph._turns += 1
        self.record("user", text)
        if self._node.final:
            self.goto(graph.start)
        utterance = Utterance.of(text)
        node = self._node
        self._moved = False
        self._calls = []
        rule_name: str | None = None
        aside = False
        for rule, own in [*((r, True) for r in node.rules), *((r, False) for r in graph.rules)]:
            if rule.when(self, utterance):
                said = await rule.then(self, utterance)
                if rule.goto is not None and not self._moved:
                    self.goto(rule.goto)
                rule_name, aside = rule.name, not own
                break
        else:
            said = await (node.fallback or graph.fallback)(self, utterance)
            aside = node.fallback is None
        say = said if isinstance(said, Say) else Say(said)
        reply_text = say.text
        if aside and self._node is node and node.prompt is not None:
            reply_text = f"{reply_text} {node.prompt(self)}"
        if not say.understood:
            self._not_understood += 1
            graph._not_understood += 1
        self.record("assistant", reply_text)
        return Reply(
            text=reply_text,
            node=self._node.name,
            rule=rule_name,
            understood=say.understood,
            end=self._node.final,
            tool_calls=tuple(self._calls),
        )

    async def call_tool(self, name: str, /, **arguments: Any) -> ToolResult:
        """Run a tool from a rule, through the same checks as the model's calls."""
        return await self._call(name, arguments)

    # ----------------------------------------------------------- Azure brain

    def session_update_fields(self) -> dict[str, Any]:
        """``instructions`` and ``tools`` for a Realtime (GA) ``session.update`` at this node."""
        parts = [_text(self.graph.instructions, self), _text(self._node.instructions, self)]
        tools = [tool.to_function() for tool in self.graph.tools_at(self._node.name).values()]
        fields: dict[str, Any] = {
            "instructions": "\n\n".join(p for p in parts if p),
            "tools": tools,
        }
        if tools:
            fields["tool_choice"] = "auto"
        return fields

    async def handle_tool_call(self, name: str, arguments_json: str | bytes) -> str:
        """Run the model's function call; the string is its ``function_call_output``.

        Never raises for a bad call: unknown tools, arguments that are not JSON
        or do not fit the schema, and failures of the handler all become an
        output ``{"error": "..."}`` the model can read and act on.
        """
        async with self._lock:
            self._moved = False
            self._calls = []
            try:
                arguments = _decoder.decode(arguments_json) if arguments_json.strip() else {}
            except msgspec.DecodeError as exc:
                result = self._count(
                    ToolResult(name, None, False, None, f"arguments are not valid JSON: {exc}", "")
                )
                return result.output
            result = await self._call(name, arguments)
            return result.output

    # ----------------------------------------------------------- both

    async def _call(self, name: str, arguments: Any) -> ToolResult:
        tool = self.graph.tools_at(self._node.name).get(name)
        if tool is None:
            known = ", ".join(self.graph.tools_at(self._node.name)) or "none"
            return self._count(
                ToolResult(name, None, False, None, f"unknown tool {name!r} (tools: {known})", "")
            )
        try:
            checked = tool.check_arguments(arguments)
        except ArgumentError as exc:
            return self._count(ToolResult(name, None, False, None, str(exc), ""))
        node = self._node
        moved, self._moved = self._moved, False
        try:
            value = await tool.handler(self, **checked)
        except ToolError as exc:
            self._moved = self._moved or moved
            return self._count(ToolResult(name, checked, False, None, str(exc), ""))
        except Exception as exc:
            # The documented contract: a broken tool is reported to its caller
            # (the model or the rule) as an output and counted, with the traceback
            # in the log; it does not take the room down. Cancellation and other
            # BaseExceptions still propagate.
            log.exception("tool %r failed in session %s", name, self.session_id)
            self._moved = self._moved or moved
            message = f"tool {name!r} failed: {type(exc).__name__}: {exc}"
            return self._count(ToolResult(name, checked, False, None, message, ""))
        target = node.transitions.get(name)
        if target is not None and not self._moved and self._node is node:
            self.goto(target)
        self._moved = self._moved or moved
        output = value if isinstance(value, str) else _encoder.encode(value).decode()
        return self._count(ToolResult(name, checked, True, value, None, output))

    def _count(self, result: ToolResult) -> ToolResult:
        if not result.ok:
            output = _encoder.encode({"error": result.error}).decode()
            result = ToolResult(result.name, result.arguments, False, None, result.error, output)
            self._tool_errors += 1
            self.graph._tool_errors += 1
        self._tool_calls += 1
        self.graph._tool_calls += 1
        self._calls.append(result)
        self.record("tool", f"{result.name} -> {result.output}")
        return result


# Tags of the slot values JSON has no type for.
_SLOT_TYPES: dict[str, Callable[[str], Any]] = {
    "$datetime": dt.datetime.fromisoformat,
    "$date": dt.date.fromisoformat,
    "$time": dt.time.fromisoformat,
}


def _slot_to_json(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dt.datetime):  # before date: a datetime is a date
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, (list, tuple)):
        return [_slot_to_json(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _slot_to_json(v) for k, v in value.items()}
    raise TypeError(f"a slot value of type {type(value).__name__} cannot be kept")


def _slot_from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_slot_from_json(v) for v in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, text),) = value.items()
            if tag in _SLOT_TYPES and isinstance(text, str):
                return _SLOT_TYPES[tag](text)
        return {k: _slot_from_json(v) for k, v in value.items()}
    return value
