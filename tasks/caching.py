"""What a stage's cache key covers, and where a stage writes so that cached results stay true.

A stage's key is the digest of

- its input references' content digests (`FileRef.sha256`, never their paths),
- the part of the profile the stage reads (`stage_view`: other sections are reset to defaults, so
  the stage cannot read what its key does not cover),
- a code version: the package version, this stage's `CODE_VERSIONS` entry (bump it when a stage's
  behaviour changes in a helper module, which Prefect's `TASK_SOURCE` cannot see) and the task's
  own source (`TASK_SOURCE`).

The run id is not in the key, so the same run started again finds every stage cached. The key is
looked up in the run directory's `.prefect-results` (`results_folder`), so caching never crosses
run directories, whose files it could not vouch for.

Every stage writes into a folder named by its key (`output_dir`: `<run>/<area>/<label>/<key12>/`).
So a stage rerun with another config never overwrites the files an older cached result names, a
config changed and changed back finds its old files intact, and a stage killed half way resumes
in its own folder when started again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.context import TaskRunContext
from prefect.transactions import get_transaction
from pydantic import BaseModel

from tasks.profile import PipelineConfig
from tasks.references import FileRef

__all__ = [
    "CODE_VERSIONS",
    "RESULTS_FOLDER",
    "STAGE_SECTIONS",
    "StageCache",
    "canonical",
    "output_dir",
    "package_version",
    "results_folder",
    "stage_cache",
    "stage_key",
    "stage_view",
]

#: One entry per stage; bump a stage's entry when what it writes changes for the same inputs.
CODE_VERSIONS: dict[str, str] = {
    "build": "3",
    "model": "1",
    "source": "1",
    "shards": "1",
    "sample": "1",
    "convert": "1",
    "warm-start": "1",
    "train": "1",
    "merge": "1",
    "evaluate": "1",
    "report": "1",
}

#: The profile keys each stage reads (dotted paths into `PipelineConfig`); the rest of its view is
#: defaults. Paths that name inputs (`eval.data`...) are not here: inputs arrive as references.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "build": ("build", "sandbox", "generation.max_concurrency"),
    "model": ("model.tiny_template", "model.tiny_seed", "model.tiny_pretrain_steps"),
    "sample": ("generation", "sample", "sandbox", "model.parser"),
    "convert": (),
    "warm-start": ("train.local.sft",),
    "train": ("train", "reward", "model.parser", "generation.enable_thinking"),
    "merge": ("merge",),
    "evaluate": (
        "eval.benchmark",
        "eval.split",
        "eval.trials",
        "eval.max_turns",
        "eval.temperature",
        "eval.max_new_tokens",
        "eval.seed",
        "eval.chunk_episodes",
        "eval.user",
        "generation",
        "sandbox",
        "model.parser",
    ),
    "report": (),
}

RESULTS_FOLDER = ".prefect-results"


def results_folder(run_dir: Path) -> Path:
    """Where a run's task results (and so its cache) live. A `Path`, not a string: Prefect reads a
    string as the name of a storage block."""
    return Path(run_dir).resolve() / RESULTS_FOLDER


def stage_view(config: PipelineConfig, stage: str) -> PipelineConfig:
    """The profile as `stage` sees it: its `STAGE_SECTIONS` copied, everything else at defaults.

    Only what the profile set is copied (a default stays a default), so validators that tell a set
    field from a default one judge the view as they judged the profile.
    """
    source = config.model_dump(exclude_unset=True)
    view: dict[str, Any] = {}
    for dotted in STAGE_SECTIONS[stage]:
        *parents, last = dotted.split(".")
        value: Any = source
        target = view
        for part in parents:
            value = value.get(part, {})
            target = target.setdefault(part, {})
        if last in value:
            target[last] = value[last]
    return PipelineConfig.model_validate(view)


def canonical(value: Any, *, nested: bool = False) -> Any:
    """`value` as plain JSON data for a cache key: references by content, models by their fields.

    A bare `Path` given as a task input is refused: a path names a place, not content, and a key
    built on it would hit for changed files. Paths inside a config model are part of its text.
    """
    if isinstance(value, FileRef):
        if not value.sha256:
            raise ValueError(
                f"{value.path}: a reference without a digest cannot key a cache; resolve it first"
            )
        return {
            "kind": value.kind,
            "sha256": value.sha256,
            "rows": value.rows,
            "schema": value.schema_version,
        }
    if isinstance(value, BaseModel):
        return {name: canonical(getattr(value, name), nested=True) for name in type(value).model_fields}
    if isinstance(value, Path):
        if nested:
            return str(value)
        raise TypeError(f"{value}: a bare path cannot key a cache; pass a FileRef (content digest)")
    if isinstance(value, Enum):
        return canonical(value.value, nested=nested)
    if isinstance(value, Mapping):
        return {str(key): canonical(item, nested=nested) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(item, nested=nested) for item in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"cannot key a cache on a {type(value).__name__}")


@cache
def package_version() -> str:
    return metadata.version("ftrl-pipeline")


def stage_key(stage: str, inputs: Mapping[str, Any]) -> str:
    """sha256 of the stage, its code versions and its canonical inputs."""
    payload = {
        "stage": stage,
        "code": CODE_VERSIONS[stage],
        "package": package_version(),
        "inputs": canonical(dict(inputs)),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class StageCache(CachePolicy):
    """`stage_key` over the task's inputs, minus `exclude`."""

    stage: str = ""
    exclude: tuple[str, ...] = ("run_dir", "label")

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        return stage_key(self.stage, {key: value for key, value in inputs.items() if key not in self.exclude})


def stage_cache(stage: str, exclude: Iterable[str] = ("run_dir", "label")) -> CachePolicy:
    """The cache policy of a stage task: content key plus the task's source.

    `exclude` names the inputs that say where and under which name a result goes, not what it is:
    the run directory, and the label that names the task run and its folder.
    """
    if stage not in CODE_VERSIONS:
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(CODE_VERSIONS)}")
    return StageCache(stage=stage, exclude=tuple(exclude)) + TASK_SOURCE


def output_dir(run_dir: Path, area: str, label: str) -> Path:
    """`<run_dir>/<area>/<label>/<key12>` (`<area>/<key12>` when the label is the area's name), the key
    being the running task's cache key.

    Outside a cached task run (caching switched off) the task run's id names the folder instead,
    so an uncached run still never writes into a cached result's files.
    """
    transaction = get_transaction()
    key = transaction.key if transaction is not None else None
    if key is None:
        context = TaskRunContext.get()
        if context is None:
            raise RuntimeError("output_dir names folders by the running task's cache key; call it in a task")
        key = str(context.task_run.id).replace("-", "")
    folder = Path(run_dir) / area
    return (folder if label == area else folder / label) / key[:12]
