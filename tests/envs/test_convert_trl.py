"""The converted parquet through `datasets.load_dataset` and TRL's `GRPOTrainer` on the tiny model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import datasets
import pytest
from transformers import AutoTokenizer

from envs.convert import convert_trajectories, iter_training_rows, load_for_trl
from envs.schema import TrajectoryRow
from policies.rendering import render_prompt, render_prompt_ids
from support.trajectory_rows import AFTER_CALL_ROW, FRESH_ROW, write_jsonl

ROWS = [FRESH_ROW, AFTER_CALL_ROW, {**AFTER_CALL_ROW, "turn": 3}, {**FRESH_ROW, "env_id": "fedcba9876543210"}]


@pytest.fixture
def parquet(tmp_path: Path) -> Path:
    return convert_trajectories(write_jsonl(tmp_path / "t.jsonl", ROWS), tmp_path / "train.parquet").out


@pytest.fixture
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_datasets_loads_the_file_as_written(parquet: Path) -> None:
    dataset = datasets.load_dataset("parquet", data_files=str(parquet), split="train")
    assert dataset.num_rows == len(ROWS)
    assert list(dataset) == list(iter_training_rows(parquet))


def test_trl_prompts_are_the_sampler_s_text_and_tokens(parquet: Path, tokenizer: Any) -> None:
    dataset = load_for_trl(parquet, tokenizer)
    prompts = list(dataset["prompt"])
    rows = [TrajectoryRow.model_validate(row) for row in ROWS]
    assert prompts == [render_prompt(tokenizer, row.messages, row.tool_schemas()) for row in rows]
    # GRPOTrainer tokenizes text prompts with exactly this call (`_tokenize_prompts`, non-conversational).
    trl_ids = tokenizer(text=prompts)["input_ids"]
    assert trl_ids == [render_prompt_ids(tokenizer, row.messages, row.tool_schemas()) for row in rows]
    assert list(dataset["codes"]) == [row["codes"] for row in ROWS]
    assert list(dataset["answer"]) == [row["answer"] for row in ROWS]


@pytest.mark.skipif(
    importlib.util.find_spec("envs.sandbox") is None, reason="envs.sandbox is not written yet"
)
def test_grpo_trainer_trains_a_step_with_the_solve_f1_reward(
    parquet: Path, tokenizer: Any, tiny_model_dir: Path, tmp_path: Path
) -> None:
    from trl import GRPOConfig, GRPOTrainer

    from rewards.trl import solve_f1

    config = GRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        use_cpu=True,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=16,
        max_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
    )
    seen: list[dict[str, Any]] = []

    def recorded_solve_f1(**kwargs: Any) -> list[float]:
        seen.append(kwargs)
        return solve_f1(**kwargs)

    recorded_solve_f1.__name__ = "solve_f1"
    dataset = load_for_trl(parquet, tokenizer)
    trainer = GRPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=recorded_solve_f1,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 1
    (logged,) = [entry for entry in trainer.state.log_history if "rewards/solve_f1/mean" in entry]
    assert -0.5 <= logged["rewards/solve_f1/mean"] <= 2.0
    (call,) = seen
    assert len(call["completions"]) == 2 and call["prompts"][0] == call["prompts"][1]
    index = list(dataset["prompt"]).index(call["prompts"][0])
    for column in ("codes", "unsolved_set", "solve_rate", "split", "answer"):
        assert call[column] == [dataset[index][column]] * 2, column
