"""One flow per stage, so any stage can be triggered alone (from the UI, a deployment or Python) with
its input references.

Each flow runs the same tasks as the full run (`flows.binding.RunTasks`), in the run directory of
its profile: a stage triggered alone caches where the full run does, and the full run finds its
result. Inputs are `FileRef`s; a reference given with only `path` and `kind` (by hand, in the UI
form) gets its digest computed, and one given with a digest is checked against the file.

    from flows.stages import sample_flow
    from tasks.references import FileRef

    sample_flow(config, envs=FileRef(path="runs/smoke/envs/build/0f3a.../train.jsonl", kind="envs"))
"""

from __future__ import annotations

from prefect import flow
from prefect.futures import PrefectFuture

from flows.binding import RetryPolicy, RunTasks
from flows.pipeline import WARM_START, train_view, warm_start_view
from tasks.caching import stage_view
from tasks.profile import PipelineConfig
from tasks.references import FileRef
from tasks.stage_tasks import BuiltEnvs

__all__ = [
    "build_flow",
    "convert_flow",
    "evaluate_flow",
    "merge_flow",
    "sample_flow",
    "train_flow",
    "warm_start_flow",
]


def _run(config: PipelineConfig, retry: RetryPolicy | None) -> RunTasks:
    return RunTasks(config.run.directory, retry or RetryPolicy())


def _finish(run: RunTasks, future: PrefectFuture) -> FileRef:
    run.check([future])
    return future.result()


@flow(name="build", flow_run_name="{config.run.name}-build", validate_parameters=True)
def build_flow(config: PipelineConfig, retry: RetryPolicy | None = None) -> BuiltEnvs:
    """Build verified environments (train and test splits) with the profile's `build` section."""
    run = _run(config, retry)
    with run.failing_as_stages():
        return run.build_envs(stage_view(config, "build"), run.run_dir, label="build")


@flow(name="sample", flow_run_name="{config.run.name}-{label}", validate_parameters=True)
def sample_flow(
    config: PipelineConfig,
    envs: FileRef,
    model: FileRef | None = None,
    shards: int = 1,
    label: str = "sample",
    retry: RetryPolicy | None = None,
) -> FileRef:
    """Sample trajectories in `envs` with `model` (default: the profile's model, or the tiny one),
    over `shards` parallel shards joined in order."""
    run = _run(config, retry)
    with run.failing_as_stages():
        start = run.base_model(config) if model is None else model.resolved()
        pieces = run.sample_shards(config, envs.resolved(), shards)
        return _finish(run, run.sample(config, pieces, start, label=label))


@flow(name="convert", flow_run_name="{config.run.name}-{label}", validate_parameters=True)
def convert_flow(
    config: PipelineConfig, trajectories: FileRef, label: str = "convert", retry: RetryPolicy | None = None
) -> FileRef:
    """Convert trajectory rows (train split) into the training parquet."""
    run = _run(config, retry)
    with run.failing_as_stages():
        return _finish(run, run.convert.submit(trajectories.resolved(), run.run_dir, label=label))


@flow(name="warm-start", flow_run_name="{config.run.name}-{label}", validate_parameters=True)
def warm_start_flow(
    config: PipelineConfig,
    envs: FileRef,
    model: FileRef | None = None,
    label: str = WARM_START,
    retry: RetryPolicy | None = None,
) -> FileRef:
    """Warm-start `model` (default: the profile's model) with the profile's SFT (`train.local.sft`) on
    oracle trajectories of the train environments `envs`; the result is a model folder."""
    view = warm_start_view(config)
    if view is None:
        raise ValueError("train.local.sft: empty (or train.backend is not local): no warm start to run")
    run = _run(config, retry)
    with run.failing_as_stages():
        start = run.base_model(config) if model is None else model.resolved()
        future = run.warm_start.submit(view, envs.resolved(), start, run.run_dir, label=label)
        return _finish(run, future)


@flow(name="train", flow_run_name="{config.run.name}-{label}", validate_parameters=True)
def train_flow(
    config: PipelineConfig,
    data: FileRef,
    model: FileRef | None = None,
    label: str = "train",
    retry: RetryPolicy | None = None,
) -> FileRef:
    """Train `model` (default: the profile's model; after a warm start, its model) on the training
    parquet `data`. The SFT warm start is not part of it: that is `warm_start_flow`."""
    run = _run(config, retry)
    with run.failing_as_stages():
        start = run.base_model(config) if model is None else model.resolved()
        future = run.train.submit(train_view(config), data.resolved(), start, run.run_dir, label=label)
        return _finish(run, future)


@flow(name="merge", flow_run_name="{config.run.name}-{label}", validate_parameters=True)
def merge_flow(
    config: PipelineConfig, checkpoint: FileRef, label: str = "merge", retry: RetryPolicy | None = None
) -> FileRef:
    """Merge a training checkpoint (a VeRL FSDP actor or a model folder) into a model folder."""
    run = _run(config, retry)
    with run.failing_as_stages():
        future = run.merge.submit(
            stage_view(config, "merge"), checkpoint.resolved(), run.run_dir, label=label
        )
        return _finish(run, future)


@flow(name="evaluate", flow_run_name="{config.run.name}-evaluate-{name}", validate_parameters=True)
def evaluate_flow(
    config: PipelineConfig,
    model: FileRef | None = None,
    data: FileRef | None = None,
    name: str = "model",
    shards: int = 1,
    retry: RetryPolicy | None = None,
) -> FileRef:
    """Evaluate `model` (default: the profile's model) on the profile's `eval` benchmark.

    For `ftrl`, `data` is the environment file (default: the profile's `eval.data`), played over
    `shards` parallel shards; for `tau-bench`, the domain and tasks come from the profile.
    `name` is the model's name in the summary.
    """
    run = _run(config, retry)
    ev = config.eval
    with run.failing_as_stages():
        agent = run.base_model(config) if model is None else model.resolved()
        if ev.benchmark == "tau-bench":
            if ev.domain_dir is None:
                raise ValueError("eval.domain_dir: tau-bench needs a domain folder")
            domain = run.source(ev.domain_dir, "envs", "domain")
            tasks_file = run.source(ev.tasks, "envs", "domain-tasks") if ev.tasks is not None else None
            return _finish(run, run.evaluate_domain(config, domain, tasks_file, agent, name))
        if data is None:
            if ev.data is None:
                raise ValueError("evaluate needs `data` or the profile's eval.data (an environment file)")
            data = run.source(ev.data, "envs", "eval-data").result()
        data = data.resolved()
        pieces = run.eval_shards(config, data, shards, "split-eval")
        return _finish(run, run.evaluate(config, pieces, data, agent, name))
