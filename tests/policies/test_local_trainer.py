"""The local training backend: oracle SFT data, GRPO steps on CPU, metrics, kill-and-resume, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

from envs.convert import convert_trajectories
from envs.examples import numbered_variants
from envs.jsonl import write_rows
from envs.sampling import SampleSettings, sample_trajectories
from envs.sandbox import default_pool
from envs.schema import EnvRow
from envs.verify import oracle_plan
from policies.backends import Conversation, SamplingParams
from policies.backends.base import BackendError
from policies.oracle import OraclePolicy, question_of
from policies.training.local_backend import LocalTrainConfig, train_local
from policies.training.metrics import (
    GRPO_LAYOUT,
    SFT_LAYOUT,
    MetricsCallback,
    keep_until,
    metrics_record,
    plot_metrics,
    read_metrics,
)
from policies.training.runs import latest_checkpoint, save_model_folder
from policies.training.sft import (
    SFTConfig,
    envs_from_parquet,
    oracle_examples,
    select_scenarios,
    sft_warm_start,
)
from tasks.profile import ProfileError, load_profile

REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: A GRPO run small enough for well under a CPU second a step: 2 prompts x 2 completions of <= 24 tokens.
#: One torch thread: on a busy 2-core machine two threads waiting on each other are several times slower.
TINY_GRPO = {
    "num_generations": 2,
    "per_device_batch_size": 4,
    "max_completion_length": 24,
    "torch_threads": 1,
}
#: Warm-start steps after which greedy decoding writes the golden call (see the SFT test).
SFT_STEPS = 60


@pytest.fixture(scope="module")
def envs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("envs") / "envs.jsonl"
    write_rows(path, numbered_variants(8))
    return path


@pytest.fixture(scope="module")
def oracle_parquet(envs_file: Path) -> Path:
    """Oracle trajectories of 8 environments (fresh rows and rows after each tool turn), converted."""
    envs = numbered_variants(8)
    policy = OraclePolicy({question_of(env.messages): oracle_plan(env) for env in envs})
    trajectories = envs_file.with_name("oracle.jsonl")
    settings = SampleSettings(policy="oracle")
    sample_trajectories(
        envs_file, trajectories, policy, SamplingParams(), default_pool(), settings, progress=False
    )
    return convert_trajectories(trajectories, envs_file.with_name("train.parquet")).out


# --- oracle plans and SFT examples -----------------------------------------------------------------


def with_meta(env: EnvRow, meta: dict) -> EnvRow:
    return EnvRow(**{**env.model_dump(), "meta": json.dumps(meta)})


def test_oracle_examples_are_the_rendered_turns_of_solved_episodes(tiny_compact_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_compact_model_dir)
    test_env = EnvRow(**{**numbered_variants(4)[3].model_dump(), "split": "test"})
    examples = oracle_examples([*numbered_variants(3), test_env], tokenizer)
    # single-hop: call + answer; parallel: one turn with two calls + answer; multi-hop: two calls + answer
    assert len(examples) == 7
    assert examples[0] == {
        "prompt": "<|im_start|>system\nTools:\nget_country_capital(iso_code:string)<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of the country with ISO code FR? (case 0)<|im_end|>\n"
        "<|im_start|>assistant\n",
        "completion": '<tool_call>\n{"name": "get_country_capital", "arguments": {"iso_code": "FR"}}\n'
        "</tool_call><|im_end|>",
    }
    assert examples[1]["prompt"].endswith(
        "<tool_response>\nParis\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    assert examples[1]["completion"] == "Paris<|im_end|>"
    assert examples[2]["completion"].count("<tool_call>") == 2
    assert examples[3]["completion"] == "709,000, 10,092,000<|im_end|>"
    # multi-hop's second call sees the first call's real output from the sandbox
    assert "<tool_response>\nFrance\n</tool_response>" in examples[5]["prompt"]
    assert examples[5]["completion"].startswith('<tool_call>\n{"name": "get_currency"')
    for example in examples:  # each pair is a prefix of the next prompt: one conversation, cut at turns
        assert example["completion"].endswith("<|im_end|>") and example["completion"].count("<|im_end|>") == 1
    assert examples[1]["prompt"].startswith(examples[0]["prompt"] + examples[0]["completion"])


def test_envs_from_parquet_gives_back_the_fresh_environments(oracle_parquet: Path) -> None:
    envs = numbered_variants(8)
    assert [env.model_dump() for env in envs_from_parquet(oracle_parquet)] == [
        env.model_dump() for env in envs
    ]


def test_sft_without_golden_calls_says_so(tmp_path: Path, tiny_compact_model_dir: Path) -> None:
    bare = [with_meta(env, {}) for env in numbered_variants(2)]
    with pytest.raises(
        ValueError, match=re.escape("no oracle trajectory to train on: no train-split environment")
    ):
        sft_warm_start(SFTConfig(), model_path=tiny_compact_model_dir, output_dir=tmp_path, env_rows=bare)
    broken = with_meta(numbered_variants(1)[0], {"sub_questions": [{"id": "q1", "call": {"name": "f"}}]})
    with pytest.raises(
        ValueError, match=re.escape(f"environment {broken.env_id}: meta.sub_questions[0].answer")
    ):
        sft_warm_start(
            SFTConfig(), model_path=tiny_compact_model_dir, output_dir=tmp_path / "b", env_rows=[broken]
        )
    with pytest.raises(ValueError, match="needs exactly one of env_rows and envs_file"):
        sft_warm_start(SFTConfig(), model_path=tiny_compact_model_dir, output_dir=tmp_path)


def test_scenario_types_keep_only_train_environments_of_those_types(
    caplog: pytest.LogCaptureFixture,
) -> None:
    envs = numbered_variants(4)  # single-hop, parallel single-hop, multi-hop, single-hop
    held_out = EnvRow(**{**numbered_variants(5)[4].model_dump(), "split": "test"})
    with caplog.at_level("INFO", logger="policies.training.sft"):
        kept = select_scenarios([*envs, held_out], ["single-hop", "multi-hop"])
    assert [env.env_id for env in kept] == [envs[0].env_id, envs[2].env_id, envs[3].env_id]
    assert "SFT warm start: kept 3 of 4 train environments (single-hop: 2, multi-hop: 1)" in caplog.messages
    assert select_scenarios([*envs, held_out], None) == [*envs, held_out]  # None: all, as before
    with pytest.raises(
        ValueError,
        match=re.escape(
            "train.local.sft.scenario_types ['parallel multi-hop']: no train-split environment of these "
            "types to warm-start on (the train split holds: multi-hop (1), parallel single-hop (1), "
            "single-hop (2))"
        ),
    ):
        select_scenarios(envs, ["parallel multi-hop"])


def test_scenario_types_are_checked_and_kept_in_canonical_order() -> None:
    config = load_profile(None, ["train.local.sft.scenario_types=[multi-hop, single-hop]"])
    assert config.train.local.sft.scenario_types == ["single-hop", "multi-hop"]
    assert SFTConfig().scenario_types is None
    with pytest.raises(ProfileError, match=re.escape("train.local.sft.scenario_types.0: Input should be")):
        load_profile(None, ["train.local.sft.scenario_types=[two-hop]"])
    with pytest.raises(ValidationError, match="scenario types listed twice: single-hop"):
        SFTConfig(scenario_types=["single-hop", "multi-hop", "single-hop"])
    with pytest.raises(ValidationError, match="at least 1 item"):
        SFTConfig(scenario_types=[])


# --- metrics ---------------------------------------------------------------------------------------


def test_metrics_records_use_project_names_and_null_for_what_was_not_logged() -> None:
    logs = {
        "loss": 0.25,
        "reward": 0.5,
        "reward_std": 0.125,
        "rewards/solve_f1/mean": 0.5,
        "rewards/solve_f1/std": 0.125,
        "kl": float("nan"),
        "completions/mean_length": 12.0,
        "learning_rate": 1e-5,
    }
    assert metrics_record(4, logs, GRPO_LAYOUT) == {
        "step": 4,
        "reward_mean": 0.5,
        "reward_std": 0.125,
        "kl": None,
        "completion_length": 12.0,
        "entropy": None,
        "loss": 0.25,
        "learning_rate": 1e-5,
        "grad_norm": None,
        "reward_components": {"solve_f1": 0.5},
    }
    assert metrics_record(1, {"loss": 2.0, "mean_token_accuracy": 0.5}, SFT_LAYOUT) == {
        "step": 1,
        "loss": 2.0,
        "token_accuracy": 0.5,
        "entropy": None,
        "learning_rate": None,
        "grad_norm": None,
    }


class _State:
    is_world_process_zero = True

    def __init__(self, step: int) -> None:
        self.global_step = step


def test_callback_appends_one_line_per_log_and_resume_cuts_back(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    callback = MetricsCallback(path, SFT_LAYOUT)
    for step in (1, 2, 3):
        callback.on_log(None, _State(step), None, logs={"loss": float(step)})
    callback.on_log(
        None, _State(3), None, logs={"train_loss": 2.0, "train_runtime": 1.0}
    )  # end-of-run summary
    assert [record["loss"] for record in read_metrics(path)] == [1.0, 2.0, 3.0]

    with path.open("ab") as handle:
        handle.write(b'{"step": 4, "lo')  # a kill in the middle of a line
    assert [record["step"] for record in read_metrics(path)] == [1, 2, 3]
    keep_until(path, 2)
    assert path.read_text() == "".join(
        json.dumps(metrics_record(step, {"loss": float(step)}, SFT_LAYOUT)) + "\n" for step in (1, 2)
    )


def test_plot_is_a_png_even_with_a_metric_never_logged(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    callback = MetricsCallback(path, GRPO_LAYOUT)
    for step in (1, 2):
        callback.on_log(
            None, _State(step), None, logs={"loss": 0.0, "reward": 0.1 * step, "reward_std": 0.05}
        )
    plot = plot_metrics(path, tmp_path / "plot.png", GRPO_LAYOUT)
    assert plot.read_bytes().startswith(PNG_MAGIC)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


# --- run folders --------------------------------------------------------------------------------


def test_resume_picks_the_newest_whole_checkpoint_and_deletes_broken_newer_ones(tmp_path: Path) -> None:
    import logging

    def checkpoint(step: int, state: str | None) -> Path:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x")
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
        return folder

    checkpoint(2, json.dumps({"global_step": 2}))
    whole = checkpoint(10, json.dumps({"global_step": 10}))
    checkpoint(11, None)  # killed before the trainer state was written
    checkpoint(12, '{"global_st')  # killed while it was written
    checkpoint(13, json.dumps({"global_step": 3}))  # not what its name says
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / "README.md").write_text("model card")
    assert latest_checkpoint(tmp_path, logging.getLogger("test")) == whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "checkpoint-10",
        "checkpoint-2",
        "checkpoint-x",
    ]
    assert latest_checkpoint(tmp_path / "absent", logging.getLogger("test")) is None


def test_final_folder_replaces_an_older_one_whole(tmp_path: Path, tiny_compact_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_compact_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_compact_model_dir)
    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.bin").write_bytes(b"old")
    assert save_model_folder(model, tokenizer, out) == out
    assert sorted(p.name for p in out.iterdir()) == [
        "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert AutoTokenizer.from_pretrained(out).chat_template == tokenizer.chat_template


# --- bad input fails before any model is loaded ----------------------------------------------------


def test_missing_model_folder_is_one_line(tmp_path: Path, oracle_parquet: Path) -> None:
    missing = tmp_path / "no-model"
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(str(missing))}: model folder does not exist$"):
        train_local(
            LocalTrainConfig(), model_path=missing, train_parquet=oracle_parquet, output_dir=tmp_path / "o"
        )
    with pytest.raises(BackendError, match="missing, so .* is not a Hugging Face model folder"):
        train_local(
            LocalTrainConfig(), model_path=tmp_path, train_parquet=oracle_parquet, output_dir=tmp_path / "o"
        )


def test_bad_parquets_are_refused_with_the_reason(
    tmp_path: Path, oracle_parquet: Path, tiny_compact_model_dir: Path
) -> None:
    def run(parquet: Path) -> None:
        train_local(
            LocalTrainConfig(),
            model_path=tiny_compact_model_dir,
            train_parquet=parquet,
            output_dir=tmp_path / "o",
        )

    with pytest.raises(FileNotFoundError, match="no-such.parquet: no such training parquet$"):
        run(tmp_path / "no-such.parquet")
    table = pq.read_table(oracle_parquet)
    old = tmp_path / "old.parquet"
    pq.write_table(table.replace_schema_metadata({b"ftrl_schema_version": b"0"}), old)
    with pytest.raises(
        ValueError, match=re.escape(f"{old}: the file has schema version 0; this code reads version 1")
    ):
        run(old)
    test_split = tmp_path / "test.parquet"
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("split"), "split", [["test"] * table.num_rows]
        ).replace_schema_metadata(table.schema.metadata),
        test_split,
    )
    with pytest.raises(ValueError, match="holds test-split rows, which are for evaluation only"):
        run(test_split)
    empty = tmp_path / "empty.parquet"
    pq.write_table(table.slice(0, 0), empty)
    with pytest.raises(ValueError, match="the training parquet has no rows$"):
        run(empty)
    not_parquet = tmp_path / "traj.parquet"
    not_parquet.write_text("{}\n")
    with pytest.raises(ValueError, match="traj.parquet: not a training parquet"):
        run(not_parquet)
    assert not (tmp_path / "o").exists()


def test_config_errors_name_the_fields() -> None:
    with pytest.raises(
        ValidationError, match=re.escape("(3 * 1 = 3) must be a multiple of num_generations (2)")
    ):
        LocalTrainConfig(num_generations=2, per_device_batch_size=3)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        LocalTrainConfig(sft={"step": 3})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        LocalTrainConfig(parser="qwen2.5")  # the run's model.parser, never a trainer setting


def test_command_line_reports_user_errors_in_one_line(tmp_path: Path, oracle_parquet: Path) -> None:
    args = ["--data", str(oracle_parquet), "--out", str(tmp_path / "o"), "--model", str(tmp_path / "absent")]
    bad_config = _ftrl_train(args + ["--set", "train.local.max_steps=0"])
    assert bad_config.returncode == 2
    assert bad_config.stderr == (
        "error: profile defaults: train.local.max_steps: Input should be greater than or equal to 1 (got 0)\n"
    )
    missing = _ftrl_train(args)
    assert missing.returncode == 2
    assert missing.stderr == f"error: {tmp_path / 'absent'}: model folder does not exist\n"


def _ftrl_train(args: list[str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "flows.cli", "train", "--backend", "local", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


# --- training --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_three_grpo_steps_after_a_short_warm_start(
    tmp_path: Path, oracle_parquet: Path, tiny_compact_model_dir: Path
) -> None:
    from transformers import AutoModelForCausalLM

    config = LocalTrainConfig(
        **TINY_GRPO,
        max_steps=3,
        save_steps=2,
        sft=SFTConfig(steps=2, batch_size=8, logging_steps=1, torch_threads=1),
    )
    out = tmp_path / "run"
    result = train_local(
        config, model_path=tiny_compact_model_dir, train_parquet=oracle_parquet, output_dir=out
    )

    assert (result.steps_done, result.resumed_from) == (3, None)
    assert result.sft_model_dir == out / "sft" / "model"
    assert [r["step"] for r in read_metrics(out / "sft" / "metrics.jsonl")] == [1, 2]
    records = read_metrics(result.metrics_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        assert set(record) == {"step", *GRPO_LAYOUT.keys, "reward_components"}
        assert set(record["reward_components"]) == {"solve_f1"}
        assert record["reward_mean"] == pytest.approx(record["reward_components"]["solve_f1"])
        assert record["kl"] is not None and record["learning_rate"] == pytest.approx(1e-5)
        assert 1 <= record["completion_length"] <= 24
    assert result.plot_path.read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in result.checkpoints_dir.glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-3",
    ]
    assert json.loads((out / "run.json").read_text())["config"]["max_steps"] == 3

    model = AutoModelForCausalLM.from_pretrained(result.final_model_dir)
    assert model.config.model_type == "qwen2"
    assert {"model.safetensors", "tokenizer.json", "chat_template.jinja", "generation_config.json"} <= {
        p.name for p in result.final_model_dir.iterdir()
    }
    # a finished run, started again, trains no further (transformers would run a step past max_steps)
    again = train_local(
        config, model_path=tiny_compact_model_dir, train_parquet=oracle_parquet, output_dir=out
    )
    assert (again.steps_done, again.resumed_from) == (3, str(result.checkpoints_dir / "checkpoint-3"))
    assert read_metrics(result.metrics_path) == records
    with pytest.raises(ValueError, match="holds a run with a different config; rerun with the same inputs"):
        train_local(
            config.model_copy(update={"max_steps": 4}),
            model_path=tiny_compact_model_dir,
            train_parquet=oracle_parquet,
            output_dir=out,
        )


def test_each_sampled_batch_trains_num_iterations_steps(
    tmp_path: Path, oracle_parquet: Path, tiny_compact_model_dir: Path
) -> None:
    config = LocalTrainConfig(**TINY_GRPO, max_steps=4, num_iterations=2, save_steps=4)
    result = train_local(
        config, model_path=tiny_compact_model_dir, train_parquet=oracle_parquet, output_dir=tmp_path / "run"
    )
    records = read_metrics(result.metrics_path)
    # steps 1 and 3 sample (and score) a batch; steps 2 and 4 train on it again, sampling nothing
    assert [(r["step"], r["reward_mean"] is not None) for r in records] == [
        (1, True),
        (2, False),
        (3, True),
        (4, False),
    ]
    assert all(r["loss"] is not None and r["kl"] is not None for r in records)


def _train_in_subprocess(model: Path, parquet: Path, out: Path, config: dict) -> subprocess.Popen[str]:
    """`ftrl train --backend local`, the command a user runs, with `config` as train.local overrides."""
    overrides = [arg for key, value in config.items() for arg in ("--set", f"train.local.{key}={value}")]
    command = [
        sys.executable, "-m", "flows.cli", "train", "--backend", "local", "--model", str(model),
        "--data", str(parquet), "--out", str(out), *overrides,
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint(
    tmp_path: Path, oracle_parquet: Path, tiny_compact_model_dir: Path
) -> None:
    config = {**TINY_GRPO, "max_steps": 6, "save_steps": 1, "save_total_limit": 10}
    out = tmp_path / "run"
    victim = _train_in_subprocess(tiny_compact_model_dir, oracle_parquet, out, config)
    second = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.monotonic() + 300
    while not second.is_file():
        assert victim.poll() is None, victim.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint-2 within 300 s"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (out / "model").exists(), "the run finished before it could be killed"
    before = read_metrics(out / "metrics.jsonl")

    resumed = _train_in_subprocess(tiny_compact_model_dir, oracle_parquet, out, config)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr[-3000:]
    summary = re.search(r"trained (\d+) steps, resumed from .*checkpoint-(\d+); model -> ", stdout)
    assert summary is not None, stdout[-3000:]
    steps_done, resumed_step = int(summary[1]), int(summary[2])
    assert 2 <= resumed_step < 6 and resumed_step <= len(before) <= resumed_step + 1
    assert steps_done == 6
    assert f"GRPO resumes from {out / 'checkpoints' / f'checkpoint-{resumed_step}'}" in stdout
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[:resumed_step] == before[:resumed_step]  # the steps before the kill are kept as logged
    state = json.loads((out / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_sft_warm_start_teaches_the_tool_call_format(tmp_path: Path, tiny_compact_model_dir: Path) -> None:
    from policies.backends.transformers_backend import TransformersBackend

    envs = numbered_variants(3)
    config = SFTConfig(steps=SFT_STEPS, batch_size=8, logging_steps=10, torch_threads=1)
    model = sft_warm_start(
        config, model_path=tiny_compact_model_dir, output_dir=tmp_path / "sft", env_rows=envs
    )

    assert [r["step"] for r in read_metrics(tmp_path / "sft" / "metrics.jsonl")] == list(
        range(10, SFT_STEPS + 1, 10)
    )
    assert (tmp_path / "sft" / "metrics.png").read_bytes().startswith(PNG_MAGIC)
    with TransformersBackend(model, device="cpu") as backend:
        conversations = [Conversation(messages=env.messages, tools=env.tool_schemas()) for env in envs]
        turns = [
            g.turn
            for g in backend.generate(conversations, SamplingParams(temperature=0.0, max_new_tokens=48))
        ]
    first = turns[0]
    assert first.parse_error is None
    assert [(call.name, call.arguments) for call in first.tool_calls] == [
        ("get_country_capital", {"iso_code": "FR"})
    ]
    # finished: a second call returns the folder without training again
    assert (
        sft_warm_start(config, model_path=tiny_compact_model_dir, output_dir=tmp_path / "sft", env_rows=envs)
        == model
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_grpo_steps_on_the_gpu(tmp_path: Path, oracle_parquet: Path, tiny_compact_model_dir: Path) -> None:
    config = LocalTrainConfig(**TINY_GRPO, max_steps=2, use_cpu=False)
    result = train_local(
        config, model_path=tiny_compact_model_dir, train_parquet=oracle_parquet, output_dir=tmp_path
    )
    assert result.steps_done == 2
    assert [r["step"] for r in read_metrics(result.metrics_path)] == [1, 2]
