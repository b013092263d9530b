"""VeRL custom reward functions (`reward.custom_reward_function.path=<this file>` in verl 0.9.1).

`compute_score` serves the reward loop that verl 0.9.1's trainer runs (`reward.reward_manager.name=
naive`): it scores one response per call, and the loop runs many calls at once in threads, which the
sandbox pool serves in parallel. `compute_score_batch` serves VeRL's `BatchRewardManager`
(`verl.workers.reward_manager`), which hands over a whole batch: every tool call of the batch goes
to the sandbox pool at once. Each row's `extra_info` carries codes, unsolved_set, solve_rate and
split as the converter writes them; `ground_truth` is the environment's final answer. The reward
kind and parser come from `reward_kwargs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rewards.formulas import RewardKind
from rewards.scoring import TurnInput, TurnOutcome, score_turns

REQUIRED_EXTRA_INFO = ("codes", "unsolved_set", "solve_rate", "split")


def _turn_input(solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None) -> TurnInput:
    extra_info = extra_info or {}
    missing = [key for key in REQUIRED_EXTRA_INFO if key not in extra_info]
    if missing:
        raise ValueError(f"extra_info lacks {', '.join(missing)}: convert environments with `ftrl convert`")
    return TurnInput.from_fields(
        solution_str,
        extra_info["codes"],
        extra_info["unsolved_set"],
        extra_info["solve_rate"],
        extra_info["split"],
        ground_truth if isinstance(ground_truth, str) else None,
    )


def _as_verl_score(outcome: TurnOutcome, kind: RewardKind) -> dict[str, float]:
    """VeRL logs every key of the dict per sample; `score` is the reward itself."""
    return {
        "score": outcome.reward(kind),
        "tool_calls": float(outcome.calls),
        "solved": float(outcome.solved),
    }


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    reward_kind: RewardKind = "f1",
    parser: str = "qwen2.5",
    **_: Any,
) -> dict[str, float]:
    (outcome,) = score_turns([_turn_input(solution_str, ground_truth, extra_info)], parser=parser)
    return _as_verl_score(outcome, reward_kind)


def compute_score_batch(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None],
    reward_kind: RewardKind = "f1",
    parser: str = "qwen2.5",
    **_: Any,
) -> list[dict[str, float]]:
    inputs = [
        _turn_input(solution, truth, extra)
        for solution, truth, extra in zip(solution_strs, ground_truths, extra_infos, strict=True)
    ]
    return [_as_verl_score(outcome, reward_kind) for outcome in score_turns(inputs, parser=parser)]
