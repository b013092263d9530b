"""Trajectory sampling: roll a policy out in every environment and write FTRL trajectory rows.

For each environment and sample index, the output holds the fresh environment row (turn 0) and
then one row after every tool-calling turn: the message prefix so far, the sub-answers still
unsolved and the solve rate. Those rows are what RL trains on, one next turn per row.

Resumable by construction: episodes are cut into fixed chunks (by position of `(env_id, sample)`
in the input, never by message text), each chunk is seeded from the run seed and its index, and a
finished chunk is written atomically into `<out>.parts/`. A killed run, started again with the same
arguments, skips the finished chunks and redoes the one it was in with the same seed, so the final
file equals an uninterrupted run's byte for byte. The parts are joined into `<out>` at the end.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from envs.atomic import file_sha256
from envs.chunks import ResumeMismatch as ResumeMismatch  # re-exported: callers catch it from here
from envs.chunks import batched, write_chunked
from envs.episode import EpisodeRunner, EpisodeSpec, EpisodeState
from envs.jsonl import iter_rows
from envs.sandbox import SandboxPool
from envs.schema import EnvRow, TrajectoryRow
from policies.backends import GenerationBackend, SamplingParams
from policies.backends.base import derive_seed


@dataclass(frozen=True)
class SampleSettings:
    samples_per_env: int = 1
    max_turns: int = 20
    seed: int = 0
    chunk_episodes: int = 64
    policy: str = "policy"
    max_envs: int | None = None  # roll out only the first N environments of the file


@dataclass(frozen=True)
class SampleReport:
    out: Path
    episodes: int
    rows: int
    chunks: int
    chunks_resumed: int


def trajectory_row(env: EnvRow, state: EpisodeState, policy: str, sample_index: int) -> TrajectoryRow:
    return TrajectoryRow(
        messages=[dict(message) for message in state.messages],
        tools=env.tools,
        codes=env.codes,
        unsolved_set=json.dumps(state.unsolved, ensure_ascii=False),
        answer=env.answer,
        solve_rate=state.solve_rate,
        data_source=env.data_source,
        split=env.split,
        env_id=env.env_id,
        meta=env.meta,
        turn=state.turn,
        policy=policy,
        sample_index=sample_index,
    )


def fresh_row(env: EnvRow, policy: str, sample_index: int) -> TrajectoryRow:
    return TrajectoryRow(
        **{
            **env.model_dump(),
            "turn": 0,
            "policy": policy,
            "sample_index": sample_index,
            "env_id": env.env_id,
        }
    )


def _episodes(envs_path: Path, samples_per_env: int, max_envs: int | None) -> Iterator[tuple[EnvRow, int]]:
    for env in islice(iter_rows(envs_path, EnvRow), max_envs):
        for sample_index in range(samples_per_env):
            yield env, sample_index


def _validate(envs_path: Path) -> None:
    """Read every row before spending model time: a bad row or a repeated environment fails now."""
    first_row: dict[str, int] = {}
    for row, env in enumerate(iter_rows(envs_path, EnvRow), start=1):
        if env.env_id in first_row:
            raise ValueError(
                f"{envs_path}: environment {env.env_id} is both row {first_row[env.env_id]} and row {row}; "
                "use --samples-per-env to roll an environment out several times"
            )
        first_row[env.env_id] = row


def sample_trajectories(
    envs_path: str | Path,
    out_path: str | Path,
    backend: GenerationBackend,
    params: SamplingParams,
    pool: SandboxPool,
    settings: SampleSettings = SampleSettings(),
    *,
    progress: bool = True,
) -> SampleReport:
    envs_path, out_path = Path(envs_path), Path(out_path)
    if not envs_path.is_file():
        raise FileNotFoundError(f"{envs_path}: no such environment file")
    manifest = {
        "envs_sha256": file_sha256(envs_path),
        "settings": asdict(settings),
        "sampling": asdict(params),
        "backend": backend.name,
    }
    _validate(envs_path)
    total = sum(1 for _ in _episodes(envs_path, settings.samples_per_env, settings.max_envs))
    bar = tqdm(total=total, unit="episode", desc=f"sampling {envs_path.name}", disable=not progress)

    def produce(index: int, chunk: list[tuple[EnvRow, int]]) -> list[TrajectoryRow]:
        chunk_params = SamplingParams(**{**asdict(params), "seed": derive_seed(settings.seed, index)})
        return _sample_chunk(chunk, backend, chunk_params, pool, settings)

    episodes = batched(
        _episodes(envs_path, settings.samples_per_env, settings.max_envs), settings.chunk_episodes
    )
    run = write_chunked(out_path, manifest, episodes, produce, on_chunk=lambda chunk: bar.update(len(chunk)))
    bar.close()
    return SampleReport(
        out=out_path, episodes=total, rows=run.rows, chunks=run.chunks, chunks_resumed=run.resumed
    )


def _sample_chunk(
    chunk: list[tuple[EnvRow, int]],
    backend: GenerationBackend,
    params: SamplingParams,
    pool: SandboxPool,
    settings: SampleSettings,
) -> list[TrajectoryRow]:
    """Rows of one chunk, grouped by episode in input order, each episode's rows in turn order."""
    rows: dict[tuple[str, int], list[TrajectoryRow]] = {
        (env.env_id, sample): [fresh_row(env, settings.policy, sample)] for env, sample in chunk
    }
    envs = {(env.env_id, sample): env for env, sample in chunk}

    def record(state: EpisodeState) -> None:
        key = state.spec.key
        rows[key].append(trajectory_row(envs[key], state, settings.policy, key[1]))

    specs = [EpisodeSpec.for_env(env, sample, settings.seed) for env, sample in chunk]
    EpisodeRunner(backend, params, pool, max_turns=settings.max_turns, on_tool_turn=record).run(specs)
    return [row for key in rows for row in rows[key]]
