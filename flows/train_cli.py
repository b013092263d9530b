"""`ftrl train` and `ftrl merge`: the training and merging stages from the command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from flows.errors import reports_user_errors
from flows.options import ProfileOption, SetOption


class _Echo(logging.Handler):
    """Stream a trainer's log lines to the terminal as they come."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(self.format(record))


def _logger() -> logging.Logger:
    logger = logging.getLogger("ftrl.train")
    if not logger.handlers:
        logger.addHandler(_Echo())
        logger.setLevel(logging.INFO)
    return logger


@reports_user_errors
def train_command(
    data: Annotated[Path, typer.Option("--data", help="Training parquet written by `ftrl convert`.")],
    out: Annotated[
        Path, typer.Option("--out", help="Run folder for checkpoints, metrics and the final model.")
    ],
    backend: Annotated[
        str | None, typer.Option(help="local (TRL GRPOTrainer, CPU or one GPU) or verl (GPU cluster).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model folder to train; default: the profile's.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="verl: print the command and validate it with verl, on CPU.")
    ] = False,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Train a model with RL against the verifiable reward, one next turn per training row.

    **local** runs TRL's GRPOTrainer with the project's reward (an optional SFT warm start on oracle
    trajectories first), writes checkpoints, metrics.jsonl and metrics.png, and resumes from its newest
    checkpoint when rerun. **verl** turns the profile's `train.verl` section into VeRL's `main_ppo`
    command, streams its log and resumes from VeRL's newest checkpoint when rerun.
    """
    from flows.cli import resolve_profile
    from tasks.training import plan_verl, train_locally, train_with_verl

    overrides = [f"train.backend={backend}"] if backend else []
    config = resolve_profile(profile, [*(set_ or []), *overrides])
    out.mkdir(parents=True, exist_ok=True)
    if config.train.backend == "verl":
        if dry_run:
            plan = plan_verl(config, data, out, model)
            typer.echo(" \\\n    ".join(plan.command))
            typer.echo("validated with verl's own config machinery (--cfg job): OK")
            return
        checkpoints = train_with_verl(config, data, out, model, _logger())
        typer.echo(f"VeRL finished; checkpoints in {checkpoints} (merge one with `ftrl merge`)")
        return
    if dry_run:
        raise ValueError("--dry-run applies to the verl backend")
    result = train_locally(config, data, out, model, _logger())
    resumed = f", resumed from {result.resumed_from}" if result.resumed_from else ""
    typer.echo(
        f"trained {result.steps_done} steps{resumed}; model -> {result.final_model_dir}, "
        f"metrics -> {result.metrics_path}, plot -> {result.plot_path}"
    )


@reports_user_errors
def merge_command(
    checkpoint: Annotated[
        Path, typer.Argument(help="VeRL global_step_N/actor, or a local checkpoint-N/model.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Hugging Face model folder to write.")],
    dtype: Annotated[
        str | None, typer.Option(help="auto, bfloat16, float16 or float32; default: profile.")
    ] = None,
    tokenizer_source: Annotated[
        Path | None,
        typer.Option(help="Folder to take the tokenizer and chat template from (the base model)."),
    ] = None,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Turn a training checkpoint into a model folder (safetensors, config, tokenizer, chat template).

    VeRL FSDP checkpoints go through VeRL's own model merger (which stores bfloat16 precision);
    local checkpoints are loaded and saved again in the chosen dtype.
    """
    from flows.cli import resolve_profile
    from tasks.training import merge

    config = resolve_profile(profile, [*(set_ or []), *([f"merge.dtype={dtype}"] if dtype else [])])
    result = merge(config, checkpoint, out, tokenizer_source)
    typer.echo(
        f"merged a {result.backend} checkpoint ({result.parameters:,} parameters, {result.dtype}) "
        f"into {result.out_dir}"
    )
