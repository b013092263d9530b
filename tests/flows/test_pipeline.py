"""The full run under Prefect's test harness: it completes (the SFT warm start, restricted to the simpler
scenario types, is a stage of its own that iteration 1 starts from), reruns as all `Cached`, reruns
exactly the stages downstream of a changed setting, and recovers from an injected transient fault.

One run directory serves the module's tests in order (each builds on the cache the previous left),
on a profile small enough for a 2-iteration, 2-shard run of the tiny model in well under a minute.
Task results go to the run directory's `.prefect-results` inside pytest's temporary folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness
from typer.testing import CliRunner

from envs.evaluation.ftrl_eval import EPISODES_FILE, evaluate_ftrl, selected_envs
from envs.jsonl import iter_rows
from envs.sandbox import SandboxPool
from envs.schema import EnvRow, TrajectoryRow
from flows.binding import RetryPolicy, StageFailed
from flows.cli import app
from flows.nightly import BenchmarkEntry, ModelEntry, nightly_eval
from flows.pipeline import RunPlan, RunResult, full_run
from flows.stages import convert_flow, evaluate_flow, sample_flow, warm_start_flow
from tasks.evaluate import eval_params, ftrl_settings
from tasks.model import backend_for
from tasks.profile import PipelineConfig, load_profile
from tasks.references import FileRef
from tasks.retries import FAULT_ENV, InjectedFault, backoff_delays, retry_transient
from tasks.sample import run_sampling

#: A small profile on which every stage does real work: 20 template environments (6 for test), chunks
#: of 4 episodes so that 2 shards each hold several chunks, a 20-step SFT warm start on the single-hop
#: and parallel single-hop train environments only (enough for the model to write some tool calls, so
#: GRPO's groups differ in reward and its steps change the weights) and 2 GRPO steps of 2 prompts x 4
#: completions per iteration.
PROFILE = """
model: {tiny_template: compact, parser: qwen2.5}
sandbox: {workers: 2, wall_time_s: 10}
generation: {backend: transformers, temperature: 1.0, max_new_tokens: 24, batch_size: 16}
build: {generator: template, count: 20, seed: 0, test_fraction: 0.3, batch: 32}
sample: {samples_per_env: 1, max_turns: 2, seed: 0, chunk_episodes: 4}
train:
  backend: local
  local:
    num_generations: 4
    per_device_batch_size: 8
    max_steps: 2
    max_completion_length: 24
    save_steps: 2
    torch_threads: 1
    sft:
      steps: 20
      batch_size: 8
      max_length: 384
      save_steps: 20
      logging_steps: 5
      torch_threads: 1
      scenario_types: [single-hop, parallel single-hop]
eval: {max_turns: 2, max_new_tokens: 24, chunk_episodes: 2}
"""
REPO = Path(__file__).resolve().parents[2]
PLAN = RunPlan(iterations=2, sample_shards=2, eval_shards=2, retry=RetryPolicy(retries=0, delay_s=0))
UPSTREAM_OF_TRAIN = ["base-model", "build", "split-sample", "split-eval"]
ITERATION = [
    "sample-{k}/shard-0",
    "sample-{k}/shard-1",
    "sample-{k}",
    "convert-{k}",
    "train-{k}",
    "merge-{k}",
]
EVALUATION = ["evaluate-{name}/shard-0", "evaluate-{name}/shard-1", "evaluate-{name}"]
ALL_STAGES = [
    *UPSTREAM_OF_TRAIN,
    *[stage.format(name="base") for stage in EVALUATION],
    "warm-start",
    *[stage.format(name="warm-start") for stage in EVALUATION],
    *[stage.format(k=1) for stage in ITERATION],
    *[stage.format(name="iter-1") for stage in EVALUATION],
    *[stage.format(k=2) for stage in ITERATION],
    *[stage.format(name="iter-2") for stage in EVALUATION],
    "report",
]
#: What every full run posts to its flow run in the UI, cached or not: the report and its tables.
REPORT_ARTIFACTS = (
    "tiny-report",
    "tiny-report-results",
    "tiny-report-scenarios",
    "tiny-report-training-reward",
)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    storage = tmp_path_factory.mktemp("prefect-storage")
    with prefect_test_harness(), temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        yield


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    path = root / "tiny.yaml"
    data = yaml.safe_load(PROFILE)
    data["run"] = {"name": "tiny", "root": str(root)}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def profile(path: Path, *overrides: str) -> PipelineConfig:
    return load_profile(path, list(overrides))


def states(outcome: RunResult | StageFailed) -> dict[str, str]:
    return {stage.name: stage.state for stage in outcome.stages}


def run(config: PipelineConfig, plan: RunPlan = PLAN) -> RunResult | StageFailed:
    state = full_run(config, plan, return_state=True)
    return state.result(raise_on_failure=False)


def rerun_set(outcome: RunResult | StageFailed) -> set[str]:
    return {name for name, state in states(outcome).items() if state != "Cached"}


@pytest.fixture(scope="module")
def first_run(harness: None, profile_file: Path) -> RunResult:
    outcome = run(profile(profile_file))
    assert isinstance(outcome, RunResult), outcome
    return outcome


# --- a full run, then the same run again ------------------------------------------------------


def test_full_run_completes_every_stage_and_writes_the_report(first_run: RunResult) -> None:
    assert list(states(first_run)) == ALL_STAGES
    assert set(states(first_run).values()) == {"Completed"}
    report = first_run.report_file.read_text(encoding="utf-8")
    assert report.startswith(
        "# ftrl evaluation: base vs warm-start vs iter-1 vs iter-2\n\n"
        "Changes in parentheses are from **warm-start**.\n"
    )
    assert "| run | tasks | Solve-P | Solve-R | Solve-F1 | pass@1 |" in report
    assert "| scenario | tasks | base | warm-start | iter-1 | iter-2 | iter-2 − warm-start |" in report
    assert (
        "| iteration | steps | first | last | mean |\n| --- | --- | --- | --- | --- |\n| iter-1 | 2 |"
        in report
    )
    assert "- [warm-start: SFT](../../checkpoints/warm-start/" in report
    assert "iter-1: SFT" not in report and "iter-2: GRPO" in report  # train stages run no SFT of their own
    for chart in ("by-model.png", "by-scenario.png", "training-reward.png"):
        assert f"]({chart})" in report
        assert (first_run.report.path / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    comparison = json.loads((first_run.report.path / "comparison.json").read_text(encoding="utf-8"))
    assert comparison["runs"] == ["base", "warm-start", "iter-1", "iter-2"]
    # 30% of each kind (scenario type × names an entity), rounded per kind: 7 of the 20 environments
    assert comparison["reference"] == "warm-start" and comparison["tasks"] == [7, 7, 7, 7]
    assert first_run.envs.train.rows == 13 and first_run.envs.test.rows == 7


def test_the_warm_start_trains_on_the_chosen_scenario_types_of_the_build(first_run: RunResult) -> None:
    warm = first_run.models["warm-start"].path
    assert warm.parent.parent == first_run.run_dir / "checkpoints" / "warm-start" and warm.name == "model"
    manifest = json.loads((warm.parent / "run.json").read_text(encoding="utf-8"))
    assert manifest["stage"] == "sft" and manifest["model"] == str(first_run.models["base"].path.resolve())
    assert manifest["config"]["scenario_types"] == ["single-hop", "parallel single-hop"]
    envs = [env for env in iter_rows(first_run.envs.train.path, EnvRow)]
    chosen = sorted(
        env.env_id for env in envs if env.meta_dict()["scenario"] in ("single-hop", "parallel single-hop")
    )
    assert 0 < len(chosen) < len(envs)
    assert manifest["envs_sha256"] == hashlib.sha256(" ".join(chosen).encode()).hexdigest()
    summary = json.loads((first_run.evaluations["warm-start"].path / "summary.json").read_text("utf-8"))
    assert (
        summary["model"] == "warm-start" and summary["model_sha256"] == first_run.models["warm-start"].sha256
    )


def test_the_ui_gets_progress_tables_and_the_report(first_run: RunResult) -> None:
    with get_client(sync_client=True) as client:
        artifacts = {artifact.key: artifact for artifact in client.read_artifacts() if artifact.key}
    progress = {key for key, artifact in artifacts.items() if artifact.type == "progress"}
    assert {
        "tiny-build-progress",
        "tiny-warm-start-progress",
        "tiny-sample-2-shard-1-progress",
        "tiny-train-2-progress",
    } <= progress
    assert {artifacts[key].data for key in progress} == {100.0}
    build_table = json.loads(artifacts["tiny-build-report"].data)
    assert {"count": "written", "value": "", "environments": 20} in build_table
    results = json.loads(artifacts["tiny-report-results"].data)
    assert [row["model"] for row in results] == ["base", "warm-start", "iter-1", "iter-2"]
    assert results[1]["Solve-F1 change"] == 0.0
    scenarios = json.loads(artifacts["tiny-report-scenarios"].data)
    assert {row["scenario"] for row in scenarios} <= {
        "single-hop",
        "parallel single-hop",
        "multi-hop",
        "parallel multi-hop",
    }
    assert all("iter-2 − warm-start" in row for row in scenarios)
    rewards = json.loads(artifacts["tiny-report-training-reward"].data)
    assert [(row["iteration"], row["steps"]) for row in rewards] == [("iter-1", 2), ("iter-2", 2)]
    report = artifacts["tiny-report"]
    assert report.type == "markdown"
    assert report.data.startswith("# ftrl evaluation: base vs warm-start vs iter-1 vs iter-2")
    assert f"- [report]({first_run.report_file})" in report.data
    assert f"- [comparison chart]({first_run.report.path / 'comparison.png'})" in report.data
    assert f"]({first_run.report.path / 'training-reward.png'})" in report.data


def test_iteration_k_samples_with_the_model_merged_in_iteration_k_minus_1(first_run: RunResult) -> None:
    run_dir = first_run.run_dir
    policies = {
        k: {
            row.policy
            for row in iter_rows(
                next((run_dir / "trajectories" / f"sample-{k}").glob("*/*.jsonl")), TrajectoryRow
            )
        }
        for k in (1, 2)
    }
    assert policies == {
        1: {first_run.models["warm-start"].path.name},
        2: {first_run.models["iter-1"].path.name},
    }
    manifests = {
        k: json.loads(
            next((run_dir / "checkpoints" / f"train-{k}").glob("*/run.json")).read_text(encoding="utf-8")
        )
        for k in (1, 2)
    }
    assert manifests[1]["model"] == str(first_run.models["warm-start"].path.resolve())
    assert manifests[2]["model"] == str(first_run.models["iter-1"].path.resolve())
    assert manifests[1]["config"]["sft"] is None and manifests[2]["config"]["sft"] is None
    assert [path for k in (1, 2) for path in (run_dir / "checkpoints" / f"train-{k}").glob("*/sft")] == []


def test_the_same_run_again_is_all_cached_with_the_same_outputs(
    first_run: RunResult, profile_file: Path
) -> None:
    state = full_run(profile(profile_file), PLAN, return_state=True)
    again = state.result(raise_on_failure=False)
    assert isinstance(again, RunResult)
    assert list(states(again)) == ALL_STAGES
    assert set(states(again).values()) == {"Cached"}
    assert again.report == first_run.report and again.models == first_run.models
    run_id = state.state_details.flow_run_id  # the flow posts the report, so a cached run has it too
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    assert {artifact.key for artifact in artifacts} == set(REPORT_ARTIFACTS)


# --- shards ---------------------------------------------------------------------------------------


def test_two_shards_sample_exactly_the_unsharded_rows(
    first_run: RunResult, profile_file: Path, tmp_path: Path
) -> None:
    """The full run sampled iteration 1 (with the warm-started model) over two shards; one process without
    Prefect writes the same bytes, and so does the sample flow over three shards in two worker processes."""
    config = profile(profile_file)
    sharded = next((first_run.run_dir / "trajectories" / "sample-1").glob("*/trajectories.jsonl"))
    direct = tmp_path / "direct.jsonl"
    warm = first_run.models["warm-start"]
    run_sampling(config, first_run.envs.train.path, direct, model=str(warm.path), progress=False)
    assert sharded.read_bytes() == direct.read_bytes()
    three = sample_flow(config, envs=first_run.envs.train, model=warm, shards=3, label="three")
    assert three.path.read_bytes() == direct.read_bytes()


def test_two_shards_evaluate_exactly_the_unsharded_episodes(
    first_run: RunResult, profile_file: Path, tmp_path: Path
) -> None:
    config = profile(profile_file)
    joined = first_run.evaluations["base"].path
    test_file = first_run.envs.test.path
    selected_envs(test_file, "test")
    backend = backend_for(config, "transformers", str(first_run.models["base"].path), None)
    with backend, SandboxPool(workers=config.sandbox.workers, limits=config.sandbox.limits()) as pool:
        direct = evaluate_ftrl(
            test_file,
            tmp_path / "direct",
            backend,
            eval_params(config),
            pool,
            ftrl_settings(config, "base"),
            progress=False,
        )
    assert (joined / EPISODES_FILE).read_bytes() == (tmp_path / "direct" / EPISODES_FILE).read_bytes()
    summary = json.loads((joined / "summary.json").read_text(encoding="utf-8"))
    assert summary.pop("model_sha256") == first_run.models["base"].sha256
    assert summary == direct.summary


# --- a changed setting, an injected fault ---------------------------------------------------------


def test_a_changed_setting_reruns_exactly_the_stages_downstream(
    first_run: RunResult, profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another GRPO learning rate changes both iterations' weights, so everything fed by them reruns,
    nothing else. A shard of iteration 2 fails once on the way and is retried within the run."""
    monkeypatch.setenv(FAULT_ENV, "sample-2/shard-1")
    retrying = PLAN.model_copy(update={"retry": RetryPolicy(retries=1, delay_s=0)})
    changed = run(profile(profile_file, "train.local.learning_rate=2.0e-5"), retrying)
    assert isinstance(changed, RunResult), changed
    downstream = {
        "train-1",
        "merge-1",
        *[stage.format(name="iter-1") for stage in EVALUATION],
        *[stage.format(k=2) for stage in ITERATION],
        *[stage.format(name="iter-2") for stage in EVALUATION],
        "report",
    }
    assert rerun_set(changed) == downstream
    assert {states(changed)[name] for name in downstream} == {"Completed"}
    assert (first_run.run_dir / ".faults" / "sample-2__shard-1").is_file()  # it failed once, then passed
    assert (
        changed.models["base"] == first_run.models["base"]
        and changed.models["iter-1"] != first_run.models["iter-1"]
    )
    back = run(profile(profile_file))  # the old setting finds its old results, files untouched
    assert isinstance(back, RunResult) and set(states(back).values()) == {"Cached"}
    assert back.report.resolved() == first_run.report


def test_a_stage_that_failed_is_rerun_alone_while_upstream_stays_cached(
    first_run: RunResult, profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """float32 merges of float32 checkpoints write what `auto` wrote, so only the merges run: merge-2
    fails (no retries), then the rerun runs merge-2 alone and finds everything else cached."""
    monkeypatch.setenv(FAULT_ENV, "merge-2")
    config = profile(profile_file, "merge.dtype=float32")
    failed = run(config)
    assert isinstance(failed, StageFailed)
    assert "merge-2 failed: " in str(failed) and "merge-2: transient fault injected by FTRL_FAIL_ONCE" in str(
        failed
    )
    not_ready = {stage.format(name="iter-2") for stage in EVALUATION} | {"report"}
    assert rerun_set(failed) == {"merge-1", "merge-2", *not_ready}
    assert states(failed)["merge-1"] == "Completed" and states(failed)["merge-2"] == "Failed"
    assert {states(failed)[name] for name in not_ready} == {"NotReady"}

    retried = run(config)
    assert isinstance(retried, RunResult), retried
    assert rerun_set(retried) == {"merge-2"} and states(retried)["merge-2"] == "Completed"
    digests = {name: ref.sha256 for name, ref in retried.models.items()}
    assert digests == {name: ref.sha256 for name, ref in first_run.models.items()}
    assert retried.report == first_run.report


# --- retries in Prefect's engine --------------------------------------------------------------------


def test_transient_errors_are_retried_and_bad_input_is_not(harness: None) -> None:
    attempts: list[str] = []

    @task(retries=3, retry_delay_seconds=0, retry_condition_fn=retry_transient, persist_result=False)
    def flaky(kind: str) -> str:
        attempts.append(kind)
        if kind == "transient" and attempts.count(kind) == 1:
            raise InjectedFault("once")
        if kind == "bad input":
            raise ValueError("row 3: not JSON")
        return "done"

    @flow
    def both() -> list[str]:
        return [flaky(kind, return_state=True).name for kind in ("transient", "bad input")]

    assert both() == ["Completed", "Failed"]
    assert attempts == ["transient", "transient", "bad input"]
    assert backoff_delays(1.5)(3) == [1.5, 3.0, 6.0]


def test_a_stage_given_bad_input_fails_at_once_naming_the_line(
    harness: None, profile_file: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": []}\nnot json\n', encoding="utf-8")
    config = profile(profile_file, f"run.root={tmp_path}")
    state = convert_flow(
        config,
        FileRef(path=broken, kind="trajectories"),
        retry=RetryPolicy(retries=3, delay_s=60),
        return_state=True,
    )
    error = state.result(raise_on_failure=False)
    assert isinstance(error, StageFailed)
    assert [(stage.name, stage.state) for stage in error.stages] == [("convert", "Failed")]
    assert f"{broken}:" in str(error)


# --- the other flows -----------------------------------------------------------------------------


def test_evaluate_flow_names_the_model_and_caches(first_run: RunResult, profile_file: Path) -> None:
    config = profile(profile_file)
    first = evaluate_flow(
        config, model=first_run.models["iter-2"], data=first_run.envs.test, name="iter-2", shards=3
    )
    assert json.loads((first.path / "summary.json").read_text(encoding="utf-8"))["model"] == "iter-2"
    state = evaluate_flow(
        config,
        model=first_run.models["iter-2"],
        data=first_run.envs.test,
        name="iter-2",
        shards=3,
        return_state=True,
    )
    assert state.result() == first


def test_the_warm_start_flow_alone_finds_the_full_runs_result(
    first_run: RunResult, profile_file: Path
) -> None:
    warm = warm_start_flow(
        profile(profile_file), envs=first_run.envs.train, model=first_run.models["base"], return_state=True
    )
    assert warm.name == "Completed" and warm.result() == first_run.models["warm-start"]
    with pytest.raises(ValueError, match=re.escape("train.local.sft: empty (or train.backend is not local)")):
        warm_start_flow(profile(profile_file, "train.backend=verl"), envs=first_run.envs.train)


def test_nightly_evaluation_compares_models_and_caches_an_unchanged_night(
    first_run: RunResult, profile_file: Path, tmp_path: Path
) -> None:
    config = profile(profile_file, f"run.root={tmp_path}", "run.name=nightly")
    models = [
        ModelEntry(name="base", path=first_run.models["base"].path),
        ModelEntry(name="grpo", path=first_run.models["iter-2"].path),
    ]
    benchmarks = [BenchmarkEntry(name="held-out", data=first_run.envs.test.path)]
    night = nightly_eval(config, models, benchmarks, shards=2)
    report = (night.reports["held-out"].path / "report.md").read_text(encoding="utf-8")
    assert "# ftrl evaluation: base vs grpo" in report
    assert {stage.state for stage in night.stages} == {"Completed"}
    again = nightly_eval(config, models, benchmarks, shards=2)
    assert {stage.state for stage in again.stages} == {"Cached"} and again.reports == night.reports


# --- ftrl run -------------------------------------------------------------------------------------


def test_ftrl_run_prints_each_stage_state_and_the_report(
    first_run: RunResult, profile_file: Path, tmp_path: Path
) -> None:
    """A real `ftrl run` process on its own temporary server finds the run's cache in its directory."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    options = ["--iterations", "2", "--sample-shards", "2", "--eval-shards", "2", "--retries", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(profile_file), *options],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-len(ALL_STAGES) - 3 : -3] == [f"{stage}: Cached" for stage in ALL_STAGES]
    assert lines[-3] == f"report file: {first_run.report_file}" and first_run.report_file.is_absolute()
    home = tmp_path / "prefect-home"
    assert lines[-2] == (
        f"Prefect UI: start it with `ftrl ui --home {home}` (http://127.0.0.1:4200), "
        "then Runs → tiny → Artifacts;"
    )
    link = "  this run: http://127.0.0.1:4200/runs/flow-run/"
    assert lines[-1].startswith(link)
    run_id = lines[-1].removeprefix(link)
    # the temporary server recorded the run in the database `ftrl ui --home` serves, report included
    with sqlite3.connect(home / "prefect.db") as db:
        assert db.execute("select name from flow_run where id = ?", (run_id,)).fetchall() == [("tiny",)]
        rows = db.execute("select key from artifact where flow_run_id = ?", (run_id,)).fetchall()
    assert {key for (key,) in rows} == set(REPORT_ARTIFACTS)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--set", "generation.backend=openai"],
            "error: the profile cannot make a full run:\n  generation.backend:",
        ),
        (["--run-dir", "/tmp/not a name"], "error: --run-dir /tmp/not a name: the folder's name must start"),
        (["--set", "sample.max_turns=0"], "error: profile"),
    ],
)
def test_ftrl_run_refuses_a_bad_profile_in_one_message(
    profile_file: Path, arguments: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["run", "--config", str(profile_file), *arguments])
    assert result.exit_code == 2
    assert result.stderr.startswith(message)


def test_ftrl_run_names_the_failed_stage_and_exits_1(
    first_run: RunResult, profile_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in (
        ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        ("PREFECT_LOGGING_EXTRA_LOGGERS", "envs"),
    ):
        monkeypatch.setenv(name, value)  # the command sets both when unset; keep them from leaking
    monkeypatch.setenv(FAULT_ENV, "merge-1")
    options = ["--iterations", "2", "--sample-shards", "2", "--eval-shards", "2", "--retries", "0"]
    arguments = ["run", "--config", str(profile_file), "--set", "merge.dtype=bfloat16", *options]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 1, result.output
    lines = dict(line.split(": ", 1) for line in result.stdout.strip().splitlines() if ": " in line)
    assert lines["build"] == "Cached" and lines["train-1"] == "Cached"
    assert lines["merge-1"] == "Failed"
    assert lines["evaluate-iter-1"] == lines["sample-2"] == lines["report"] == "NotReady"
    assert result.stderr.startswith("run failed: merge-1 failed: ")
