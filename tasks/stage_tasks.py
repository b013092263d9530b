"""The pipeline's Prefect tasks: one per stage step, each a few lines around one domain function.

Every task takes its profile view (`tasks.caching.stage_view`), its input references and the run
directory, and returns references (`tasks.references.FileRef`); it writes into the folder its
cache key names (`tasks.caching.output_dir`). Caching is declared here (`stage_cache`: content
digests of the inputs, the stage's config, code versions); retries, result storage and run names
are set by the flows (`flows.binding`), because they depend on the run. The `label` parameter names
the task run (`build`, `sample-1/shard-0`, `evaluate-base`...), its output folder and its artifacts.

A task body starts with `inject_fault` (see `tasks.retries`) after Prefect has found no cached
result, so an injected fault hits exactly the stages that really run.

Stages that load a model run inside `tasks.concurrency.model_stage()`: one at a time per process.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from prefect import get_run_logger, task
from pydantic import BaseModel, ConfigDict

from envs.atomic import atomic_write_text
from envs.convert import convert_trajectories
from envs.evaluation.ftrl_eval import EPISODES_FILE
from envs.evaluation.reports import load_summary
from policies.tiny_model import build_tiny_model
from policies.training.merge import merge_checkpoint
from tasks.artifacts import (
    ProgressArtifact,
    artifact_key,
    chunk_progress,
    env_report_table,
    eval_table,
    metrics_progress,
    polled_progress,
    save_report_artifacts,
    table_artifact,
)
from tasks.build import run_build
from tasks.caching import output_dir, stage_cache
from tasks.concurrency import model_stage
from tasks.evaluate import evaluate_ftrl_shard, evaluate_tau_domain, join_ftrl_shards
from tasks.model import tiny_spec
from tasks.profile import PipelineConfig
from tasks.references import FileRef, RefKind, file_ref
from tasks.report import report_markdown, write_run_report
from tasks.retries import inject_fault
from tasks.sample import run_sampling
from tasks.shards import concat_files, split_envs
from tasks.train import (
    run_training,
    run_warm_start,
    training_metrics,
    training_plots,
    training_steps,
    warm_start_plot,
    warm_start_steps,
)

__all__ = [
    "BuiltEnvs",
    "build_envs",
    "convert",
    "evaluate_shard",
    "evaluate_tau",
    "join_evaluation",
    "join_trajectories",
    "merge",
    "report",
    "sample_shard",
    "source_ref",
    "split_shards",
    "tiny_model",
    "train",
    "warm_start",
]

#: Results are small references; JSON keeps them readable in `.prefect-results` and never pickles data.
_RESULTS = {"persist_result": True, "result_serializer": "json", "task_run_name": "{label}"}


class BuiltEnvs(BaseModel):
    """What the build stage wrote: the two splits and the build report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train: FileRef
    test: FileRef
    report: FileRef


def _artifact(run_dir: Path, label: str, *what: str) -> str:
    return artifact_key(run_dir.name, label, *what)


# --- inputs -------------------------------------------------------------------------------------


@task(cache_policy=stage_cache("source", exclude=("label",)), **_RESULTS)
def source_ref(path: str, kind: RefKind, fingerprint: list[tuple[str, int, int]], label: str) -> FileRef:
    """Digest an input the pipeline did not write (a model folder, a benchmark file).

    Cached on the path and its files' sizes and modification times (`stat_fingerprint`), like make:
    an unchanged input is not read again, a changed one is.
    """
    return file_ref(path, kind)


@task(cache_policy=stage_cache("model"), **_RESULTS)
def tiny_model(config: PipelineConfig, run_dir: Path, label: str) -> FileRef:
    """Build the tiny local model (the profile names no model folder), with its copy pre-training."""
    out = output_dir(run_dir, "models", label)
    if not (out / "config.json").is_file():
        with model_stage():
            build_tiny_model(out, tiny_spec(config), log=get_run_logger().info)
    return file_ref(out, "model")


# --- build --------------------------------------------------------------------------------------


@task(cache_policy=stage_cache("build"), **_RESULTS)
def build_envs(config: PipelineConfig, run_dir: Path, label: str) -> BuiltEnvs:
    """Build verified environments, split into train and test."""
    inject_fault("build", label, run_dir)
    out = output_dir(run_dir, "envs", label)
    progress = ProgressArtifact(_artifact(run_dir, label, "progress"), "Environments built and verified")
    report = run_build(config, out, progress=progress.update)
    progress.finish()
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    table_artifact(_artifact(run_dir, label, "report"), env_report_table(data), "Environment build report")
    return BuiltEnvs(
        train=file_ref(out / "train.jsonl", "envs", rows=report.train),
        test=file_ref(out / "test.jsonl", "envs", rows=report.test),
        report=file_ref(out / "report.md", "report"),
    )


# --- shards -------------------------------------------------------------------------------------


@task(cache_policy=stage_cache("shards"), **_RESULTS)
def split_shards(
    envs: FileRef,
    shards: int,
    unit: int,
    split: str | None,
    run_dir: Path,
    label: str,
    limit: int | None = None,
    offset: int = 0,
) -> list[FileRef]:
    """Cut an environment file (its `limit` rows after the first `offset` when given) into `shards`
    contiguous shards of whole chunks (`tasks.shards`)."""
    out = output_dir(run_dir, "shards", label)
    return [
        file_ref(path, "envs", rows=rows)
        for path, rows in split_envs(envs.path, out, shards, unit, split=split, limit=limit, offset=offset)
    ]


@task(cache_policy=stage_cache("shards"), **_RESULTS)
def join_trajectories(shards: list[FileRef], run_dir: Path, label: str) -> FileRef:
    """Concatenate the shards' trajectories in shard order: the unsharded file, byte for byte."""
    out = output_dir(run_dir, "trajectories", label) / "trajectories.jsonl"
    rows = concat_files([shard.path for shard in shards], out)
    return file_ref(out, "trajectories", rows=rows)


# --- sample, convert ----------------------------------------------------------------------------


@task(cache_policy=stage_cache("sample"), **_RESULTS)
def sample_shard(config: PipelineConfig, envs: FileRef, model: FileRef, run_dir: Path, label: str) -> FileRef:
    """Roll `model` out in one shard of environments."""
    inject_fault("sample", label, run_dir)
    out = output_dir(run_dir, "trajectories", label) / "trajectories.jsonl"
    if envs.rows == 0:
        atomic_write_text(out, "")
        return file_ref(out, "trajectories", rows=0)
    chunks = math.ceil((envs.rows or 0) * config.sample.samples_per_env / config.sample.chunk_episodes)
    key = _artifact(run_dir, label, "progress")
    with (
        model_stage(),
        polled_progress(key, f"{label}: chunks of episodes sampled", chunk_progress(out, chunks)),
    ):
        report = run_sampling(config, envs.path, out, model=str(model.path), progress=False)
    return file_ref(out, "trajectories", rows=report.rows)


@task(cache_policy=stage_cache("convert"), **_RESULTS)
def convert(trajectories: FileRef, run_dir: Path, label: str) -> FileRef:
    """Convert trajectory rows (train split) into the training parquet."""
    inject_fault("convert", label, run_dir)
    out = output_dir(run_dir, "parquet", label) / "train.parquet"
    report = convert_trajectories(trajectories.path, out)
    return FileRef(
        path=out,
        kind="parquet",
        sha256=report.sha256,
        rows=report.rows_out,
        schema_version=report.schema_version,
    )


# --- warm start, train, merge -------------------------------------------------------------------


@task(cache_policy=stage_cache("warm-start"), **_RESULTS)
def warm_start(config: PipelineConfig, envs: FileRef, model: FileRef, run_dir: Path, label: str) -> FileRef:
    """Fine-tune `model` on oracle trajectories of the train environments `envs` (the profile's
    `train.local.sft`); the result is a model folder that sampling and training start from."""
    inject_fault("warm-start", label, run_dir)
    out = output_dir(run_dir, "checkpoints", label)
    key = _artifact(run_dir, label, "progress")
    with (
        model_stage(),
        polled_progress(key, f"{label}: SFT steps", metrics_progress(warm_start_steps(config, out))),
    ):
        folder = run_warm_start(config, envs.path, model.path, out, get_run_logger())
    return file_ref(folder, "model")


@task(cache_policy=stage_cache("train"), **_RESULTS)
def train(config: PipelineConfig, data: FileRef, model: FileRef, run_dir: Path, label: str) -> FileRef:
    """Train `model` on the parquet with the profile's trainer; the result is the checkpoint to merge."""
    inject_fault("train", label, run_dir)
    out = output_dir(run_dir, "checkpoints", label)
    key = _artifact(run_dir, label, "progress")
    with (
        model_stage(),
        polled_progress(key, f"{label}: training steps", metrics_progress(training_steps(config, out))),
    ):
        checkpoint = run_training(config, data.path, model.path, out, get_run_logger())
    return file_ref(checkpoint, "checkpoint")


@task(cache_policy=stage_cache("merge"), **_RESULTS)
def merge(config: PipelineConfig, checkpoint: FileRef, run_dir: Path, label: str) -> FileRef:
    """Merge a training checkpoint into a model folder every backend loads."""
    inject_fault("merge", label, run_dir)
    out = output_dir(run_dir, "models", label)
    with model_stage():
        result = merge_checkpoint(checkpoint.path, out, config.merge)
    return file_ref(result.out_dir, "model")


# --- evaluate -----------------------------------------------------------------------------------


@task(cache_policy=stage_cache("evaluate"), **_RESULTS)
def evaluate_shard(
    config: PipelineConfig, envs: FileRef, model: FileRef, model_name: str, run_dir: Path, label: str
) -> FileRef:
    """Play the evaluation episodes of one shard of environments."""
    inject_fault("evaluate", label, run_dir)
    out = output_dir(run_dir, "eval", label)
    rows = envs.rows or 0
    chunks = math.ceil(rows * config.eval.trials / config.eval.chunk_episodes)
    key = _artifact(run_dir, label, "progress")
    with (
        model_stage(),
        polled_progress(key, f"{label}: chunks evaluated", chunk_progress(out / EPISODES_FILE, chunks)),
    ):
        evaluate_ftrl_shard(config, envs.path, rows, model.path, out, model_name)
    return file_ref(out, "eval", rows=rows * config.eval.trials)


@task(cache_policy=stage_cache("evaluate"), **_RESULTS)
def join_evaluation(
    config: PipelineConfig,
    shards: list[FileRef],
    data: FileRef,
    model: FileRef,
    model_name: str,
    run_dir: Path,
    label: str,
) -> FileRef:
    """Join the shards' episodes and summarise them: the unsharded evaluation's folder."""
    out = output_dir(run_dir, "eval", label)
    pieces = [shard.path for shard in shards]
    summary = join_ftrl_shards(config, pieces, data.path, out, model_name, model.sha256)
    table_artifact(
        _artifact(run_dir, label, "results"), eval_table({model_name: summary}), f"{label} results"
    )
    return file_ref(out, "eval", rows=summary["episodes"])


@task(cache_policy=stage_cache("evaluate"), **_RESULTS)
def evaluate_tau(
    config: PipelineConfig, domain: FileRef, tasks: FileRef | None, model: FileRef, run_dir: Path, label: str
) -> FileRef:
    """Evaluate `model` as the agent of a τ-bench-style domain, with the profile's user simulator."""
    inject_fault("evaluate", label, run_dir)
    out = output_dir(run_dir, "eval", label)
    with model_stage():
        evaluate_tau_domain(config, domain.path, tasks.path if tasks else None, model.path, out)
    summary = load_summary(out)
    table_artifact(_artifact(run_dir, label, "results"), eval_table({label: summary}), f"{label} results")
    return file_ref(out, "eval", rows=summary.get("episodes"))


# --- report -------------------------------------------------------------------------------------


@task(cache_policy=stage_cache("report"), **_RESULTS)
def report(
    evaluations: list[FileRef],
    names: list[str],
    checkpoints: dict[str, FileRef],
    run_dir: Path,
    label: str,
    reference: str | None = None,
    warm_start: FileRef | None = None,
) -> FileRef:
    """Compare the evaluations (changes from the one named `reference`, default the first), table and
    draw each iteration's training reward, and link every stage's training plots. The flow posts the
    report's artifacts (`tasks.artifacts.publish_report`), so that a cached report gets them too."""
    out = output_dir(run_dir, "report", label)
    plots = {}
    if warm_start is not None and (sft_plot := warm_start_plot(warm_start.path)) is not None:
        plots[f"{reference or 'warm start'}: SFT"] = sft_plot
    plots.update(
        {
            f"{name}: {what}": path
            for name, checkpoint in checkpoints.items()
            for what, path in training_plots(checkpoint.path).items()
        }
    )
    training = {
        name: metrics
        for name, checkpoint in checkpoints.items()
        if (metrics := training_metrics(checkpoint.path)) is not None
    }
    written = write_run_report(
        [evaluation.path for evaluation in evaluations],
        names,
        out,
        reference=reference,
        training=training,
        plots=plots,
    )
    tables = dict(written.tables)
    if "results" not in tables:  # one evaluation: nothing compared, its own numbers
        summaries = {
            name: load_summary(evaluation.path) for evaluation, name in zip(evaluations, names, strict=True)
        }
        tables = {"results": eval_table(summaries), **tables}
    links = {"report": written.path, **written.plots}
    markdown = report_markdown(written.body, links)
    save_report_artifacts(out, markdown, f"Run report: {written.path}", tables)
    return file_ref(out, "report")
