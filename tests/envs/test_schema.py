"""The environment and trajectory rows: FTRL rows load unchanged, bad rows say which field and why."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from envs.schema import (
    SCHEMA_VERSION,
    EnvRow,
    TrajectoryRow,
    compute_env_id,
    format_validation_error,
    json_type_name,
)

QUESTION = "What is the weather in the capital of France, and what is 100 EUR in USD today?"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name, e.g. 'Paris'."}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_currency",
            "description": "Convert an amount between currencies.",
            "parameters": {
                "type": "object",
                "properties": {
                    "amount": {"type": "number"},
                    "source": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
                    "target": {"type": "string", "enum": ["EUR", "USD", "GBP"]},
                },
                "required": ["amount", "source", "target"],
            },
        },
    },
]

CODES = {
    "get_weather": (
        "import json\n"
        "\n"
        "def _normalise(city):\n"
        "    return city.strip().lower()\n"
        "\n"
        "def get_weather(city: str) -> str:\n"
        "    if _normalise(city) != 'paris':\n"
        "        return json.dumps({'error': f'unknown city {city}; try the capital of France'})\n"
        "    return json.dumps({'city': 'Paris', 'condition': 'sunny', 'temperature_c': 21})\n"
    ),
    "convert_currency": (
        "from decimal import Decimal\n"
        "\n"
        "RATES = {('EUR', 'USD'): Decimal('1.08')}\n"
        "\n"
        "def convert_currency(amount, source, target):\n"
        "    rate = RATES.get((source, target))\n"
        "    if rate is None:\n"
        "        return f'no rate for {source} -> {target}'\n"
        "    return f'{Decimal(str(amount)) * rate:.2f} {target}'\n"
    ),
}

UNSOLVED = {"get_weather": ["sunny, 21"], "convert_currency": ["108.00 USD"]}


def ftrl_row(**changes: Any) -> dict[str, Any]:
    """A row as FTRL's released files hold it: JSON-string columns, no env_id, no meta."""
    row = {
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": json.dumps(TOOLS, ensure_ascii=False),
        "codes": json.dumps(CODES, ensure_ascii=False),
        "unsolved_set": json.dumps(UNSOLVED, ensure_ascii=False),
        "answer": "It is sunny and 21 °C in Paris; 100 EUR is 108.00 USD.",
        "solve_rate": 0.0,
        "data_source": "ftrl/parallel-single-hop",
        "split": "train",
    }
    row.update(changes)
    return row


def reason(row: dict[str, Any], model: type[EnvRow] = EnvRow) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(row)
    return format_validation_error(info.value)


def test_schema_version_is_one() -> None:
    assert SCHEMA_VERSION == 1


def test_an_ftrl_row_loads_with_its_json_strings_kept_verbatim() -> None:
    raw = ftrl_row(tools=json.dumps(TOOLS, indent=2))
    row = EnvRow.model_validate(raw)
    assert row.tools == raw["tools"]
    assert row.codes == raw["codes"]
    assert row.unsolved_set == raw["unsolved_set"]
    assert row.meta == "{}"
    assert row.solve_rate == 0.0


def test_decoded_views() -> None:
    row = EnvRow.model_validate(ftrl_row(meta={"scenario": "parallel single-hop"}))
    assert row.tool_schemas() == TOOLS
    assert row.tool_names() == ["get_weather", "convert_currency"]
    assert row.codes_dict() == CODES
    assert row.unsolved() == UNSOLVED
    assert row.meta_dict() == {"scenario": "parallel single-hop"}


def test_decoded_views_are_fresh_copies() -> None:
    row = EnvRow.model_validate(ftrl_row())
    row.unsolved()["get_weather"].pop()
    assert row.unsolved() == UNSOLVED


def test_decoded_values_are_encoded_as_ftrl_does() -> None:
    unsolved = {"get_weather": ["ensoleillé, 21"], "convert_currency": ["108.00 USD"]}
    row = EnvRow.model_validate(ftrl_row(tools=TOOLS, codes=CODES, unsolved_set=unsolved, meta={"é": 1}))
    assert row.tools == json.dumps(TOOLS, ensure_ascii=False)
    assert row.codes == json.dumps(CODES, ensure_ascii=False)
    assert row.unsolved_set == '{"get_weather": ["ensoleillé, 21"], "convert_currency": ["108.00 USD"]}'
    assert row.meta == '{"é": 1}'


def test_env_id_definition_is_pinned() -> None:
    # Ids are stored in files across runs: a change of the hash definition must not go unnoticed.
    # sha256 of '[[{"content":"q","role":"user"}],[],{},{},"a"]', first 16 hex digits.
    assert compute_env_id([{"role": "user", "content": "q"}], "[]", "{}", "{}", "a") == "aae7a916e51d2891"


def test_env_id_is_computed_when_empty_and_kept_when_given() -> None:
    row = EnvRow.model_validate(ftrl_row())
    assert re.fullmatch(r"[0-9a-f]{16}", row.env_id)
    assert row.env_id == compute_env_id(row.messages, TOOLS, CODES, UNSOLVED, row.answer)
    assert EnvRow.model_validate(ftrl_row(env_id="my-own-id")).env_id == "my-own-id"


def test_env_id_ignores_key_order_and_whitespace() -> None:
    reordered_tools = [
        {"function": dict(reversed(tool["function"].items())), "type": "function"} for tool in TOOLS
    ]
    reordered = ftrl_row(
        messages=[{"content": QUESTION, "role": "user"}],
        tools=json.dumps(reordered_tools, indent=4),
        codes=json.dumps(dict(reversed(CODES.items()))),
        unsolved_set=json.dumps(dict(reversed(UNSOLVED.items())), separators=(",", ":")),
    )
    assert EnvRow.model_validate(reordered).env_id == EnvRow.model_validate(ftrl_row()).env_id


@pytest.mark.parametrize(
    "change",
    [
        {"answer": "It is rainy in Paris."},
        {"unsolved_set": json.dumps({"get_weather": ["sunny, 21"]})},
        {"messages": [{"role": "user", "content": QUESTION + "?"}]},
        {"codes": json.dumps({**CODES, "get_weather": CODES["get_weather"] + "\n# v2\n"})},
    ],
)
def test_env_id_changes_with_the_content(change: dict[str, Any]) -> None:
    assert EnvRow.model_validate(ftrl_row(**change)).env_id != EnvRow.model_validate(ftrl_row()).env_id


def test_env_id_does_not_depend_on_bookkeeping_columns() -> None:
    base = EnvRow.model_validate(ftrl_row()).env_id
    other = ftrl_row(solve_rate=0.5, split="test", data_source="elsewhere", meta={"seed": 3})
    assert EnvRow.model_validate(other).env_id == base


def test_unknown_columns_are_kept() -> None:
    row = EnvRow.model_validate(ftrl_row(difficulty="hard", extra_info={"index": 7}))
    dumped = row.model_dump()
    assert dumped["difficulty"] == "hard"
    assert dumped["extra_info"] == {"index": 7}
    assert EnvRow.model_validate(dumped) == row


def test_codes_may_hold_more_than_the_tools() -> None:
    codes = {**CODES, "shared_helpers": "def shared_helpers():\n    return None\n"}
    assert EnvRow.model_validate(ftrl_row(codes=codes)).codes_dict() == codes


def test_validation_never_executes_tool_code(tmp_path) -> None:
    marker = tmp_path / "executed"
    code = f"open({str(marker)!r}, 'w').write('x')\nraise SystemExit(3)\n"
    code += "def get_weather(city):\n    return ''\n"
    EnvRow.model_validate(ftrl_row(codes={**CODES, "get_weather": code}))
    assert not marker.exists()


def test_system_messages_may_precede_the_question() -> None:
    messages = [{"role": "system", "content": "Use the tools."}, {"role": "user", "content": QUESTION}]
    assert EnvRow.model_validate(ftrl_row(messages=messages)).messages == messages


NOT_DEFINED = (
    "field 'codes': code of tool 'get_weather' does not define a top-level function `def get_weather(...)`"
)

BAD_ROWS = [
    pytest.param(
        {"codes": json.dumps({"convert_currency": CODES["convert_currency"]})},
        "field 'codes': tool 'get_weather' is named in tools but codes do not define it",
        id="codes-missing-a-tool",
    ),
    pytest.param(
        {"codes": json.dumps({**CODES, "get_weather": "def weather(city):\n    return ''\n"})},
        NOT_DEFINED,
        id="code-defines-another-name",
    ),
    pytest.param(
        {
            "codes": json.dumps(
                {**CODES, "get_weather": "class T:\n    def get_weather(self):\n        pass\n"}
            )
        },
        NOT_DEFINED,
        id="code-defines-a-method-only",
    ),
    pytest.param(
        {"codes": json.dumps({**CODES, "get_weather": "async def get_weather(city):\n    return ''\n"})},
        NOT_DEFINED,
        id="code-defines-a-coroutine",
    ),
    pytest.param(
        {"codes": json.dumps({**CODES, "get_weather": "def get_weather(city:\n    return ''\n"})},
        "field 'codes': code of tool 'get_weather' is not valid Python: '(' was never closed (line 1)",
        id="code-syntax-error",
    ),
    pytest.param(
        {"codes": json.dumps({**CODES, "get_weather": 42})},
        "field 'codes': code of 'get_weather' must be a string of Python source, got number",
        id="code-not-a-string",
    ),
    pytest.param(
        {"codes": "[]"},
        "field 'codes': expected JSON of an object of tool name -> Python source, got array",
        id="codes-not-an-object",
    ),
    pytest.param(
        {"unsolved_set": json.dumps({**UNSOLVED, "get_time": ["12:00"]})},
        "field 'unsolved_set': tool 'get_time' is not named in tools",
        id="unsolved-unknown-tool",
    ),
    pytest.param(
        {"unsolved_set": json.dumps({"get_weather": "sunny"})},
        "field 'unsolved_set': sub-answers of 'get_weather' must be a list of strings",
        id="unsolved-not-a-list",
    ),
    pytest.param(
        {"unsolved_set": json.dumps({"get_weather": [21]})},
        "field 'unsolved_set': sub-answers of 'get_weather' must be a list of strings",
        id="unsolved-not-strings",
    ),
    pytest.param(
        {"tools": '[{"type": "function",'},
        "field 'tools': not valid JSON "
        "(Expecting property name enclosed in double quotes at line 1 column 22)",
        id="tools-invalid-json",
    ),
    pytest.param(
        {"tools": json.dumps({"name": "get_weather"})},
        "field 'tools': expected JSON of an array of function schemas, got object",
        id="tools-not-an-array",
    ),
    pytest.param(
        {"tools": 7},
        "field 'tools': expected a JSON string of an array of function schemas, got number",
        id="tools-wrong-type",
    ),
    pytest.param(
        {"tools": json.dumps([TOOLS[0], TOOLS[1]["function"]])},
        'field \'tools\': item 1 is not a function schema {"type": "function", "function": {...}}',
        id="tools-bare-function",
    ),
    pytest.param(
        {"tools": json.dumps([TOOLS[0], {"type": "function", "function": {"description": "x"}}])},
        "field 'tools': item 1 has no function name",
        id="tools-no-name",
    ),
    pytest.param(
        {"tools": json.dumps([{"type": "function", "function": {"name": "get-weather"}}])},
        "field 'tools': tool name 'get-weather' (item 0) is not a Python identifier",
        id="tools-name-not-identifier",
    ),
    pytest.param(
        {"tools": json.dumps([{"type": "function", "function": {"name": "get_weather", "parameters": []}}])},
        "field 'tools': parameters of tool 'get_weather' must be a JSON schema object",
        id="tools-bad-parameters",
    ),
    pytest.param(
        {"tools": json.dumps([{"type": "function", "function": {"name": "get_weather", "description": 1}}])},
        "field 'tools': description of tool 'get_weather' must be a string",
        id="tools-bad-description",
    ),
    pytest.param(
        {"tools": json.dumps([TOOLS[0], TOOLS[1], TOOLS[0]])},
        "field 'tools': tool 'get_weather' is named twice",
        id="tools-duplicate",
    ),
    pytest.param(
        {"messages": []},
        "field 'messages': must not be empty: the user question comes first",
        id="messages-empty",
    ),
    pytest.param(
        {"messages": [{"role": "system", "content": "Use the tools."}]},
        "field 'messages': there is no user question (no message other than system messages)",
        id="messages-only-system",
    ),
    pytest.param(
        {"messages": [{"role": "assistant", "content": "Hello"}, {"role": "user", "content": QUESTION}]},
        "field 'messages': the first non-system message must be the user question, got role 'assistant'",
        id="messages-assistant-first",
    ),
    pytest.param(
        {"messages": [{"content": QUESTION}]},
        "field 'messages': message 0 has no string 'role'",
        id="messages-no-role",
    ),
    pytest.param(
        {"messages": ["hello"]},
        "field 'messages[0]': Input should be a valid dictionary (got 'hello')",
        id="messages-item-not-object",
    ),
    pytest.param(
        {"solve_rate": 1.5},
        "field 'solve_rate': Input should be less than or equal to 1 (got 1.5)",
        id="solve-rate-above-one",
    ),
    pytest.param(
        {"solve_rate": -0.1},
        "field 'solve_rate': Input should be greater than or equal to 0 (got -0.1)",
        id="solve-rate-negative",
    ),
    pytest.param(
        {"split": "dev"},
        "field 'split': Input should be 'train' or 'test' (got 'dev')",
        id="split-unknown",
    ),
    pytest.param(
        {"meta": "[1, 2]"},
        "field 'meta': expected JSON of an object, got array",
        id="meta-not-an-object",
    ),
]


@pytest.mark.parametrize(("change", "expected"), BAD_ROWS)
def test_bad_rows_name_the_field_and_the_reason(change: dict[str, Any], expected: str) -> None:
    assert reason(ftrl_row(**change)) == expected


def test_missing_fields_are_listed_on_one_line() -> None:
    row = ftrl_row()
    del row["answer"], row["split"]
    assert reason(row) == "field 'answer': missing; field 'split': missing"


def test_a_broken_tools_field_does_not_hide_other_problems() -> None:
    row = ftrl_row(tools="not json", unsolved_set=json.dumps({"get_weather": "sunny"}))
    assert reason(row) == (
        "field 'tools': not valid JSON (Expecting value at line 1 column 1); "
        "field 'unsolved_set': sub-answers of 'get_weather' must be a list of strings"
    )


def trajectory(**changes: Any) -> dict[str, Any]:
    messages = [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": '{"city": "Paris", "condition": "sunny"}', "tool_call_id": "0"},
    ]
    fields = {
        "messages": messages,
        "unsolved_set": json.dumps({"get_weather": [], "convert_currency": ["108.00 USD"]}),
        "solve_rate": 0.5,
        "env_id": "0123456789abcdef",
        "turn": 1,
        "policy": "qwen2.5-7b-instruct",
    }
    return ftrl_row(**{**fields, **changes})


def test_a_trajectory_row_keeps_its_environments_id() -> None:
    row = TrajectoryRow.model_validate(trajectory())
    assert row.env_id == "0123456789abcdef"
    assert (row.turn, row.policy, row.solve_rate) == (1, "qwen2.5-7b-instruct", 0.5)
    assert row.unsolved() == {"get_weather": [], "convert_currency": ["108.00 USD"]}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"env_id": ""}, "field 'env_id': a trajectory row must carry its environment's env_id; it is empty"),
        ({"turn": -1}, "field 'turn': Input should be greater than or equal to 0 (got -1)"),
        ({"policy": ""}, "field 'policy': String should have at least 1 character (got '')"),
    ],
)
def test_bad_trajectory_rows(change: dict[str, Any], expected: str) -> None:
    assert reason(trajectory(**change), TrajectoryRow) == expected


def test_a_trajectory_row_needs_env_id_turn_and_policy() -> None:
    row = trajectory()
    del row["env_id"], row["turn"], row["policy"]
    assert (
        reason(row, TrajectoryRow)
        == "field 'env_id': missing; field 'turn': missing; field 'policy': missing"
    )


def test_a_trajectory_row_reads_as_an_environment_row_with_extra_columns() -> None:
    row = EnvRow.model_validate(trajectory())
    assert row.model_dump()["turn"] == 1
    assert TrajectoryRow.model_validate(row.model_dump()) == TrajectoryRow.model_validate(trajectory())


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (None, "null"),
        (True, "boolean"),
        (3, "number"),
        (2.5, "number"),
        ("x", "string"),
        ([], "array"),
        ({}, "object"),
    ],
)
def test_json_type_names(value: Any, name: str) -> None:
    assert json_type_name(value) == name
