"""`make demo`'s flow, shortened: `ftrl run --config configs/cpu-demo.yaml` with a few environments and
steps, run as a user runs it (a real process on its own temporary Prefect server), then run again.

The full-size demo (2,000 environments, 1,800 steps of copy pre-training, hundreds of SFT steps)
takes minutes and is measured in the README; this test checks that the profile still drives every
stage of the method end to end: build, the tiny model and its pre-training, the SFT warm start on
the simpler scenario types, sample → convert → GRPO → merge, evaluation of every model on the
held-out split and the report with its charts.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from policies.tiny_model import MARKER_FILE

REPO = Path(__file__).resolve().parents[2]
SHORTER = [
    "model.tiny_pretrain_steps=4",
    "build.count=24",
    "build.test_fraction=0.25",
    "sample.max_envs=8",  # the rest of the train split is the warm start's
    "sample.max_turns=2",
    "sample.chunk_episodes=8",
    "generation.max_new_tokens=24",
    "train.local.max_steps=2",
    "train.local.per_device_batch_size=8",
    "train.local.save_steps=2",
    "train.local.max_completion_length=24",
    "train.local.sft.steps=6",
    "train.local.sft.batch_size=8",
    "train.local.sft.save_steps=6",
    "train.local.sft.logging_steps=3",
    "eval.max_turns=2",
    "eval.max_new_tokens=24",
    "eval.chunk_episodes=8",
]
STAGES = [
    "base-model",
    "build",
    "split-sample",
    "split-eval",
    "evaluate-base/shard-0",
    "evaluate-base",
    "split-warm-start",
    "warm-start",
    "evaluate-warm-start/shard-0",
    "evaluate-warm-start",
    "sample-1/shard-0",
    "sample-1",
    "convert-1",
    "train-1",
    "merge-1",
    "evaluate-iter-1/shard-0",
    "evaluate-iter-1",
    "report",
]


def ftrl_run(run_dir: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    arguments = ["run", "--config", "configs/cpu-demo.yaml", "--run-dir", str(run_dir), "--retries", "0"]
    for override in SHORTER:
        arguments += ["--set", override]
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *arguments],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str], Path]:
    root = tmp_path_factory.mktemp("demo")
    first = ftrl_run(root / "cpu-demo", root / "prefect-home")
    assert first.returncode == 0, first.stderr[-3000:]
    again = ftrl_run(root / "cpu-demo", root / "prefect-home")
    assert again.returncode == 0, again.stderr[-3000:]
    return first.stdout.strip().splitlines(), again.stdout.strip().splitlines(), root / "cpu-demo"


def test_the_demo_runs_every_stage_of_the_method(runs: tuple[list[str], list[str], Path]) -> None:
    first, _, _ = runs
    assert first[: len(STAGES)] == [f"{stage}: Completed" for stage in STAGES]


def test_the_demo_pre_trains_its_tiny_model(runs: tuple[list[str], list[str], Path]) -> None:
    _, _, run_dir = runs
    (model,) = (run_dir / "models" / "base-model").iterdir()
    marker = json.loads((model / MARKER_FILE).read_text(encoding="utf-8"))
    assert marker["spec"]["pretrain_steps"] == 4 and marker["spec"]["template"] == "compact"
    assert marker["copy_accuracy"] == 0.0  # 4 steps teach no copying; the full demo's 1,800 do


def test_the_demo_warm_starts_on_the_simpler_scenario_types_and_rl_starts_from_it(
    runs: tuple[list[str], list[str], Path],
) -> None:
    _, _, run_dir = runs
    (warm,) = (run_dir / "checkpoints" / "warm-start").iterdir()
    manifest = json.loads((warm / "run.json").read_text(encoding="utf-8"))
    assert manifest["config"]["scenario_types"] == ["single-hop", "parallel single-hop"]
    (train,) = (run_dir / "checkpoints" / "train-1").iterdir()
    trained_from = json.loads((train / "run.json").read_text(encoding="utf-8"))["model"]
    assert Path(trained_from) == (warm / "model").resolve()


def test_the_report_compares_every_model_per_scenario_with_its_charts(
    runs: tuple[list[str], list[str], Path],
) -> None:
    first, _, _ = runs
    report = Path(first[len(STAGES)].removeprefix("report file: "))
    assert report.is_absolute() and report.is_file()
    text = report.read_text(encoding="utf-8")
    assert "| base |" in text and "| warm-start |" in text and "| iter-1 |" in text
    assert "## Solve-F1 by scenario" in text and "## Training reward (GRPO)" in text
    for chart in ("training-reward.png", "by-model.png", "by-scenario.png", "comparison.png"):
        assert (report.parent / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first[len(STAGES) + 1].startswith("Prefect UI: start it with `ftrl ui")


def test_the_demo_again_is_all_cached(runs: tuple[list[str], list[str], Path]) -> None:
    first, again, _ = runs
    assert again[: len(STAGES)] == [f"{stage}: Cached" for stage in STAGES]
    assert again[len(STAGES)] == first[len(STAGES)]
