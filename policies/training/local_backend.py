"""The local training backend (``ftrl train --backend local``): TRL's ``GRPOTrainer`` on the training parquet.

It trains one next turn per parquet row, as the paper does, with this project's reward
(``rewards.trl``, which runs the generated calls in the sandbox and matches the sub-answers). It runs
on a CPU with the tiny model and on one GPU with a real small model; the code path is the same.

A run folder (``output_dir``) holds::

    run.json          what the run trains: config, model, data digest (a restart must match it)
    sft/              the optional warm start (its own checkpoints, metrics and model/)
    checkpoints/      transformers' checkpoint-N folders; a restart resumes from the newest whole one
    metrics.jsonl     one record per logging step (reward mean and std, per-reward means, KL, length)
    metrics.png       the same records drawn
    model/            the trained model (safetensors, tokenizer, chat template), written atomically

From a shell: ``ftrl train --backend local --data runs/x/parquet/train.parquet --out runs/x/grpo``
with the profile's ``train.local`` section (``--set train.local.max_steps=20``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pydantic import ConfigDict, Field, model_validator
from transformers import AutoTokenizer

from envs.atomic import file_sha256
from envs.convert import iter_training_rows
from policies.parsing import get_parser
from policies.training.metrics import GRPO_LAYOUT, MetricsCallback, plot_metrics
from policies.training.runs import (
    CHECKPOINTS_DIR,
    FINAL_MODEL_DIR,
    TrainerRuntime,
    check_manifest,
    checked_model_dir,
    common_trainer_args,
    run_trainer,
    save_model_folder,
)
from policies.training.sft import SFTConfig, envs_from_parquet, sft_warm_start
from rewards.formulas import RewardKind
from rewards.trl import make_reward_function

__all__ = ["LocalTrainConfig", "LocalTrainResult", "train_local"]

_logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "metrics.png"
SFT_DIR = "sft"


class LocalTrainConfig(TrainerRuntime):
    """GRPO with TRL; defaults suit the tiny model on a CPU.

    One optimizer step trains on ``per_device_batch_size * gradient_accumulation_steps`` completions,
    ``num_generations`` per prompt, so that product must be a multiple of ``num_generations``.
    DESIGN.md measured that GRPO from a near-perfect warm start at LR 1e-4 damaged what SFT taught,
    while 1e-5 was safe: keep the learning rate small and the KL term on.
    """

    model_config = ConfigDict(extra="forbid")

    learning_rate: float = Field(1e-5, gt=0, description="Constant learning rate of the policy.")
    num_generations: int = Field(4, ge=2, description="Completions sampled per prompt (GRPO's group).")
    per_device_batch_size: int = Field(8, ge=1, description="Completions per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    max_steps: int = Field(20, ge=1, description="Optimizer steps.")
    num_iterations: int = Field(
        1,
        ge=1,
        description="Optimizer steps per generated batch (GRPO's μ): sampling dominates a step's cost "
        "on a CPU, so reusing each batch for several clipped updates learns more per sample.",
    )
    max_completion_length: int = Field(96, ge=1, description="Longest generated turn, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (the paper uses 1.0).")
    beta: float = Field(0.001, ge=0, description="KL coefficient to the starting model (paper: 0.001).")
    save_steps: int = Field(10, ge=1, description="Steps between checkpoints.")
    save_total_limit: int = Field(2, ge=1, description="Newest checkpoints kept on disk.")
    logging_steps: int = Field(1, ge=1, description="Steps between metric records.")
    sft: SFTConfig | None = Field(
        None, description="Warm start on oracle trajectories first; empty skips it."
    )

    @model_validator(mode="after")
    def _check_groups(self) -> LocalTrainConfig:
        batch = self.per_device_batch_size * self.gradient_accumulation_steps
        if batch % self.num_generations:
            raise ValueError(
                f"per_device_batch_size * gradient_accumulation_steps ({self.per_device_batch_size} * "
                f"{self.gradient_accumulation_steps} = {batch}) must be a multiple of num_generations "
                f"({self.num_generations}): every prompt's group of completions goes into one step"
            )
        return self


@dataclass(frozen=True)
class LocalTrainResult:
    """Where a finished run put things, how far it got, and the checkpoint it resumed from."""

    final_model_dir: Path
    checkpoints_dir: Path
    metrics_path: Path
    plot_path: Path
    steps_done: int
    resumed_from: str | None
    sft_model_dir: Path | None


def train_local(
    config: LocalTrainConfig,
    *,
    model_path: str | Path,
    train_parquet: str | Path,
    output_dir: str | Path,
    reward_kind: RewardKind = "f1",
    parser: str = "qwen2.5",
    logger: logging.Logger | None = None,
) -> LocalTrainResult:
    """Train ``model_path`` with GRPO on ``train_parquet`` into ``output_dir`` (resuming what is there).

    ``reward_kind`` and ``parser`` are not settings of this trainer but of the run: the reward must
    parse and score turns exactly as sampling did (the profile's ``reward.kind``, ``model.parser``).

    Inputs are checked before any model is loaded; each problem raises one line naming the file and
    the reason: ``FileNotFoundError`` (no model folder, no parquet), ``BackendError`` (not a model
    folder, no chat template), ``ValueError`` (a parquet of another schema version, one without rows
    or with test-split rows, an output folder holding a run with other inputs).
    """
    log = logger or _logger
    get_parser(parser)  # an unknown name fails here, listing the known ones
    model_dir = checked_model_dir(model_path)
    parquet = _checked_parquet(Path(train_parquet))
    out = Path(output_dir)
    check_manifest(
        out,
        {
            "stage": "grpo",
            "config": config.model_dump(),
            "reward": {"kind": reward_kind, "parser": parser},
            "model": str(model_dir.resolve()),
            "train_parquet_sha256": file_sha256(parquet),
        },
    )
    sft_model = None
    if config.sft is not None:
        sft_model = sft_warm_start(
            config.sft,
            model_path=model_dir,
            output_dir=out / SFT_DIR,
            env_rows=envs_from_parquet(parquet),
            logger=log,
        )
    start = sft_model or model_dir
    tokenizer = AutoTokenizer.from_pretrained(start, local_files_only=True)
    trained = run_trainer(
        lambda: _grpo_trainer(
            config, start, tokenizer, parquet, out, make_reward_function(reward_kind, parser)
        ),
        checkpoints_dir=out / CHECKPOINTS_DIR,
        metrics_path=out / METRICS_FILE,
        max_steps=config.max_steps,
        threads=config.torch_threads,
        label="GRPO",
        logger=log,
    )
    final = save_model_folder(trained.model, tokenizer, out / FINAL_MODEL_DIR)
    plot = plot_metrics(out / METRICS_FILE, out / PLOT_FILE, GRPO_LAYOUT)
    log.info("GRPO finished at step %d: %s", trained.steps, final)
    return LocalTrainResult(
        final_model_dir=final,
        checkpoints_dir=out / CHECKPOINTS_DIR,
        metrics_path=out / METRICS_FILE,
        plot_path=plot,
        steps_done=trained.steps,
        resumed_from=str(trained.resumed_from) if trained.resumed_from else None,
        sft_model_dir=sft_model,
    )


def _checked_parquet(path: Path) -> Path:
    """A training parquet of this schema version, with rows, none of them of the test split."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such training parquet")
    try:
        splits = set(pq.read_table(path, columns=["split"]).column("split").to_pylist())
    except Exception as error:  # pyarrow raises several types for a file that is not a parquet
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: not a training parquet ({reason})") from None
    if next(iter_training_rows(path, batch_rows=1), None) is None:  # checks the schema version too
        raise ValueError(f"{path}: the training parquet has no rows")
    if "test" in splits:
        raise ValueError(
            f"{path}: holds test-split rows, which are for evaluation only; convert with the train split only"
        )
    return path


def _grpo_trainer(
    config: LocalTrainConfig, model_dir: Path, tokenizer: Any, parquet: Path, out: Path, reward: Any
) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    from envs.convert import load_for_trl

    args = GRPOConfig(
        output_dir=str(out / CHECKPOINTS_DIR),
        learning_rate=config.learning_rate,
        lr_scheduler_type="constant",
        num_generations=config.num_generations,
        per_device_train_batch_size=config.per_device_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_steps=config.max_steps,
        num_iterations=config.num_iterations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        beta=config.beta,
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        **common_trainer_args(config),
    )
    return GRPOTrainer(
        model=str(model_dir),
        reward_funcs=reward,
        args=args,
        train_dataset=load_for_trl(parquet, tokenizer),
        processing_class=tokenizer,
        callbacks=[MetricsCallback(out / METRICS_FILE, GRPO_LAYOUT)],
    )
