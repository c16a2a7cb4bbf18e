"""The agent graph (DESIGN.md section 4) and the Vietnamese its rules read and write.

- :mod:`.graph`: :class:`Graph`, :class:`Node`, :class:`Rule`, :class:`Tool`, and
  :class:`Conversation`, the per-room dispatcher both brains talk to.
- :mod:`.vietnamese`: reading Vietnamese turns (with or without tone marks):
  numbers, days, times, names, yes/no; and writing dates and times back.

The demo receptionist, a graph built with this API, is :mod:`voice_trio.demo`.

The local brain, per final transcript::

    conversation = graph.conversation(session_id=room.session_id)   # once per room
    reply = await conversation.handle_transcript(text)               # -> Reply
    speak(reply.text)

The Azure brain::

    session = {"type": "realtime", ..., **conversation.session_update_fields()}
    # on response.function_call_arguments.done {call_id, name, arguments}:
    output = await conversation.handle_tool_call(name, arguments)   # -> str, never raises
    # send conversation.item.create {type: function_call_output, call_id, output},
    # then response.create; if conversation.revision changed, session.update again.
"""

from .graph import (
    ArgumentError,
    Conversation,
    ConversationStatistics,
    Graph,
    GraphStatistics,
    Node,
    Reply,
    Rule,
    Say,
    Tool,
    ToolError,
    ToolResult,
    phrases,
)
from .vietnamese import Utterance

__all__ = [
    "ArgumentError",
    "Conversation",
    "ConversationStatistics",
    "Graph",
    "GraphStatistics",
    "Node",
    "Reply",
    "Rule",
    "Say",
    "Tool",
    "ToolError",
    "ToolResult",
    "Utterance",
    "phrases",
]
