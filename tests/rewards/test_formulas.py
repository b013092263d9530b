"""Every branch of the reward and metric definitions, with numbers worked out by hand."""

import pytest

from rewards.formulas import episode_metrics, final_answer_reward, tool_turn_reward


@pytest.mark.parametrize(
    ("kind", "calls", "solved", "expected"),
    [
        ("f1", 1, 1, 1.0),  # 2·1/(1+1)
        ("f1", 3, 2, 1.0),  # 2·2/(3+1)
        ("f1", 2, 1, 2 / 3),  # 2·1/(2+1)
        ("f1", 4, 0, 0.0),
        ("precision", 4, 1, 0.25),
        ("precision", 3, 3, 1.0),
        ("rate", 5, 3, 3.0),
        ("pr", 4, 2, 1.0),  # 2²/4
        ("pr", 3, 1, 1 / 3),
    ],
)
def test_tool_turn_rewards(kind: str, calls: int, solved: int, expected: float) -> None:
    assert tool_turn_reward(kind, calls, solved) == pytest.approx(expected)


def test_tool_turn_reward_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="at least one call"):
        tool_turn_reward("f1", 0, 0)
    with pytest.raises(ValueError, match="between 0 and 2"):
        tool_turn_reward("f1", 2, 3)
    with pytest.raises(ValueError, match="unknown reward kind 'acc'"):
        tool_turn_reward("acc", 1, 1)


@pytest.mark.parametrize(
    ("content", "states_answer", "unsolved_before", "solve_rate", "expected"),
    [
        ("", False, 2, 0.0, -0.5),
        ("   \n", True, 0, 1.0, -0.5),
        ('<tool_call>{"name": "f"', False, 1, 0.0, -0.3),
        ("I will call </tool_call>", True, 0, 1.0, -0.3),
        ("<tool_parsed_response>", False, 0, 1.0, -0.3),
        ("The answer is Paris.", True, 0, 1.0, 1.0),
        ("The answer is Paris.", True, 3, 0.25, 0.25),
        ("I do not know.", False, 0, 1.0, 0.5),
        ("I do not know.", False, 2, 0.5, 0.0),
    ],
)
def test_final_answer_reward(
    content: str, states_answer: bool, unsolved_before: int, solve_rate: float, expected: float
) -> None:
    reward = final_answer_reward(
        content, states_answer=states_answer, unsolved_before=unsolved_before, solve_rate=solve_rate
    )
    assert reward == pytest.approx(expected)


@pytest.mark.parametrize(
    ("calls", "solved", "total", "precision", "recall", "f1"),
    [
        (0, 0, 3, 1.0, 0.0, 0.0),
        (4, 2, 2, 0.5, 1.0, 4 / 6),
        (2, 2, 2, 1.0, 1.0, 1.0),
        (5, 1, 3, 0.2, 1 / 3, 2 / 8),
        (0, 0, 0, 1.0, 1.0, 1.0),
    ],
)
def test_episode_metrics(
    calls: int, solved: int, total: int, precision: float, recall: float, f1: float
) -> None:
    metrics = episode_metrics(calls, solved, total)
    assert metrics.precision == pytest.approx(precision)
    assert metrics.recall == pytest.approx(recall)
    assert metrics.f1 == pytest.approx(f1)


def test_episode_metrics_reject_inconsistent_counts() -> None:
    with pytest.raises(ValueError, match="inconsistent counts"):
        episode_metrics(1, 2, 5)
