"""Verification: golden calls must return their sub-answers, perturbed calls must not, the oracle must
solve the environment; each way of failing is rejected with its own reason."""

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from envs.examples import load_examples
from envs.jsonl import RowError
from envs.sandbox import SandboxPool
from envs.schema import EnvRow, format_validation_error
from envs.verify import (
    REASON_DOCUMENT_LEAK,
    REASON_GOLDEN,
    REASON_META,
    REASON_ORACLE,
    REASON_PERTURBED,
    REASON_QUESTION_LEAK,
    REASON_UNDEFINED_TOOL,
    REASON_UNKNOWN_GOLDEN_TOOL,
    REASON_UNKNOWN_UNSOLVED_TOOL,
    MetaError,
    Verifier,
    argument_to_perturb,
    golden_subs,
    oracle_plan,
    perturb_argument,
    perturb_arguments,
    perturb_value,
    schema_reason,
    states_whole,
    validate_file,
)
from policies.oracle import OraclePlan, PlannedCall
from support.verification import (
    ALWAYS_PARIS,
    WRONG_CAPITAL,
    changed,
    example,
    mixed_file,
    with_code,
    with_meta,
)


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def verifier(pool: SandboxPool) -> Verifier:
    return Verifier(pool)


def sub_questions(*specs: tuple[str, str, list[str]]) -> list[dict]:
    """Sub-questions (id, answer, depends_on) whose golden calls all ask get_country_capital."""
    return [
        {"id": sub_id, "question": "?", "answer": answer, "depends_on": deps,
         "call": {"name": "get_country_capital", "arguments": {"iso_code": sub_id.upper()}}}
        for sub_id, answer, deps in specs
    ]  # fmt: skip


# --------------------------------------------------------------------------- oracle plans


def test_oracle_plans_of_the_examples() -> None:
    plans = [oracle_plan(row) for row in load_examples()]
    assert plans == [
        OraclePlan(turns=((PlannedCall("get_country_capital", {"iso_code": "FR"}),),), answer="Paris"),
        OraclePlan(
            turns=(
                (
                    PlannedCall("get_city_population", {"city": "Oslo"}),
                    PlannedCall("get_city_population", {"city": "Lima"}),
                ),
            ),
            answer="709,000, 10,092,000",
        ),
        OraclePlan(
            turns=(
                (PlannedCall("find_landmark_country", {"landmark": "the Louvre"}),),
                (PlannedCall("get_currency", {"country": "France"}),),
            ),
            answer="Euro",
        ),
    ]


def test_dependency_layers_become_turns() -> None:
    row = with_meta(
        example("single-hop"),
        scenario="parallel multi-hop",
        sub_questions=sub_questions(
            ("q1", "a", []), ("q2", "b", []), ("q3", "c", ["q1"]), ("q4", "d", ["q3", "q2"])
        ),
    )
    plan = oracle_plan(row)
    assert plan is not None
    assert [[call.arguments["iso_code"] for call in turn] for turn in plan.turns] == [
        ["Q1", "Q2"],
        ["Q3"],
        ["Q4"],
    ]


@pytest.mark.parametrize(
    ("scenario", "turns"),
    [("multi-hop", [["Q1"], ["Q2"], ["Q3"]]), ("parallel single-hop", [["Q1", "Q2", "Q3"]])],
)
def test_missing_ids_and_dependencies_follow_the_scenario(scenario: str, turns: list) -> None:
    subs = [
        {k: v for k, v in sub.items() if k not in ("id", "depends_on")}
        for sub in sub_questions(("q1", "a", []), ("q2", "b", []), ("q3", "c", []))
    ]
    row = with_meta(example("single-hop"), scenario=scenario, sub_questions=subs)
    assert [sub.id for sub in golden_subs(row) or ()] == ["q1", "q2", "q3"]
    plan = oracle_plan(row)
    assert plan is not None
    assert [[call.arguments["iso_code"] for call in turn] for turn in plan.turns] == turns


def test_rows_without_golden_calls_have_no_plan() -> None:
    paper = changed(example("single-hop"), meta={})
    assert oracle_plan(paper) is None
    no_calls = with_meta(
        example("single-hop"), sub_questions=[{"id": "q1", "question": "?", "answer": "Paris"}]
    )
    assert oracle_plan(no_calls) is None


@pytest.mark.parametrize(
    ("sub", "message"),
    [
        (
            {"id": "q1", "answer": "Paris", "call": {"name": "f", "arguments": ["FR"]}},
            "meta.sub_questions[0].call.arguments must be an object",
        ),
        (
            {"id": "q1", "answer": "", "call": {"name": "f"}},
            "meta.sub_questions[0].answer must be a non-empty string",
        ),
        (
            {"id": "q1", "answer": "Paris", "depends_on": ["q9"], "call": {"name": "f"}},
            "meta.sub_questions[0].depends_on names ['q9'], which are not earlier sub-questions",
        ),
    ],
)
def test_malformed_golden_calls_say_what_is_wrong(sub: dict, message: str) -> None:
    row = with_meta(example("single-hop"), sub_questions=[sub])
    with pytest.raises(MetaError) as caught:
        golden_subs(row)
    assert str(caught.value) == message


# --------------------------------------------------------------------------- perturbation


@pytest.mark.parametrize(
    ("value", "schema", "expected"),
    [
        (True, {}, False),
        (10, {}, 16),
        (-3, {}, -1),
        (10, {"maximum": 12}, 4),
        (10, {"maximum": 12, "minimum": 5}, 16),
        (0.5, {}, 1.75),
        ("name", {"enum": ["name", "code"]}, "code"),
        ("name", {"enum": ["Name", " NAME ", "code"]}, "code"),
        ({"a": 1, "b": 2}, {}, {"a": 2, "b": 2}),
        (None, {"type": "integer"}, 1),
        ([], {"items": {"type": "string"}}, ["x"]),
        ("", {}, "x"),
        ("--", {}, "--x"),
    ],
)
def test_perturbed_values(value, schema, expected) -> None:
    result = perturb_value(value, schema, random.Random(0))
    assert result == expected and type(result) is type(expected)


def test_a_string_changes_in_one_letter_of_its_longest_word() -> None:
    for seed in range(50):
        result = perturb_value("the Louvre", {}, random.Random(seed))
        assert result[:4] == "the " and len(result) == len("the Louvre")
        assert sum(a != b for a, b in zip(result, "the Louvre", strict=True)) == 1
        assert result.lower() != "the louvre"
    assert perturb_value("Oslo", {}, random.Random(3)) == perturb_value("Oslo", {}, random.Random(3))


def test_a_list_changes_its_first_element() -> None:
    result = perturb_value(["Oslo", "Lima"], {"items": {"type": "string"}}, random.Random(1))
    assert result[1] == "Lima" and result[0] != "Oslo"


def test_the_first_required_argument_is_perturbed() -> None:
    properties = {"unit": {"type": "string"}, "city": {"type": "string"}, "year": {"type": "integer"}}
    parameters = {"type": "object", "properties": properties, "required": ["year", "city"]}
    tool = {"type": "function", "function": {"name": "f", "parameters": parameters}}
    assert argument_to_perturb({"city": "Oslo", "unit": "c", "year": 2020}, tool) == "city"
    assert argument_to_perturb({"unit": "c"}, tool) == "unit"
    assert argument_to_perturb({"other": 1}, tool) == "other"
    assert argument_to_perturb({}, tool) is None
    perturbed = perturb_arguments({"city": "Oslo", "unit": "c", "year": 2020}, tool, 7)
    assert perturbed["unit"] == "c" and perturbed["year"] == 2020 and perturbed["city"] != "Oslo"
    assert perturb_argument({"city": "Oslo", "year": 2020}, "year", tool, 7) == {"city": "Oslo", "year": 3031}
    with pytest.raises(ValueError, match="a call without arguments cannot be perturbed"):
        perturb_arguments({}, tool, 0)
    with pytest.raises(KeyError, match="the call has no argument 'x'"):
        perturb_argument({"city": "Oslo"}, "x", tool, 0)


def normalised(value: str) -> str:
    return " ".join(value.lower().split())


@given(st.text(), st.integers(0, 2**31))
def test_perturbed_strings_differ_after_normalisation(text: str, seed: int) -> None:
    assert normalised(perturb_value(text, {}, random.Random(seed))) != normalised(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)


@given(JSON, st.integers(0, 2**31))
def test_every_json_value_is_changed(value, seed: int) -> None:
    assert perturb_value(value, {}, random.Random(seed)) != value


# --------------------------------------------------------------------------- verdicts


def test_the_examples_are_valid(verifier: Verifier) -> None:
    verdicts = verifier.verify(load_examples())
    assert [(v.valid, v.reason, v.oracle_solve_rate, v.has_golden) for v in verdicts] == [
        (True, None, 1.0, True)
    ] * 3
    multi_hop = verdicts[2]
    assert [(c.id, c.golden_ok, c.perturbed_rejected) for c in multi_hop.checks] == [
        ("q1", True, True),
        ("q2", True, True),
    ]
    assert all(c.detail.startswith("ok (perturbed ") for c in multi_hop.checks)


def test_a_golden_call_returning_the_wrong_value_is_rejected(verifier: Verifier) -> None:
    (verdict,) = verifier.verify([with_code(example("single-hop"), "get_country_capital", WRONG_CAPITAL)])
    assert (verdict.valid, verdict.reason, verdict.oracle_solve_rate) == (False, REASON_GOLDEN, 0.0)
    assert verdict.checks[0].golden_ok is False
    assert (
        verdict.detail
        == "q1: get_country_capital(iso_code=\"FR\") returned 'Lyon', which does not contain 'Paris'"
    )


def test_a_tool_that_ignores_its_argument_is_rejected(verifier: Verifier) -> None:
    (verdict,) = verifier.verify([with_code(example("single-hop"), "get_country_capital", ALWAYS_PARIS)])
    assert (verdict.valid, verdict.reason, verdict.oracle_solve_rate) == (False, REASON_PERTURBED, 1.0)
    (check,) = verdict.checks
    assert (check.golden_ok, check.perturbed_rejected) == (True, False)
    assert check.detail.startswith("q1: get_country_capital with iso_code=") and check.detail.endswith(
        "still returned 'Paris'"
    )


def test_an_environment_the_oracle_cannot_solve_is_rejected(pool: SandboxPool, verifier: Verifier) -> None:
    extra = changed(example("single-hop"), unsolved_set={"get_country_capital": ["Paris", "Rome"]})
    (verdict,) = verifier.verify([extra])
    assert (verdict.valid, verdict.reason, verdict.oracle_solve_rate) == (False, REASON_ORACLE, 0.5)
    assert verdict.detail == "the golden calls reach solve rate 0.500"
    (short,) = Verifier(pool, max_turns=1).verify([example("multi-hop")])  # the second hop never runs
    assert (short.reason, short.oracle_solve_rate) == (REASON_ORACLE, 0.5)


def test_leaks_are_rejected(verifier: Verifier) -> None:
    row = example("single-hop")
    leaky_question = changed(row, messages=[{"role": "user", "content": "Is PARIS the capital of FR?"}])
    tools = row.tool_schemas()
    tools[0]["function"]["parameters"]["properties"]["iso_code"]["description"] = (
        "A code, e.g. FR (capital Paris)."
    )
    leaky_document = changed(row, tools=tools)
    verdicts = verifier.verify([leaky_question, leaky_document])
    assert [(v.reason, v.detail) for v in verdicts] == [
        (REASON_QUESTION_LEAK, "the question states the answer 'Paris'"),
        (REASON_DOCUMENT_LEAK, "the document of 'get_country_capital' states q1's answer 'Paris'"),
    ]


def test_documents_leak_only_whole_words() -> None:
    assert states_whole("Weather and climate data.", "Lima") is False
    assert states_whole("Cities such as Lima, Oslo.", "Lima") is True
    assert states_whole("Population 10,092,000 (2017).", "10,092,000") is True
    assert states_whole("Codes 110092000.", "10,092,000") is False
    assert states_whole("Paris and Rome", "Rome, Paris") is True


def test_unknown_tools_and_malformed_meta_are_rejected_without_running(verifier: Verifier) -> None:
    row = example("single-hop")
    unknown = with_meta(
        row, sub_questions=[{"id": "q1", "answer": "Paris", "call": {"name": "nope", "arguments": {}}}]
    )
    malformed = with_meta(
        row, sub_questions=[{"id": "q1", "answer": "Paris", "call": {"name": "x", "arguments": []}}]
    )
    verdicts = verifier.verify([unknown, malformed])
    assert [(v.valid, v.reason, v.detail, v.checks, v.oracle_solve_rate) for v in verdicts] == [
        (False, REASON_UNKNOWN_GOLDEN_TOOL, "q1 calls 'nope', which is not among the tools", (), None),
        (False, REASON_META, "meta.sub_questions[0].call.arguments must be an object", (), None),
    ]


def test_paper_format_rows_get_static_checks_only(verifier: Verifier) -> None:
    (verdict,) = verifier.verify([changed(example("multi-hop"), meta={})])
    assert verdict.valid and not verdict.has_golden
    assert (verdict.reason, verdict.oracle_solve_rate, verdict.checks) == (None, None, ())


def test_rows_that_share_a_question_are_verified_apart(verifier: Verifier) -> None:
    """The oracle knows tasks by their question; two rows asking the same one must not share a plan."""
    good = example("single-hop")
    broken = with_code(good, "get_country_capital", WRONG_CAPITAL)
    verdicts = verifier.verify([broken, good, broken])
    assert [(v.valid, v.oracle_solve_rate) for v in verdicts] == [(False, 0.0), (True, 1.0), (False, 0.0)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutating_any_golden_argument_fails_that_sub_question(
    verifier: Verifier, data: st.DataObject
) -> None:
    row = data.draw(st.sampled_from(load_examples()))
    meta = row.meta_dict()
    index = data.draw(st.integers(0, len(meta["sub_questions"]) - 1))
    call = meta["sub_questions"][index]["call"]
    name = data.draw(st.sampled_from(sorted(call["arguments"])))
    tool = next(tool for tool in row.tool_schemas() if tool["function"]["name"] == call["name"])
    call["arguments"] = perturb_argument(call["arguments"], name, tool, data.draw(st.integers(0, 2**31)))
    (verdict,) = verifier.verify([changed(row, meta=meta)])
    assert verdict.reason == REASON_GOLDEN
    assert [check.golden_ok for check in verdict.checks] == [i != index for i in range(len(verdict.checks))]


# --------------------------------------------------------------------------- whole files


@pytest.mark.parametrize("batch", [256, 2])
def test_validate_file_counts_every_row(pool: SandboxPool, tmp_path: Path, batch: int) -> None:
    report = validate_file(mixed_file(tmp_path / "envs.jsonl"), pool, batch=batch)
    data = report.to_json()
    rejected_rows = data.pop("rejected_rows")
    assert data == {
        "path": str(tmp_path / "envs.jsonl"),
        "total": 9,
        "valid": 4,
        "with_golden": 4,
        "oracle_solve_rate": 0.75,
        "rejected": {
            REASON_GOLDEN: 1,
            "schema: answer": 1,
            "schema: line": 1,
            REASON_UNDEFINED_TOOL: 1,
            REASON_UNKNOWN_UNSOLVED_TOOL: 1,
        },
    }
    assert [(r["line"], r["reason"]) for r in rejected_rows] == [
        (4, REASON_GOLDEN),
        (7, "schema: line"),
        (8, REASON_UNDEFINED_TOOL),
        (9, REASON_UNKNOWN_UNSOLVED_TOOL),
        (10, "schema: answer"),
    ]
    assert (
        rejected_rows[0]["env_id"]
        == with_code(example("single-hop"), "get_country_capital", WRONG_CAPITAL).env_id
    )
    assert (
        rejected_rows[1]["detail"]
        == "invalid JSON: Expecting property name enclosed in double quotes at column 2"
    )
    assert rejected_rows[4]["detail"] == "field 'answer': missing"


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"codes": {"get_country_capital": "def get_country_capital(:\n"}}, REASON_UNDEFINED_TOOL),
        ({"codes": {}}, REASON_UNDEFINED_TOOL),
        ({"codes": {"get_country_capital": "x = 1\n"}}, REASON_UNDEFINED_TOOL),
        ({"unsolved_set": {"nope": ["Paris"]}}, REASON_UNKNOWN_UNSOLVED_TOOL),
        ({"split": "dev"}, "schema: split"),
        ({"tools": "[1]"}, "schema: tools"),
    ],
)
def test_rows_that_do_not_load_get_a_report_key(fields: dict, key: str) -> None:
    with pytest.raises(ValidationError) as caught:
        EnvRow.model_validate({**example("single-hop").model_dump(), **fields})
    assert schema_reason(RowError("envs.jsonl", 1, format_validation_error(caught.value))) == key


def test_validate_file_needs_the_file(pool: SandboxPool, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such JSONL file"):
        validate_file(tmp_path / "absent.jsonl", pool)
