"""What the local SFT and GRPO runs share: input checks, the run manifest, resume, the final folder.

A run folder is resumable because everything in it either is complete or is recognisably not:

- ``run.json`` pins what the run trains (config, model, data digest); a restart with other inputs is
  refused instead of silently continuing someone else's optimizer state.
- ``checkpoints/checkpoint-N`` folders come from transformers' ``Trainer``, which writes them in place,
  file by file, ``trainer_state.json`` last. A folder whose state file is missing or unreadable was
  cut short by a kill; resume skips it and deletes it, since the trainer would otherwise write into
  it again and leave stale files from the broken attempt beside the new ones.
- ``model/`` (the final folder) is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from envs.atomic import atomic_write_text, swap_in_folder
from policies.backends.local import check_model_dir, load_tokenizer
from policies.training.metrics import keep_until

__all__ = [
    "CHECKPOINTS_DIR",
    "FINAL_MODEL_DIR",
    "MANIFEST_FILE",
    "TrainedModel",
    "check_manifest",
    "checked_model_dir",
    "latest_checkpoint",
    "resolve_use_cpu",
    "run_trainer",
    "save_model_folder",
    "torch_threads",
]

CHECKPOINTS_DIR = "checkpoints"
FINAL_MODEL_DIR = "model"
MANIFEST_FILE = "run.json"
TRAINER_STATE = "trainer_state.json"

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checked_model_dir(model_path: str | Path) -> Path:
    """The model folder, after the checks that would otherwise fail minutes into a run.

    Raises ``FileNotFoundError`` naming the path when it does not exist, and ``BackendError`` (one line)
    when it is not a model folder or its tokenizer has no chat template: every prompt is rendered with
    the model's own template.
    """
    path = Path(model_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: model folder does not exist")
    path = check_model_dir(path)
    load_tokenizer(path)
    return path


def check_manifest(output_dir: Path, manifest: Mapping[str, Any]) -> None:
    """Write ``run.json`` on the first start; on a restart, refuse other inputs, naming what changed."""
    path = output_dir / MANIFEST_FILE
    wanted = json.loads(json.dumps(manifest, sort_keys=True, default=str))
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != wanted:
            changed = sorted(
                key for key in wanted.keys() | previous.keys() if previous.get(key) != wanted.get(key)
            )
            raise ValueError(
                f"{output_dir}: holds a run with a different {', '.join(changed)}; rerun with the same "
                "inputs to resume it, or choose another output folder"
            )
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(wanted, indent=2, sort_keys=True) + "\n")


def latest_checkpoint(checkpoints_dir: Path, logger: logging.Logger) -> Path | None:
    """The newest complete ``checkpoint-N`` (its trainer state says step N); broken newer ones are removed."""
    if not checkpoints_dir.is_dir():
        return None
    found = sorted(
        (
            (int(match.group(1)), path)
            for path in checkpoints_dir.iterdir()
            if (match := _CHECKPOINT.match(path.name))
        ),
        reverse=True,
    )
    for step, path in found:
        if _saved_step(path) == step:
            return path
        logger.warning("%s: incomplete checkpoint (cut short by a kill?); deleting it", path)
        shutil.rmtree(path)
    return None


@dataclass(frozen=True)
class TrainedModel:
    """A trainer's outcome: the model, the step it reached, and the checkpoint it resumed from."""

    model: Any
    steps: int
    resumed_from: Path | None


def run_trainer(
    make_trainer: Callable[[], Any],
    *,
    checkpoints_dir: Path,
    metrics_path: Path,
    max_steps: int,
    threads: int | None,
    label: str,
    logger: logging.Logger,
) -> TrainedModel:
    """Train from scratch, resume from the newest whole checkpoint, or take a checkpoint that is done.

    The metrics file is cut back to the checkpoint's step first: the steps after it are trained (and
    logged) again. A checkpoint already at ``max_steps`` is loaded rather than resumed, because
    transformers, resumed at the last step, trains one step more than ``max_steps``.
    """
    resume = latest_checkpoint(checkpoints_dir, logger)
    done = int(resume.name.rsplit("-", 1)[1]) if resume is not None else 0
    keep_until(metrics_path, done)
    if resume is not None and done >= max_steps:
        from transformers import AutoModelForCausalLM

        logger.info("%s already reached step %d: %s", label, done, resume)
        return TrainedModel(AutoModelForCausalLM.from_pretrained(resume, local_files_only=True), done, resume)
    if resume is not None:
        logger.info("%s resumes from %s", label, resume)
    # A pipeline's output stays one line per stage: no progress bars from datasets' preprocessing
    # and, with tqdm off, no dict per logged step from transformers (the metrics callback has them).
    import datasets
    from transformers.trainer_callback import PrinterCallback

    datasets.disable_progress_bars()
    trainer = make_trainer()
    trainer.remove_callback(PrinterCallback)
    with torch_threads(threads):
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    return TrainedModel(trainer.model, trainer.state.global_step, resume)


def _saved_step(checkpoint: Path) -> int | None:
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if isinstance(step, int) else None


def save_model_folder(model: Any, tokenizer: Any, out_dir: Path) -> Path:
    """Save weights (safetensors), config, generation config and tokenizer with its chat template.

    The folder is assembled under a temporary name beside ``out_dir`` and renamed into place; an older
    folder there is renamed aside first and deleted after, so ``out_dir`` is always a whole model.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".saving", dir=out_dir.parent))
    try:
        os.chmod(staging, 0o755)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        swap_in_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


class TrainerRuntime(BaseModel):
    """Where and how a local trainer runs: the settings the SFT warm start and GRPO share."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0)
    use_cpu: bool | None = Field(None, description="Train on the CPU; empty picks the GPU when there is one.")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads for torch; empty keeps its default."
    )
    gradient_checkpointing: bool = Field(
        True,
        description="Recompute activations in the backward pass: saves memory for a real model on a GPU, "
        "costs another forward pass per step; a tiny model on a CPU trains faster without it.",
    )


def common_trainer_args(runtime: TrainerRuntime) -> dict[str, Any]:
    """TrainingArguments both local trainers share: device and precision, seeding, step-based saves,
    activation recomputation (TRL turns it on by default), and no reporting to external services
    (nothing here reaches a network)."""
    import torch

    cpu = resolve_use_cpu(runtime.use_cpu)
    return {
        "save_strategy": "steps",
        "seed": runtime.seed,
        "use_cpu": cpu,
        "gradient_checkpointing": runtime.gradient_checkpointing,
        "bf16": not cpu and torch.cuda.is_bf16_supported(),
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
    }


def resolve_use_cpu(use_cpu: bool | None) -> bool:
    """``None`` means: the GPU when there is one, else the CPU."""
    if use_cpu is not None:
        return use_cpu
    import torch

    return not torch.cuda.is_available()


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads (``None``: leave torch's setting), then restore it.

    Why a knob: on a machine whose cores are busy with other work, two threads that wait on each other
    ran a tiny-model GRPO step in 4-12 s where one thread took 0.4 s (measured on a 2-core machine
    under load); on an idle machine two threads were 1.6x faster than one.
    """
    if count is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
