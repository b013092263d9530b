"""Run profiles: one YAML file in `configs/` holds every stage's settings for a run.

A profile is validated completely before any work starts, so a typo in the last stage's section
fails in the first second of a run, with the key's path and the reason, rather than hours in.
Command-line overrides (`--set sample.temperature=0.7`) go through the same validation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envs.config import BuildConfig, SampleConfig, SandboxConfig
from envs.evaluation.config import EvalConfig
from policies.config import GenerationConfig, ModelConfig
from policies.training.config import MergeConfig, TrainConfig
from rewards.config import RewardConfig


class RunConfig(BaseModel):
    """Where a run keeps its files: `<root>/<name>/{envs,trajectories,parquet,...}`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("default", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run folder name.")
    root: Path = Field(Path("runs"), description="Folder that holds all runs.")

    @property
    def directory(self) -> Path:
        return self.root / self.name


class PipelineConfig(BaseModel):
    """Every stage's settings; each section is owned by the room that consumes it."""

    model_config = ConfigDict(extra="forbid")

    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)


#: Every seed of a profile, for `ftrl run --seed N`; `train.local.sft.seed` joins them when the profile
#: has a warm start (setting it otherwise would create one).
SEED_KEYS = ("build.seed", "sample.seed", "eval.seed", "train.local.seed", "model.tiny_seed")


def seed_overrides(config: PipelineConfig, seed: int) -> list[str]:
    """`key=seed` overrides that give every seed of `config` the one value `seed`.

    >>> seed_overrides(PipelineConfig(), 7)[:2]
    ['build.seed=7', 'sample.seed=7']
    """
    keys = [*SEED_KEYS, *(["train.local.sft.seed"] if config.train.local.sft is not None else [])]
    return [f"{key}={seed}" for key in keys]


class ProfileError(ValueError):
    """A profile or override that cannot be used; the message names the file, key and reason."""


_OVERRIDE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(?P<value>.*)$", re.S)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into its key path and a YAML-typed value (`0.7` is a float, `true` a bool)."""
    match = _OVERRIDE.match(text)
    if match is None:
        raise ProfileError(f"override {text!r}: expected KEY.PATH=VALUE, e.g. sandbox.wall_time_s=5")
    try:
        value = yaml.safe_load(match["value"]) if match["value"].strip() else ""
    except yaml.YAMLError as exc:
        raise ProfileError(f"override {text!r}: value is not valid YAML ({exc})") from None
    return match["key"].split("."), value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `key.path=value` set, creating sections as needed."""
    result = _deep_copy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = result
        for depth, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise ProfileError(f"override {text!r}: '{where}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return result


def load_profile(path: str | Path | None = None, overrides: Iterable[str] = ()) -> PipelineConfig:
    """Read, override and validate a profile; `path=None` starts from the defaults."""
    source = "defaults" if path is None else str(path)
    data = {} if path is None else _read_yaml(Path(path))
    return validate_profile(apply_overrides(data, overrides), source=source)


def validate_profile(data: Mapping[str, Any], *, source: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(_describe(exc, source)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ProfileError(f"profile {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        reason = getattr(exc, "problem", None) or str(exc)
        raise ProfileError(f"profile {where}: invalid YAML: {reason}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ProfileError(f"profile {path}: expected a mapping of sections at the top, got {kind}")
    return data


def _describe(exc: ValidationError, source: str) -> str:
    """One line for one problem (`profile P: key.path: reason`); a header and a line each for several."""
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        reason = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        if error["type"] != "extra_forbidden" and "input" in error and not isinstance(error["input"], dict):
            reason += f" (got {error['input']!r})"
        problems.append(f"{key}: {reason}")
    if len(problems) == 1:
        return f"profile {source}: {problems[0]}"
    return "\n".join([f"profile {source}: {len(problems)} problems", *(f"  {p}" for p in problems)])


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _deep_copy(value) if isinstance(value, Mapping) else value for key, value in data.items()}
