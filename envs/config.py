"""Settings of the tool-code sandbox, as they appear in a run profile's `sandbox:` section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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
