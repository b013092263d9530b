"""The sampling stage: a profile's generation and sampling settings turned into a rollout run."""

from __future__ import annotations

from pathlib import Path

from envs.sampling import SampleReport, SampleSettings, sample_trajectories
from envs.sandbox import SandboxPool
from tasks.model import backend_for, model_for_backend, sampling_params
from tasks.profile import PipelineConfig


def run_sampling(
    config: PipelineConfig, envs: Path, out: Path, *, model: str | None = None, progress: bool = True
) -> SampleReport:
    """Sample trajectories for `envs` into `out` with the profile's backend and settings.

    `model` is a model folder (transformers, vllm) or the served model's name (openai); by default
    the profile's model folder, or the tiny model built into the run directory.
    """
    generation = config.generation
    model = model_for_backend(config, generation.backend, model)
    params = sampling_params(generation, generation.temperature, config.sample.seed)
    settings = SampleSettings(
        samples_per_env=config.sample.samples_per_env,
        max_turns=config.sample.max_turns,
        seed=config.sample.seed,
        chunk_episodes=config.sample.chunk_episodes,
        max_envs=config.sample.max_envs,
        policy=model if generation.backend == "openai" else Path(model).name,
    )
    backend = backend_for(config, generation.backend, model, generation.base_url)
    with backend, SandboxPool(workers=config.sandbox.workers, limits=config.sandbox.limits()) as pool:
        return sample_trajectories(envs, out, backend, params, pool, settings, progress=progress)
