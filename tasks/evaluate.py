"""The evaluation stage: a profile's `eval` section applied to one model, one shard at a time.

`evaluate_ftrl_shard` plays the episodes of one shard of environments (`tasks.shards`) into its own
folder; `join_ftrl_shards` concatenates the shards' `episodes.jsonl` in shard order and summarises
the whole, which gives exactly the folder one unsharded `evaluate_ftrl` run writes. τ-bench-style
domains (`evaluate_tau_domain`) run as one job: their episodes are few and long, and each holds a
sandboxed database for its whole length.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from envs.atomic import atomic_write_text
from envs.evaluation.ftrl_eval import (
    EPISODES_FILE,
    EpisodeRecord,
    FtrlEvalSettings,
    evaluate_ftrl,
    summarize_ftrl,
)
from envs.evaluation.reports import SUMMARY_FILE, write_summary_markdown
from envs.jsonl import iter_rows
from envs.sandbox import SandboxPool
from policies.backends import SamplingParams
from tasks.model import backend_for, sampling_params
from tasks.profile import PipelineConfig
from tasks.shards import concat_files

__all__ = [
    "FTRL_MAX_TURNS",
    "TAU_MAX_TURNS",
    "eval_params",
    "evaluate_ftrl_shard",
    "evaluate_tau_domain",
    "ftrl_settings",
    "join_ftrl_shards",
]

#: Turn limits when the profile leaves `eval.max_turns` empty: the paper's 20, τ-bench's 30.
FTRL_MAX_TURNS = 20
TAU_MAX_TURNS = 30


def ftrl_settings(config: PipelineConfig, label: str) -> FtrlEvalSettings:
    ev = config.eval
    return FtrlEvalSettings(
        split=ev.split,
        samples_per_env=ev.trials,
        max_turns=ev.max_turns or FTRL_MAX_TURNS,
        seed=ev.seed,
        chunk_episodes=ev.chunk_episodes,
        model=label,
    )


def eval_params(config: PipelineConfig, temperature: float | None = None) -> SamplingParams:
    """The agent's sampling settings: the generation section with the eval section's overrides."""
    ev = config.eval
    generation = config.generation
    if ev.max_new_tokens is not None:
        generation = generation.model_copy(update={"max_new_tokens": ev.max_new_tokens})
    return sampling_params(generation, ev.temperature if temperature is None else temperature, ev.seed)


def evaluate_ftrl_shard(
    config: PipelineConfig, envs: Path, rows: int, model: Path, out_dir: Path, label: str
) -> Path:
    """Evaluate `model` on one shard file into `out_dir`; an empty shard writes an empty episode file."""
    if rows == 0:
        atomic_write_text(out_dir / EPISODES_FILE, "")
        return out_dir
    generation = config.generation
    backend = backend_for(config, generation.backend, str(model), generation.base_url)
    with backend, SandboxPool(workers=config.sandbox.workers, limits=config.sandbox.limits()) as pool:
        evaluate_ftrl(
            envs, out_dir, backend, eval_params(config), pool, ftrl_settings(config, label), progress=False
        )
    return out_dir


def join_ftrl_shards(
    config: PipelineConfig, shards: Sequence[Path], data: Path, out_dir: Path, label: str, model_sha256: str
) -> dict[str, Any]:
    """Join shard folders into `out_dir`: their episodes in order, the summary, its Markdown table.

    The summary is `evaluate_ftrl`'s for the unsharded data, plus `model_sha256`, the digest of the
    model folder evaluated: an evaluation names the weights it judged, not only their label.
    """
    episodes = out_dir / EPISODES_FILE
    if not concat_files([shard / EPISODES_FILE for shard in shards], episodes):
        raise ValueError(f"{data}: no environments with split {config.eval.split!r} to evaluate")
    summary = {
        "benchmark": "ftrl",
        "model": label,
        "model_sha256": model_sha256,
        "backend": config.generation.backend,
        "data": str(data),
        "split": config.eval.split,
        **summarize_ftrl(iter_rows(episodes, EpisodeRecord), samples_per_env=config.eval.trials),
    }
    atomic_write_text(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    write_summary_markdown(out_dir)
    return summary


def evaluate_tau_domain(
    config: PipelineConfig, domain_dir: Path, tasks: Path | None, model: Path, out_dir: Path
) -> Path:
    """Evaluate `model` as the agent of a τ-bench-style domain; the user simulator is `eval.user`'s."""
    from envs.evaluation.tau_eval import evaluate_tau

    generation, user = config.generation, config.eval.user
    user_backend = user.backend or generation.backend
    same = user_backend == generation.backend
    if user.model is None and not same:
        raise ValueError("eval.user.model: needed when the user simulator's backend differs from the agent's")
    user_model = user.model or str(model)
    user_url = user.base_url or (generation.base_url if same else None)
    agent = backend_for(config, generation.backend, str(model), generation.base_url)
    with agent, backend_for(config, user_backend, user_model, user_url) as simulator:
        with SandboxPool(workers=config.sandbox.workers, limits=config.sandbox.limits()) as pool:
            evaluate_tau(
                domain_dir,
                tasks,
                agent,
                eval_params(config),
                simulator,
                eval_params(config, temperature=user.temperature),
                pool,
                trials=config.eval.trials,
                max_turns=config.eval.max_turns or TAU_MAX_TURNS,
                out_dir=out_dir,
            )
    write_summary_markdown(out_dir)
    return out_dir
