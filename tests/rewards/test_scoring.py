"""Per-turn rewards computed end to end: parse, run the tools in the sandbox, match, apply formulas.

Every expected number below is worked out by hand from the definitions in DESIGN.md.
"""

import json
from collections.abc import Iterator

import pytest

from envs.sandbox import SandboxPool
from rewards.scoring import TurnInput, score_turn, score_turns
from support.reward_env import ANSWER, CODES, UNSOLVED, call, response


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2) as pool:
        yield pool


def outcome(pool: SandboxPool, text: str, *, unsolved=UNSOLVED, solve_rate: float = 0.0, answer=ANSWER):
    return score_turn(TurnInput(text, CODES, unsolved, solve_rate, answer), pool=pool)


def rewards(result) -> dict[str, float]:
    return {kind: result.reward(kind) for kind in ("f1", "precision", "rate", "pr")}


def test_one_right_call(pool: SandboxPool) -> None:
    result = outcome(pool, response(call("get_capital", {"country": "France"})))
    assert (result.calls, result.solved) == (1, 1)
    assert result.results[0].content == "Paris"
    assert rewards(result) == {"f1": 1.0, "precision": 1.0, "rate": 1.0, "pr": 1.0}
    assert result.remaining["get_capital"] == []


def test_several_calls_one_right(pool: SandboxPool) -> None:
    text = response(call("get_capital", {"country": "France"}), call("get_capital", {"country": "Italy"}))
    assert rewards(outcome(pool, text)) == pytest.approx(
        {"f1": 2 / 3, "precision": 0.5, "rate": 1.0, "pr": 0.5}
    )


def test_duplicate_call_solves_once(pool: SandboxPool) -> None:
    text = response(call("get_capital", {"country": "France"}), call("get_capital", {"country": " france "}))
    result = outcome(pool, text)
    assert result.matched == (True, False)
    assert result.reward("f1") == pytest.approx(2 / 3)


def test_dict_output_compared_as_json_without_commas(pool: SandboxPool) -> None:
    result = outcome(pool, response(call("get_population", {"city": "Paris"})))
    assert json.loads(result.results[0].content) == {"city": "Paris", "year": 2024, "population": "2,148,000"}
    assert result.solved == 1


def test_list_output_matches_every_piece(pool: SandboxPool) -> None:
    result = outcome(pool, response(call("get_landmarks", {"city": "Paris"})))
    assert result.results[0].content == '["Eiffel Tower", "Louvre"]'
    assert result.solved == 1


def test_empty_list_output_does_not_match(pool: SandboxPool) -> None:
    assert outcome(pool, response(call("get_landmarks", {"city": "Rome"}))).reward("f1") == 0.0


def test_unicode_output_kept_and_matched(pool: SandboxPool) -> None:
    result = outcome(pool, response(call("get_city_de", {"city": "Munich"})))
    assert result.results[0].content == "München"
    assert result.solved == 1


def test_tool_that_raises_scores_zero(pool: SandboxPool) -> None:
    result = outcome(pool, response(call("broken_tool", {"x": 1})))
    assert not result.results[0].ok and "database offline" in result.results[0].error
    assert rewards(result) == {"f1": 0.0, "precision": 0.0, "rate": 0.0, "pr": 0.0}


def test_wrong_argument_name_scores_zero(pool: SandboxPool) -> None:
    result = outcome(pool, response(call("get_capital", {"nation": "France"})))
    assert not result.results[0].ok and "nation" in result.results[0].error
    assert result.reward("f1") == 0.0


def test_unknown_tool_is_an_unsolved_call(pool: SandboxPool) -> None:
    result = outcome(pool, response(call("get_weather", {"city": "Paris"})))
    assert result.results[0].error == "unknown tool 'get_weather'"
    assert rewards(result) == {"f1": 0.0, "precision": 0.0, "rate": 0.0, "pr": 0.0}


def test_mixed_turn_of_three_calls(pool: SandboxPool) -> None:
    text = response(
        call("get_capital", {"country": "France"}),
        call("get_population", {"city": "Paris"}),
        call("get_weather", {"city": "Paris"}),
        prefix="Let me look these up.\n",
    )
    result = outcome(pool, text)
    assert result.turn.content == "Let me look these up."
    assert result.matched == (True, True, False)
    assert rewards(result) == pytest.approx({"f1": 1.0, "precision": 2 / 3, "rate": 2.0, "pr": 4 / 3})


def test_arguments_given_as_json_string(pool: SandboxPool) -> None:
    result = outcome(
        pool, response(call("get_capital", json.dumps({"country": "Japan"})), end="<|endoftext|>")
    )
    assert result.results[0].content == "Tokyo"
    assert result.solved == 0  # Tokyo is not a sub-answer


def test_only_still_unsolved_sub_answers_count(pool: SandboxPool) -> None:
    already = {**UNSOLVED, "get_capital": []}
    assert outcome(pool, response(call("get_capital", {"country": "France"})), unsolved=already).solved == 0


@pytest.mark.parametrize(
    ("text", "unsolved", "solve_rate", "expected"),
    [
        ("<|im_end|>", UNSOLVED, 0.0, -0.5),
        ("  \n<|im_end|>", UNSOLVED, 0.0, -0.5),
        ('<tool_call>\n{"name": "get_capital", "arguments": {"country": <|im_end|>', UNSOLVED, 0.0, -0.3),
        ("<tool_call>\nnot json\n</tool_call><|im_end|>", UNSOLVED, 0.0, -0.3),
        ("The population is 2,148,000.<|im_end|>", UNSOLVED, 0.0, 0.2),  # 4 sub-answers left: 1/(1+4)
        ("The population is 2148000.<|im_end|>", {"get_population": ["2148000"]}, 0.5, 0.5),
        ("The population is 2148000.<|im_end|>", {}, 1.0, 1.0),
        ("I could not find it.<|im_end|>", {}, 1.0, 0.5),
        ("I could not find it.<|im_end|>", {"get_capital": ["Paris"]}, 0.5, 0.0),
    ],
)
def test_turns_without_calls(
    pool: SandboxPool, text: str, unsolved: dict, solve_rate: float, expected: float
) -> None:
    result = outcome(pool, text, unsolved=unsolved, solve_rate=solve_rate)
    assert result.calls == 0
    assert result.reward("f1") == pytest.approx(expected)
    assert result.reward("pr") == result.reward("f1")


def test_batch_equals_one_by_one(pool: SandboxPool) -> None:
    texts = [
        response(call("get_capital", {"country": "France"}), call("broken_tool", {"x": 2})),
        "The answer is 2,148,000<|im_end|>",
        response(call("get_weather", {})),
        response(call("get_population", {"city": "Rome"}), call("get_landmarks", {"city": "Paris"})),
    ]
    inputs = [TurnInput(text, CODES, UNSOLVED, 0.0, ANSWER) for text in texts]
    together = [o.reward("f1") for o in score_turns(inputs, pool=pool)]
    alone = [score_turn(item, pool=pool).reward("f1") for item in inputs]
    assert together == alone == pytest.approx([2 / 3, 0.2, 0.0, 2 / 3])


def test_test_split_is_refused() -> None:
    with pytest.raises(ValueError, match="split='test' rows are for evaluation only"):
        TurnInput.from_fields("x", CODES, UNSOLVED, 0.0, "test")


def test_fields_accept_ftrl_json_strings() -> None:
    item = TurnInput.from_fields("x", json.dumps(CODES), json.dumps(UNSOLVED), "0.5", "train", ANSWER)
    assert item.codes == CODES and item.unsolved_set == UNSOLVED and item.solve_rate == 0.5
    with pytest.raises(ValueError, match="codes: not valid JSON"):
        TurnInput.from_fields("x", "{oops", "{}", 0.0, "train")
    with pytest.raises(ValueError, match="unsolved_set: expected a mapping"):
        TurnInput.from_fields("x", "{}", "[1]", 0.0, "train")
