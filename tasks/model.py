"""Which model a stage runs and how: the profile's model folder (or the tiny model built once into
the run directory), and generation backends built from the profile's `generation` section.

Sampling, evaluation and the pipeline all build their backends here, so a profile means the same
model, parser and retry settings everywhere.
"""

from __future__ import annotations

from pathlib import Path

from policies.backends import GenerationBackend, SamplingParams, load_backend
from policies.config import GenerationConfig
from policies.tiny_model import TinyModelSpec, build_tiny_model, built_spec
from tasks.profile import PipelineConfig


def tiny_spec(config: PipelineConfig) -> TinyModelSpec:
    """The tiny model a profile describes (when it names no model folder)."""
    model = config.model
    return TinyModelSpec(
        template=model.tiny_template, seed=model.tiny_seed, pretrain_steps=model.tiny_pretrain_steps
    )


def resolve_model_folder(config: PipelineConfig) -> Path:
    """The profile's model folder, else the run's tiny model, rebuilt when the profile now asks for
    another template, seed or pre-training: a folder from an earlier spec would train the wrong model."""
    if config.model.path is not None:
        if not (config.model.path / "config.json").is_file():
            raise FileNotFoundError(f"model.path {config.model.path}: not a model folder (no config.json)")
        return config.model.path
    folder = config.run.directory / "models" / "tiny"
    spec = tiny_spec(config)
    if built_spec(folder) != spec:  # the marker is written last, so it means a complete build
        build_tiny_model(folder, spec)
    return folder


def model_for_backend(config: PipelineConfig, backend: str, model: str | None) -> str:
    """The model a backend runs: as given, else the profile's folder or the tiny model (not for openai)."""
    if model is not None:
        return model
    if backend == "openai":
        raise ValueError("the openai backend needs the served model's name (--model)")
    return str(resolve_model_folder(config))


def sampling_params(generation: GenerationConfig, temperature: float, seed: int) -> SamplingParams:
    return SamplingParams(
        temperature=temperature,
        top_p=generation.top_p,
        max_new_tokens=generation.max_new_tokens,
        seed=seed,
        enable_thinking=generation.enable_thinking,
    )


def backend_for(config: PipelineConfig, name: str, model: str, base_url: str | None) -> GenerationBackend:
    generation = config.generation
    return load_backend(
        name,  # type: ignore[arg-type]
        model,
        parser=config.model.parser,
        base_url=base_url,
        api_key_env=generation.api_key_env,
        batch_size=generation.batch_size,
        max_concurrency=generation.max_concurrency,
        timeout_s=generation.timeout_s,
        max_retries=generation.max_retries,
    )
