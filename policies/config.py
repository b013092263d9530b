"""Settings of the acting model, as they appear in a run profile's `model:` section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelConfig(BaseModel):
    """Which model acts and how its output is read.

    `path` is a local model folder (config.json, weights, tokenizer). Left empty, the pipeline builds
    the tiny local model into the run directory, so a CPU run needs no download and no hub.
    """

    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(None, description="Local model folder; empty builds the tiny model.")
    tiny_template: Literal["qwen2.5", "compact"] = Field(
        "qwen2.5", description="Chat template of the tiny model: Qwen2.5's exact one, or a terse variant."
    )
    parser: Literal["qwen2.5", "hermes", "qwen3", "llama3.1"] = Field(
        "qwen2.5", description="Tool-call format the model writes."
    )
