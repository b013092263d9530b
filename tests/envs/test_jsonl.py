"""JSONL rows: streamed reads with `path:line: reason` errors, atomic writes, resumable appends."""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.atomic import atomic_write, atomic_write_bytes, atomic_write_text
from envs.jsonl import JsonlAppender, ReadReport, RowError, existing_keys, iter_rows, write_rows
from envs.schema import EnvRow, TrajectoryRow

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_capital",
            "description": "Capital city of a country.",
            "parameters": {"type": "object", "properties": {"country": {"type": "string"}}},
        },
    }
]
CODES = {
    "lookup_capital": "CAPITALS = {'japan': 'Tokyo'}\n\n"
    "def lookup_capital(country):\n    return CAPITALS[country]\n"
}


def row(question: str = "What is the capital of Japan?", **changes: Any) -> dict[str, Any]:
    fields = {
        "messages": [{"role": "user", "content": question}],
        "tools": json.dumps(TOOLS),
        "codes": json.dumps(CODES),
        "unsolved_set": json.dumps({"lookup_capital": ["Tokyo"]}),
        "answer": "Tokyo",
        "solve_rate": 0.0,
        "data_source": "test",
        "split": "train",
    }
    return {**fields, **changes}


def line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


# ---------------------------------------------------------------- reading and writing whole files


def test_round_trip_keeps_unicode_and_unknown_columns(tmp_path: Path) -> None:
    rows = [
        EnvRow.model_validate(row("日本の首都はどこですか？", answer="東京", difficulty="easy")),
        EnvRow.model_validate(
            row("Quelle est la capitale du Japon ? 🗼", extra_info={"index": 2, "tags": ["é"]})
        ),
    ]
    path = tmp_path / "envs.jsonl"
    assert write_rows(path, rows) == 2
    text = path.read_text(encoding="utf-8")
    assert "日本の首都" in text and "🗼" in text  # written as UTF-8, not \\u escapes
    assert text.count("\n") == 2 and text.endswith("\n")
    assert list(iter_rows(path)) == rows


def test_an_ftrl_line_reads_with_its_strings_unchanged(tmp_path: Path) -> None:
    ftrl = row(tools=json.dumps(TOOLS, indent=2), unsolved_set='{"lookup_capital":["Tokyo"]}')
    path = tmp_path / "train.jsonl"
    path.write_text(line(ftrl), encoding="utf-8")
    (read,) = iter_rows(path)
    assert (read.tools, read.unsolved_set) == (ftrl["tools"], ftrl["unsolved_set"])


def test_write_rows_takes_dicts_and_other_models(tmp_path: Path) -> None:
    trajectory = TrajectoryRow.model_validate(row(env_id="abc", turn=0, policy="tiny"))
    path = tmp_path / "mixed.jsonl"
    assert write_rows(path, [{"a": 1}, trajectory]) == 2
    first, second = path.read_text(encoding="utf-8").splitlines()
    assert first == '{"a": 1}'
    assert TrajectoryRow.model_validate_json(second) == trajectory


def test_write_rows_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "demo" / "envs" / "train.jsonl"
    assert write_rows(path, []) == 0
    assert path.read_bytes() == b""


def test_iter_rows_reads_trajectory_rows(tmp_path: Path) -> None:
    path = tmp_path / "trajectories.jsonl"
    path.write_text(line(row(env_id="abc", turn=2, policy="tiny")), encoding="utf-8")
    (read,) = iter_rows(path, TrajectoryRow)
    assert isinstance(read, TrajectoryRow) and (read.env_id, read.turn) == ("abc", 2)


def test_blank_lines_are_ignored_and_counted_in_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "envs.jsonl"
    path.write_text(
        "\n" + line(row()) + "   \n\t\n" + line(row("Capital of Japan?")) + "\n", encoding="utf-8"
    )
    report = ReadReport(path)
    assert [r.messages[0]["content"] for r in iter_rows(path, report=report)] == [
        "What is the capital of Japan?",
        "Capital of Japan?",
    ]
    assert (report.rows, report.skipped_count) == (2, 0)


def test_crlf_line_endings_and_a_byte_order_mark_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + line(row()).replace("\n", "\r\n").encode() * 2)
    assert len(list(iter_rows(path))) == 2


BAD_LINES = [
    pytest.param(b'{"messages": [', "invalid JSON: Expecting value at column 15", id="invalid-json"),
    pytest.param(b"[1, 2]", "expected a JSON object, got array", id="array"),
    pytest.param(b'"just a string"', "expected a JSON object, got string", id="string"),
    pytest.param(b'{"answer": "caf\xe9"}', "not valid UTF-8 (byte 16 of the line)", id="latin-1"),
    pytest.param(
        json.dumps({k: v for k, v in row().items() if k != "answer"}).encode(),
        "field 'answer': missing",
        id="missing-field",
    ),
    pytest.param(
        json.dumps(row(codes=json.dumps({"other": "def other():\n    pass\n"}))).encode(),
        "field 'codes': tool 'lookup_capital' is named in tools but codes do not define it",
        id="codes-without-the-tool",
    ),
    pytest.param(
        json.dumps(row(unsolved_set=json.dumps({"lookup_country": ["Japan"]}))).encode(),
        "field 'unsolved_set': tool 'lookup_country' is not named in tools",
        id="unsolved-unknown-tool",
    ),
]


@pytest.mark.parametrize(("bad", "reason"), BAD_LINES)
def test_a_bad_line_names_the_file_line_and_reason(tmp_path: Path, bad: bytes, reason: str) -> None:
    path = tmp_path / "envs.jsonl"
    path.write_bytes(line(row()).encode() + b"\n" + bad + b"\n" + line(row()).encode())
    with pytest.raises(RowError) as info:
        list(iter_rows(path))
    assert str(info.value) == f"{path}:3: {reason}"
    assert (info.value.path, info.value.line, info.value.reason) == (path, 3, reason)


def test_reading_streams_rows_before_reaching_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "envs.jsonl"
    path.write_text(line(row()) + "{broken\n", encoding="utf-8")
    rows = iter_rows(path)
    assert next(rows).answer == "Tokyo"
    with pytest.raises(RowError, match="envs.jsonl:2: invalid JSON"):
        next(rows)


def test_skip_bad_counts_and_continues(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "envs.jsonl"
    lines = [line(row()), "{broken\n", line(row(split="dev")), line(row("Capital of Japan?")), "[]\n"]
    path.write_text("".join(lines), encoding="utf-8")
    report = ReadReport(path)
    with caplog.at_level(logging.WARNING, logger="envs.jsonl"):
        rows = list(iter_rows(path, skip_bad=True, report=report))
    assert [r.messages[0]["content"] for r in rows] == ["What is the capital of Japan?", "Capital of Japan?"]
    assert report.rows == 2
    assert report.skipped_count == 3
    assert [str(e) for e in report.skipped] == [
        f"{path}:2: invalid JSON: Expecting property name enclosed in double quotes at column 2",
        f"{path}:3: field 'split': Input should be 'train' or 'test' (got 'dev')",
        f"{path}:5: expected a JSON object, got array",
    ]
    assert [r.getMessage() for r in caplog.records] == [f"skipped a bad row: {e}" for e in report.skipped]


def test_a_missing_file_fails_at_the_call(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.jsonl"
    with pytest.raises(FileNotFoundError, match=f"^{path}: no such JSONL file$"):
        iter_rows(path)


def test_row_errors_survive_pickling() -> None:
    error = pickle.loads(pickle.dumps(RowError("a.jsonl", 4, "invalid JSON")))
    assert (str(error), error.line, error.reason) == ("a.jsonl:4: invalid JSON", 4, "invalid JSON")


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "envs.jsonl"
    path.write_text("old\n", encoding="utf-8")

    def rows_then_crash():
        yield {"a": 1}
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError, match="generator died"):
        write_rows(path, rows_then_crash())
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        write_rows(path, [{"score": float("nan")}])
    assert path.read_text(encoding="utf-8") == "old\n"
    assert leftovers(tmp_path) == []


@settings(max_examples=40, deadline=None)
@given(
    answer=st.text(st.characters(codec="utf-8")),
    contents=st.lists(st.text(st.characters(codec="utf-8")), min_size=1, max_size=4),
)
def test_any_unicode_text_round_trips(answer: str, contents: list[str]) -> None:
    messages = [{"role": "user", "content": text} for text in contents]
    original = EnvRow.model_validate(row(answer=answer, messages=messages))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "rows.jsonl"
        write_rows(path, [original, original])
        assert list(iter_rows(path)) == [original, original]


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_replaces_on_success(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "report.txt"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second ✓")
    assert path.read_text(encoding="utf-8") == "second ✓"
    atomic_write_bytes(path, b"\x00\xff")
    assert path.read_bytes() == b"\x00\xff"
    assert leftovers(path.parent) == []


def test_atomic_write_keeps_the_old_file_when_the_body_fails(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_write(path, "wb") as handle:
        handle.write(b"half of the new")
        (temp,) = leftovers(tmp_path)
        assert re.fullmatch(rf"\.model\.bin\.tmp-{os.getpid()}-[0-9a-f]{{8}}", temp)
        raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_write_leaves_nothing_when_a_new_file_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "new.txt") as handle:
        handle.write("partial")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_rejects_other_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="atomic_write mode must be 'w' or 'wb', got 'a'"):
        with atomic_write(tmp_path / "x", "a"):
            pass


# ---------------------------------------------------------------- resumable appends


def test_appender_drops_a_partial_last_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "trajectories.jsonl"
    whole = line(row())
    half = line(row("Capital of Japan?"))[:57]
    path.write_text(whole + half, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="envs.jsonl"), JsonlAppender(path) as appender:
        assert path.read_text(encoding="utf-8") == whole
        appender.write(EnvRow.model_validate(row("Capital of France?")))
    assert [r.messages[0]["content"] for r in iter_rows(path)] == [
        "What is the capital of Japan?",
        "Capital of France?",
    ]
    assert caplog.messages == [
        f"{path}: dropped a partial last line (57 bytes) left by an interrupted writer"
    ]


def test_appender_drops_a_partial_line_longer_than_one_read_chunk(tmp_path: Path) -> None:
    path = tmp_path / "trajectories.jsonl"
    whole = line(row())
    path.write_text(whole + line(row("x" * 200_000))[:150_000], encoding="utf-8")
    with JsonlAppender(path):
        pass
    assert path.read_text(encoding="utf-8") == whole


def test_appender_drops_a_file_that_is_only_a_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "trajectories.jsonl"
    path.write_text('{"messages": [{"ro', encoding="utf-8")
    with JsonlAppender(path) as appender:
        appender.write({"a": 1})
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n'


def test_appender_completes_a_whole_last_row_that_lacks_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "external.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}', encoding="utf-8")
    with JsonlAppender(path) as appender:
        appender.write({"a": 3})
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n{"a": 2}\n{"a": 3}\n'


def test_appender_writes_complete_flushed_lines(tmp_path: Path) -> None:
    path = tmp_path / "new" / "trajectories.jsonl"
    with JsonlAppender(path) as appender:
        appender.write({"env_id": "a", "turn": 0, "text": "ü"})
        # Visible to another reader before close: a kill now would lose nothing written.
        assert path.read_text(encoding="utf-8") == '{"env_id": "a", "turn": 0, "text": "ü"}\n'
    with JsonlAppender(path) as appender:
        appender.write({"env_id": "a", "turn": 1})
    assert path.read_text(encoding="utf-8").splitlines()[1] == '{"env_id": "a", "turn": 1}'


def test_appender_must_be_open_to_write_and_closes_twice_safely(tmp_path: Path) -> None:
    appender = JsonlAppender(tmp_path / "t.jsonl")
    with pytest.raises(RuntimeError, match="is not open; use it in a `with` block"):
        appender.write({"a": 1})
    with appender:
        with pytest.raises(RuntimeError, match="is already open"):
            appender.__enter__()
    appender.close()


def test_existing_keys_for_resume(tmp_path: Path) -> None:
    path = tmp_path / "trajectories.jsonl"
    path.write_text(
        '{"env_id": "a", "turn": 0}\n\n{"env_id": "a", "turn": 1}\n{"env_id": "b", "turn": 0}\n'
        '{"env_id": "c", "tu',
        encoding="utf-8",
    )
    assert existing_keys(path, lambda r: r["env_id"]) == {"a", "b"}
    assert JsonlAppender.existing_keys(path, lambda r: (r["env_id"], r["turn"])) == {
        ("a", 0),
        ("a", 1),
        ("b", 0),
    }
    assert existing_keys(tmp_path / "absent.jsonl", lambda r: r["env_id"]) == set()


def test_existing_keys_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "trajectories.jsonl"
    path.write_text('{"env_id": "a"}\n{oops\n{"env_id": "b"}\n{"turn": 3}\n', encoding="utf-8")
    with pytest.raises(RowError, match="trajectories.jsonl:2: invalid JSON"):
        existing_keys(path, lambda r: r["env_id"])
    path.write_text('{"env_id": "a"}\n{"turn": 3}\n', encoding="utf-8")
    with pytest.raises(RowError) as info:
        existing_keys(path, lambda r: r["env_id"])
    assert str(info.value) == f"{path}:2: cannot compute the resume key: KeyError('env_id')"
