"""The stage tasks bound to one run: its result storage (and so its cache), its retry policy, a log of
every stage it starts, and the steps every flow composes the same way (the model to start from,
sharded sampling and evaluation).

The full run, the per-stage flows and the nightly evaluation all go through `RunTasks`, so a stage
triggered alone writes, caches and retries exactly as it does inside a full run, and a full run
started after it finds its results cached.

Why a log of our own: Prefect records task-run states on its server through events, asynchronously,
so right after a flow returns the API may not list every task run yet. The futures the flow holds
carry each stage's final state at once; `StageLog` keeps them, in the order the flow started the
stages, for `ftrl run`'s `STAGE: STATE` lines and for the error of a failed run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import Task, unmapped
from prefect.futures import PrefectFuture
from prefect.states import State
from pydantic import BaseModel, ConfigDict, Field

from tasks import stage_tasks
from tasks.artifacts import publish_report
from tasks.caching import results_folder, stage_view
from tasks.profile import PipelineConfig
from tasks.references import FileRef, stat_fingerprint
from tasks.retries import backoff_delays, retry_transient
from tasks.shards import env_unit

__all__ = ["RetryPolicy", "RunTasks", "StageFailed", "StageLog", "StageState", "TrackedTask"]


class RetryPolicy(BaseModel):
    """How a stage retries a transient failure (bad input is never retried: `tasks.retries`)."""

    model_config = ConfigDict(extra="forbid")

    retries: int = Field(2, ge=0, le=10, description="Retries of a stage after a transient failure.")
    delay_s: float = Field(
        10.0, ge=0, description="Wait before the first retry; it doubles for each next one."
    )
    jitter: float = Field(
        0.2, ge=0, le=1, description="Random share added to each wait, so workers spread out."
    )


@dataclass(frozen=True)
class StageState:
    """One stage (task run): its label and the name of its final state (`Completed`, `Cached`,
    `Failed`, or `NotReady` when an input failed), with the state's message."""

    name: str
    state: str
    message: str


class StageLog:
    """The stages a flow started, in order, each with its future (or, for a waited call, its state)."""

    def __init__(self) -> None:
        self._entries: list[tuple[str, PrefectFuture | State]] = []

    def add(self, label: str, run: PrefectFuture | State) -> None:
        self._entries.append((label, run))

    def wait(self) -> None:
        """Wait until every stage started has finished (or, with a failed input, given up)."""
        for _, run in self._entries:
            if not isinstance(run, State):
                run.wait()

    def states(self) -> list[StageState]:
        """Final states of the stages that finished; a stage still running shows its current state."""
        result = []
        for label, run in self._entries:
            state = run if isinstance(run, State) else run.state
            result.append(
                StageState(name=label, state=state.name or state.type.value, message=state.message or "")
            )
        return result

    def failures(self) -> list[StageState]:
        return [stage for stage in self.states() if stage.state in ("Failed", "Crashed", "TimedOut")]


class StageFailed(RuntimeError):
    """A flow ended with stages that did not complete; `stages` holds every stage's final state."""

    def __init__(self, message: str, stages: Sequence[StageState]) -> None:
        super().__init__(message)
        self.stages = list(stages)

    @classmethod
    def from_log(cls, log: StageLog) -> StageFailed:
        failed = log.failures()
        message = "; ".join(f"{stage.name} {stage.state.lower()}: {stage.message}" for stage in failed)
        return cls(message or "stages did not complete (none failed: was the run cancelled?)", log.states())


class TrackedTask:
    """A bound task whose every run is written to the `StageLog` under its `label` argument."""

    def __init__(self, task: Task, log: StageLog) -> None:
        self.task = task
        self._log = log

    def __call__(self, *args: Any, label: str, **kwargs: Any) -> Any:
        """Run now and return the result (raising when the stage failed)."""
        state = self.task(*args, label=label, return_state=True, **kwargs)
        self._log.add(label, state)
        return state.result()

    def submit(self, *args: Any, label: str, **kwargs: Any) -> PrefectFuture:
        future = self.task.submit(*args, label=label, **kwargs)
        self._log.add(label, future)
        return future

    def map(self, *args: Any, label: list[str], **kwargs: Any) -> list[PrefectFuture]:
        futures = self.task.map(*args, label=label, **kwargs)
        for name, future in zip(label, futures, strict=True):
            self._log.add(name, future)
        return list(futures)


class RunTasks:
    """`tasks.stage_tasks`, each with this run's result storage and retry policy, logged in `stages`."""

    def __init__(self, run_dir: Path, retry: RetryPolicy) -> None:
        self.run_dir = Path(run_dir).resolve()
        self.stages = StageLog()
        options: dict[str, Any] = {
            "result_storage": results_folder(self.run_dir),
            "retries": retry.retries,
            "retry_delay_seconds": backoff_delays(retry.delay_s),
            "retry_jitter_factor": retry.jitter or None,
            "retry_condition_fn": retry_transient,
        }

        def bind(task: Task) -> TrackedTask:
            return TrackedTask(task.with_options(**options), self.stages)

        self.source_ref = bind(stage_tasks.source_ref)
        self.tiny_model = bind(stage_tasks.tiny_model)
        self.build_envs = bind(stage_tasks.build_envs)
        self.split_shards = bind(stage_tasks.split_shards)
        self.sample_shard = bind(stage_tasks.sample_shard)
        self.join_trajectories = bind(stage_tasks.join_trajectories)
        self.convert = bind(stage_tasks.convert)
        self.warm_start = bind(stage_tasks.warm_start)
        self.train = bind(stage_tasks.train)
        self.merge = bind(stage_tasks.merge)
        self.evaluate_shard = bind(stage_tasks.evaluate_shard)
        self.join_evaluation = bind(stage_tasks.join_evaluation)
        self.evaluate_tau = bind(stage_tasks.evaluate_tau)
        self.report = bind(stage_tasks.report)

    @contextmanager
    def failing_as_stages(self) -> Iterator[None]:
        """Turn an exception that a failed stage caused (one waited for, as the build is) into
        `StageFailed`, so the caller learns every stage's state however the flow ended."""
        try:
            yield
        except StageFailed:
            raise
        except Exception as error:
            self.stages.wait()
            if not self.stages.failures():
                raise
            raise StageFailed.from_log(self.stages) from error

    def check(self, futures: Sequence[PrefectFuture]) -> None:
        """Wait for every stage started; raise `StageFailed` when any of `futures` (the results the flow
        returns) or any stage did not complete. Stages that can still run finish first, so a retry
        finds their results cached."""
        self.stages.wait()
        if not all(future.state.is_completed() for future in futures) or self.stages.failures():
            raise StageFailed.from_log(self.stages)

    def publish_report(self, report: FileRef, label: str) -> None:
        """Post the report stage's Markdown and tables as artifacts of this flow run (cached or not)."""
        publish_report(report.path, self.run_dir.name, label)

    # --- inputs ---------------------------------------------------------------------------------

    def source(self, path: Path, kind: str, label: str) -> PrefectFuture:
        """A reference to an input the pipeline did not write, cached on its files' sizes and times."""
        path = Path(path).resolve()
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder ({label})")
        return self.source_ref.submit(str(path), kind, stat_fingerprint(path), label=label)

    def base_model(self, config: PipelineConfig) -> PrefectFuture:
        """The profile's model folder, or the tiny model built into the run directory."""
        if config.model.path is not None:
            return self.source(config.model.path, "model", "base-model")
        return self.tiny_model.submit(stage_view(config, "model"), self.run_dir, label="base-model")

    def sample_shards(self, config: PipelineConfig, envs: FileRef, count: int) -> list[FileRef]:
        """Cut the training environments (the first `sample.max_envs`) into `count` shards now: the
        flow maps over the list."""
        unit = env_unit(config.sample.chunk_episodes, config.sample.samples_per_env)
        return self.split_shards(
            envs, count, unit, None, self.run_dir, label="split-sample", limit=config.sample.max_envs
        )

    def warm_start_envs(self, config: PipelineConfig, envs: FileRef) -> FileRef:
        """The train environments the warm start learns from: all of them, or with
        `train.local.sft.skip_sampled_envs` the ones after the first `sample.max_envs`, which RL
        samples, so that RL learns on questions the warm start never saw."""
        sft = config.train.local.sft
        if sft is None or not sft.skip_sampled_envs:
            return envs
        (rest,) = self.split_shards(  # the same rows, counted as `sample_shards` counts them
            envs, 1, 1, None, self.run_dir, label="split-warm-start", offset=config.sample.max_envs
        )
        return rest

    def eval_shards(self, config: PipelineConfig, data: FileRef, count: int, label: str) -> list[FileRef]:
        """Cut the evaluation split of `data` into `count` shards now."""
        unit = env_unit(config.eval.chunk_episodes, config.eval.trials)
        return self.split_shards(data, count, unit, config.eval.split, self.run_dir, label=label)

    # --- sharded stages -------------------------------------------------------------------------

    def sample(self, config: PipelineConfig, shards: list[FileRef], model: Any, label: str) -> PrefectFuture:
        """One mapped sampling task per shard, joined in shard order; returns the joined file's future."""
        futures = self.sample_shard.map(
            unmapped(stage_view(config, "sample")),
            shards,
            unmapped(model),
            unmapped(self.run_dir),
            label=[f"{label}/shard-{index}" for index in range(len(shards))],
        )
        return self.join_trajectories.submit(futures, self.run_dir, label=label)

    def evaluate(
        self,
        config: PipelineConfig,
        shards: list[FileRef],
        data: FileRef,
        model: Any,
        name: str,
        label: str | None = None,
    ) -> PrefectFuture:
        """One mapped evaluation task per shard, joined and summarised; returns the evaluation's future.

        `name` is the model's name in the summary and the report; `label` names the stage
        (default `evaluate-<name>`).
        """
        view = stage_view(config, "evaluate")
        label = label or f"evaluate-{name}"
        futures = self.evaluate_shard.map(
            unmapped(view),
            shards,
            unmapped(model),
            unmapped(name),
            unmapped(self.run_dir),
            label=[f"{label}/shard-{index}" for index in range(len(shards))],
        )
        return self.join_evaluation.submit(view, futures, data, model, name, self.run_dir, label=label)

    def evaluate_domain(
        self,
        config: PipelineConfig,
        domain: Any,
        tasks_file: Any,
        model: Any,
        name: str,
        label: str | None = None,
    ) -> PrefectFuture:
        """A τ-bench-style evaluation, one job (episodes hold a database each; see `tasks.evaluate`)."""
        view = stage_view(config, "evaluate")
        return self.evaluate_tau.submit(
            view, domain, tasks_file, model, self.run_dir, label=label or f"evaluate-{name}"
        )
