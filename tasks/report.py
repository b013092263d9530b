"""The run report: every evaluation side by side, what training did, and links to every chart.

`report.md` holds, for two evaluations or more (`envs.evaluation.reports`):

- Solve-P/R/F1 per model (base, warm-start, iter-1..N), each with its change from the reference
  run: the warm-started model when the run has one (so the changes show what RL added), else the
  first evaluation;
- Solve-F1 per scenario type per model, with the last iteration's gain over the reference (where
  the gain comes from);
- the training reward per GRPO iteration (steps, first, last and mean of the per-step reward);

then links to the charts beside it (the comparison bars, the metrics per model, Solve-F1 per
scenario type per model, the reward per global step across iterations) and to each training stage's
own metric plots. With a single evaluation there is nothing to compare, and the report shows that
evaluation's summary. The same Markdown, with absolute links, and the same tables go to the
Prefect UI as artifacts (`tasks.stage_tasks.report`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs.atomic import atomic_write_text
from envs.evaluation.reports import (
    comparison_rows,
    group_rows,
    load_summary,
    summary_markdown,
    write_comparison,
)
from policies.training.metrics import GRPO_LAYOUT, plot_across_runs, read_metrics

__all__ = ["REPORT_FILE", "REWARD_PNG", "RunReport", "report_markdown", "reward_rows", "write_run_report"]

REPORT_FILE = "report.md"
REWARD_PNG = "training-reward.png"
#: The reward panel of the GRPO metrics (`reward_mean` ± `reward_std` per step).
REWARD_PANEL = GRPO_LAYOUT.panels[0]


@dataclass(frozen=True)
class RunReport:
    """The report file, its text before the links, every chart and plot it links (the charts first),
    and its tables as rows for a UI (`results`, `scenarios`, `training reward`; only those it has)."""

    path: Path
    body: str
    plots: dict[str, Path]
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def write_run_report(
    evals: Sequence[Path],
    labels: Sequence[str],
    out_dir: Path,
    *,
    reference: str | None = None,
    training: Mapping[str, Path] | None = None,
    plots: Mapping[str, Path] | None = None,
) -> RunReport:
    """Write `report.md` (and, for two evaluations or more, the comparison files and charts) into `out_dir`.

    `reference` labels the evaluation changes are measured from (default: the first); `training`
    maps each GRPO iteration's name to its metrics JSONL, in order (their reward is tabled and drawn);
    `plots` are further files to link.
    """
    if not evals:
        raise ValueError("a run report needs at least one evaluation")
    if len(evals) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(evals)} evaluations")
    out_dir.mkdir(parents=True, exist_ok=True)
    linked: dict[str, Path] = {}
    tables: dict[str, list[dict[str, Any]]] = {}
    if len(evals) > 1:
        written = write_comparison(evals, out_dir, labels, reference=reference)
        body = written.markdown.read_text(encoding="utf-8")
        linked.update(written.charts)
        tables["results"] = comparison_rows(written.comparison)
        if written.comparison.group_field is not None:
            tables["scenarios"] = group_rows(written.comparison)
    else:
        body = summary_markdown(load_summary(evals[0]))
    rewards = reward_rows(training or {})
    if rewards:
        body = body.rstrip() + "\n\n" + _reward_markdown(rewards)
        tables["training reward"] = rewards
        chart = plot_across_runs(dict(training or {}), out_dir / REWARD_PNG, REWARD_PANEL)
        if chart is not None:
            linked[f"training {REWARD_PANEL.title} per step"] = chart
    linked.update(plots or {})
    path = out_dir / REPORT_FILE
    atomic_write_text(path, report_markdown(body, linked, base=out_dir))
    return RunReport(path=path, body=body, plots=linked, tables=tables)


def reward_rows(training: Mapping[str, Path]) -> list[dict[str, Any]]:
    """Per iteration with logged rewards: its last step, and the reward at its first and last logged
    step and its mean over the logged steps (rounded to 4 places)."""
    rows = []
    for name, path in training.items():
        records = [r for r in read_metrics(path) if r.get(REWARD_PANEL.key) is not None]
        if not records:
            continue
        rewards = [float(r[REWARD_PANEL.key]) for r in records]
        rows.append(
            {
                "iteration": name,
                "steps": max(r["step"] for r in records),
                "first": round(rewards[0], 4),
                "last": round(rewards[-1], 4),
                "mean": round(sum(rewards) / len(rewards), 4),
            }
        )
    return rows


def _reward_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "## Training reward (GRPO)",
        "",
        "The per-step reward mean over each iteration's logged steps.",
        "",
        "| iteration | steps | first | last | mean |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['iteration']} | {r['steps']} | {r['first']:.4f} | {r['last']:.4f} | {r['mean']:.4f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def report_markdown(body: str, plots: Mapping[str, Path], *, base: Path | None = None) -> str:
    """`body` followed by links to `plots`: relative to `base` when given (a file beside them), else
    absolute (a Prefect artifact, read far from the run directory)."""
    lines = [body.rstrip(), ""]
    if plots:
        lines += ["## Plots", ""]
        for name, plot in plots.items():
            target = os.path.relpath(plot, base) if base is not None else str(Path(plot).resolve())
            lines.append(f"- [{name}]({Path(target).as_posix()})")
        lines.append("")
    return "\n".join(lines)
