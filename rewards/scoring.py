"""Score generated turns: parse the tool calls, run them in the sandbox, match, apply the formulas.

This is the one implementation behind every adapter (`rewards.ftrl`, `rewards.verl`, `rewards.trl`)
and the episode loop. Scoring many turns at once sends all their tool calls to the sandbox pool as
one batch, which is what keeps an RL step from waiting on the reward.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envs.sandbox import SandboxPool, ToolResult, default_pool
from envs.tool_calls import run_tool_calls
from policies.parsing import parse_turn
from policies.types import ParsedTurn
from rewards.formulas import RewardKind, final_answer_reward, tool_turn_reward
from rewards.matching import CallOutput, contains_answer, count_unsolved, match_calls


@dataclass(frozen=True)
class TurnInput:
    """One generated turn and the state of its environment before the turn."""

    response: str | ParsedTurn
    codes: Mapping[str, str]
    unsolved_set: Mapping[str, Sequence[str]]
    solve_rate: float = 0.0
    answer: str | None = None

    @classmethod
    def from_fields(
        cls,
        response: str | ParsedTurn,
        codes: Mapping[str, str] | str,
        unsolved_set: Mapping[str, Sequence[str]] | str,
        solve_rate: float,
        split: str,
        answer: str | None = None,
    ) -> TurnInput:
        """Build an input from a row's fields, which FTRL files store as JSON strings.

        The test split is refused: its environments are for evaluation, and a reward on them would
        leak the evaluation set into training (the paper's reward functions refuse it too).
        """
        if split == "test":
            raise ValueError("split='test' rows are for evaluation only; the per-turn reward refuses them")
        return cls(
            response=response,
            codes=_as_mapping(codes, "codes"),
            unsolved_set=_as_mapping(unsolved_set, "unsolved_set"),
            solve_rate=float(solve_rate),
            answer=answer,
        )


@dataclass(frozen=True)
class TurnOutcome:
    """Everything the reward of a turn was computed from, so it can be logged and audited."""

    turn: ParsedTurn
    results: tuple[ToolResult, ...]
    matched: tuple[bool, ...]
    unsolved_before: int
    remaining: dict[str, list[str]]
    solve_rate: float
    answer: str | None = field(default=None, repr=False)

    @property
    def calls(self) -> int:
        return len(self.turn.tool_calls)

    @property
    def solved(self) -> int:
        return sum(self.matched)

    def reward(self, kind: RewardKind = "f1") -> float:
        if self.calls:
            return tool_turn_reward(kind, self.calls, self.solved)
        return final_answer_reward(
            self.turn.content,
            states_answer=contains_answer(self.turn.content, self.answer),
            unsolved_before=self.unsolved_before,
            solve_rate=self.solve_rate,
        )


def _as_mapping(value: Mapping[str, Any] | str, name: str) -> Mapping[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}: expected a mapping of tool name to value, got {type(value).__name__}")
    return value


def score_turns(
    inputs: Sequence[TurnInput], *, parser: str = "qwen2.5", pool: SandboxPool | None = None
) -> list[TurnOutcome]:
    """Score many turns with one sandbox batch for all of their tool calls."""
    turns = [
        item.response if isinstance(item.response, ParsedTurn) else parse_turn(item.response, parser)
        for item in inputs
    ]
    executed = run_tool_calls(
        pool or default_pool(),
        [(item.codes, turn.tool_calls) for item, turn in zip(inputs, turns, strict=True)],
    )

    outcomes = []
    for item, turn, results in zip(inputs, turns, executed, strict=True):
        match = match_calls(
            [
                CallOutput(tool=call.name, output=result.content if result.ok else None)
                for call, result in zip(turn.tool_calls, results, strict=True)
            ],
            item.unsolved_set,
        )
        outcomes.append(
            TurnOutcome(
                turn=turn,
                results=tuple(results),
                matched=match.matched,
                unsolved_before=count_unsolved(item.unsolved_set),
                remaining=match.remaining,
                solve_rate=item.solve_rate,
                answer=item.answer,
            )
        )
    return outcomes


def score_turn(item: TurnInput, *, parser: str = "qwen2.5", pool: SandboxPool | None = None) -> TurnOutcome:
    return score_turns([item], parser=parser, pool=pool)[0]
