"""`ftrl run`: the full run on the embedded Prefect server, with nothing to set up.

    ftrl run --config configs/smoke.yaml
    ftrl run --config configs/cpu-demo.yaml --run-dir runs/try-2 --iterations 2 --sample-shards 2
    ftrl run --config configs/smoke.yaml --sample-shards 4 --eval-shards 4 --processes 4
    ftrl run --config configs/smoke.yaml --set train.local.max_steps=8   # reruns train, merge, eval, report
    ftrl run --config configs/cpu-demo.yaml --seed 1      # every seed 1: results beside seed 0's

Without `PREFECT_API_URL` Prefect starts a temporary local server for the run whose database is
`PREFECT_HOME`'s (`~/.prefect/prefect.db` by default), the one `ftrl ui` serves: the finished run,
its stages, logs and artifacts (the report, its tables, progress bars) show there afterwards. With
`PREFECT_API_URL`, the run is recorded on that server and shows in its UI as it goes. Results (and
so the cache) live in the run directory's `.prefect-results`: the same command again finishes with
every stage `Cached`, and after a failure it reruns only the stages that had not completed.

The command ends with one line per stage, `STAGE: STATE` (Prefect's final state: `Completed`,
`Cached`, `Failed`, or `NotReady` when an input failed), then `report file: PATH` (absolute) and
where the run is in the Prefect UI. Exit status 0 when the run completed, 1 when a stage failed, 2
for a bad profile or option.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer
from pydantic import ValidationError

from flows.errors import reports_user_errors
from flows.options import SetOption
from tasks.profile import PipelineConfig, RunConfig, load_profile, seed_overrides

#: Loggers whose records join the run's log in Prefect: the rooms log through stdlib `logging`.
EXTRA_LOGGERS = "envs,policies,rewards,tasks"
#: Where `ftrl ui` serves the UI unless told another port.
LOCAL_UI = "http://127.0.0.1:4200"


@reports_user_errors
def run_command(
    config: Annotated[
        Path, typer.Option("--config", "--profile", "-p", help="YAML run profile, e.g. configs/smoke.yaml.")
    ],
    run_dir: Annotated[
        Path | None,
        typer.Option(help="Run directory; default: the profile's run.root/run.name. Caches live in it."),
    ] = None,
    iterations: Annotated[int, typer.Option(min=1, help="Sample → train → merge rounds.")] = 1,
    sample_shards: Annotated[int, typer.Option(min=1, help="Parallel sampling tasks per iteration.")] = 1,
    eval_shards: Annotated[int, typer.Option(min=1, help="Parallel evaluation tasks per model.")] = 1,
    processes: Annotated[
        int,
        typer.Option(
            min=0,
            help="Run stages in this many worker processes, so model stages (one per process) run side by "
            "side; 0: threads of this process, where they take turns.",
        ),
    ] = 0,
    retries: Annotated[int, typer.Option(min=0, help="Retries of a stage after a transient failure.")] = 2,
    retry_delay: Annotated[
        float, typer.Option(min=0.0, help="Seconds before the first retry; doubles for each next one.")
    ] = 10.0,
    seed: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="One seed for the whole run: build.seed, sample.seed, eval.seed, train.local.seed, "
            "train.local.sft.seed (with a warm start) and model.tiny_seed (the tiny model's weights). "
            "--set KEY=VALUE still overrides one of them. Seeds are part of the cache keys, so runs "
            "of different seeds keep their results side by side in the run directory.",
        ),
    ] = None,
    set_: SetOption = None,
) -> None:
    """Run the whole pipeline: build environments, warm-start the model (with an SFT warm start in the
    profile), sample, convert, train, merge (per iteration), evaluate every model and write the
    comparison report."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", EXTRA_LOGGERS)
    from flows.binding import RetryPolicy, StageFailed
    from flows.pipeline import RunPlan, RunResult, check_run, full_run

    profile = run_profile(config, set_ or [], run_dir=run_dir, seed=seed)
    check_run(profile)
    plan = RunPlan(
        iterations=iterations,
        sample_shards=sample_shards,
        eval_shards=eval_shards,
        retry=RetryPolicy(retries=retries, delay_s=retry_delay),
    )
    flow = full_run
    if processes:
        from prefect.task_runners import ProcessPoolTaskRunner

        flow = full_run.with_options(task_runner=ProcessPoolTaskRunner(max_workers=processes))
    state = flow(profile, plan, return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, RunResult | StageFailed):
        for stage in outcome.stages:
            typer.echo(f"{stage.name}: {stage.state}")
    if isinstance(outcome, RunResult):
        typer.echo(f"report file: {outcome.report_file.resolve()}")
    if isinstance(outcome, RunResult | StageFailed):
        for line in ui_lines(state.state_details.flow_run_id, profile.run.name):
            typer.echo(line)
    if isinstance(outcome, RunResult):
        return
    if isinstance(outcome, ValueError | FileNotFoundError):
        raise outcome  # a user mistake found inside the flow: one error line, exit 2
    typer.echo(f"run failed: {outcome}", err=True)
    raise typer.Exit(code=1)


def run_profile(
    config: Path, overrides: list[str], *, run_dir: Path | None = None, seed: int | None = None
) -> PipelineConfig:
    """The profile `ftrl run` runs: the file, every seed set to `seed` (when given), then the
    `--set` overrides (so one of them can still pick a seed of its own), then `--run-dir`."""
    profile = load_profile(config, overrides)
    if seed is not None:
        profile = load_profile(config, [*seed_overrides(profile, seed), *overrides])
    if run_dir is not None:
        profile = profile.model_copy(update={"run": _run_config(run_dir)})
    return profile


def ui_lines(flow_run_id: UUID | None, run_name: str) -> list[str]:
    """Where to look at the run in the Prefect UI: the server it was recorded on, or, after a
    temporary server, `ftrl ui` on the same database (`PREFECT_HOME`'s)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    link = f"/runs/flow-run/{flow_run_id}" if flow_run_id is not None else "/runs"
    if settings.api.url:
        ui = settings.api.url.rstrip("/").removesuffix("/api")
        return [f"Prefect UI: {ui}{link} (tab Artifacts: the report, its tables, progress)"]
    command = "ftrl ui" if "PREFECT_HOME" not in os.environ else f"ftrl ui --home {settings.home}"
    return [
        f"Prefect UI: start it with `{command}` ({LOCAL_UI}), then Runs → {run_name} → Artifacts;",
        f"  this run: {LOCAL_UI}{link}",
    ]


def _run_config(run_dir: Path) -> RunConfig:
    """The profile's `run` section for `--run-dir`: its parent is the root, its name the run's name."""
    run_dir = run_dir.expanduser().resolve()
    try:
        return RunConfig(name=run_dir.name, root=run_dir.parent)
    except ValidationError:
        raise ValueError(
            f"--run-dir {run_dir}: the folder's name must start with a letter or digit and hold only "
            "letters, digits, '.', '_' and '-'"
        ) from None
