"""Merging: a training checkpoint becomes a Hugging Face model folder that every backend loads.

Two kinds of checkpoint, told apart by their files:

- **fsdp**: a VeRL FSDP actor checkpoint, ``global_step_N/actor`` (or ``global_step_N``, which holds
  it): ``fsdp_config.json`` (FSDP version, world size), one ``model_world_size_W_rank_R.pt`` shard per
  rank, and ``huggingface/`` with the config and tokenizer. It is merged by VeRL's own
  ``FSDPModelMerger`` (what ``python -m verl.model_merger merge --backend fsdp`` runs), in process.
- **local**: a folder ``from_pretrained`` reads: a saved model, or a transformers/TRL
  ``checkpoint-N`` (optimizer and trainer state beside the weights are ignored). It is loaded and
  saved again with ``save_pretrained``.

Either way the result holds safetensors weights, ``config.json``, ``generation_config.json``, the
tokenizer and its chat template, and ``ftrl_merge.json`` (where it came from). It is assembled under
a temporary name beside ``out_dir`` and renamed into place when complete.

Precision: VeRL 0.9.1's FSDP merger casts every shard to bfloat16 before it joins them (its
``_load_and_merge_state_dicts`` calls ``.bfloat16()``), although VeRL trains and saves fp32 master
weights. An FSDP merge therefore carries bfloat16 precision whatever ``dtype`` asks for: ``float32``
stores those bfloat16 values widened (exactly), ``float16`` rounds them again. A local merge keeps
full precision: ``auto`` stores the checkpoint's own dtype.

Tokenizers are checked before any weights move: VeRL's merger would otherwise save whatever
``AutoTokenizer`` makes of a folder without tokenizer files (transformers 5 builds an empty
one-token tokenizer from ``config.json`` alone) and the merge would look successful.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from envs.atomic import swap_in_folder
from policies.backends.base import BackendError
from policies.backends.local import first_line, load_tokenizer

__all__ = ["MERGE_MARKER", "MergeConfig", "MergeError", "MergeResult", "merge_checkpoint"]

logger = logging.getLogger(__name__)

MergeDtype = Literal["auto", "bfloat16", "float16", "float32"]
CheckpointKind = Literal["fsdp", "local"]

#: Written into every merge output; its presence is what allows a later merge to replace the folder.
MERGE_MARKER = "ftrl_merge.json"

_FSDP_CONFIG = "fsdp_config.json"
_FSDP_HF_DIR = "huggingface"
_SHARD = re.compile(r"^model_world_size_(\d+)_rank_(\d+)\.pt$")
_LOCAL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_FSDP_EXPECTED = (
    "a VeRL FSDP actor checkpoint (fsdp_config.json, model_world_size_W_rank_R.pt shards and "
    "huggingface/config.json, as in global_step_N/actor)"
)
_LOCAL_EXPECTED = f"a Hugging Face or TRL model folder (config.json and one of {', '.join(_LOCAL_WEIGHTS)})"


class MergeError(ValueError):
    """A checkpoint cannot be merged. The message is one line naming the path and the reason."""


class MergeConfig(BaseModel):
    """How a checkpoint is merged (the ``merge:`` section of a run profile)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: MergeDtype = Field(
        "auto",
        description=(
            "Dtype of the saved weights. 'auto': bfloat16 for FSDP (what VeRL's merger writes), the "
            "checkpoint's own for local. FSDP merges carry bfloat16 precision whatever is chosen."
        ),
    )
    backend: Literal["auto", "fsdp", "local"] = Field(
        "auto", description="Checkpoint kind; 'auto' tells a VeRL FSDP actor folder from a model folder."
    )


@dataclass(frozen=True)
class MergeResult:
    """What a merge wrote.

    Attributes:
        out_dir: the merged model folder.
        backend: the kind of checkpoint that was merged, ``"fsdp"`` or ``"local"``.
        dtype: the dtype the weights are stored in (for FSDP merges, at bfloat16 precision).
        parameters: elements in the saved weight tensors (tied weights counted once).
    """

    out_dir: Path
    backend: CheckpointKind
    dtype: str
    parameters: int


def merge_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    config: MergeConfig | None = None,
    *,
    tokenizer_source: str | Path | None = None,
) -> MergeResult:
    """Merge ``checkpoint`` into the Hugging Face folder ``out_dir`` and describe the result.

    ``config`` defaults to ``MergeConfig()``: auto-detected kind, ``dtype="auto"``.
    ``tokenizer_source`` is a folder whose tokenizer (with its chat template) the merged model gets:
    needed when the checkpoint carries none (a TRL ``checkpoint-N`` saved without its tokenizer), and
    it wins over the checkpoint's own when given. Everything a user can get wrong is checked before
    any weights are read: a missing or unrecognised checkpoint, missing shards, a tokenizer without a
    chat template, an ``out_dir`` that holds something other than an earlier merge. Those raise
    ``FileNotFoundError``, ``FileExistsError`` or ``MergeError``, each with a one-line message.
    """
    config = config or MergeConfig()
    checkpoint = Path(checkpoint).expanduser()
    out_dir = Path(out_dir).expanduser()
    kind, source = _locate(checkpoint, config.backend)
    tokenizer = _checkpoint_tokenizer(kind, source, tokenizer_source)
    _check_out_dir(out_dir, source)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".merging", dir=out_dir.parent))
    try:
        os.chmod(staging, 0o755)
        if kind == "fsdp":
            _merge_fsdp(source, staging, config.dtype)
        else:
            _save_model(source, staging, config.dtype)
        tokenizer.save_pretrained(staging)
        dtype, parameters = _inspect_weights(staging, source)
        marker = {"source": str(source.resolve()), "backend": kind, "dtype": dtype, "parameters": parameters}
        (staging / MERGE_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _move_into_place(staging, out_dir, source)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "merged %s checkpoint %s into %s (%s, %d parameters)", kind, source, out_dir, dtype, parameters
    )
    return MergeResult(out_dir=out_dir, backend=kind, dtype=dtype, parameters=parameters)


# --- finding and checking the checkpoint ------------------------------------------------------------


def _locate(checkpoint: Path, backend: str) -> tuple[CheckpointKind, Path]:
    """The checkpoint's kind and the folder to merge (``global_step_N`` resolves to its ``actor``)."""
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: checkpoint folder does not exist")
    if not checkpoint.is_dir():
        raise MergeError(f"{checkpoint}: not a folder; expected {_FSDP_EXPECTED} or {_LOCAL_EXPECTED}")
    actor = checkpoint / "actor"
    if not _looks_fsdp(checkpoint) and actor.is_dir() and _looks_fsdp(actor):
        checkpoint = actor
    if backend == "fsdp" or (backend == "auto" and _looks_fsdp(checkpoint)):
        _check_fsdp(checkpoint)
        return "fsdp", checkpoint
    if backend == "local" or _looks_local(checkpoint):
        _check_local(checkpoint)
        return "local", checkpoint
    raise MergeError(f"{checkpoint}: neither {_FSDP_EXPECTED} nor {_LOCAL_EXPECTED}")


def _looks_fsdp(folder: Path) -> bool:
    return (folder / _FSDP_CONFIG).is_file() or any(_SHARD.match(path.name) for path in folder.iterdir())


def _looks_local(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / name).is_file() for name in _LOCAL_WEIGHTS)


def _check_fsdp(actor: Path) -> None:
    """Every problem with an FSDP actor folder, in one line, before VeRL's merger reads a byte."""
    problems: list[str] = []
    world_size = _fsdp_world_size(actor, problems)
    if world_size is not None:
        missing = [
            f"model_world_size_{world_size}_rank_{rank}.pt"
            for rank in range(world_size)
            if not (actor / f"model_world_size_{world_size}_rank_{rank}.pt").is_file()
        ]
        if missing:
            problems.append(f"missing shard{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if not (actor / _FSDP_HF_DIR / "config.json").is_file():
        problems.append(f"missing {_FSDP_HF_DIR}/config.json")
    if (actor / "lora_train_meta.json").is_file():
        problems.append(
            "it is a LoRA checkpoint (lora_train_meta.json), which VeRL's merger saves as an adapter beside "
            "unmerged base weights; merge the adapter with peft instead"
        )
    if problems:
        raise MergeError(f"{actor}: not a complete VeRL FSDP actor checkpoint: {'; '.join(problems)}")


def _fsdp_world_size(actor: Path, problems: list[str]) -> int | None:
    path = actor / _FSDP_CONFIG
    if not path.is_file():
        problems.append(f"missing {_FSDP_CONFIG}")
        return None
    try:
        world_size = json.loads(path.read_text(encoding="utf-8")).get("world_size")
    except (OSError, UnicodeError, ValueError, AttributeError) as error:
        problems.append(f"{_FSDP_CONFIG} is not a JSON object ({first_line(error)})")
        return None
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        problems.append(f"{_FSDP_CONFIG} has no positive integer world_size (got {world_size!r})")
        return None
    return world_size


def _check_local(folder: Path) -> None:
    if not _looks_local(folder):
        raise MergeError(f"{folder}: not {_LOCAL_EXPECTED}")


def _checkpoint_tokenizer(kind: CheckpointKind, source: Path, tokenizer_source: str | Path | None) -> Any:
    """The tokenizer the merged folder gets, loaded now so that a missing one fails before the merge."""
    if tokenizer_source is not None:
        folder = Path(tokenizer_source).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: tokenizer folder does not exist")
    else:
        folder = source / _FSDP_HF_DIR if kind == "fsdp" else source
    if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise MergeError(
            f"{folder}: no tokenizer ({' or '.join(_TOKENIZER_FILES)}); pass tokenizer_source, the folder "
            "of the model that was trained"
        )
    try:
        return load_tokenizer(folder)
    except BackendError as error:
        raise MergeError(str(error)) from None


# --- writing the merged folder ------------------------------------------------------------------------


def _merge_fsdp(actor: Path, staging: Path, dtype: MergeDtype) -> None:
    """Run VeRL's FSDP merger into a scratch folder, then keep its weights and config.

    Its tokenizer output is dropped (the checked one is saved instead). Its progress prints go to
    this module's debug log: they are noise in a pipeline's output.
    """
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    raw = staging / ".verl"
    raw.mkdir()
    merger_config = ModelMergerConfig(
        operation="merge",
        backend="fsdp",
        local_dir=str(actor),
        target_dir=str(raw),
        hf_model_config_path=str(actor / _FSDP_HF_DIR),
    )
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            merger = FSDPModelMerger(merger_config)
            merger.merge_and_save()
            merger.cleanup()
    except Exception as error:  # VeRL raises asserts, ValueError, OSError...: the user needs the reason
        raise MergeError(f"{actor}: VeRL's FSDP merger failed ({first_line(error)})") from error
    finally:
        for line in printed.getvalue().splitlines():
            logger.debug("verl: %s", line)
    if dtype in ("auto", "bfloat16"):
        for path in raw.iterdir():
            if path.name in ("config.json", "generation_config.json") or path.name.endswith(
                (".safetensors", ".safetensors.index.json")
            ):
                path.rename(staging / path.name)
    else:
        _save_model(raw, staging, dtype)
    shutil.rmtree(raw)


def _save_model(source: Path, staging: Path, dtype: MergeDtype) -> None:
    """Load with ``AutoModelForCausalLM`` in ``dtype`` and save as safetensors (config, generation config)."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, local_files_only=True)
    except Exception as error:  # transformers raises many types here; the user needs the reason, once
        raise MergeError(f"{source}: cannot load the model ({first_line(error)})") from error
    model.save_pretrained(staging)


def _inspect_weights(folder: Path, source: Path) -> tuple[str, int]:
    """The dtype holding most elements and the element count; non-finite weights are refused.

    A float16 merge overflows to inf where a weight exceeds 65504, and a diverged run leaves nan:
    either would load and generate garbage, so the merge fails instead, naming the tensor.
    """
    import torch
    from safetensors import safe_open

    elements: Counter[str] = Counter()
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():
                tensor = weights.get_tensor(name)
                dtype = str(tensor.dtype).removeprefix("torch.")
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise MergeError(
                        f"{source}: weight {name} holds inf or nan in {dtype} (beyond the dtype's range, "
                        "such as float16's 65504, or a diverged run); choose another dtype or checkpoint"
                    )
                elements[dtype] += tensor.numel()
    if not elements:
        raise MergeError(f"{source}: the merge wrote no safetensors weights")
    return elements.most_common(1)[0][0], sum(elements.values())


def _check_out_dir(out_dir: Path, source: Path) -> None:
    """``out_dir`` may be new, empty, or an earlier merge output; anything else is left alone."""
    if out_dir.resolve() == source.resolve():
        raise FileExistsError(f"{out_dir}: is the checkpoint itself; choose another output folder")
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder; choose another output folder")
    if any(out_dir.iterdir()) and not (out_dir / MERGE_MARKER).is_file():
        raise FileExistsError(
            f"{out_dir}: not empty and not an earlier merge output (it has no {MERGE_MARKER}); refusing to "
            "overwrite it: choose a new or empty output folder"
        )


def _move_into_place(staging: Path, out_dir: Path, source: Path) -> None:
    """Swap the finished folder in, after checking the target again (it may have changed meanwhile)."""
    _check_out_dir(out_dir, source)  # it may have changed during the merge
    swap_in_folder(staging, out_dir)
