"""Sampling throughput: the batched episode loop against the paper's one-environment-at-a-time sampler.

Both sides run the same episode loop code with the same tiny model, environments, sampling settings
and turn limit; the only difference is batching:

- baseline (the paper's released sampler): environments one after another, each turn a batch-1
  `generate`;
- ours: all environments advance together, each turn one batched `generate` over the live episodes.

Run: `make bench-sampling` (or `.venv/bin/python bench/bench_sampling.py --envs 64`).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from envs.episode import EpisodeRunner, EpisodeSpec, EpisodeState
from envs.examples import numbered_variants
from envs.sandbox import SandboxPool
from policies.backends import SamplingParams, load_backend
from policies.tiny_model import TinyModelSpec, build_tiny_model


def specs(count: int) -> list[EpisodeSpec]:
    return [
        EpisodeSpec(
            key=(env.env_id, 0),
            messages=env.messages,
            tools=env.tool_schemas(),
            codes=env.codes_dict(),
            unsolved=env.unsolved(),
            seed=index,
        )
        for index, env in enumerate(numbered_variants(count))
    ]


def summary(states: list[EpisodeState], seconds: float) -> str:
    turns = sum(s.turn + (s.stop_reason == "answer") for s in states)
    rate = len(states) / seconds
    return f"{rate:7.2f} trajectories/s ({len(states)} episodes, {turns} turns, {seconds:.1f} s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as folder:
        model = build_tiny_model(Path(folder) / "tiny", TinyModelSpec(template="compact"))
        params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
        episodes = specs(args.envs)
        with (
            load_backend("transformers", str(model), batch_size=args.envs) as backend,
            SandboxPool(workers=2) as pool,
        ):
            runner = EpisodeRunner(backend, params, pool, max_turns=args.max_turns)
            runner.run(episodes[:2])  # warm up both paths

            start = time.perf_counter()
            baseline = [state for spec in episodes for state in runner.run([spec])]
            baseline_s = time.perf_counter() - start

            start = time.perf_counter()
            batched = runner.run(episodes)
            batched_s = time.perf_counter() - start

    print(
        f"tiny model (compact template), {args.envs} environments, up to {args.max_turns} turns, "
        f"{args.max_new_tokens} new tokens per turn, {args.threads} threads"
    )
    print(f"baseline (one environment at a time, batch-1 generate): {summary(baseline, baseline_s)}")
    print(f"batched episode loop (all environments per turn):       {summary(batched, batched_s)}")
    print(f"ratio batched/baseline: {baseline_s / batched_s:.1f}x")


if __name__ == "__main__":
    main()
