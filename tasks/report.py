"""The run report: every evaluation side by side (the first is the base), with links to the plots.

`report.md` holds the comparison table (`envs.evaluation.reports`) and links to the comparison chart
and to each training iteration's metric plots; `comparison.{md,json,png}` lie beside it. With a
single evaluation there is nothing to compare, and the report shows that evaluation's summary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from envs.atomic import atomic_write_text
from envs.evaluation.reports import load_summary, summary_markdown, write_comparison

__all__ = ["REPORT_FILE", "RunReport", "report_markdown", "write_run_report"]

REPORT_FILE = "report.md"


@dataclass(frozen=True)
class RunReport:
    """The report file, its text before the links, and every plot it links (the chart first)."""

    path: Path
    body: str
    plots: dict[str, Path]


def write_run_report(
    evals: Sequence[Path], labels: Sequence[str], out_dir: Path, *, plots: Mapping[str, Path] | None = None
) -> RunReport:
    """Write `report.md` (and, for two evaluations or more, the comparison files) into `out_dir`."""
    if not evals:
        raise ValueError("a run report needs at least one evaluation")
    if len(evals) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(evals)} evaluations")
    out_dir.mkdir(parents=True, exist_ok=True)
    linked = dict(plots or {})
    if len(evals) > 1:
        comparison = write_comparison(evals, out_dir, labels)
        body = comparison.markdown.read_text(encoding="utf-8")
        linked = {"comparison chart": comparison.chart, **linked}
    else:
        body = summary_markdown(load_summary(evals[0]))
    path = out_dir / REPORT_FILE
    atomic_write_text(path, report_markdown(body, linked, base=out_dir))
    return RunReport(path=path, body=body, plots=linked)


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
