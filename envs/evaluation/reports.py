"""Evaluation results people read: one run's Markdown table, and a comparison across runs with charts.

Works on any benchmark's `summary.json` that follows the shared layout: top-level `benchmark`,
`tasks`, optional `model`, `episodes` and `failed_episodes`; the metrics as top-level numbers in
[0, 1] named `solve_*`, `pass@k` or `pass^k`; optional breakdowns as `by_<field>` objects mapping
a group's name to its own metrics. A comparison puts the runs side by side (the base model, then
each training iteration) with every metric's change from a reference run (the first by default; a
full run measures from its warm-started model) and, per group, the last run's gain over the
reference, as a Markdown table, a JSON file, a PNG bar chart and two line charts (the metrics per
run, the headline metric per group per run).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from envs.atomic import atomic_write_png, atomic_write_text
from envs.construction.stages import SCENARIO_TYPES

SUMMARY_FILE = "summary.json"
MARKDOWN_FILE = "summary.md"
COMPARISON_MD = "comparison.md"
COMPARISON_JSON = "comparison.json"
COMPARISON_PNG = "comparison.png"
METRICS_PNG = "by-model.png"

#: How reports title the paper's metrics; any other metric keeps its key.
METRIC_TITLES = {"solve_precision": "Solve-P", "solve_rate": "Solve-R", "solve_f1": "Solve-F1"}

_METRIC = re.compile(r"^(solve_[a-z0-9_]+|pass[@^]\d+)$")
_HEADLINES = ("solve_f1", "pass^1", "pass@1")


def metric_names(summary: dict[str, Any]) -> list[str]:
    """The metric keys of a summary (or of one group in it), in the order it lists them."""
    return [key for key, value in summary.items() if _METRIC.match(key) and isinstance(value, int | float)]


def metric_title(name: str) -> str:
    """How tables and charts name a metric.

    >>> metric_title("solve_f1"), metric_title("pass^1")
    ('Solve-F1', 'pass^1')
    """
    return METRIC_TITLES.get(name, name)


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
    """Runs side by side; `values[metric][i]` is run i's score. Changes are measured from the run at
    index `reference` (the base model by default; in a full run, the warm-started model)."""

    benchmark: str
    labels: list[str]
    tasks: list[int]
    metrics: list[str]
    values: dict[str, list[float]]
    groups: dict[str, dict[str, list[float | None]]]
    group_metric: str
    group_field: str | None
    reference: int = 0
    group_tasks: dict[str, int | None] = dataclass_field(default_factory=dict)

    @property
    def reference_label(self) -> str:
        return self.labels[self.reference]

    def deltas(self, metric: str) -> list[float]:
        base = self.values[metric][self.reference]
        return [value - base for value in self.values[metric]]

    @property
    def gain_index(self) -> int | None:
        """The run whose per-group gain over the reference the group table shows: the last one
        (None when the last run is the reference itself)."""
        last = len(self.labels) - 1
        return None if last == self.reference else last

    def group_gain(self, values: Sequence[float | None]) -> float | None:
        last = self.gain_index
        if last is None or values[last] is None or values[self.reference] is None:
            return None
        return float(values[last]) - float(values[self.reference])  # type: ignore[arg-type]

    @property
    def gain_title(self) -> str:
        return f"{self.labels[self.gain_index or 0]} − {self.reference_label}"


def compare(
    summaries: Sequence[dict[str, Any]], labels: Sequence[str], *, reference: str | None = None
) -> Comparison:
    """Line runs up: the metrics all of them report, and the headline metric per group of the first
    breakdown (a group a run lacks is `None` there). `reference` names the run changes are measured
    from (default: the first)."""
    if len(summaries) < 2:
        raise ValueError(f"a comparison needs at least two runs, got {len(summaries)}")
    if len(labels) != len(summaries):
        raise ValueError(f"{len(labels)} labels for {len(summaries)} runs")
    if len(set(labels)) != len(labels):
        raise ValueError(f"run labels must differ, got {list(labels)}; name them with --label")
    if reference is not None and reference not in labels:
        raise ValueError(f"the reference run {reference!r} is not one of the runs {list(labels)}")
    ref = list(labels).index(reference) if reference is not None else 0
    benchmarks = sorted({summary["benchmark"] for summary in summaries})
    if len(benchmarks) > 1:
        raise ValueError(f"cannot compare runs of different benchmarks ({', '.join(benchmarks)})")
    shared = [name for name in metric_names(summaries[0]) if all(name in s for s in summaries[1:])]
    if not shared:
        raise ValueError("the runs share no metric to compare")
    headline = headline_metric(shared)
    fields = [f for f in group_fields(summaries[0]) if all(f"by_{f}" in s for s in summaries[1:])]
    field_name = "scenario" if "scenario" in fields else (fields[0] if fields else None)
    groups: dict[str, dict[str, list[float | None]]] = {}
    group_tasks: dict[str, int | None] = {}
    if field_name is not None:
        per_run = [summary[f"by_{field_name}"] for summary in summaries]
        names = _group_order(field_name, {name for groups_of_run in per_run for name in groups_of_run})
        groups[field_name] = {name: [run.get(name, {}).get(headline) for run in per_run] for name in names}
        for name in names:  # the reference's count, else the first run's that has the group
            counts = [run[name].get("tasks") for run in (per_run[ref], *per_run) if name in run]
            group_tasks[name] = counts[0]
    return Comparison(
        benchmark=benchmarks[0],
        labels=list(labels),
        tasks=[summary["tasks"] for summary in summaries],
        metrics=shared,
        values={name: [float(summary[name]) for summary in summaries] for name in shared},
        groups=groups,
        group_metric=headline,
        group_field=field_name,
        reference=ref,
        group_tasks=group_tasks,
    )


def _group_order(field_name: str, names: set[str]) -> list[str]:
    """Scenario types in the order of their difficulty (the paper's order), others after, by name."""
    known = [name for name in SCENARIO_TYPES if name in names] if field_name == "scenario" else []
    return known + sorted(names - set(known))


def comparison_markdown(comparison: Comparison) -> str:
    """Metrics per run with the change from the reference run, then the headline metric per group
    with the last run's gain over the reference (which groups the change comes from)."""
    labels, ref = comparison.labels, comparison.reference
    lines = [f"# {comparison.benchmark} evaluation: {' vs '.join(labels)}", ""]
    lines.append(f"Changes in parentheses are from **{comparison.reference_label}**.")
    if len(set(comparison.tasks)) > 1:
        lines.append(f"Note: the runs evaluated different numbers of tasks ({comparison.tasks}).")
    lines.append("")
    rows = []
    for index, label in enumerate(labels):
        row = [label, comparison.tasks[index]]
        for metric in comparison.metrics:
            value, base = comparison.values[metric][index], comparison.values[metric][ref]
            row.append(_fmt(value) if index == ref else f"{_fmt(value)} ({_delta(value, base)})")
        rows.append(row)
    lines += _table(["run", "tasks", *(metric_title(m) for m in comparison.metrics)], rows)
    field_name = comparison.group_field
    if field_name is not None:
        title = field_name.replace("_", " ")
        lines += ["", f"## {metric_title(comparison.group_metric)} by {title}", ""]
        gain = comparison.gain_index is not None
        rows = []
        for name, values in comparison.groups[field_name].items():
            row = [name, _cell(comparison.group_tasks.get(name)), *(_cell(value) for value in values)]
            if gain:
                change = comparison.group_gain(values)
                row.append("—" if change is None else f"{change:+.4f}")
            rows.append(row)
        header = [title, "tasks", *labels, *([comparison.gain_title] if gain else [])]
        lines += _table(header, rows)
    return "\n".join(lines) + "\n"


def _cell(value: float | int | None) -> str:
    if value is None:
        return "—"
    return str(value) if isinstance(value, int) else _fmt(value)


def comparison_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """The per-run table as rows for a UI table: each metric and its change from the reference."""
    rows = []
    for index, label in enumerate(comparison.labels):
        row: dict[str, Any] = {"model": label, "tasks": comparison.tasks[index]}
        for metric in comparison.metrics:
            row[metric_title(metric)] = round(comparison.values[metric][index], 4)
            row[f"{metric_title(metric)} change"] = round(comparison.deltas(metric)[index], 4)
        rows.append(row)
    return rows


def group_rows(comparison: Comparison) -> list[dict[str, Any]]:
    """The per-group table as rows for a UI table (empty without a breakdown)."""
    field_name = comparison.group_field
    if field_name is None:
        return []
    rows = []
    for name, values in comparison.groups[field_name].items():
        row: dict[str, Any] = {field_name: name, "tasks": comparison.group_tasks.get(name)}
        row.update({label: _rounded(value) for label, value in zip(comparison.labels, values, strict=True)})
        if comparison.gain_index is not None:
            row[comparison.gain_title] = _rounded(comparison.group_gain(values))
        rows.append(row)
    return rows


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "benchmark": comparison.benchmark,
        "runs": comparison.labels,
        "reference": comparison.reference_label,
        "tasks": comparison.tasks,
        "metrics": {
            name: {"values": comparison.values[name], "deltas": comparison.deltas(name)}
            for name in comparison.metrics
        },
        "groups": {
            "field": comparison.group_field,
            "metric": comparison.group_metric,
            "tasks": comparison.group_tasks,
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
    metrics = comparison.metrics
    _bars(
        axes[0][0],
        [metric_title(m) for m in metrics],
        [comparison.values[m] for m in metrics],
        comparison,
        colors,
    )
    axes[0][0].set_title("all metrics")
    if comparison.group_field is not None:
        groups = comparison.groups[comparison.group_field]
        _bars(axes[0][1], list(groups), list(groups.values()), comparison, colors)
        axes[0][1].set_title(_group_title(comparison))
    fig.suptitle(f"{comparison.benchmark} evaluation — {_headline_change(comparison)}", fontsize=12)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colors[i % len(colors)]) for i in range(len(comparison.labels))
    ]
    fig.legend(
        handles, comparison.labels, loc="lower center", ncol=min(len(comparison.labels), 5), frameon=False
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    return atomic_write_png(fig, path, dpi=120)


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


def _group_title(comparison: Comparison) -> str:
    return f"{metric_title(comparison.group_metric)} by {(comparison.group_field or '').replace('_', ' ')}"


def _headline_change(comparison: Comparison) -> str:
    """ "Solve-F1: warm-start 0.300 → iter-2 0.450 (+0.150)": the reference against the last run."""
    headline = comparison.group_metric
    if headline not in comparison.values:
        return ""
    ref, last = comparison.reference, len(comparison.labels) - 1
    before, after = comparison.values[headline][ref], comparison.values[headline][last]
    return (
        f"{metric_title(headline)}: {comparison.labels[ref]} {before:.3f} → "
        f"{comparison.labels[last]} {after:.3f} ({after - before:+.3f})"
    )


def line_metrics(comparison: Comparison) -> list[str]:
    """The metrics the per-run line chart draws: the paper's Solve-P/R/F1 when present, else all."""
    solve = [name for name in METRIC_TITLES if name in comparison.metrics]
    return solve or comparison.metrics


def metrics_line_chart(comparison: Comparison, path: str | Path) -> Path:
    """One line per metric (`line_metrics`) over the runs in order, the reference run marked."""
    series = {metric_title(name): comparison.values[name] for name in line_metrics(comparison)}
    title = f"{comparison.benchmark}: {', '.join(series)} per model\n{_headline_change(comparison)}"
    return line_chart(comparison.labels, series, path, title=title, marked=comparison.reference)


def groups_line_chart(comparison: Comparison, path: str | Path) -> Path:
    """One line per group of the breakdown (its headline metric) over the runs, the reference marked."""
    if comparison.group_field is None:
        raise ValueError("the runs share no breakdown (by_scenario...) to draw")
    series = comparison.groups[comparison.group_field]
    return line_chart(
        comparison.labels,
        series,
        path,
        title=f"{_group_title(comparison)} per model",
        marked=comparison.reference,
    )


def line_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    path: str | Path,
    *,
    title: str,
    marked: int | None = None,
) -> Path:
    """Scores in [0, 1] of each series over runs in order (a missing score leaves a gap), each point
    labelled; the run at index `marked` gets a dashed line: the reference that changes are from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(max(6.0, 1.4 * len(labels) + 3.0), 4.4))
    xs = list(range(len(labels)))
    for index, (name, values) in enumerate(series.items()):
        ys = [math.nan if value is None else float(value) for value in values]
        (line,) = axis.plot(xs, ys, marker="o", label=name)
        for x, y in zip(xs, ys, strict=True):
            if not math.isnan(y):
                axis.annotate(  # labels alternate above and below, so close lines keep them apart
                    f"{y:.2f}",
                    (x, y),
                    xytext=(0, 5 if index % 2 == 0 else -11),
                    textcoords="offset points",
                    ha="center",
                    fontsize=7,
                    color=line.get_color(),
                )
    if marked is not None:
        axis.axvline(marked, color="grey", linestyle="--", linewidth=1)
        axis.annotate("reference", (marked, 1.08), ha="center", fontsize=8, color="grey")
    axis.set_xticks(xs)
    axis.set_xticklabels(labels, rotation=20, ha="right", fontsize=9)
    axis.set_xlim(-0.4, len(labels) - 0.6)
    axis.set_ylim(0, 1.12)
    axis.set_ylabel("score")
    axis.grid(alpha=0.3)
    axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=9)
    axis.set_title(title, fontsize=10)
    fig.tight_layout()
    return atomic_write_png(fig, path, dpi=120)


@dataclass(frozen=True)
class ComparisonReport:
    """The files a comparison wrote; `charts` maps each chart's title to its file, the bars first."""

    markdown: Path
    json: Path
    chart: Path
    charts: dict[str, Path]
    comparison: Comparison


def write_comparison(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    labels: Sequence[str] | None = None,
    *,
    reference: str | None = None,
) -> ComparisonReport:
    """Compare the evaluation summaries in `run_dirs`, changes from the run labelled `reference` (default:
    the first); write Markdown, JSON and the charts (bars, the metrics per run, the groups per run).

    Labels default to the folders' names (with their parent's where names repeat, as with
    `iter-1/eval` and `iter-2/eval`).
    """
    dirs = [Path(run_dir) for run_dir in run_dirs]
    summaries = [load_summary(run_dir) for run_dir in dirs]
    comparison = compare(summaries, list(labels) if labels else default_labels(dirs), reference=reference)
    out = Path(out_dir)
    markdown = out / COMPARISON_MD
    atomic_write_text(markdown, comparison_markdown(comparison))
    data = out / COMPARISON_JSON
    atomic_write_text(data, json.dumps(comparison_json(comparison), indent=2, ensure_ascii=False) + "\n")
    chart = comparison_chart(comparison, out / COMPARISON_PNG)
    charts = {
        "comparison chart": chart,
        f"{', '.join(metric_title(m) for m in line_metrics(comparison))} per model": metrics_line_chart(
            comparison, out / METRICS_PNG
        ),
    }
    if comparison.group_field is not None:
        charts[f"{_group_title(comparison)} per model"] = groups_line_chart(
            comparison, out / f"by-{comparison.group_field.replace('_', '-')}.png"
        )
    return ComparisonReport(markdown=markdown, json=data, chart=chart, charts=charts, comparison=comparison)


def default_labels(dirs: Sequence[Path]) -> list[str]:
    names = [directory.resolve().name for directory in dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{directory.resolve().parent.name}/{directory.resolve().name}" for directory in dirs]
