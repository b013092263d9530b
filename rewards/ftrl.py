"""The paper's reward functions, with its exact signatures, so its training scripts can import them.

`codes` and `unsolved_set` are dicts (JSON strings are accepted too, as FTRL files store them);
`response` is one raw Qwen2.5-format completion, possibly ending in `<|im_end|>` or `<|endoftext|>`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rewards.formulas import RewardKind
from rewards.scoring import TurnInput, score_turn


def _reward(
    kind: RewardKind,
    response: str,
    codes: Mapping[str, str] | str,
    unsolved_set: Mapping[str, Sequence[str]] | str,
    solve_rate: float,
    split: str,
    answer: str | None,
) -> float:
    item = TurnInput.from_fields(response, codes, unsolved_set, solve_rate, split, answer)
    return score_turn(item).reward(kind)


def compute_solve_f1(response, codes, unsolved_set, solve_rate, split, answer=None) -> float:
    """Solve-F1 = 2q/(p+1): the paper's default training reward."""
    return _reward("f1", response, codes, unsolved_set, solve_rate, split, answer)


def compute_solve_precision(response, codes, unsolved_set, solve_rate, split, answer=None) -> float:
    """Solve-P = q/p."""
    return _reward("precision", response, codes, unsolved_set, solve_rate, split, answer)


def compute_solve_rate(response, codes, unsolved_set, solve_rate, split, answer=None) -> float:
    """Solve-R = q."""
    return _reward("rate", response, codes, unsolved_set, solve_rate, split, answer)


def compute_solve_pr(response, codes, unsolved_set, solve_rate, split, answer=None) -> float:
    """Solve-PR = q²/p."""
    return _reward("pr", response, codes, unsolved_set, solve_rate, split, answer)
