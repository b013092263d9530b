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
    tiny_seed: int = Field(
        0, ge=0, description="Seed of the tiny model's random weights (its tokenizer is fixed)."
    )
    tiny_pretrain_steps: int = Field(
        0,
        ge=0,
        description="Steps of copy pre-training for the tiny model (~0.18 s each on 2 cores); "
        "0 keeps its random weights. 1,800 repeat 41-56% of unseen token spans exactly.",
    )
    parser: Literal["qwen2.5", "hermes", "qwen3", "llama3.1"] = Field(
        "qwen2.5", description="Tool-call format the model writes."
    )


class GenerationConfig(BaseModel):
    """How turns are generated: the backend and its sampling settings (the paper samples at T=1.0)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers", "vllm", "openai"] = Field(
        "transformers", description="transformers (embedded, CPU/GPU), vllm (GPU workers), openai (HTTP)."
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the API key.")
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(1024, ge=1, description="Longest generated turn, in tokens.")
    enable_thinking: bool | None = Field(None, description="Reasoning mode for templates that support it.")
    batch_size: int = Field(64, ge=1, description="Conversations per generate call (transformers).")
    max_concurrency: int = Field(8, ge=1, description="Requests in flight (openai).")
    timeout_s: float = Field(120.0, gt=0.0, description="Per-request timeout (openai).")
    max_retries: int = Field(4, ge=0, description="Retries on 429/5xx/connection errors (openai).")
