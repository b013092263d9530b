"""Evaluation reports: one run's Markdown, the comparison of runs with deltas, and its chart, for hand-made
summaries and for two real checkpoints evaluated with `ftrl eval`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
from typer.testing import CliRunner

from envs.evaluation.reports import (
    compare,
    comparison_json,
    comparison_markdown,
    comparison_rows,
    default_labels,
    group_rows,
    summary_markdown,
    write_comparison,
)
from envs.examples import numbered_variants
from envs.jsonl import write_rows
from flows.cli import app
from support.checkpoints import scaled_copy

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def summary(
    f1: float, rate: float, *, single_f1: float, multi_f1: float | None, failed: int = 0
) -> dict[str, Any]:
    groups = {"single-hop": {"tasks": 2, "episodes": 2, "failed_episodes": failed, "solve_f1": single_f1}}
    if multi_f1 is not None:
        groups["multi-hop"] = {"tasks": 2, "episodes": 2, "failed_episodes": 0, "solve_f1": multi_f1}
    return {
        "benchmark": "ftrl",
        "model": "m",
        "tasks": 4,
        "episodes": 4,
        "failed_episodes": failed,
        "solve_rate": rate,
        "solve_f1": f1,
        "by_scenario": groups,
        "failures": [],
    }


def write_summary(folder: Path, data: dict[str, Any]) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(data))
    return folder


def test_summary_markdown_exact_text() -> None:
    data = {
        "benchmark": "ftrl",
        "model": "base",
        "tasks": 2,
        "episodes": 2,
        "failed_episodes": 1,
        "solve_f1": 0.5,
        "pass@1": 0.5,
        "by_scenario": {
            "single-hop": {"tasks": 2, "episodes": 2, "failed_episodes": 1, "solve_f1": 0.5, "pass@1": 0.5}
        },
        "failures": [{"env_id": "abc", "sample_index": 0, "error": "HTTP 500 | down\n(gave up)"}],
    }
    assert summary_markdown(data) == (
        "# ftrl evaluation: base\n"
        "\n"
        "2 tasks, 2 episodes, 1 failed (scored 0).\n"
        "\n"
        "| metric | value |\n"
        "| --- | --- |\n"
        "| solve_f1 | 0.5000 |\n"
        "| pass@1 | 0.5000 |\n"
        "\n"
        "## By scenario\n"
        "\n"
        "| scenario | tasks | episodes | failed | solve_f1 | pass@1 |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        "| single-hop | 2 | 2 | 1 | 0.5000 | 0.5000 |\n"
        "\n"
        "## Failed episodes\n"
        "\n"
        "| env_id | sample_index | reason |\n"
        "| --- | --- | --- |\n"
        "| abc | 0 | HTTP 500 \\| down (gave up) |\n"
    )


def test_tau_bench_summary_renders_without_groups() -> None:
    data = {"benchmark": "tau-bench", "domain": "airline", "tasks": 3, "trials": 2, "episodes": 6}
    data |= {"pass^1": 0.5, "pass^2": 1 / 3, "failed_episodes": 0, "failures": []}
    text = summary_markdown(data)
    assert text.startswith("# tau-bench evaluation\n\n3 tasks, 6 episodes, 0 failed (scored 0).\n")
    assert "| pass^1 | 0.5000 |\n| pass^2 | 0.3333 |\n" in text and "## " not in text


def test_comparison_shows_each_metric_and_group_change_from_the_base() -> None:
    base = summary(0.25, 0.5, single_f1=0.5, multi_f1=0.0)
    trained = summary(0.625, 0.75, single_f1=1.0, multi_f1=None)
    trained["solve_precision"] = 1.0  # only one run reports it: left out
    comparison = compare([base, trained], ["base", "iter-1"])
    assert comparison.metrics == ["solve_rate", "solve_f1"]
    assert comparison.deltas("solve_f1") == [0.0, 0.375]
    assert comparison_markdown(comparison) == (
        "# ftrl evaluation: base vs iter-1\n"
        "\n"
        "Changes in parentheses are from **base**.\n"
        "\n"
        "| run | tasks | Solve-R | Solve-F1 |\n"
        "| --- | --- | --- | --- |\n"
        "| base | 4 | 0.5000 | 0.2500 |\n"
        "| iter-1 | 4 | 0.7500 (+0.2500) | 0.6250 (+0.3750) |\n"
        "\n"
        "## Solve-F1 by scenario\n"
        "\n"
        "| scenario | tasks | base | iter-1 | iter-1 − base |\n"
        "| --- | --- | --- | --- | --- |\n"
        "| single-hop | 2 | 0.5000 | 1.0000 | +0.5000 |\n"
        "| multi-hop | 2 | 0.0000 | — | — |\n"
    )
    assert comparison_json(comparison) == {
        "benchmark": "ftrl",
        "runs": ["base", "iter-1"],
        "reference": "base",
        "tasks": [4, 4],
        "metrics": {
            "solve_rate": {"values": [0.5, 0.75], "deltas": [0.0, 0.25]},
            "solve_f1": {"values": [0.25, 0.625], "deltas": [0.0, 0.375]},
        },
        "groups": {
            "field": "scenario",
            "metric": "solve_f1",
            "tasks": {"single-hop": 2, "multi-hop": 2},
            "values": {"single-hop": [0.5, 1.0], "multi-hop": [0.0, None]},
        },
    }


def test_changes_are_measured_from_the_reference_run_and_groups_show_the_last_gain() -> None:
    """base → warm-start → iter-1 → iter-2, measured from the warm start: the table shows each run's
    change from it, the scenario table where iter-2's gain over it comes from."""
    runs = [
        summary(0.0, 0.0, single_f1=0.0, multi_f1=0.0),
        summary(0.3, 0.4, single_f1=0.6, multi_f1=0.0),
        summary(0.35, 0.45, single_f1=0.6, multi_f1=0.1),
        summary(0.5, 0.5, single_f1=0.75, multi_f1=0.25),
    ]
    labels = ["base", "warm-start", "iter-1", "iter-2"]
    comparison = compare(runs, labels, reference="warm-start")
    assert comparison.reference == 1 and comparison.reference_label == "warm-start"
    assert comparison.deltas("solve_f1") == pytest.approx([-0.3, 0.0, 0.05, 0.2])
    text = comparison_markdown(comparison)
    assert "Changes in parentheses are from **warm-start**.\n" in text
    assert "| base | 4 | 0.0000 (-0.4000) | 0.0000 (-0.3000) |\n" in text
    assert "| warm-start | 4 | 0.4000 | 0.3000 |\n" in text
    assert "| iter-2 | 4 | 0.5000 (+0.1000) | 0.5000 (+0.2000) |\n" in text
    assert text.endswith(
        "| scenario | tasks | base | warm-start | iter-1 | iter-2 | iter-2 − warm-start |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
        "| single-hop | 2 | 0.0000 | 0.6000 | 0.6000 | 0.7500 | +0.1500 |\n"
        "| multi-hop | 2 | 0.0000 | 0.0000 | 0.1000 | 0.2500 | +0.2500 |\n"
    )
    assert comparison_rows(comparison)[0] == {
        "model": "base",
        "tasks": 4,
        "Solve-R": 0.0,
        "Solve-R change": -0.4,
        "Solve-F1": 0.0,
        "Solve-F1 change": -0.3,
    }
    assert group_rows(comparison)[1] == {
        "scenario": "multi-hop",
        "tasks": 2,
        "base": 0.0,
        "warm-start": 0.0,
        "iter-1": 0.1,
        "iter-2": 0.25,
        "iter-2 − warm-start": 0.25,
    }
    with pytest.raises(
        ValueError, match=re.escape("the reference run 'sft' is not one of the runs ['base', 'warm-start'")
    ):
        compare(runs, labels, reference="sft")
    last_is_reference = compare(runs[:2], labels[:2], reference="warm-start")
    assert last_is_reference.gain_index is None
    assert "| scenario | tasks | base | warm-start |\n" in comparison_markdown(last_is_reference)


def test_comparison_refuses_what_cannot_be_compared(tmp_path: Path) -> None:
    ftrl = summary(0.1, 0.1, single_f1=0.1, multi_f1=0.1)
    tau = {"benchmark": "tau-bench", "tasks": 4, "pass^1": 0.5}
    with pytest.raises(
        ValueError, match=re.escape("cannot compare runs of different benchmarks (ftrl, tau-bench)")
    ):
        compare([ftrl, tau], ["a", "b"])
    with pytest.raises(ValueError, match=re.escape("a comparison needs at least two runs, got 1")):
        compare([ftrl], ["a"])
    with pytest.raises(
        ValueError, match=re.escape("run labels must differ, got ['a', 'a']; name them with --label")
    ):
        compare([ftrl, ftrl], ["a", "a"])
    missing = tmp_path / "nothing"
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"{missing / 'summary.json'}: no evaluation summary")
    ):
        write_comparison([missing, missing], tmp_path / "out")
    not_summary = write_summary(tmp_path / "other", {"hello": 1})
    with pytest.raises(ValueError, match=re.escape("not an evaluation summary (no benchmark, tasks)")):
        write_comparison([not_summary, not_summary], tmp_path / "out")


def test_default_labels_add_the_parent_where_names_repeat(tmp_path: Path) -> None:
    assert default_labels([tmp_path / "base", tmp_path / "iter-1"]) == ["base", "iter-1"]
    assert default_labels([tmp_path / "a" / "eval", tmp_path / "b" / "eval"]) == ["a/eval", "b/eval"]


def check_png(path: Path, width: int, height: int) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width)
    assert np.unique(image.reshape(-1, image.shape[-1]), axis=0).shape[0] > 20  # bars, text, not a blank


def test_two_checkpoints_evaluated_and_compared(tmp_path: Path, tiny_compact_model_dir: Path) -> None:
    trained = scaled_copy(
        tiny_compact_model_dir, tmp_path / "iter-1", {"model.layers.1.mlp.down_proj.weight": 1.5}
    )
    data = tmp_path / "test.jsonl"
    write_rows(data, [row.model_copy(update={"split": "test"}) for row in numbered_variants(3)])
    for model, out in ((tiny_compact_model_dir, tmp_path / "base"), (trained, tmp_path / "iter-1-eval")):
        args = ["eval", "--data", str(data), "--model", str(model), "--out", str(out), "--max-turns", "2"]
        args += ["--no-progress", "--set", "generation.max_new_tokens=16", "--set", "sandbox.workers=1"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output

    report_dir = tmp_path / "report"
    args = [
        "analyze",
        "compare",
        str(tmp_path / "base"),
        str(tmp_path / "iter-1-eval"),
        "--out",
        str(report_dir),
    ]
    result = runner.invoke(app, [*args, "--label", "base", "--label", "iter-1"])
    assert result.exit_code == 0, result.output
    summaries = [
        json.loads((tmp_path / name / "summary.json").read_text()) for name in ("base", "iter-1-eval")
    ]
    f1 = [s["solve_f1"] for s in summaries]
    assert f"solve_f1: base {f1[0]:.4f}, iter-1 {f1[1]:.4f}" in result.stdout
    markdown = (report_dir / "comparison.md").read_text()
    assert "| run | tasks | Solve-P | Solve-R | Solve-F1 | pass@1 |" in markdown
    assert f"| iter-1 | 3 | {summaries[1]['solve_precision']:.4f} (" in markdown
    assert f"{f1[1]:.4f} ({f1[1] - f1[0]:+.4f})" in markdown
    assert "## Solve-F1 by scenario" in markdown
    assert json.loads((report_dir / "comparison.json").read_text())["runs"] == ["base", "iter-1"]
    check_png(report_dir / "comparison.png", width=1560, height=552)


def test_comparison_chart_of_hand_made_runs(tmp_path: Path) -> None:
    runs = [
        write_summary(tmp_path / "base", summary(0.26, 0.3, single_f1=0.4, multi_f1=0.1)),
        write_summary(tmp_path / "iter-1", summary(0.41, 0.45, single_f1=0.6, multi_f1=0.2)),
        write_summary(tmp_path / "iter-2", summary(0.47, 0.5, single_f1=0.7, multi_f1=0.3)),
    ]
    report = write_comparison(runs, tmp_path / "report")
    assert report.comparison.labels == ["base", "iter-1", "iter-2"]
    check_png(report.chart, width=1560, height=552)
    assert report.charts == {
        "comparison chart": report.chart,
        "Solve-R, Solve-F1 per model": tmp_path / "report" / "by-model.png",
        "Solve-F1 by scenario per model": tmp_path / "report" / "by-scenario.png",
    }
    check_png(tmp_path / "report" / "by-model.png", width=864, height=528)
    check_png(tmp_path / "report" / "by-scenario.png", width=864, height=528)
    assert "| iter-2 | 4 | 0.5000 (+0.2000) | 0.4700 (+0.2100) |" in report.markdown.read_text()
