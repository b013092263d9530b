"""Trajectory JSONL -> training parquet: hand-worked records, round trips, metadata, errors, atomicity."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.convert import (
    AGENT_NAME,
    TRAINING_SCHEMA,
    TRAINING_SCHEMA_VERSION,
    convert_trajectories,
    decode_prompt,
    iter_training_rows,
    row_tools,
    training_metadata,
)
from envs.jsonl import RowError
from support.trajectory_rows import AFTER_CALL_ROW, FRESH_ROW, QUESTION, write_jsonl

EMPTY = {"reasoning_content": None, "tool_calls": None, "tool_call_id": None, "name": None}


def convert(tmp_path: Path, rows: list[Any], **kwargs: Any) -> tuple[Any, list[dict[str, Any]]]:
    src = write_jsonl(tmp_path / "trajectories.jsonl", rows)
    report = convert_trajectories(src, tmp_path / "out" / "train.parquet", **kwargs)
    return report, list(iter_training_rows(report.out))


def leftovers(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if ".tmp-" in path.name)


# ---------------------------------------------------------------- hand-worked records


def test_fresh_row_is_stored_as_hand_worked(tmp_path: Path) -> None:
    _, (record,) = convert(tmp_path, [FRESH_ROW])
    assert record == {
        "data_source": "hand-written",
        "prompt": [{"role": "user", "content": QUESTION, **EMPTY}],
        "reward_model": {"style": "rule", "ground_truth": "2,148,000"},
        "extra_info": {
            "codes": FRESH_ROW["codes"],
            "unsolved_set": '{"get_capital": ["Paris"], "get_population": ["2,148,000"]}',
            "solve_rate": 0.0,
            "split": "train",
            "env_id": "0123456789abcdef",
            "tools": FRESH_ROW["tools"],
            "turn": 0,
            "policy": "tiny",
            "meta": '{"scenario": "multi-hop"}',
            "index": 0,
        },
        "agent_name": AGENT_NAME,
        "codes": FRESH_ROW["codes"],
        "unsolved_set": '{"get_capital": ["Paris"], "get_population": ["2,148,000"]}',
        "solve_rate": 0.0,
        "split": "train",
        "answer": "2,148,000",
        "tools": FRESH_ROW["tools"],
    }


def test_row_after_a_tool_call_stores_openai_calls_and_decodes_to_template_form(tmp_path: Path) -> None:
    _, (fresh, record) = convert(tmp_path, [FRESH_ROW, AFTER_CALL_ROW])
    call = {"id": "call_0_0", "type": "function", "function": {"name": "get_capital"}}
    assert record["prompt"] == [
        {"role": "user", "content": QUESTION, **EMPTY},
        {
            "role": "assistant",
            "content": "",  # OpenAI's None for a calls-only turn, as templates can concatenate it
            **EMPTY,
            "tool_calls": [{**call, "function": {**call["function"], "arguments": '{"country": "France"}'}}],
        },
        {"role": "tool", "content": "Paris", **EMPTY, "tool_call_id": "call_0_0", "name": "get_capital"},
    ]
    assert decode_prompt(record["prompt"]) == [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{**call, "function": {**call["function"], "arguments": {"country": "France"}}}],
        },
        {"role": "tool", "content": "Paris", "tool_call_id": "call_0_0", "name": "get_capital"},
    ]
    assert record["extra_info"]["index"] == 1 and record["extra_info"]["turn"] == 1
    assert record["extra_info"]["solve_rate"] == record["solve_rate"] == 0.5
    assert json.loads(record["unsolved_set"]) == {"get_capital": [], "get_population": ["2,148,000"]}
    assert row_tools(record["extra_info"]) == json.loads(AFTER_CALL_ROW["tools"])


def test_flat_calls_with_dict_arguments_get_ids_and_keep_non_ascii(tmp_path: Path) -> None:
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"name": "get_population", "arguments": {"city": "Zürich", "year": 2020}},
            {"name": "get_capital", "arguments": {}},
        ]},
    ]  # fmt: skip
    _, (record,) = convert(tmp_path, [{**AFTER_CALL_ROW, "messages": messages}])
    calls = record["prompt"][1]["tool_calls"]
    assert [call["id"] for call in calls] == ["call_0_0", "call_0_1"]
    assert [call["function"]["arguments"] for call in calls] == ['{"city": "Zürich", "year": 2020}', "{}"]
    assert decode_prompt(record["prompt"])[1]["tool_calls"][0]["function"]["arguments"] == {
        "city": "Zürich",
        "year": 2020,
    }


# ---------------------------------------------------------------- round trips


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",)), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
arguments = st.dictionaries(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=6), json_values, max_size=4
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(arguments, min_size=1, max_size=3), min_size=1, max_size=4))
def test_tool_call_arguments_of_any_shape_round_trip_exactly(
    calls_per_row: list[list[dict[str, Any]]],
) -> None:
    """Arguments whose keys and value types vary from row to row: what Arrow cannot type as a struct."""
    rows = []
    for turn, calls in enumerate(calls_per_row):
        messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
        messages.append(
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": f"c{i}", "type": "function", "function": {"name": "get_capital", "arguments": args}}
                for i, args in enumerate(calls)
            ]}
        )  # fmt: skip
        rows.append({**AFTER_CALL_ROW, "messages": messages, "turn": turn})
    with tempfile.TemporaryDirectory() as folder:
        _, records = convert(Path(folder), copy.deepcopy(rows))
    for row, record in zip(rows, records, strict=True):
        assert decode_prompt(record["prompt"]) == row["messages"]


def test_every_field_of_the_row_comes_back(tmp_path: Path) -> None:
    rows = [FRESH_ROW, AFTER_CALL_ROW, {**AFTER_CALL_ROW, "split": "test", "policy": "other", "turn": 7}]
    _, records = convert(tmp_path, rows, splits=("train", "test"))
    for index, (row, record) in enumerate(zip(rows, records, strict=True)):
        extra = record["extra_info"]
        assert record["data_source"] == row["data_source"]
        assert record["reward_model"] == {"style": "rule", "ground_truth": row["answer"]}
        for key in (
            "codes",
            "unsolved_set",
            "solve_rate",
            "split",
            "env_id",
            "tools",
            "turn",
            "policy",
            "meta",
        ):
            assert extra[key] == row[key], key
        for key in ("codes", "unsolved_set", "solve_rate", "split", "answer", "tools"):
            assert record[key] == row[key], key
        assert extra["index"] == index
        assert record["agent_name"] == AGENT_NAME


def test_output_does_not_depend_on_chunk_size(tmp_path: Path) -> None:
    rows = [{**AFTER_CALL_ROW, "turn": turn} for turn in range(10)]
    src = write_jsonl(tmp_path / "t.jsonl", rows)
    whole = convert_trajectories(src, tmp_path / "whole.parquet", chunk_rows=1024)
    chunked = convert_trajectories(src, tmp_path / "chunked.parquet", chunk_rows=3)
    assert list(iter_training_rows(whole.out)) == list(iter_training_rows(chunked.out))
    assert pq.ParquetFile(chunked.out).metadata.num_row_groups == 4  # 3 + 3 + 3 + 1 rows


# ---------------------------------------------------------------- metadata and report


def test_metadata_schema_and_report(tmp_path: Path) -> None:
    report, _ = convert(tmp_path, [FRESH_ROW, AFTER_CALL_ROW])
    assert training_metadata(report.out) == {
        "ftrl_schema_version": TRAINING_SCHEMA_VERSION,
        "source": "trajectories.jsonl",
        "splits": "train",
    }
    assert pq.read_schema(report.out).remove_metadata() == TRAINING_SCHEMA
    assert report.sha256 == hashlib.sha256(report.out.read_bytes()).hexdigest()
    assert (report.rows_in, report.rows_out, report.skipped_split, report.skipped_bad) == (2, 2, 0, [])
    assert report.schema_version == TRAINING_SCHEMA_VERSION == "1"


def test_reading_a_parquet_of_another_schema_version_says_so(tmp_path: Path) -> None:
    path = tmp_path / "plain.parquet"
    pq.write_table(pq.read_table(convert(tmp_path, [FRESH_ROW])[0].out).replace_schema_metadata(), path)
    message = (
        f"{path}: the file has no schema version; this code reads version 1. "
        "Convert the trajectories again with `ftrl convert`."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        next(iter_training_rows(path))


# ---------------------------------------------------------------- splits


def test_only_the_requested_splits_are_written(tmp_path: Path) -> None:
    rows = [FRESH_ROW, {**FRESH_ROW, "split": "test"}, AFTER_CALL_ROW]
    src = write_jsonl(tmp_path / "t.jsonl", rows)
    train = convert_trajectories(src, tmp_path / "train.parquet")
    test = convert_trajectories(src, tmp_path / "test.parquet", splits=["test"])
    both = convert_trajectories(src, tmp_path / "both.parquet", splits={"train", "test"})
    assert [r["extra_info"]["turn"] for r in iter_training_rows(train.out)] == [0, 1]
    assert [r["split"] for r in iter_training_rows(test.out)] == ["test"]
    assert [r["split"] for r in iter_training_rows(both.out)] == ["train", "test", "train"]
    assert [(r.rows_in, r.rows_out, r.skipped_split) for r in (train, test, both)] == [
        (3, 2, 1),
        (3, 1, 2),
        (3, 3, 0),
    ]
    assert training_metadata(both.out)["splits"] == "test,train"


def test_a_split_given_as_one_string_and_an_empty_result(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "t.jsonl", [FRESH_ROW, AFTER_CALL_ROW])
    assert convert_trajectories(src, tmp_path / "train.parquet", splits="train").rows_out == 2
    empty = convert_trajectories(src, tmp_path / "test.parquet", splits="test")
    assert (empty.rows_out, empty.skipped_split) == (0, 2)
    assert list(iter_training_rows(empty.out)) == []
    assert pq.read_schema(empty.out).remove_metadata() == TRAINING_SCHEMA


@pytest.mark.parametrize("splits", [("trian",), ()])
def test_unknown_or_no_splits_are_refused(tmp_path: Path, splits: tuple[str, ...]) -> None:
    src = write_jsonl(tmp_path / "t.jsonl", [FRESH_ROW])
    message = f"splits must name some of train, test; got {sorted(splits)}"
    with pytest.raises(ValueError, match=re.escape(message)):
        convert_trajectories(src, tmp_path / "o.parquet", splits=splits)


# ---------------------------------------------------------------- bad input


BAD_ROWS: list[tuple[Any, str]] = [
    ("{not json", "invalid JSON: Expecting property name enclosed in double quotes at column 2"),
    (
        {**FRESH_ROW, "messages": [{"role": "user", "content": QUESTION, "weight": 2}]},
        "field 'messages': messages[0] has key 'weight', which the training parquet does not store "
        "(it stores role, content, reasoning_content, tool_calls, tool_call_id, name)",
    ),
    (
        {**FRESH_ROW, "messages": [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": "{x: 1"}]},
        ]},
        "field 'messages': messages[1].tool_calls[0]: 'arguments' is not valid JSON "
        "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
    ),
    ({**FRESH_ROW, "turn": -1}, "field 'turn': Input should be greater than or equal to 0 (got -1)"),
    (
        {**FRESH_ROW, "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]},
        "field 'messages': messages[0].content must be a string, got array",
    ),
    (
        {**FRESH_ROW, "messages": [{"role": "user", "content": QUESTION, "name": 7}]},
        "field 'messages': messages[0].name must be a string, got number",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("bad", "reason"), BAD_ROWS)
def test_a_bad_row_names_file_line_and_reason(tmp_path: Path, bad: Any, reason: str) -> None:
    src = write_jsonl(tmp_path / "t.jsonl", [FRESH_ROW, bad, AFTER_CALL_ROW])
    with pytest.raises(RowError, match=re.escape(f"{src}:2: {reason}")):
        convert_trajectories(src, tmp_path / "o.parquet")


def test_skip_bad_writes_the_good_rows_and_lists_the_bad(tmp_path: Path) -> None:
    rows = [FRESH_ROW, *(bad for bad, _ in BAD_ROWS), {**FRESH_ROW, "split": "test"}, AFTER_CALL_ROW]
    report, records = convert(tmp_path, rows, skip_bad=True)
    assert [(error.line, error.reason) for error in report.skipped_bad] == [
        (line, reason) for line, (_, reason) in enumerate(BAD_ROWS, start=2)
    ]
    assert [r["extra_info"]["turn"] for r in records] == [0, 1]
    assert [r["extra_info"]["index"] for r in records] == [0, 1]  # indices count written rows only
    assert (report.rows_in, report.rows_out, report.skipped_split) == (len(rows), 2, 1)


def test_missing_input_and_output_over_input_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'no.jsonl'}: no such JSONL file")):
        convert_trajectories(tmp_path / "no.jsonl", tmp_path / "o.parquet")
    src = write_jsonl(tmp_path / "t.jsonl", [FRESH_ROW])
    with pytest.raises(ValueError, match=re.escape(f"{src}: the output would overwrite the input")):
        convert_trajectories(src, src)


# ---------------------------------------------------------------- atomicity


def test_a_failure_part_way_leaves_no_output_and_no_temporary_file(tmp_path: Path) -> None:
    """The bad row comes after several chunks were already written to the temporary file."""
    src = write_jsonl(tmp_path / "t.jsonl", [FRESH_ROW] * 50 + ["[1, 2]"] + [FRESH_ROW] * 5)
    out = tmp_path / "out"
    with pytest.raises(RowError, match=re.escape(f"{src}:51: expected a JSON object, got array")):
        convert_trajectories(src, out / "train.parquet", chunk_rows=8)
    assert list(out.iterdir()) == []


def test_a_failed_run_keeps_the_previous_file(tmp_path: Path) -> None:
    report, _ = convert(tmp_path, [FRESH_ROW])
    before = report.out.read_bytes()
    src = write_jsonl(tmp_path / "bad.jsonl", [AFTER_CALL_ROW, "{"])
    with pytest.raises(RowError):
        convert_trajectories(src, report.out)
    assert report.out.read_bytes() == before
    assert leftovers(report.out.parent) == []


# ---------------------------------------------------------------- bounded memory

MEMORY_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from envs.convert import convert_trajectories

    small, big, out = sys.argv[1:4]
    convert_trajectories(small, out, chunk_rows=64)  # imports and first-use allocations
    warm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = convert_trajectories(big, out, chunk_rows=64)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"warm_kb": warm, "peak_kb": peak, "rows": report.rows_out}))
    """
)


def test_memory_stays_bounded_by_the_chunk_not_the_file(tmp_path: Path) -> None:
    """~150 MB of trajectories; the converting process may grow by a small fraction of that."""
    padding = "word " * 6000  # a 30 KB tool reply: few rows, so the run stays short
    row = {
        **AFTER_CALL_ROW,
        "messages": [*AFTER_CALL_ROW["messages"][:2], {"role": "tool", "content": padding}],
    }
    big = tmp_path / "big.jsonl"
    line = json.dumps(row) + "\n"
    rows = 150 * 2**20 // len(line)
    with big.open("w") as handle:
        for _ in range(rows):
            handle.write(line)
    small = write_jsonl(tmp_path / "small.jsonl", [row] * 64)
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(small), str(big), str(tmp_path / "o.parquet")],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(probe.stdout)
    grown = (result["peak_kb"] - result["warm_kb"]) * 1024
    assert result["rows"] == rows
    assert grown < big.stat().st_size / 10, (
        f"grew {grown / 2**20:.0f} MB converting {big.stat().st_size >> 20} MB"
    )


def test_environment_rows_without_turn_or_policy_convert(tmp_path: Path) -> None:
    """FTRL's released training files carry no `turn` or `policy`: they convert as turn 0."""
    from envs.examples import load_examples
    from envs.jsonl import write_rows

    rows = load_examples()
    src = tmp_path / "ftrl.jsonl"
    write_rows(src, [row.model_dump(exclude={"env_id"}) for row in rows])
    report = convert_trajectories(src, tmp_path / "train.parquet")
    assert report.rows_out == 3
    stored = list(iter_training_rows(tmp_path / "train.parquet"))
    assert [r["extra_info"]["env_id"] for r in stored] == [row.env_id for row in rows]
    assert {(r["extra_info"]["turn"], r["extra_info"]["policy"]) for r in stored} == {(0, "")}
