"""The nightly evaluation: every model on every benchmark, one comparison report per benchmark.

Scheduled from a deployment (a cron schedule in `prefect.yaml`), with the models and benchmarks as
parameters. Models and benchmark files are inputs the pipeline did not write, so each is digested
(cached on its files' sizes and modification times); an evaluation reruns only when its model,
its benchmark or the `eval` settings changed. A night on which nothing changed is all `Cached`.
The first model listed is the base of each report's comparison.

    nightly_eval(
        config,
        models=[
            ModelEntry(name="base", path="models/qwen2.5-7b"),
            ModelEntry(name="grpo", path="runs/x/models/merge-1/ab12cd34ef56"),
        ],
        benchmarks=[BenchmarkEntry(name="ftrl-test", data="data/ftrl_test.jsonl")],
    )
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow
from prefect.futures import PrefectFuture
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows.binding import RetryPolicy, RunTasks, StageState
from tasks.profile import PipelineConfig
from tasks.references import FileRef

__all__ = ["BenchmarkEntry", "ModelEntry", "NightlyResult", "nightly_eval"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class ModelEntry(BaseModel):
    """A model to evaluate: a model folder, and the name reports show for it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, description="Name in summaries and reports.")
    path: Path = Field(description="Model folder (config.json, weights, tokenizer).")


class BenchmarkEntry(BaseModel):
    """A benchmark: an FTRL-format environment file, or a τ-bench-style domain folder."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, description="Name of the benchmark's report.")
    kind: Literal["ftrl", "tau-bench"] = "ftrl"
    data: Path | None = Field(None, description="ftrl: environment JSONL (its eval.split rows are played).")
    domain_dir: Path | None = Field(None, description="tau-bench: the domain folder.")
    tasks: Path | None = Field(None, description="tau-bench: tasks JSONL; empty: the domain's tasks.jsonl.")

    @model_validator(mode="after")
    def _inputs_of_kind(self) -> BenchmarkEntry:
        if self.kind == "ftrl" and (
            self.data is None or self.domain_dir is not None or self.tasks is not None
        ):
            raise ValueError(
                f"benchmark {self.name}: ftrl takes `data` (an environment file) and nothing else"
            )
        if self.kind == "tau-bench" and (self.domain_dir is None or self.data is not None):
            raise ValueError(f"benchmark {self.name}: tau-bench takes `domain_dir` (and optionally `tasks`)")
        return self


class NightlyResult(BaseModel):
    """Per benchmark: its report and each model's evaluation; and every stage's final state."""

    model_config = ConfigDict(extra="forbid")

    reports: dict[str, FileRef]
    evaluations: dict[str, dict[str, FileRef]]
    stages: list[StageState]


@flow(name="nightly-eval", flow_run_name="{config.run.name}-nightly", validate_parameters=True)
def nightly_eval(
    config: PipelineConfig,
    models: list[ModelEntry],
    benchmarks: list[BenchmarkEntry],
    shards: int = 1,
    retry: RetryPolicy | None = None,
) -> NightlyResult:
    """Evaluate each model on each benchmark with the profile's `eval` settings; compare per benchmark."""
    _check(models, benchmarks)
    run = RunTasks(config.run.directory, retry or RetryPolicy())
    with run.failing_as_stages():
        agents = {entry.name: run.source(entry.path, "model", f"model-{entry.name}") for entry in models}
        evaluations: dict[str, dict[str, PrefectFuture]] = {}
        reports: dict[str, PrefectFuture] = {}
        for bench in benchmarks:
            evaluations[bench.name] = _evaluate_all(run, config, bench, agents, shards)
            names = list(evaluations[bench.name])
            futures = list(evaluations[bench.name].values())
            reports[bench.name] = run.report.submit(
                futures, names, {}, run.run_dir, label=f"report-{bench.name}"
            )
        run.check([*reports.values(), *(f for per in evaluations.values() for f in per.values())])
        for name, future in reports.items():
            run.publish_report(future.result(), f"report-{name}")
        return NightlyResult(
            reports={name: future.result() for name, future in reports.items()},
            evaluations={
                bench: {model: future.result() for model, future in per.items()}
                for bench, per in evaluations.items()
            },
            stages=run.stages.states(),
        )


def _check(models: list[ModelEntry], benchmarks: list[BenchmarkEntry]) -> None:
    problems = []
    if not models:
        problems.append("models: give at least one model folder")
    if not benchmarks:
        problems.append("benchmarks: give at least one benchmark")
    for kind, names in (("model", [m.name for m in models]), ("benchmark", [b.name for b in benchmarks])):
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            problems.append(f"{kind} names must differ: {', '.join(repeated)} repeat")
    for entry in models:
        if not (entry.path / "config.json").is_file():
            problems.append(f"model {entry.name}: {entry.path} is not a model folder (no config.json)")
    for bench in benchmarks:
        source = bench.data if bench.kind == "ftrl" else bench.domain_dir
        if source is None or not source.exists():
            problems.append(f"benchmark {bench.name}: {source} does not exist")
    if problems:
        raise ValueError("the nightly evaluation cannot start:\n  " + "\n  ".join(problems))


def _evaluate_all(
    run: RunTasks,
    config: PipelineConfig,
    bench: BenchmarkEntry,
    agents: dict[str, PrefectFuture],
    shards: int,
) -> dict[str, PrefectFuture]:
    """One evaluation per model on `bench`, with the profile's eval settings for the benchmark's kind."""
    config = config.model_copy(update={"eval": config.eval.model_copy(update={"benchmark": bench.kind})})
    if bench.kind == "tau-bench":
        domain = run.source(bench.domain_dir, "envs", f"domain-{bench.name}")
        tasks_file = run.source(bench.tasks, "envs", f"tasks-{bench.name}") if bench.tasks else None
        return {
            name: run.evaluate_domain(
                config, domain, tasks_file, agent, name, label=f"evaluate-{bench.name}-{name}"
            )
            for name, agent in agents.items()
        }
    data: FileRef = run.source(bench.data, "envs", f"data-{bench.name}").result()
    pieces = run.eval_shards(config, data, shards, f"split-{bench.name}")
    return {
        name: run.evaluate(config, pieces, data, agent, name, label=f"evaluate-{bench.name}-{name}")
        for name, agent in agents.items()
    }
