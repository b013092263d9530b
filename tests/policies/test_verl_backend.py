"""VeRL backend: every verl profile resolves through verl 0.9.1's own config machinery on CPU with the
paper's numbers; bad settings fail in one line; a launch streams output and quotes a failure's tail."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from policies.training.verl_backend import (
    VerlConfig,
    VerlConfigError,
    VerlLaunchError,
    VerlRun,
    dry_run,
    launch,
    verl_command,
)
from tasks.profile import PipelineConfig, load_profile

REPO = Path(__file__).resolve().parents[2]
#: profile → (adv_estimator, max_response_length, enable_thinking, parser), from the paper's scripts.
PAPER_RUNS = {
    "paper-qwen2.5-7b-grpo.yaml": ("grpo", 1024, None, "qwen2.5"),
    "paper-qwen2.5-7b-reinforce.yaml": ("reinforce_plus_plus", 1024, None, "qwen2.5"),
    "paper-qwen3-8b-grpo.yaml": ("grpo", 1024, False, "qwen3"),
    "paper-qwen3-8b-reinforce.yaml": ("reinforce_plus_plus", 1024, False, "qwen3"),
    "paper-qwen3-8b-reasoning-grpo.yaml": ("grpo", 8192, True, "qwen3"),
    "paper-qwen3-8b-reasoning-reinforce.yaml": ("reinforce_plus_plus", 8192, True, "qwen3"),
}
#: No model folder here: the dry run must not need one.
ABSENT_MODEL = Path("/nonexistent/models/Qwen-7B")


def verl_profiles() -> list[Path]:
    profiles = []
    for path in sorted((REPO / "configs").glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if data.get("train", {}).get("backend") == "verl":
            profiles.append(path)
    return profiles


def load_verl_profile(path: Path) -> tuple[PipelineConfig, VerlConfig]:
    """The whole profile as the pipeline validates it, and its `train.verl` section."""
    pipeline = load_profile(path)
    return pipeline, pipeline.train.verl


def make_run(folder: Path, pipeline: PipelineConfig, **changes: Any) -> VerlRun:
    """Run inputs under `folder`; the folder names hold a space and a comma, which Hydra must keep."""
    data = folder / "run 1, parquet"
    fields: dict[str, Any] = {
        "model_path": ABSENT_MODEL,
        "train_parquet": data / "train.parquet",
        "val_parquet": data / "test.parquet",
        "checkpoint_dir": folder / "check points, v1",
        "agent_loop_config": folder / "agent_loops.yaml",
        "parser": pipeline.model.parser,
        "reward_kind": pipeline.reward.kind,
        "enable_thinking": pipeline.generation.enable_thinking,
    }
    return VerlRun(**{**fields, **changes})


def default_run(folder: Path, **changes: Any) -> VerlRun:
    return make_run(folder, PipelineConfig(), **changes)


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[VerlRun, Future[str]]]]:
    """Every verl profile's dry run, started at once (each is a verl subprocess of a few seconds)."""
    from policies.verl_agent_loop import write_agent_loop_config

    runs = {}
    for path in sorted((REPO / "configs").glob("*.yaml")):  # every profile, whatever trainer it picks
        pipeline, config = load_verl_profile(path)
        run = make_run(tmp_path_factory.mktemp(path.stem), pipeline)
        write_agent_loop_config(run.agent_loop_config)
        runs[path.name] = (run, config)
    with ThreadPoolExecutor(max_workers=3) as pool:
        yield {name: (run, pool.submit(dry_run, config, run)) for name, (run, config) in runs.items()}


@pytest.mark.slow
def test_every_profile_passes_the_dry_run(resolved: dict[str, tuple[VerlRun, Future[str]]]) -> None:
    assert set(resolved) == {path.name for path in (REPO / "configs").glob("*.yaml")}
    for name, (_, future) in resolved.items():
        assert "adv_estimator" in future.result(), name


def test_the_paper_profiles_are_the_verl_profiles() -> None:
    assert sorted(path.name for path in verl_profiles()) == sorted(PAPER_RUNS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER_RUNS))
def test_profile_resolves_in_verl_with_the_paper_numbers(
    name: str, resolved: dict[str, tuple[VerlRun, Future[str]]]
) -> None:
    run, future = resolved[name]
    config = yaml.safe_load(future.result())
    estimator, response_length, thinking, parser = PAPER_RUNS[name]
    actor = config["actor_rollout_ref"]["actor"]
    rollout = config["actor_rollout_ref"]["rollout"]
    assert config["algorithm"]["adv_estimator"] == estimator
    assert config["algorithm"]["use_kl_in_reward"] is False
    assert actor["optim"]["lr"] == 1e-6
    assert (actor["use_kl_loss"], actor["kl_loss_coef"], actor["kl_loss_type"]) == (True, 0.001, "low_var_kl")
    assert actor["entropy_coeff"] == 0.001
    assert (actor["ppo_mini_batch_size"], actor["use_dynamic_bsz"], actor["ppo_max_token_len_per_gpu"]) == (
        32,
        True,
        32768,
    )
    assert config["data"]["train_batch_size"] == 512
    assert (rollout["name"], rollout["n"], rollout["temperature"]) == ("vllm", 16, 1.0)
    assert (rollout["tensor_model_parallel_size"], rollout["gpu_memory_utilization"]) == (2, 0.7)
    assert (config["data"]["max_prompt_length"], config["data"]["max_response_length"]) == (
        16384,
        response_length,
    )
    # verl's rollout reads its lengths through interpolations; --resolve shows what it will use.
    assert (rollout["prompt_length"], rollout["response_length"]) == (16384, response_length)
    assert config["actor_rollout_ref"]["ref"]["fsdp_config"]["param_offload"] is True
    assert config["actor_rollout_ref"]["model"]["enable_gradient_checkpointing"] is True
    assert config["actor_rollout_ref"]["model"]["path"] == str(ABSENT_MODEL)
    expected_template_kwargs = {} if thinking is None else {"enable_thinking": thinking}
    assert config["data"]["apply_chat_template_kwargs"] == expected_template_kwargs

    assert config["reward"]["custom_reward_function"] == {
        "path": str(REPO / "rewards" / "verl.py"),
        "name": "compute_score",
        "reward_kwargs": {"reward_kind": "f1", "parser": parser},
    }
    assert config["reward"]["reward_manager"]["name"] == "naive"
    assert config["data"]["train_files"] == str(run.train_parquet)
    assert config["data"]["val_files"] == str(run.val_parquet)
    assert config["data"]["custom_cls"] == {
        "path": "pkg://policies.verl_agent_loop",
        "name": "FtrlRLHFDataset",
    }
    assert rollout["agent"]["agent_loop_config_path"] == str(run.agent_loop_config)

    trainer = config["trainer"]
    assert trainer["default_local_dir"] == str(run.checkpoint_dir)
    assert trainer["resume_mode"] == "auto"
    assert (trainer["nnodes"], trainer["n_gpus_per_node"]) == (1, 8)
    assert (trainer["total_epochs"], trainer["save_freq"], trainer["test_freq"]) == (1, 120, -1)
    assert trainer["val_before_train"] is False
    assert trainer["logger"] == ["console"]
    assert trainer["experiment_name"] == Path(name).stem


@pytest.mark.slow
def test_dry_run_quotes_verl_when_hydra_rejects_a_key(tmp_path: Path) -> None:
    config = VerlConfig(extra_overrides=["actor_rollout_ref.actor.not_a_key=1"])
    with pytest.raises(VerlConfigError) as info:
        dry_run(config, default_run(tmp_path))
    lines = str(info.value).splitlines()
    assert lines[0] == "verl rejected the command (--cfg job exited with status 1):"
    assert "  | Key 'not_a_key' is not in struct" in lines


@pytest.mark.slow
def test_dry_run_applies_verls_own_checks(tmp_path: Path) -> None:
    config = VerlConfig(extra_overrides=["actor_rollout_ref.actor.loss_agg_mode=per-token"])
    with pytest.raises(VerlConfigError) as info:
        dry_run(config, default_run(tmp_path))
    lines = str(info.value).splitlines()
    assert lines == [
        "verl's checks reject the resolved config:",
        "  | Error in call to target 'verl.workers.config.actor.FSDPActorConfig':",
        "  | ValueError('Invalid loss_agg_mode: per-token')",
        "  | full_key: actor_rollout_ref.actor",
    ]


# The command line


def test_command_is_verls_entry_point_with_extra_overrides_last(tmp_path: Path) -> None:
    extra = ["actor_rollout_ref.actor.clip_ratio_high=0.28", "~trainer.rollout_data_dir"]
    command = verl_command(
        VerlConfig(extra_overrides=extra), default_run(tmp_path, python="/opt/py/bin/python")
    )
    assert command[:3] == ["/opt/py/bin/python", "-m", "verl.trainer.main_ppo"]
    assert command[-2:] == extra
    assert "algorithm.adv_estimator=grpo" in command
    assert "actor_rollout_ref.actor.optim.lr=1e-06" in command
    assert "trainer.logger=[console]" in command
    assert "trainer.resume_mode=auto" in command
    assert not any(arg.startswith("+ray_kwargs") or "enable_thinking" in arg for arg in command)


def test_command_targets_an_existing_ray_cluster(tmp_path: Path) -> None:
    command = verl_command(VerlConfig(ray_address="10.0.0.5:6379"), default_run(tmp_path))
    assert "+ray_kwargs.ray_init.address=10.0.0.5:6379" in command


def test_micro_batches_without_dynamic_batch_size(tmp_path: Path) -> None:
    config = VerlConfig(use_dynamic_bsz=False, ppo_micro_batch_size_per_gpu=4)
    command = verl_command(config, default_run(tmp_path))
    assert "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4" in command
    assert "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4" in command
    assert "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4" in command


def test_without_a_validation_parquet_the_training_file_stands_in(tmp_path: Path) -> None:
    run = default_run(tmp_path, val_parquet=None)
    command = verl_command(VerlConfig(), run)
    assert f"data.val_files='{run.train_parquet}'" in command
    with pytest.raises(VerlConfigError) as info:
        verl_command(VerlConfig(test_freq=10), run)
    assert str(info.value) == (
        "validation is on (test_freq or val_before_train) but the run has no validation parquet"
    )


@given(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1))
def test_any_text_reaches_verl_unchanged(text: str) -> None:
    """Quoting: whatever a value holds (spaces, commas, quotes, backslashes), Hydra reads it back."""
    if "${" in text:
        return
    run = VerlRun(
        Path("/m"), Path("/t.parquet"), None, Path("/c"), Path("/a.yaml"), parser=text, reward_kind="f1"
    )
    (argument,) = [arg for arg in verl_command(VerlConfig(), run) if "reward_kwargs.parser=" in arg]
    (override,) = OverridesParser.create().parse_overrides([argument])
    assert override.value() == text


# Validation: one clear line per mistake


def error_of(**settings: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as info:
        VerlConfig(**settings)
    (error,) = info.value.errors()
    return error


def test_unknown_algorithm_names_the_field() -> None:
    error = error_of(algorithm="ppo")
    assert error["loc"] == ("algorithm",)
    assert error["msg"] == "Input should be 'grpo' or 'reinforce_plus_plus'"


def test_more_gpus_than_the_cluster_has() -> None:
    error = error_of(tensor_parallel_size=16, nodes=1, gpus_per_node=8)
    assert error["msg"] == (
        "Value error, tensor_parallel_size 16 needs 16 GPUs, more than nodes × gpus_per_node = 1 × 8 = 8"
    )
    assert VerlConfig(tensor_parallel_size=16, nodes=2, gpus_per_node=8).gpus_required == 16


def test_tensor_parallel_size_must_divide_the_gpus() -> None:
    error = error_of(tensor_parallel_size=3)
    assert error["msg"] == (
        "Value error, tensor_parallel_size 3 must divide the GPU count (nodes × gpus_per_node = 1 × 8 = 8)"
    )


def test_batch_consistency() -> None:
    assert error_of(rollout_n=1)["msg"] == (
        "Value error, grpo compares the samples of a prompt, so rollout_n must be >= 2, got 1"
    )
    assert VerlConfig(algorithm="reinforce_plus_plus", rollout_n=1).rollout_n == 1
    assert error_of(ppo_mini_batch_size=1024)["msg"] == (
        "Value error, ppo_mini_batch_size 1024 is larger than train_batch_size 512"
    )
    assert error_of(use_dynamic_bsz=False)["msg"] == (
        "Value error, without use_dynamic_bsz, set ppo_micro_batch_size_per_gpu"
    )
    assert error_of(use_dynamic_bsz=False, ppo_micro_batch_size_per_gpu=2, gpus_per_node=6)["msg"] == (
        "Value error, without use_dynamic_bsz, train_batch_size × rollout_n = 8192 samples must "
        "split evenly over the 6 GPUs"
    )


def test_step_frequencies() -> None:
    error = error_of(save_freq=0)
    assert error["loc"] == ("save_freq",)
    assert error["msg"] == "Value error, must be -1 (never) or a number of steps >= 1, got 0"
    assert VerlConfig(save_freq=-1, test_freq=5).test_freq == 5


@pytest.mark.parametrize(
    ("override", "problem"),
    [
        ("trainer.total_epochs", "not a Hydra override (key=value, +key=value, ++key=value or ~key): "),
        ("=3", "no key before '='"),
        (
            "trainer.total_epochs=1,2",
            "a sweep (comma-separated values) is not one run; quote the value: key='a,b'",
        ),
        (
            "actor_rollout_ref.actor.optim.lr=1e-5",
            "sets actor_rollout_ref.actor.optim.lr, which the setting learning_rate controls; "
            "set learning_rate instead",
        ),
        (
            "++trainer.val_before_train=true",
            "sets trainer.val_before_train, which the setting val_before_train controls; "
            "set val_before_train instead",
        ),
        (
            "+data.train_files=/elsewhere.parquet",
            "sets data.train_files, which comes from the run "
            "(model, parquet files, checkpoints, parser, reward)",
        ),
        (
            "custom_reward_function.path=/elsewhere/reward.py",
            "sets custom_reward_function.path, which comes from the run "
            "(model, parquet files, checkpoints, parser, reward)",
        ),
        (
            "reward.custom_reward_function.name=compute_score_batch",
            "sets reward.custom_reward_function.name, which comes from the run "
            "(model, parquet files, checkpoints, parser, reward)",
        ),
    ],
)
def test_bad_extra_overrides(override: str, problem: str) -> None:
    error = error_of(extra_overrides=["trainer.log_val_generations=4", override])
    assert error["loc"] == ("extra_overrides",)
    assert error["msg"].startswith(f"Value error, [1] {override!r}: {problem}")
    assert "\n" not in error["msg"]


def test_good_extra_overrides_are_kept() -> None:
    extra = [
        "actor_rollout_ref.actor.clip_ratio_high=0.28",
        "+ray_kwargs.ray_init.runtime_env.env_vars.X='1'",
    ]
    assert VerlConfig(extra_overrides=extra).extra_overrides == extra


def test_ray_address_format() -> None:
    assert error_of(ray_address="http://head:6379")["loc"] == ("ray_address",)
    assert VerlConfig(ray_address="ray://head.cluster:10001").ray_address == "ray://head.cluster:10001"


# Launching: the stand-in for the verl process is a real script that records what it was given


STAND_IN = """
import json, os, signal, sys, time
with open(os.environ["STAND_IN_RECORD"], "w") as record:
    given = {"argv": sys.argv[1:], "unbuffered": os.environ.get("PYTHONUNBUFFERED"), "pid": os.getpid()}
    json.dump(given, record)
behaviour = os.environ["STAND_IN_BEHAVIOUR"]
if behaviour == "sleep":
    print("ready", flush=True)
    time.sleep(120)
if behaviour == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
for step in range(30):
    print(f"step {step}", file=sys.stderr if step % 2 else sys.stdout, flush=True)
sys.exit(0 if behaviour == "succeed" else 3)
"""


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[VerlRun, Path]:
    """Run inputs that exist, with `python` a launcher of the stand-in script; returns the record path."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN, encoding="utf-8")
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n', encoding="utf-8")
    python.chmod(0o755)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    run = default_run(tmp_path, model_path=model, python=str(python))
    for path in (run.train_parquet, run.val_parquet, run.agent_loop_config):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    record = tmp_path / "record.json"
    monkeypatch.setenv("STAND_IN_RECORD", str(record))
    monkeypatch.setenv("STAND_IN_BEHAVIOUR", "succeed")
    return run, record


LOGGER = "tests.verl_backend"


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER]


def test_launch_streams_every_line_and_resumes_into_the_run_folder(
    stand_in: tuple[VerlRun, Path], caplog: pytest.LogCaptureFixture
) -> None:
    run, record = stand_in
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert launch(VerlConfig(), run, logger=logging.getLogger(LOGGER)) == 0
    lines = logged(caplog)
    assert lines[0].startswith("starting verl: ")
    assert lines[1:] == [f"step {step}" for step in range(30)]
    given = json.loads(record.read_text())
    assert given["argv"] == verl_command(VerlConfig(), run)[1:]
    assert "trainer.resume_mode=auto" in given["argv"]
    assert f"trainer.default_local_dir='{run.checkpoint_dir}'" in given["argv"]
    assert given["unbuffered"] == "1"
    assert run.checkpoint_dir.is_dir()


def test_failed_launch_quotes_the_last_lines(
    stand_in: tuple[VerlRun, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = stand_in
    monkeypatch.setenv("STAND_IN_BEHAVIOUR", "fail")
    with pytest.raises(VerlLaunchError) as info:
        launch(VerlConfig(), run, logger=logging.getLogger(LOGGER))
    assert str(info.value) == "\n".join(
        [
            "verl exited with status 3; the last lines of its output:",
            *(f"  | step {step}" for step in range(10, 30)),
        ]
    )


def test_killed_launch_names_the_signal(
    stand_in: tuple[VerlRun, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, _ = stand_in
    monkeypatch.setenv("STAND_IN_BEHAVIOUR", "killed")
    with pytest.raises(VerlLaunchError) as info:
        launch(VerlConfig(), run, logger=logging.getLogger(LOGGER))
    assert str(info.value) == "verl was stopped by signal SIGKILL (no output)"


class InterruptOnReady:
    """A caller that is interrupted (Ctrl-C, a cancelled flow) while verl runs."""

    def info(self, msg: str, *args: Any) -> None:
        if args == ("ready",):
            raise KeyboardInterrupt


def test_interrupted_launch_stops_verl(
    stand_in: tuple[VerlRun, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run, record = stand_in
    monkeypatch.setenv("STAND_IN_BEHAVIOUR", "sleep")
    with pytest.raises(KeyboardInterrupt):
        launch(VerlConfig(), run, logger=InterruptOnReady())
    with pytest.raises(ProcessLookupError):
        os.kill(json.loads(record.read_text())["pid"], signal.SIGCONT)


def test_launch_fails_fast_on_missing_inputs(stand_in: tuple[VerlRun, Path], tmp_path: Path) -> None:
    run, record = stand_in
    missing_model = tmp_path / "no-model"
    with pytest.raises(VerlConfigError) as info:
        launch(
            VerlConfig(), VerlRun(**{**run.__dict__, "model_path": missing_model}), logger=logging.getLogger()
        )
    assert str(info.value) == f"{missing_model}: model folder does not exist"
    run.train_parquet.unlink()
    with pytest.raises(VerlConfigError) as info:
        launch(VerlConfig(), run, logger=logging.getLogger())
    assert str(info.value) == f"{run.train_parquet}: training parquet not found"
    assert not record.exists()
