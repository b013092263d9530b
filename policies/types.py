"""Value types that cross the policy boundary: one parsed assistant turn and the tool calls in it.

They are frozen so that a parsed turn can be shared between the reward, the episode loop and the
trajectory writer without one of them changing what the others see.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


def tool_call_id(turn: int, index: int) -> str:
    """Id of the ``index``-th call of assistant turn ``turn``.

    Ids are derived from positions, not from a clock or a random source, so that re-running a
    trajectory reproduces it byte for byte (and caches keyed on its digest still hit). They are unique
    within a trajectory because turn numbers are.

    >>> tool_call_id(3, 1)
    'call_3_1'
    """
    return f"call_{turn}_{index}"


@dataclass(frozen=True)
class ToolCall:
    """One function call the model asked for.

    ``arguments`` is always a decoded JSON object: parsers reject anything else, so consumers never
    have to handle a string or a list here.
    """

    id: str
    name: str
    arguments: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        """The call in OpenAI's chat format, where ``arguments`` is JSON *text*.

        ``ensure_ascii=False`` keeps non-ASCII arguments readable and matches how chat templates'
        ``tojson`` filter prints them.
        """
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, ensure_ascii=False)},
        }


@dataclass(frozen=True)
class ParsedTurn:
    """What a parser made of one generated assistant turn.

    Attributes:
        content: the text outside tool-call blocks (and outside the thinking block), stripped. When a
            call block is malformed it is the whole turn instead, stray tags included, so the reward can
            see them and apply its malformed-call penalty.
        tool_calls: the calls, in the order the model wrote them; empty when ``parse_error`` is set.
        reasoning: the text of a ``<think>`` block; ``None`` when the turn had none (or the parser does
            not look for one), ``""`` for an empty block.
        raw: the text exactly as generated, end tokens included.
        parse_error: a short reason why the calls could not be read, else ``None``.
    """

    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None
    raw: str = ""
    parse_error: str | None = None

    def to_message(self) -> dict[str, Any]:
        """The turn as an OpenAI-style assistant message for the conversation history.

        The ``tool_calls`` key appears only when there are calls, as in OpenAI's API. Reasoning is left
        out: the chat templates drop earlier turns' thinking anyway, and the sampler decides whether a
        trajectory keeps it.
        """
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.to_openai() for call in self.tool_calls]
        return message
