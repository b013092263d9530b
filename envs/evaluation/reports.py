"""Evaluation results people read: one run's Markdown table, and a comparison across runs with a chart.

Works on any benchmark's `summary.json` that follows the shared layout: top-level `benchmark`,
`tasks`, optional `model`, `episodes` and `failed_episodes`; the metrics as top-level numbers in
[0, 1] named `solve_*`, `pass@k` or `pass^k`; optional breakdowns as `by_<field>` objects mapping
a group's name to its own metrics. A comparison puts the runs side by side (the first is the
base: the base model, then each training iteration) with every metric's change from the base, as
a Markdown table, a JSON file and a PNG bar chart.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.atomic import atomic_write, atomic_write_text

SUMMARY_FILE = "summary.json"
MARKDOWN_FILE = "summary.md"
COMPARISON_MD = "comparison.md"
COMPARISON_JSON = "comparison.json"
COMPARISON_PNG = "comparison.png"

_METRIC = re.compile(r"^(solve_[a-z0-9_]+|pass[@^]\d+)$")
_HEADLINES = ("solve_f1", "pass^1", "pass@1")


def metric_names(summary: dict[str, Any]) -> list[str]:
    """The metric keys of a summary (or of one group in it), in the order it lists them."""
    return [key for key, value in summary.items() if _METRIC.match(key) and isinstance(value, int | float)]


def headline_metric(metrics: Sequence[str]) -> str:
    """The metric a chart's second panel and the title use: Solve-F1, else pass^1, else the first."""
    return next((name for name in _HEADLINES if name in metrics), metrics[0])


def group_fields(summary: dict[str, Any]) -> list[str]:
    """The breakdowns a summary carries (`by_scenario` -> "scenario"), in its order."""
    return [key[3:] for key, value in summary.items() if key.startswith("by_") and isinstance(value, dict)]


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _delta(value: float, base: float) -> str:
    return f"{value - base:+.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def summary_markdown(summary: dict[str, Any]) -> str:
    """One run as Markdown: the overall metrics, each breakdown, and the failed episodes."""
    metrics = metric_names(summary)
    title = f"# {summary['benchmark']} evaluation" + (f": {summary['model']}" if summary.get("model") else "")
    counts = [f"{summary['tasks']} tasks"]
    if "episodes" in summary:
        counts.append(f"{summary['episodes']} episodes")
    failed = summary.get("failed_episodes", 0)
    counts.append(f"{failed} failed (scored 0)")
    lines = [title, "", ", ".join(counts) + ".", ""]
    lines += _table(["metric", "value"], [(name, _fmt(summary[name])) for name in metrics])
    for field in group_fields(summary):
        groups: dict[str, dict[str, Any]] = summary[f"by_{field}"]
        lines += ["", f"## By {field.replace('_', ' ')}", ""]
        header = [field.replace("_", " "), "tasks", "episodes", "failed", *metrics]
        rows = [
            [name, group["tasks"], group["episodes"], group["failed_episodes"]]
            + [_fmt(group[m]) if m in group else "—" for m in metrics]
            for name, group in groups.items()
        ]
        lines += _table(header, rows)
    failures = summary.get("failures") or []
    if failures:
        lines += ["", "## Failed episodes", ""]
        keys = [key for key in failures[0] if key != "error"]
        rows = [[*(failure[key] for key in keys), _one_line(failure["error"])] for failure in failures]
        lines += _table([*keys, "reason"], rows)
        if failed > len(failures):
            lines += ["", f"... and {failed - len(failures)} more (see episodes.jsonl)."]
    return "\n".join(lines) + "\n"


def _one_line(text: str | None) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def write_summary_markdown(out_dir: str | Path) -> Path:
    """Write `summary.md` beside the `summary.json` in `out_dir`."""
    summary = load_summary(out_dir)
    path = Path(out_dir) / MARKDOWN_FILE
    atomic_write_text(path, summary_markdown(summary))
    return path


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no evaluation summary (write one with `ftrl eval --out {run_dir}`)")
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    missing = [key for key in ("benchmark", "tasks") if key not in summary]
    if missing:
        raise ValueError(f"{path}: not an evaluation summary (no {', '.join(missing)})")
    return summary


@dataclass(frozen=True)
class Comparison:
    """Runs side by side; `values[metric][i]` is run i's score, run 0 the base."""

    benchmark: str
    labels: list[str]
    tasks: list[int]
    metrics: list[str]
    values: dict[str, list[float]]
    groups: dict[str, dict[str, list[float | None]]]
    group_metric: str
    group_field: str | None

    def deltas(self, metric: str) -> list[float]:
        base = self.values[metric][0]
        return [value - base for value in self.values[metric]]


def compare(summaries: Sequence[dict[str, Any]], labels: Sequence[str]) -> Comparison:
    """Line runs up: the metrics all of them report, and the headline metric per group of the first
    breakdown (a group a run lacks is `None` there)."""
    if len(summaries) < 2:
        raise ValueError(f"a comparison needs at least two runs, got {len(summaries)}")
    if len(labels) != len(summaries):
        raise ValueError(f"{len(labels)} labels for {len(summaries)} runs")
    if len(set(labels)) != len(labels):
        raise ValueError(f"run labels must differ, got {list(labels)}; name them with --label")
    benchmarks = sorted({summary["benchmark"] for summary in summaries})
    if len(benchmarks) > 1:
        raise ValueError(f"cannot compare runs of different benchmarks ({', '.join(benchmarks)})")
    shared = [name for name in metric_names(summaries[0]) if all(name in s for s in summaries[1:])]
    if not shared:
        raise ValueError("the runs share no metric to compare")
    headline = headline_metric(shared)
    fields = [f for f in group_fields(summaries[0]) if all(f"by_{f}" in s for s in summaries[1:])]
    field = "scenario" if "scenario" in fields else (fields[0] if fields else None)
    groups: dict[str, dict[str, list[float | None]]] = {}
    if field is not None:
        names = sorted({name for summary in summaries for name in summary[f"by_{field}"]})
        groups[field] = {
            name: [summary[f"by_{field}"].get(name, {}).get(headline) for summary in summaries]
            for name in names
        }
    return Comparison(
        benchmark=benchmarks[0],
        labels=list(labels),
        tasks=[summary["tasks"] for summary in summaries],
        metrics=shared,
        values={name: [float(summary[name]) for summary in summaries] for name in shared},
        groups=groups,
        group_metric=headline,
        group_field=field,
    )


def comparison_markdown(comparison: Comparison) -> str:
    """Metrics per run with the change from the base run, then the headline metric per group."""
    labels = comparison.labels
    lines = [f"# {comparison.benchmark} evaluation: {' vs '.join(labels)}", ""]
    lines.append(f"Base: **{labels[0]}**; each later run shows its change from the base in parentheses.")
    if len(set(comparison.tasks)) > 1:
        lines.append(f"Note: the runs evaluated different numbers of tasks ({comparison.tasks}).")
    lines.append("")
    rows = []
    for index, label in enumerate(labels):
        row = [label, comparison.tasks[index]]
        for metric in comparison.metrics:
            value, base = comparison.values[metric][index], comparison.values[metric][0]
            row.append(_fmt(value) if index == 0 else f"{_fmt(value)} ({_delta(value, base)})")
        rows.append(row)
    lines += _table(["run", "tasks", *comparison.metrics], rows)
    field = comparison.group_field
    if field is not None:
        lines += ["", f"## {comparison.group_metric} by {field.replace('_', ' ')}", ""]
        rows = []
        for name, values in comparison.groups[field].items():
            base = values[0]
            cells = [
                "—"
                if value is None
                else (_fmt(value) if index == 0 or base is None else f"{_fmt(value)} ({_delta(value, base)})")
                for index, value in enumerate(values)
            ]
            rows.append([name, *cells])
        lines += _table([field.replace("_", " "), *labels], rows)
    return "\n".join(lines) + "\n"


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "benchmark": comparison.benchmark,
        "runs": comparison.labels,
        "tasks": comparison.tasks,
        "metrics": {
            name: {"values": comparison.values[name], "deltas": comparison.deltas(name)}
            for name in comparison.metrics
        },
        "groups": {
            "field": comparison.group_field,
            "metric": comparison.group_metric,
            "values": comparison.groups.get(comparison.group_field or "", {}),
        },
    }


def comparison_chart(comparison: Comparison, path: str | Path) -> Path:
    """Grouped bars: every metric per run (left) and the headline metric per group (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if comparison.group_field is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.6), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    _bars(
        axes[0][0], comparison.metrics, [comparison.values[m] for m in comparison.metrics], comparison, colors
    )
    axes[0][0].set_title("all metrics")
    if comparison.group_field is not None:
        groups = comparison.groups[comparison.group_field]
        _bars(axes[0][1], list(groups), list(groups.values()), comparison, colors)
        axes[0][1].set_title(f"{comparison.group_metric} by {comparison.group_field.replace('_', ' ')}")
    headline = comparison.group_metric
    if headline in comparison.values:
        base, last = comparison.values[headline][0], comparison.values[headline][-1]
        first, final = comparison.labels[0], comparison.labels[-1]
        change = f"{headline}: {first} {base:.3f} → {final} {last:.3f} ({last - base:+.3f})"
    else:
        change = ""
    fig.suptitle(f"{comparison.benchmark} evaluation — {change}", fontsize=12)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colors[i % len(colors)]) for i in range(len(comparison.labels))
    ]
    fig.legend(
        handles, comparison.labels, loc="lower center", ncol=min(len(comparison.labels), 5), frameon=False
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    target = Path(path)
    with atomic_write(target, "wb") as handle:
        fig.savefig(handle, format="png", dpi=120)
    plt.close(fig)
    return target


def _bars(
    axis: Any, names: list[str], values: list[list[float | None]], comparison: Comparison, colors: Any
) -> None:
    runs = len(comparison.labels)
    width = 0.8 / runs
    for run in range(runs):
        xs = [index + (run - (runs - 1) / 2) * width for index in range(len(names))]
        heights = [row[run] if row[run] is not None else 0.0 for row in values]
        bars = axis.bar(xs, heights, width=width * 0.95, color=colors[run % len(colors)])
        for bar, row in zip(bars, values, strict=True):
            text = "—" if row[run] is None else f"{row[run]:.2f}"
            axis.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels(names, rotation=20, ha="right", fontsize=9)
    axis.set_ylim(0, 1.12)
    axis.set_ylabel("score")
    axis.grid(axis="y", alpha=0.3)
    axis.set_axisbelow(True)


@dataclass(frozen=True)
class ComparisonReport:
    markdown: Path
    json: Path
    chart: Path
    comparison: Comparison


def write_comparison(
    run_dirs: Sequence[str | Path], out_dir: str | Path, labels: Sequence[str] | None = None
) -> ComparisonReport:
    """Compare the evaluation summaries in `run_dirs` (the first is the base); write Markdown, JSON, PNG.

    Labels default to the folders' names (with their parent's where names repeat, as with
    `iter-1/eval` and `iter-2/eval`).
    """
    dirs = [Path(run_dir) for run_dir in run_dirs]
    summaries = [load_summary(run_dir) for run_dir in dirs]
    comparison = compare(summaries, list(labels) if labels else default_labels(dirs))
    out = Path(out_dir)
    markdown = out / COMPARISON_MD
    atomic_write_text(markdown, comparison_markdown(comparison))
    data = out / COMPARISON_JSON
    atomic_write_text(data, json.dumps(comparison_json(comparison), indent=2, ensure_ascii=False) + "\n")
    chart = comparison_chart(comparison, out / COMPARISON_PNG)
    return ComparisonReport(markdown=markdown, json=data, chart=chart, comparison=comparison)


def default_labels(dirs: Sequence[Path]) -> list[str]:
    names = [directory.resolve().name for directory in dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{directory.resolve().parent.name}/{directory.resolve().name}" for directory in dirs]
