"""The paper's matching rule, pinned with hand-worked cases and properties."""

import json

from hypothesis import given
from hypothesis import strategies as st

from rewards.matching import CallOutput, answer_pieces, contains_answer, count_unsolved, match_calls, matches


def test_pieces_split_on_comma_space_only() -> None:
    assert answer_pieces("Paris, Rome") == ["paris", "rome"]
    assert answer_pieces("1,000") == ["1000"]
    assert answer_pieces("a,b, C") == ["ab", "c"]


def test_case_insensitive_substring() -> None:
    assert matches("The capital is PARIS.", "paris")
    assert not matches("The capital is Lyon.", "Paris")


def test_every_piece_in_any_order() -> None:
    assert matches("Rome and Paris", "Paris, Rome")
    assert not matches("only Paris", "Paris, Rome")


def test_commas_removed_on_both_sides() -> None:
    assert matches("population: 2,148,000", "2148000")
    assert matches("population: 2148000", "2,148,000")


def test_unicode_and_non_ascii() -> None:
    assert matches("Die Stadt heißt München", "münchen")
    assert matches("東京, 大阪", "大阪, 東京")


def test_json_rendered_outputs() -> None:
    assert matches(json.dumps({"city": "Zürich", "temp": 21}, ensure_ascii=False), "zürich, 21")
    assert matches(json.dumps(["a1", "b2"]), "B2")


def test_contains_answer_ignores_missing_answers() -> None:
    assert contains_answer("It is 42.", "42")
    assert not contains_answer("anything at all", "")
    assert not contains_answer("anything at all", None)


def test_each_sub_answer_used_once() -> None:
    unsolved = {"lookup": ["Paris", "Paris"], "other": ["x"]}
    calls = [CallOutput("lookup", "Paris"), CallOutput("lookup", "Paris"), CallOutput("lookup", "Paris")]
    result = match_calls(calls, unsolved)
    assert result.matched == (True, True, False)
    assert result.remaining == {"lookup": [], "other": ["x"]}
    assert unsolved == {"lookup": ["Paris", "Paris"], "other": ["x"]}


def test_one_call_solves_at_most_one_sub_answer() -> None:
    result = match_calls([CallOutput("f", "alpha beta")], {"f": ["alpha", "beta"]})
    assert result.matched == (True,)
    assert result.remaining == {"f": ["beta"]}


def test_only_the_called_tools_sub_answers_count() -> None:
    result = match_calls([CallOutput("g", "Paris")], {"f": ["Paris"]})
    assert result.matched == (False,)
    assert result.remaining == {"f": ["Paris"]}


def test_failed_call_never_matches() -> None:
    assert match_calls([CallOutput("f", None)], {"f": [""]}).matched == (False,)


def test_count_unsolved() -> None:
    assert count_unsolved({"f": ["a", "b"], "g": [], "h": ["c"]}) == 3


@given(
    st.lists(st.text(alphabet=st.characters(blacklist_characters=","), min_size=1), min_size=1, max_size=4)
)
def test_output_that_is_the_answer_matches(pieces: list[str]) -> None:
    answer = ", ".join(pieces)
    assert matches(answer, answer)
    assert matches(answer.upper(), answer.lower()) == matches(answer.upper().lower(), answer.lower())


@given(st.lists(st.tuples(st.sampled_from(["f", "g"]), st.sampled_from(["a", "b", "ab", "zz"])), max_size=8))
def test_solved_plus_remaining_is_conserved(calls: list[tuple[str, str]]) -> None:
    unsolved = {"f": ["a", "b"], "g": ["a"]}
    result = match_calls([CallOutput(tool, output) for tool, output in calls], unsolved)
    assert result.solved + count_unsolved(result.remaining) == count_unsolved(unsolved)
