"""`ftrl envs` as a user meets it: a real subprocess, its stdout, stderr and exit status."""

import json
import re
import subprocess
import sys
from pathlib import Path

from envs.examples import load_examples
from envs.jsonl import write_rows
from support.verification import WRONG_CAPITAL, example, mixed_file, with_code, write_library_domain

REPO = Path(__file__).resolve().parents[2]


def ftrl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", "envs", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def examples_file(tmp_path: Path) -> Path:
    path = tmp_path / "examples.jsonl"
    write_rows(path, load_examples())
    return path


def test_help_lists_the_commands() -> None:
    result = ftrl("--help")
    assert result.returncode == 0
    for word in ("validate", "show", "check-golden"):
        assert word in result.stdout


def test_validate_a_valid_file(tmp_path: Path) -> None:
    path = examples_file(tmp_path)
    result = ftrl("validate", path, "--workers", "2")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        f"{path}: 3 environments, 3 valid, 0 rejected",
        "  with golden calls: 3; mean oracle solve rate: 1.000",
    ]


def test_validate_json_is_exactly_the_report(tmp_path: Path) -> None:
    path = mixed_file(tmp_path / "mixed.jsonl")
    result = ftrl("validate", path, "--json", "--batch", "3")
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert (data["total"], data["valid"], data["oracle_solve_rate"]) == (9, 4, 0.75)
    assert data["rejected"] == {
        "golden call does not return its sub-answer": 1,
        "schema: answer": 1,
        "schema: line": 1,
        "tool code does not define a tool": 1,
        "unsolved_set names an unknown tool": 1,
    }


def test_validate_summary_names_reasons_and_rows(tmp_path: Path) -> None:
    result = ftrl("validate", mixed_file(tmp_path / "mixed.jsonl"))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"{tmp_path / 'mixed.jsonl'}: 9 environments, 4 valid, 5 rejected",
        "  with golden calls: 4; mean oracle solve rate: 0.750",
    ]
    assert "       1  golden call does not return its sub-answer" in lines
    broken = with_code(example("single-hop"), "get_country_capital", WRONG_CAPITAL)
    assert (
        f"  line 4 ({broken.env_id}): golden call does not return its sub-answer: q1: "
        "get_country_capital(iso_code=\"FR\") returned 'Lyon', which does not contain 'Paris'"
    ) in lines
    assert "  line 10: schema: answer: field 'answer': missing" in lines


def test_validate_a_missing_file_is_one_error_line(tmp_path: Path) -> None:
    result = ftrl("validate", tmp_path / "absent.jsonl")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"error: {tmp_path / 'absent.jsonl'}: no such environment file\n"


def test_show_prints_one_environment(tmp_path: Path) -> None:
    path = examples_file(tmp_path)
    result = ftrl("show", path, "3")
    assert result.returncode == 0, result.stderr
    env = load_examples()[2]
    lines = result.stdout.splitlines()
    assert lines[0] == f"environment {env.env_id} ({path}:3)"
    for line in (
        "  [user] Which currency do people pay with in the country where the Louvre is?",
        "answer: Euro",
        "tools (3):",
        '  get_currency(country: string, format?: "name"|"code")',
        "      Official currency of a country.",
        "  q2 [after q1] Currency of France? -> 'Euro'",
        '      golden call: get_currency(country="France")',
        "  find_landmark_country: 'France'",
        "  toolset extension on get_time_zone: added a distracting tool",
        "code of get_time_zone:",
        "  def get_time_zone(country):",
    ):
        assert line in lines


def test_show_out_of_range_or_bad_rows_is_one_error_line(tmp_path: Path) -> None:
    path = examples_file(tmp_path)
    assert ftrl("show", path, "4").stderr == f"error: {path} has no line 4: its last row is on line 3\n"
    assert ftrl("show", path, "0").stderr == "error: line numbers start at 1, got 0\n"
    mixed = mixed_file(tmp_path / "mixed.jsonl")
    assert ftrl("show", mixed, "6").stderr == f"error: {mixed}:6 is a blank line\n"
    result = ftrl("show", mixed, "7")
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {mixed}:7: invalid JSON: Expecting property name enclosed in double quotes at column 2\n"
    )


def test_check_golden_on_a_small_domain(tmp_path: Path) -> None:
    domain, tasks = write_library_domain(tmp_path)
    result = ftrl("check-golden", domain, tasks)
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "library: 5 tasks, 3 passed, 2 failed",
        "  an agent that does nothing fails 3 of them (the other 2 only read, or change nothing)",
        "  1 tasks have outputs to say; in 1 they appear verbatim in the golden actions' tool replies",
        "  task 3: golden action 0 (borrow) failed: Error: no book 'zz'",
        "  task 4: the agent run's database differs from the golden database",
    ]
    data = json.loads(ftrl("check-golden", domain, tasks, "--json").stdout)
    assert (data["tasks"], data["passed"], data["empty_run_failed"]) == (5, 3, 3)


def test_check_golden_passes_when_every_task_does(tmp_path: Path) -> None:
    domain, tasks = write_library_domain(tmp_path)
    lines = tasks.read_text().splitlines()
    tasks.write_text("\n".join(lines[:3]) + "\n")
    result = ftrl("check-golden", domain, tasks, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["passed"] == 3


def test_check_golden_on_a_broken_folder_is_one_error_line(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("")
    result = ftrl("check-golden", tmp_path / "nowhere", tasks)
    assert (result.returncode, result.stderr) == (2, f"error: {tmp_path / 'nowhere'}: not a domain folder\n")


def test_build_then_validate(tmp_path: Path) -> None:
    out = tmp_path / "built"
    built = ftrl("build", "--generator", "template", "--count", "40", "--seed", "1", "--out", out)
    assert built.returncode == 0, built.stderr
    counts = re.search(
        rf"wrote (\d+) verified environments to {re.escape(str(out))} .* (\d+) left out", built.stdout
    )
    assert counts and int(counts[1]) + int(counts[2]) == 40, built.stdout
    assert "oracle solve rate 1.000" in built.stdout
    for split in ("train", "test"):
        checked = ftrl("validate", out / f"{split}.jsonl", "--json")
        assert checked.returncode == 0, checked.stdout
        summary = json.loads(checked.stdout)
        assert summary["valid"] == summary["total"] > 0 and summary["oracle_solve_rate"] == 1.0


def test_build_refuses_a_bad_profile_value(tmp_path: Path) -> None:
    result = ftrl("build", "--out", tmp_path, "--set", "build.test_fraction=1.5")
    assert result.returncode == 2
    assert "build.test_fraction" in result.stderr and "Traceback" not in result.stderr
