"""Settings of the tool-code sandbox, as they appear in a run profile's `sandbox:` section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from envs.construction.stages import SCALING_OPS, ScalingOp
from envs.sandbox import Limits


class SandboxConfig(BaseModel):
    """Per-call limits and pool size for running model-written tool code.

    Defaults follow the paper (10 s per call); workers default to one per CPU core.
    """

    model_config = ConfigDict(extra="forbid")

    workers: int | None = Field(None, ge=1, description="Warm worker processes; empty = one per core.")
    wall_time_s: float = Field(10.0, gt=0, description="Wall-clock limit of one tool call.")
    cpu_time_s: float = Field(10.0, gt=0, description="CPU-time limit of one tool call.")
    memory_mb: int = Field(1024, ge=64, description="Address-space limit of a worker.")
    output_bytes: int = Field(1_000_000, ge=1, description="Largest tool output accepted.")

    def limits(self) -> Limits:
        return Limits(
            wall_time_s=self.wall_time_s,
            cpu_time_s=self.cpu_time_s,
            memory_mb=self.memory_mb,
            output_bytes=self.output_bytes,
        )


class SampleConfig(BaseModel):
    """How trajectories are collected: samples per environment, turn limit, seed, resume granularity."""

    model_config = ConfigDict(extra="forbid")

    samples_per_env: int = Field(1, ge=1, description="Episodes per environment.")
    max_turns: int = Field(20, ge=1, description="Turn limit of one episode (the paper uses 20).")
    seed: int = Field(0, description="Run seed; each chunk and episode derives its own from it.")
    chunk_episodes: int = Field(64, ge=1, description="Episodes per resumable chunk (one batch per turn).")
    max_envs: int | None = Field(
        None,
        ge=1,
        description="Roll out only the first N environments (builds interleave scenario types); "
        "empty: all. GRPO trains on a few hundred prompts, so a CPU run need not sample thousands.",
    )


class LLMGeneratorConfig(BaseModel):
    """The model that drives the llm generator's five stages (usually a strong hosted model)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["openai", "transformers", "vllm"] = "openai"
    model: str | None = Field(None, description="Served model name (openai) or a model folder.")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. https://host/v1.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    temperature: float = Field(0.7, ge=0.0)
    max_new_tokens: int = Field(4096, ge=1)
    max_attempts: int = Field(3, ge=1, description="Tries per stage before the environment is rejected.")
    topics: list[str] = Field(default_factory=list, description="Seed topics for the scenarios.")


class BuildConfig(BaseModel):
    """How environments are built: generator, how many, seed, test share."""

    model_config = ConfigDict(extra="forbid")

    generator: Literal["template", "llm"] = Field("template", description="Offline templates, or a model.")
    count: int = Field(2000, ge=1, description="Verified environments to write (train + test).")
    seed: int = Field(0, description="Same seed, same environments, byte for byte (template generator).")
    test_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of environments held out as test.")
    batch: int = Field(256, ge=1, description="Environments verified per sandbox batch.")
    scaling_ops: list[ScalingOp] = Field(
        default_factory=lambda: list(SCALING_OPS),
        min_length=1,
        description="Scaling operations an environment may get (a random non-empty subset each); "
        "a tiny model's demo keeps to toolset extension, which leaves prompts short.",
    )
    domains: list[str] | None = Field(
        None,
        min_length=1,
        description="Domains scenarios start in (template generator: people, places, organisations, "
        "creative works, products, events, dates and units); empty: all.",
    )
    llm: LLMGeneratorConfig = Field(default_factory=lambda: LLMGeneratorConfig())
