"""Per-step training metrics: one JSON line per logging step, and a PNG plot drawn from those lines.

The JSONL file is the record a user (or a dashboard) reads while a run is going, and it must survive a
kill: each line is appended with one write and flushed (``envs.jsonl.JsonlAppender``), so a kill loses
at most the line being written. On resume the file is cut back to the checkpoint's step
(``keep_until``), because the steps after it are trained again and must not appear twice.

Names are this project's, not the trainer's (``METRIC_KEYS`` maps them): TRL's keys change between
versions, and a plot or a test should not.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from envs.atomic import atomic_write_png, atomic_write_text
from envs.jsonl import JsonlAppender

__all__ = [
    "GRPO_LAYOUT",
    "SFT_LAYOUT",
    "MetricsCallback",
    "MetricsLayout",
    "Panel",
    "keep_until",
    "metrics_record",
    "plot_across_runs",
    "plot_metrics",
    "read_metrics",
]

#: Our record key -> the key TRL 1.16 / transformers log it under.
METRIC_KEYS: dict[str, str] = {
    "loss": "loss",
    "learning_rate": "learning_rate",
    "grad_norm": "grad_norm",
    "reward_mean": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "completion_length": "completions/mean_length",
    "entropy": "entropy",
    "token_accuracy": "mean_token_accuracy",
}
_REWARD_COMPONENT = re.compile(r"^rewards/(.+)/mean$")


@dataclass(frozen=True)
class Panel:
    """One plot: ``key`` against step, with a ± ``spread`` band when given."""

    title: str
    key: str
    spread: str | None = None


@dataclass(frozen=True)
class MetricsLayout:
    """Which metrics a trainer's records carry and how they are drawn."""

    keys: tuple[str, ...]
    panels: tuple[Panel, ...]
    reward_components: bool = False


GRPO_LAYOUT = MetricsLayout(
    keys=(
        "reward_mean",
        "reward_std",
        "kl",
        "completion_length",
        "entropy",
        "loss",
        "learning_rate",
        "grad_norm",
    ),
    panels=(
        Panel("reward (mean ± std)", "reward_mean", "reward_std"),
        Panel("KL to the reference", "kl"),
        Panel("response length (tokens)", "completion_length"),
    ),
    reward_components=True,
)

SFT_LAYOUT = MetricsLayout(
    keys=("loss", "token_accuracy", "entropy", "learning_rate", "grad_norm"),
    panels=(
        Panel("loss", "loss"),
        Panel("token accuracy", "token_accuracy"),
        Panel("learning rate", "learning_rate"),
    ),
)


def metrics_record(step: int, logs: Mapping[str, Any], layout: MetricsLayout) -> dict[str, Any]:
    """The JSONL record of one logging step; a metric the trainer did not log is ``null``.

    Non-finite numbers become ``null`` too: JSON has no NaN, and Python would write one anyway.

    >>> metrics_record(3, {"reward": 0.5, "rewards/solve_f1/mean": 0.5, "kl": float("nan")},
    ...                MetricsLayout(("reward_mean", "kl"), (), reward_components=True))
    {'step': 3, 'reward_mean': 0.5, 'kl': None, 'reward_components': {'solve_f1': 0.5}}
    """
    record: dict[str, Any] = {"step": step}
    record.update({key: _number(logs.get(METRIC_KEYS[key])) for key in layout.keys})
    if layout.reward_components:
        record["reward_components"] = {
            match.group(1): _number(value)
            for name, value in logs.items()
            if (match := _REWARD_COMPONENT.match(name))
        }
    return record


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


class MetricsCallback(TrainerCallback):
    """Appends a record to ``path`` at every training log (not the end-of-run summary, which has no
    ``loss``: it would repeat the last step)."""

    def __init__(self, path: Path, layout: MetricsLayout) -> None:
        self.path = path
        self.layout = layout

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        with JsonlAppender(self.path) as out:
            out.write(metrics_record(state.global_step, logs, self.layout))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The complete records of ``path`` (a last line cut short by a kill is left out)."""
    if not path.is_file():
        return []
    records = []
    with path.open("rb") as handle:
        for line in handle:
            if line.endswith(b"\n"):
                records.append(json.loads(line))
    return records


def keep_until(path: Path, step: int) -> None:
    """Drop the records after ``step``: training resumes there and will log those steps again."""
    if not path.is_file():
        return
    kept = [record for record in read_metrics(path) if record["step"] <= step]
    atomic_write_text(path, "".join(json.dumps(record) + "\n" for record in kept))


def plot_metrics(metrics_path: Path, plot_path: Path, layout: MetricsLayout) -> Path:
    """Draw each panel of ``layout`` against step into one PNG, written atomically.

    A metric that was never logged (KL when its coefficient is 0) gets an empty panel that says so,
    so plots of different runs keep one shape.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on a training node; must precede pyplot's import
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    figure, axes = plt.subplots(1, len(layout.panels), figsize=(4.5 * len(layout.panels), 3.4), squeeze=False)
    for axis, panel in zip(axes[0], layout.panels, strict=True):
        points = [(r["step"], r[panel.key], r.get(panel.spread) if panel.spread else None) for r in records]
        points = [point for point in points if point[1] is not None]
        axis.set_title(panel.title)
        axis.set_xlabel("step")
        if not points:
            axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
            continue
        steps = [point[0] for point in points]
        values = [point[1] for point in points]
        axis.plot(steps, values, marker="o" if len(points) < 30 else None)
        if panel.spread is not None:
            spread = [point[2] or 0.0 for point in points]
            low = [v - s for v, s in zip(values, spread, strict=True)]
            high = [v + s for v, s in zip(values, spread, strict=True)]
            axis.fill_between(steps, low, high, alpha=0.25)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    return atomic_write_png(figure, plot_path, dpi=100)


def plot_across_runs(runs: Mapping[str, Path], plot_path: Path, panel: Panel) -> Path | None:
    """Draw ``panel`` of consecutive runs (the iterations of a pipeline) on one global step axis.

    Each run's steps continue where the previous run's last record stopped; a dashed line marks
    where a run starts (half a step before its first), labelled with its name (the mapping's key).
    Returns None, drawing nothing, when no run logged the panel's metric.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axis = plt.subplots(figsize=(8.0, 3.8))
    offset, drawn = 0, False
    for index, (name, path) in enumerate(runs.items()):
        records = read_metrics(path)
        points = [
            (offset + r["step"], r[panel.key], r.get(panel.spread) if panel.spread else None) for r in records
        ]
        points = [point for point in points if point[1] is not None]
        if index > 0:
            axis.axvline(offset + 0.5, color="grey", linestyle="--", linewidth=1)
        axis.annotate(
            name,
            (offset + 0.5, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color="grey",
        )
        if points:
            drawn = True
            steps = [point[0] for point in points]
            values = [point[1] for point in points]
            (line,) = axis.plot(steps, values, marker="o" if len(points) < 30 else None, color="C0")
            if panel.spread is not None:
                spread = [point[2] or 0.0 for point in points]
                low = [v - w for v, w in zip(values, spread, strict=True)]
                high = [v + w for v, w in zip(values, spread, strict=True)]
                axis.fill_between(steps, low, high, alpha=0.2, color=line.get_color())
        offset += max((record["step"] for record in records), default=0)
    if not drawn:
        plt.close(figure)
        return None
    axis.set_title(f"{panel.title} per step, iterations one after another")
    axis.set_xlabel("global step")
    axis.set_xlim(left=0.5)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return atomic_write_png(figure, plot_path, dpi=100)
