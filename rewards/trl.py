"""Reward functions for TRL's `GRPOTrainer`.

TRL calls a reward function with the prompts, the completions and every other dataset column as a
keyword list, so the converted parquet's `codes`, `unsolved_set`, `solve_rate`, `split` and
`answer` columns arrive here unchanged. A completion is either text or, for conversational data,
a one-message list whose assistant message may already carry parsed `tool_calls`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from policies.types import ParsedTurn, ToolCall, tool_call_id
from rewards.formulas import RewardKind
from rewards.scoring import TurnInput, score_turns

TrlRewardFunction = Callable[..., list[float]]


def _turn_from_completion(completion: str | Sequence[Mapping[str, Any]]) -> str | ParsedTurn:
    """Text goes to the parser; a message with structured tool calls is taken as TRL parsed it."""
    if isinstance(completion, str):
        return completion
    message = completion[-1] if completion else {"content": ""}
    content = message.get("content") or ""
    calls = message.get("tool_calls") or []
    if not calls:
        return content
    tool_calls = []
    for index, call in enumerate(calls):
        function = call.get("function", call)
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                arguments = None
        if not isinstance(arguments, dict):
            return content or json.dumps(calls, ensure_ascii=False)
        tool_calls.append(
            ToolCall(id=call.get("id") or tool_call_id(0, index), name=function["name"], arguments=arguments)
        )
    return ParsedTurn(content=content, tool_calls=tuple(tool_calls), raw=content)


def make_reward_function(kind: RewardKind = "f1", parser: str = "qwen2.5") -> TrlRewardFunction:
    """A `GRPOTrainer` reward function for one reward kind; its name is what TRL logs."""

    def reward(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        codes: Sequence[Any],
        unsolved_set: Sequence[Any],
        solve_rate: Sequence[float],
        split: Sequence[str],
        answer: Sequence[str | None] | None = None,
        **_: Any,
    ) -> list[float]:
        answers = answer if answer is not None else [None] * len(completions)
        inputs = [
            TurnInput.from_fields(_turn_from_completion(c), co, un, rate, sp, an)
            for c, co, un, rate, sp, an in zip(
                completions, codes, unsolved_set, solve_rate, split, answers, strict=True
            )
        ]
        return [outcome.reward(kind) for outcome in score_turns(inputs, parser=parser)]

    reward.__name__ = reward.__qualname__ = f"solve_{kind}"
    return reward


solve_f1 = make_reward_function("f1")
solve_precision = make_reward_function("precision")
solve_rate = make_reward_function("rate")
solve_pr = make_reward_function("pr")
