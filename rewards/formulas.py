"""The reward and metric formulas of the paper, as pure functions of counts.

Per generated turn (train split), with p tool calls of which q solved a still-unsolved sub-answer:
Solve-P = q/p, Solve-R = q, Solve-PR = q²/p, Solve-F1 = 2q/(p+1). A turn without tool calls is the
model's final answer and gets the penalties and bonus of `final_answer_reward`. Episode metrics are
the evaluation counterparts over a whole trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RewardKind = Literal["f1", "precision", "rate", "pr"]
REWARD_KINDS: tuple[RewardKind, ...] = ("f1", "precision", "rate", "pr")

#: Text that only appears in a final answer when the model tried to call a tool and broke the format.
MALFORMED_CALL_MARKERS: tuple[str, ...] = ("<tool_call>", "</tool_call>", "<tool_parsed_response>")

EMPTY_ANSWER_PENALTY = -0.5
MALFORMED_CALL_PENALTY = -0.3
SOLVED_ENVIRONMENT_BONUS = 0.5


def tool_turn_reward(kind: RewardKind, calls: int, solved: int) -> float:
    """Reward of a turn with `calls` > 0 tool calls, `solved` of which found a sub-answer."""
    if calls <= 0:
        raise ValueError(f"a tool turn has at least one call, got {calls}")
    if not 0 <= solved <= calls:
        raise ValueError(f"solved calls must be between 0 and {calls}, got {solved}")
    if kind == "f1":
        return 2 * solved / (calls + 1)
    if kind == "precision":
        return solved / calls
    if kind == "rate":
        return float(solved)
    if kind == "pr":
        return solved * solved / calls
    raise ValueError(f"unknown reward kind {kind!r}; choose one of {', '.join(REWARD_KINDS)}")


def final_answer_reward(
    content: str, *, states_answer: bool, unsolved_before: int, solve_rate: float
) -> float:
    """Reward of a turn without tool calls.

    Empty text is punished hardest; a stray call tag means a malformed call; a text that states the
    answer earns more the fewer sub-answers were left to find (1/(1+t)); otherwise stopping is only
    right once the environment is fully solved.
    """
    if not content.strip():
        return EMPTY_ANSWER_PENALTY
    if any(marker in content for marker in MALFORMED_CALL_MARKERS):
        return MALFORMED_CALL_PENALTY
    if states_answer:
        return 1.0 / (1 + unsolved_before)
    return SOLVED_ENVIRONMENT_BONUS if solve_rate >= 1.0 else 0.0


@dataclass(frozen=True)
class EpisodeMetrics:
    """Solve-P, Solve-R and Solve-F1 of one finished episode."""

    precision: float
    recall: float
    f1: float


def episode_metrics(calls: int, solved: int, total: int) -> EpisodeMetrics:
    """Solve-P = solved/calls (1 with no call), Solve-R = solved/total, Solve-F1 = 2·solved/(calls+total).

    An environment with nothing to solve (total 0) has recall 1, and F1 1 when nothing was called.
    """
    if calls < 0 or total < 0 or not 0 <= solved <= min(calls, total):
        raise ValueError(f"inconsistent counts: calls={calls}, solved={solved}, total={total}")
    precision = solved / calls if calls else 1.0
    recall = solved / total if total else 1.0
    f1 = 2 * solved / (calls + total) if calls + total else 1.0
    return EpisodeMetrics(precision=precision, recall=recall, f1=f1)
