"""The training stages as the pipeline runs them: the checkpoint a merge reads, and what the UI shows.

`tasks.training` runs the profile's trainer; this module adds what a pipeline stage needs around
it: the folder to merge (the local trainer's final model folder, or VeRL's latest actor checkpoint
`global_step_N/actor`), the metrics files to follow for a progress bar, and the plots and metrics
to link from and draw in the run report. The SFT warm start (`run_warm_start`) is a stage of its
own in the pipeline, on the build's train environments; its result is a model folder, no merge needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from policies.training.local_backend import METRICS_FILE, PLOT_FILE, SFT_DIR
from policies.training.runs import FINAL_MODEL_DIR
from policies.training.sft import sft_warm_start
from tasks.profile import PipelineConfig
from tasks.training import train_locally, train_with_verl

__all__ = [
    "LATEST_VERL_STEP",
    "latest_verl_actor",
    "run_training",
    "run_warm_start",
    "training_metrics",
    "training_plots",
    "training_steps",
    "warm_start_plot",
    "warm_start_steps",
]

#: The file VeRL writes beside its `global_step_N` folders, holding N.
LATEST_VERL_STEP = "latest_checkpointed_iteration.txt"


def run_training(
    config: PipelineConfig, parquet: Path, model: Path, out_dir: Path, logger: logging.Logger
) -> Path:
    """Train `model` on `parquet` into `out_dir` (resuming what is there); return the folder to merge."""
    if config.train.backend == "local":
        return train_locally(config, parquet, out_dir, str(model), logger).final_model_dir
    return latest_verl_actor(train_with_verl(config, parquet, out_dir, str(model), logger))


def run_warm_start(
    config: PipelineConfig, envs: Path, model: Path, out_dir: Path, logger: logging.Logger
) -> Path:
    """The profile's SFT warm start of `model` on the environments in `envs`; return its model folder."""
    sft = config.train.local.sft
    if sft is None:
        raise ValueError("train.local.sft: empty, so the profile has no warm start to run")
    return sft_warm_start(sft, model_path=model, output_dir=out_dir, envs_file=envs, logger=logger)


def latest_verl_actor(checkpoints: Path) -> Path:
    """`global_step_N/actor` for the N VeRL recorded last; an error when it saved none."""
    marker = checkpoints / LATEST_VERL_STEP
    if not marker.is_file():  # a settings problem (save_freq), so not worth a retry
        raise ValueError(
            f"{checkpoints}: VeRL finished without saving a checkpoint (no {LATEST_VERL_STEP}); "
            "set train.verl.save_freq to a number of steps (VeRL then also saves at the last step)"
        )
    step = marker.read_text(encoding="utf-8").strip()
    actor = checkpoints / f"global_step_{step}" / "actor"
    if not actor.is_dir():
        raise RuntimeError(f"{actor}: VeRL recorded step {step} but its actor folder is missing")
    return actor


def training_steps(config: PipelineConfig, out_dir: Path) -> dict[Path, int]:
    """The metrics files a local run appends to while it trains, with the steps each will reach
    (empty for VeRL, whose progress is in its own output)."""
    if config.train.backend != "local":
        return {}
    local = config.train.local
    steps = {out_dir / METRICS_FILE: local.max_steps}
    if local.sft is not None:
        steps[out_dir / SFT_DIR / METRICS_FILE] = local.sft.steps
    return steps


def warm_start_steps(config: PipelineConfig, out_dir: Path) -> dict[Path, int]:
    """The metrics file a warm start appends to while it trains, with the steps it will reach."""
    sft = config.train.local.sft
    return {} if sft is None else {out_dir / METRICS_FILE: sft.steps}


def warm_start_plot(model: Path) -> Path | None:
    """The SFT metric plot a warm start drew beside its model folder (None when it drew none)."""
    plot = model.parent / PLOT_FILE
    return plot if model.name == FINAL_MODEL_DIR and plot.is_file() else None


def training_metrics(checkpoint: Path) -> Path | None:
    """The metrics JSONL a local run wrote beside its final model folder (None for VeRL, or none yet)."""
    path = checkpoint.parent / METRICS_FILE
    return path if checkpoint.name == FINAL_MODEL_DIR and path.is_file() else None


def training_plots(checkpoint: Path) -> dict[str, Path]:
    """The metric plots a local run drew beside its final model folder (VeRL logs to its trackers)."""
    if checkpoint.name != FINAL_MODEL_DIR:
        return {}
    run = checkpoint.parent
    plots = {"SFT warm start": run / SFT_DIR / PLOT_FILE, "GRPO": run / PLOT_FILE}
    return {name: path for name, path in plots.items() if path.is_file()}
