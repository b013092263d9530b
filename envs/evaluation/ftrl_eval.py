"""Evaluation in the paper's own format: full episodes in FTRL test environments, scored per episode.

Every environment of the chosen split (the paper's `split=test`) is played to the end — up to
`max_turns` tool-calling turns, greedy by default — batched across environments like sampling.
Each episode is scored with the paper's episode metrics (`rewards.formulas.episode_metrics`):
Solve-P = solved/calls, Solve-R = solved/total, Solve-F1 = 2·solved/(calls+total), saved under the
names `solve_precision`, `solve_rate` and `solve_f1`. With n samples per environment, an episode
*passes* when it found every sub-answer (Solve-R = 1), and pass@k is the unbiased estimator of
Chen et al. (2021) from the n samples.

An episode whose generation failed for good (the backend retried and gave up: HTTP errors, time-outs)
is recorded with its reason and scores 0 on every metric, whatever it had solved before: the model
never finished it, and a score that depended on when an endpoint failed would not be reproducible.
The summary counts such episodes (`failed_episodes`) and lists them; none is dropped.

The output folder holds `episodes.jsonl` (one `EpisodeRecord` per episode: the full messages and the
counts behind every metric, so anyone can recompute the summary), `summary.json` and `summary.md`.
Evaluation resumes like sampling (`envs.chunks`): killed and rerun with the same arguments, it
evaluates only the chunks that are missing; rerun on a finished folder, it evaluates nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from tqdm import tqdm

from envs.atomic import atomic_write_text, file_sha256
from envs.chunks import MANIFEST, batched, check_manifest, write_chunked
from envs.episode import EpisodeRunner, EpisodeSpec, EpisodeState
from envs.evaluation.reports import SUMMARY_FILE, write_summary_markdown
from envs.jsonl import iter_rows
from envs.sandbox import SandboxPool
from envs.schema import EnvRow
from policies.backends import GenerationBackend, SamplingParams
from policies.backends.base import derive_seed

EPISODES_FILE = "episodes.jsonl"
METRICS = ("solve_precision", "solve_rate", "solve_f1")
#: Failures listed by name in the summary; the count is always complete.
LISTED_FAILURES = 50


class EpisodeRecord(BaseModel):
    """One evaluated episode: where it ran, what was said, and the counts behind its metrics."""

    model_config = ConfigDict(extra="forbid")

    env_id: str
    sample_index: int
    data_source: str
    scenario: str
    answer: str
    messages: list[dict[str, Any]]
    turns: int
    calls: int
    solved: int
    total: int
    solve_precision: float
    solve_rate: float
    solve_f1: float
    passed: bool
    stop_reason: Literal["answer", "max_turns", "error"]
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.stop_reason == "error"


@dataclass(frozen=True)
class FtrlEvalSettings:
    """What to evaluate and how; every field is part of the resume manifest.

    Attributes:
        split: which rows of the data file are evaluated (the paper: "test").
        samples_per_env: episodes per environment (n); above 1 needs a temperature above 0.
        max_turns: tool-calling turns before an episode is cut off (the paper: 20).
        seed: run seed; chunk and episode seeds derive from it.
        chunk_episodes: episodes per resumable chunk, generated as one batch per turn.
        model: the name the summary and comparison tables show for the evaluated model.
    """

    split: Literal["train", "test"] = "test"
    samples_per_env: int = 1
    max_turns: int = 20
    seed: int = 0
    chunk_episodes: int = 64
    model: str = "model"

    def __post_init__(self) -> None:
        for name in ("samples_per_env", "max_turns", "chunk_episodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"FtrlEvalSettings.{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class FtrlEvalReport:
    out_dir: Path
    summary: dict[str, Any]
    chunks: int
    chunks_resumed: int

    @property
    def episodes_path(self) -> Path:
        return self.out_dir / EPISODES_FILE


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct.

    The unbiased estimator 1 - C(n-c, k) / C(n, k) of Chen et al. (2021), exact in integers
    until the final division.

    >>> pass_at_k(4, 1, 2)
    0.5
    """
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n, got n={n}, c={c}, k={k}")
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_ks(n: int) -> list[int]:
    """The k reported for n samples: 1, the powers of two below n, and n itself."""
    ks = [1]
    while ks[-1] * 2 < n:
        ks.append(ks[-1] * 2)
    return ks if n == 1 else [*ks, n]


def check_sampling(samples_per_env: int, temperature: float) -> None:
    """n samples per environment are n draws only when sampling is random."""
    if samples_per_env > 1 and temperature == 0:
        raise ValueError(
            f"{samples_per_env} samples per environment (--trials) need a temperature above 0: "
            "greedy decoding plays the same episode every time"
        )


def record_of(env: EnvRow, state: EpisodeState, sample_index: int) -> EpisodeRecord:
    """The record of a finished episode; a failed one scores 0 (module docstring says why)."""
    failed = state.stop_reason == "error"
    metrics = state.metrics
    return EpisodeRecord(
        env_id=env.env_id,
        sample_index=sample_index,
        data_source=env.data_source,
        scenario=str(env.meta_dict().get("scenario") or "unknown"),
        answer=env.answer,
        messages=state.messages,
        turns=state.turn,
        calls=state.calls,
        solved=state.solved,
        total=state.total,
        solve_precision=0.0 if failed else metrics.precision,
        solve_rate=0.0 if failed else metrics.recall,
        solve_f1=0.0 if failed else metrics.f1,
        passed=not failed and state.solved == state.total,
        stop_reason=state.stop_reason or "error",
        error=state.error,
    )


@dataclass
class _Tally:
    """Running sums of one group of episodes, and each environment's sample and pass counts."""

    episodes: int = 0
    failed: int = 0
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, 0.0))
    samples: dict[str, int] = field(default_factory=dict)
    passes: dict[str, int] = field(default_factory=dict)

    def add(self, record: EpisodeRecord) -> None:
        self.episodes += 1
        self.failed += record.failed
        for name in METRICS:
            self.sums[name] += getattr(record, name)
        self.samples[record.env_id] = self.samples.get(record.env_id, 0) + 1
        self.passes[record.env_id] = self.passes.get(record.env_id, 0) + record.passed

    def metrics(self, n: int) -> dict[str, Any]:
        result: dict[str, Any] = {"tasks": len(self.samples), "episodes": self.episodes}
        result["failed_episodes"] = self.failed
        result.update({name: self.sums[name] / self.episodes for name in METRICS})
        for k in pass_ks(n):
            scores = [pass_at_k(n, self.passes[env], k) for env in self.samples]
            result[f"pass@{k}"] = sum(scores) / len(scores)
        return result


def summarize_ftrl(records: Iterable[EpisodeRecord], *, samples_per_env: int) -> dict[str, Any]:
    """Means over all episodes, per data source and per scenario type, pass@k, and the failures.

    Every environment must have exactly `samples_per_env` episodes: pass@k is undefined otherwise.
    """
    overall = _Tally()
    groups: dict[str, dict[str, _Tally]] = {"data_source": {}, "scenario": {}}
    failures: list[dict[str, Any]] = []
    for record in records:
        overall.add(record)
        for key, tallies in groups.items():
            tallies.setdefault(getattr(record, key), _Tally()).add(record)
        if record.failed and len(failures) < LISTED_FAILURES:
            failures.append(
                {"env_id": record.env_id, "sample_index": record.sample_index, "error": record.error}
            )
    if not overall.episodes:
        raise ValueError("no episodes to summarize")
    uneven = sorted(env for env, count in overall.samples.items() if count != samples_per_env)
    if uneven:
        raise ValueError(
            f"environment {uneven[0]} has {overall.samples[uneven[0]]} episodes, expected {samples_per_env}"
        )
    summary: dict[str, Any] = {"benchmark": "ftrl", "samples_per_env": samples_per_env}
    summary.update(overall.metrics(samples_per_env))
    for key, tallies in groups.items():
        summary[f"by_{key}"] = {name: tallies[name].metrics(samples_per_env) for name in sorted(tallies)}
    summary["failures"] = failures
    return summary


def evaluate_ftrl(
    data: str | Path,
    out_dir: str | Path,
    backend: GenerationBackend,
    params: SamplingParams,
    pool: SandboxPool,
    settings: FtrlEvalSettings = FtrlEvalSettings(),
    *,
    progress: bool = True,
) -> FtrlEvalReport:
    """Evaluate `backend` on the `settings.split` rows of `data`; write episodes, summary and Markdown."""
    data, out_dir = Path(data), Path(out_dir)
    check_sampling(settings.samples_per_env, params.temperature)
    envs = selected_envs(data, settings.split)
    manifest = {
        "benchmark": "ftrl",
        "data_sha256": file_sha256(data),
        "settings": asdict(settings),
        "sampling": asdict(params),
        "backend": backend.name,
    }
    episodes_path = out_dir / EPISODES_FILE
    if episodes_path.is_file() and not (out_dir / MANIFEST).is_file():
        raise FileExistsError(
            f"{out_dir}: holds {EPISODES_FILE} of another evaluation (no {MANIFEST}); choose another --out"
        )
    check_manifest(out_dir, manifest)
    total = len(envs) * settings.samples_per_env
    chunk_count = math.ceil(total / settings.chunk_episodes)
    if episodes_path.is_file():
        chunks = resumed = chunk_count
    else:
        with tqdm(total=total, unit="episode", desc=f"evaluating {data.name}", disable=not progress) as bar:
            run = write_chunked(
                episodes_path,
                manifest,
                batched(_episodes(envs, settings.samples_per_env), settings.chunk_episodes),
                lambda index, chunk: _evaluate_chunk(index, chunk, backend, params, pool, settings),
                on_chunk=lambda chunk: bar.update(len(chunk)),
            )
        chunks, resumed = run.chunks, run.resumed

    summary = {
        "benchmark": "ftrl",
        "model": settings.model,
        "backend": backend.name,
        "data": str(data),
        "split": settings.split,
        **summarize_ftrl(iter_rows(episodes_path, EpisodeRecord), samples_per_env=settings.samples_per_env),
    }
    atomic_write_text(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    write_summary_markdown(out_dir)
    return FtrlEvalReport(out_dir=out_dir, summary=summary, chunks=chunks, chunks_resumed=resumed)


def selected_envs(data: Path, split: str) -> list[EnvRow]:
    """Every row of `split`, read and checked before any model time is spent (callers that load a
    model first call this before loading it)."""
    if not data.is_file():
        raise FileNotFoundError(f"{data}: no such environment file")
    selected: list[EnvRow] = []
    first_row: dict[str, int] = {}
    other_splits: dict[str, int] = {}
    for row, env in enumerate(iter_rows(data, EnvRow), start=1):
        if env.split != split:
            other_splits[env.split] = other_splits.get(env.split, 0) + 1
            continue
        if env.env_id in first_row:
            raise ValueError(
                f"{data}: environment {env.env_id} is both row {first_row[env.env_id]} and row {row}; "
                "use --trials to play an environment several times"
            )
        first_row[env.env_id] = row
        selected.append(env)
    if not selected:
        found = ", ".join(f"{count} {name}" for name, count in sorted(other_splits.items())) or "no rows"
        raise ValueError(f"{data}: no environments with split {split!r} to evaluate (found {found})")
    return selected


def _episodes(envs: list[EnvRow], samples_per_env: int) -> Iterator[tuple[EnvRow, int]]:
    for env in envs:
        for sample_index in range(samples_per_env):
            yield env, sample_index


def _evaluate_chunk(
    index: int,
    chunk: list[tuple[EnvRow, int]],
    backend: GenerationBackend,
    params: SamplingParams,
    pool: SandboxPool,
    settings: FtrlEvalSettings,
) -> list[EpisodeRecord]:
    chunk_params = SamplingParams(**{**asdict(params), "seed": derive_seed(settings.seed, index)})
    specs = [EpisodeSpec.for_env(env, sample, settings.seed) for env, sample in chunk]
    states = EpisodeRunner(backend, chunk_params, pool, max_turns=settings.max_turns).run(specs)
    return [record_of(env, state, sample) for (env, sample), state in zip(chunk, states, strict=True)]
