"""The sampling stage: a profile's generation and sampling settings turned into a rollout run."""

from __future__ import annotations

from pathlib import Path

from envs.sampling import SampleReport, SampleSettings, sample_trajectories
from envs.sandbox import SandboxPool
from policies.backends import SamplingParams, load_backend
from tasks.model import resolve_model_folder
from tasks.profile import PipelineConfig


def run_sampling(
    config: PipelineConfig, envs: Path, out: Path, *, model: str | None = None, progress: bool = True
) -> SampleReport:
    """Sample trajectories for `envs` into `out` with the profile's backend and settings.

    `model` is a model folder (transformers, vllm) or the served model's name (openai); by default
    the profile's model folder, or the tiny model built into the run directory.
    """
    generation = config.generation
    if model is None:
        if generation.backend == "openai":
            raise ValueError("the openai backend needs the served model's name (--model)")
        model = str(resolve_model_folder(config))
    params = SamplingParams(
        temperature=generation.temperature,
        top_p=generation.top_p,
        max_new_tokens=generation.max_new_tokens,
        seed=config.sample.seed,
        enable_thinking=generation.enable_thinking,
    )
    settings = SampleSettings(
        samples_per_env=config.sample.samples_per_env,
        max_turns=config.sample.max_turns,
        seed=config.sample.seed,
        chunk_episodes=config.sample.chunk_episodes,
        policy=model if generation.backend == "openai" else Path(model).name,
    )
    backend = load_backend(
        generation.backend,
        model,
        parser=config.model.parser,
        base_url=generation.base_url,
        api_key_env=generation.api_key_env,
        batch_size=generation.batch_size,
        max_concurrency=generation.max_concurrency,
        timeout_s=generation.timeout_s,
        max_retries=generation.max_retries,
    )
    with backend, SandboxPool(workers=config.sandbox.workers, limits=config.sandbox.limits()) as pool:
        return sample_trajectories(envs, out, backend, params, pool, settings, progress=progress)
