"""A policy that plays a known plan: the golden tool calls of each task, turn by turn, then the answer.

It proves an environment solvable (the golden calls, run through the real episode loop and sandbox,
must solve every sub-answer), replays τ-bench golden actions against a stateful database, and
writes oracle trajectories for an SFT warm start. It implements the same interface as the model
backends, so the episode loop cannot tell it apart from a model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies.backends.base import Conversation, Generation, GenerationBackend, SamplingParams, failed
from policies.types import ParsedTurn, ToolCall, tool_call_id


@dataclass(frozen=True)
class PlannedCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class OraclePlan:
    """The tool calls of each turn (several per turn for parallel sub-questions), then a final answer."""

    turns: tuple[tuple[PlannedCall, ...], ...]
    answer: str


def question_of(messages: Sequence[Mapping[str, Any]]) -> str:
    """The first user message: what identifies a task to the oracle."""
    for message in messages:
        if message.get("role") == "user":
            return str(message.get("content") or "")
    raise ValueError("a conversation without a user message has no task to look up")


class OraclePolicy(GenerationBackend):
    """Plays `plans[question]` for each conversation, the turn index taken from `Conversation.turn`."""

    name = "oracle"

    def __init__(self, plans: Mapping[str, OraclePlan]) -> None:
        self.plans = dict(plans)

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        return [self._next_turn(conversation) for conversation in conversations]

    def _next_turn(self, conversation: Conversation) -> Generation:
        question = question_of(conversation.messages)
        plan = self.plans.get(question)
        if plan is None:
            return failed(f"the oracle has no plan for the question {question[:80]!r}")
        turn = conversation.turn
        if turn >= len(plan.turns):
            return Generation(ParsedTurn(content=plan.answer, raw=plan.answer), 0, 0, "stop")
        calls = tuple(
            ToolCall(id=tool_call_id(turn, index), name=call.name, arguments=dict(call.arguments))
            for index, call in enumerate(plan.turns[turn])
        )
        blocks = [json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False) for c in calls]
        raw = "\n".join(f"<tool_call>\n{block}\n</tool_call>" for block in blocks)
        return Generation(ParsedTurn(content="", tool_calls=calls, raw=raw), 0, 0, "stop")
