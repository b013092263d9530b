"""The full run: build environments, warm-start the model (when the profile has an SFT warm start),
then N iterations of sample → convert → train → merge, evaluating every model on the way, and
write the comparison report.

    base-model ─┬─ evaluate-base
    build ──────┴─ warm-start ─┬─ evaluate-warm-start
                               └─ sample-1 → convert-1 → train-1 → merge-1 ─┬─ evaluate-iter-1
                                                                            └─ sample-2 → ...

The warm start (`train.local.sft`, local trainer only) is a stage of its own: it fine-tunes the
base model on oracle trajectories of the build's train environments (`train.local.sft.scenario_types`
can keep it to the simpler scenario types, leaving the others for RL to learn; with
`train.local.sft.skip_sampled_envs` it leaves out the first `sample.max_envs`, which RL samples, so
that RL does not train on questions the warm start has memorised), and its model is evaluated as
`warm-start` and is where iteration 1 starts. The train stages never run SFT
themselves (`train_view`). Without a warm start, iteration 1 starts from the base model. Iteration
k samples with the model merged in iteration k−1, as the paper iterates. The report measures every
change from the warm-started model when there is one (it isolates what RL added), else from the
first evaluation.

Every step is a cached task (`tasks.stage_tasks`), so the same run started again finishes with
every stage `Cached`, a run whose stage failed reruns only what had not completed, and a changed
setting reruns the stages that read it and those downstream of their outputs (an SFT setting: the
warm start and everything after it; a GRPO setting: the train stages and what follows them).

Stages run as soon as their inputs exist: the base model is evaluated while the warm start trains,
and sampling and evaluation fan out over shards (`RunPlan.sample_shards`, `eval_shards`).

    from flows.pipeline import RunPlan, full_run
    from tasks.profile import load_profile

    full_run(load_profile("configs/smoke.yaml"), RunPlan(iterations=2))
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.futures import PrefectFuture
from pydantic import BaseModel, ConfigDict, Field

from flows.binding import RetryPolicy, RunTasks, StageFailed, StageState
from tasks.caching import stage_view
from tasks.profile import PipelineConfig
from tasks.references import FileRef
from tasks.stage_tasks import BuiltEnvs

__all__ = [
    "RunPlan",
    "RunResult",
    "StageFailed",
    "WARM_START",
    "check_run",
    "full_run",
    "train_view",
    "warm_start_view",
]

#: The warm-started model's name in the run: its stage's label, its evaluation's and the report's.
WARM_START = "warm-start"


class RunPlan(BaseModel):
    """The shape of a run: how many iterations, how wide sampling and evaluation fan out, retries."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(1, ge=1, le=100, description="Sample → train → merge rounds (the paper: 1-2).")
    sample_shards: int = Field(1, ge=1, le=1024, description="Parallel sampling tasks per iteration.")
    eval_shards: int = Field(1, ge=1, le=1024, description="Parallel evaluation tasks per model.")
    evaluate_base: bool = Field(True, description="Evaluate the starting model too (the report's base).")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


class RunResult(BaseModel):
    """Where a finished run put its models, evaluations and report."""

    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    envs: BuiltEnvs
    models: dict[str, FileRef]
    evaluations: dict[str, FileRef]
    report: FileRef
    stages: list[StageState]

    @property
    def report_file(self) -> Path:
        return self.report.path / "report.md"


def check_run(config: PipelineConfig) -> None:
    """Every reason the profile cannot make a full run, all at once, before any work starts."""
    problems = []
    if config.generation.backend == "openai":
        problems.append(
            "generation.backend: a full run samples with the models it trains; use transformers or vllm "
            "(an OpenAI-compatible endpoint serves a fixed model)"
        )
    if config.model.path is not None and not (config.model.path / "config.json").is_file():
        problems.append(f"model.path: {config.model.path} is not a model folder (no config.json)")
    ev = config.eval
    if ev.benchmark == "ftrl":
        if ev.data is not None and not ev.data.is_file():
            problems.append(f"eval.data: {ev.data}: no such file")
        if ev.data is None and config.build.test_fraction == 0:
            problems.append("eval.data: empty, and build.test_fraction is 0, so the run builds no test split")
        if ev.data is None and ev.split != "test":
            problems.append(
                "eval.split: the run builds a test-only file to evaluate on; for train rows set eval.data"
            )
    elif ev.domain_dir is None or not ev.domain_dir.is_dir():
        problems.append(f"eval.domain_dir: {ev.domain_dir}: tau-bench needs a domain folder")
    sft = config.train.local.sft
    if sft is not None and sft.skip_sampled_envs and config.sample.max_envs is None:
        problems.append(
            "train.local.sft.skip_sampled_envs: sampling rolls out every train environment "
            "(sample.max_envs is empty), so none would be left for the warm start"
        )
    if problems:
        raise ValueError("the profile cannot make a full run:\n  " + "\n  ".join(problems))


def train_view(config: PipelineConfig) -> PipelineConfig:
    """The train stage's view, without the SFT warm start: in the pipeline that is its own stage
    (`warm_start_view`), so a train stage's key and its work are RL alone."""
    view = stage_view(config, "train")
    if view.train.local.sft is None:
        return view
    local = view.train.local.model_copy(update={"sft": None})
    return view.model_copy(update={"train": view.train.model_copy(update={"local": local})})


def warm_start_view(config: PipelineConfig) -> PipelineConfig | None:
    """The warm-start stage's view, or None when the run has no warm start (no `train.local.sft`, or
    a trainer other than the local one, whose settings are then unused)."""
    if config.train.backend != "local" or config.train.local.sft is None:
        return None
    return stage_view(config, "warm-start")


@flow(name="full-run", flow_run_name="{config.run.name}", validate_parameters=True)
def full_run(config: PipelineConfig, plan: RunPlan | None = None) -> RunResult:
    """Build, then `plan.iterations` rounds of sample → convert → train → merge, then evaluate and report.

    Raises `StageFailed` (with every stage's state) when a stage fails for good.
    """
    plan = plan or RunPlan()
    check_run(config)
    run = RunTasks(config.run.directory, plan.retry)
    with run.failing_as_stages():
        return _run(run, config, plan)


def _run(run: RunTasks, config: PipelineConfig, plan: RunPlan) -> RunResult:
    base = run.base_model(config)
    built: BuiltEnvs = run.build_envs(stage_view(config, "build"), run.run_dir, label="build")
    sample_shards = run.sample_shards(config, built.train, plan.sample_shards)
    evaluate = _evaluator(run, config, built, plan)

    models: dict[str, PrefectFuture] = {"base": base}
    evaluations = {"base": evaluate(base, "base")} if plan.evaluate_base else {}
    checkpoints: dict[str, PrefectFuture] = {}
    model = base
    warm = warm_start_view(config)
    if warm is not None:
        envs = run.warm_start_envs(config, built.train)
        model = run.warm_start.submit(warm, envs, base, run.run_dir, label=WARM_START)
        models[WARM_START] = model
        evaluations[WARM_START] = evaluate(model, WARM_START)
    for k in range(1, plan.iterations + 1):
        name = f"iter-{k}"
        trajectories = run.sample(config, sample_shards, model, label=f"sample-{k}")
        data = run.convert.submit(trajectories, run.run_dir, label=f"convert-{k}")
        checkpoints[name] = run.train.submit(train_view(config), data, model, run.run_dir, label=f"train-{k}")
        model = run.merge.submit(
            stage_view(config, "merge"), checkpoints[name], run.run_dir, label=f"merge-{k}"
        )
        models[name] = model
        evaluations[name] = evaluate(model, name)
    report = run.report.submit(
        list(evaluations.values()),
        list(evaluations),
        checkpoints,
        run.run_dir,
        label="report",
        reference=WARM_START if WARM_START in evaluations else None,
        warm_start=models.get(WARM_START),
    )
    run.check([*models.values(), *evaluations.values(), *checkpoints.values(), report])
    run.publish_report(report.result(), "report")
    return RunResult(
        run_dir=run.run_dir,
        envs=built,
        models={name: future.result() for name, future in models.items()},
        evaluations={name: future.result() for name, future in evaluations.items()},
        report=report.result(),
        stages=run.stages.states(),
    )


def _evaluator(run: RunTasks, config: PipelineConfig, built: BuiltEnvs, plan: RunPlan):
    """`evaluate(model, name)` for the profile's benchmark: sharded FTRL episodes or a τ-bench domain."""
    ev = config.eval
    if ev.benchmark == "tau-bench":
        domain = run.source(ev.domain_dir, "envs", "domain")
        tasks_file = run.source(ev.tasks, "envs", "domain-tasks") if ev.tasks is not None else None
        return lambda model, name: run.evaluate_domain(config, domain, tasks_file, model, name)
    data = built.test if ev.data is None else run.source(ev.data, "envs", "eval-data").result()
    shards = run.eval_shards(config, data, plan.eval_shards, "split-eval")
    return lambda model, name: run.evaluate(config, shards, data, model, name)
