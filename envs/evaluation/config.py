"""Settings of the evaluation stage, as they appear in a run profile's `eval:` section.

`ftrl eval` takes the same settings as flags; the pipeline and the nightly evaluation read them
from here. The agent's model and backend come from the profile's `model` and `generation`
sections (or the model each iteration trained); the user simulator's are its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class UserSimulatorConfig(BaseModel):
    """The model that plays the user in τ-bench-style domains (the paper used a strong hosted model)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers", "vllm", "openai"] | None = Field(None, description="Empty: the agent's.")
    model: str | None = Field(None, description="Model folder or served name; empty: the agent's.")
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = Field(1.0, ge=0.0)


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    benchmark: Literal["ftrl", "tau-bench"] = "ftrl"
    data: Path | None = Field(None, description="ftrl: environment JSONL; empty: the run's built test split.")
    split: Literal["train", "test"] = "test"
    domain_dir: Path | None = Field(None, description="tau-bench: the domain folder.")
    tasks: Path | None = Field(None, description="tau-bench: tasks JSONL; empty: the domain's tasks.jsonl.")
    trials: int = Field(1, ge=1, description="Episodes per environment or task (pass@k / pass^k).")
    max_turns: int | None = Field(None, ge=1, description="Empty: ftrl 20, tau-bench 30.")
    temperature: float = Field(0.0, ge=0.0, description="Agent's temperature; 0 is greedy.")
    max_new_tokens: int | None = Field(None, ge=1, description="Empty: the generation section's.")
    seed: int = Field(0, ge=0)
    chunk_episodes: int = Field(64, ge=1, description="Episodes per resumable chunk.")
    user: UserSimulatorConfig = Field(default_factory=UserSimulatorConfig)
