"""The training and merging stages: a profile's `train` and `merge` sections turned into runs.

Training reads and scores turns exactly as sampling did: the parser comes from `model.parser`, the
reward from `reward.kind`, reasoning mode from `generation.enable_thinking`, whichever trainer runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from policies.training.local_backend import LocalTrainResult, train_local
from policies.training.merge import MergeResult, merge_checkpoint
from policies.training.verl_backend import VerlRun, dry_run, launch, verl_command
from tasks.model import resolve_model_folder
from tasks.profile import PipelineConfig

AGENT_LOOP_FILE = "agent_loops.yaml"
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class VerlPlan:
    command: list[str]
    resolved_config: str | None


def verl_run(config: PipelineConfig, train_parquet: Path, out_dir: Path, model: str | None) -> VerlRun:
    from policies.verl_agent_loop import write_agent_loop_config

    model_path = model or config.model.path
    if model_path is None:
        raise ValueError("model.path: VeRL trains a real model; set model.path (or --model) to its folder")
    return VerlRun(
        model_path=Path(model_path),
        train_parquet=Path(train_parquet).resolve(),
        val_parquet=None,
        checkpoint_dir=(out_dir / CHECKPOINTS_DIR).resolve(),
        agent_loop_config=write_agent_loop_config(out_dir / AGENT_LOOP_FILE).resolve(),
        parser=config.model.parser,
        reward_kind=config.reward.kind,
        enable_thinking=config.generation.enable_thinking,
    )


def plan_verl(config: PipelineConfig, train_parquet: Path, out_dir: Path, model: str | None) -> VerlPlan:
    """The `main_ppo` command line, validated by VeRL's own config machinery (CPU, no model needed)."""
    run = verl_run(config, train_parquet, out_dir, model)
    return VerlPlan(
        command=verl_command(config.train.verl, run), resolved_config=dry_run(config.train.verl, run)
    )


def train_with_verl(
    config: PipelineConfig, train_parquet: Path, out_dir: Path, model: str | None, logger: logging.Logger
) -> Path:
    """Launch VeRL (resuming from the newest checkpoint when rerun); return the checkpoint folder."""
    run = verl_run(config, train_parquet, out_dir, model)
    launch(config.train.verl, run, logger=logger)
    return run.checkpoint_dir


def train_locally(
    config: PipelineConfig, train_parquet: Path, out_dir: Path, model: str | None, logger: logging.Logger
) -> LocalTrainResult:
    model_path = Path(model) if model else resolve_model_folder(config)
    return train_local(
        config.train.local,
        model_path=model_path,
        train_parquet=train_parquet,
        output_dir=out_dir,
        reward_kind=config.reward.kind,
        parser=config.model.parser,
        logger=logger,
    )


def merge(
    config: PipelineConfig, checkpoint: Path, out_dir: Path, tokenizer_source: Path | None
) -> MergeResult:
    return merge_checkpoint(checkpoint, out_dir, config.merge, tokenizer_source=tokenizer_source)
