"""The three adapters over the one scorer: the paper's signatures, VeRL's reward managers, TRL."""

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from rewards import ftrl, trl
from support.reward_env import ANSWER, CODES, UNSOLVED, call, response

VERL_ADAPTER = Path(__file__).resolve().parents[2] / "rewards" / "verl.py"

TWO_CALLS = response(call("get_capital", {"country": "France"}), call("get_capital", {"country": "Italy"}))


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (ftrl.compute_solve_f1, 2 / 3),
        (ftrl.compute_solve_precision, 0.5),
        (ftrl.compute_solve_rate, 1.0),
        (ftrl.compute_solve_pr, 0.5),
    ],
)
def test_paper_signatures(function, expected: float) -> None:
    assert function(TWO_CALLS, CODES, UNSOLVED, 0.0, "train") == pytest.approx(expected)
    assert function(TWO_CALLS, CODES, UNSOLVED, 0.0, "train", answer=ANSWER) == pytest.approx(expected)


def test_paper_signature_final_answer_and_test_split() -> None:
    assert ftrl.compute_solve_f1("It is 2,148,000.<|im_end|>", CODES, {}, 1.0, "train", ANSWER) == 1.0
    with pytest.raises(ValueError, match="split='test'"):
        ftrl.compute_solve_f1(TWO_CALLS, CODES, UNSOLVED, 0.0, "test")


def trl_columns(n: int) -> dict:
    return {
        "codes": [json.dumps(CODES)] * n,
        "unsolved_set": [json.dumps(UNSOLVED)] * n,
        "solve_rate": [0.0] * n,
        "split": ["train"] * n,
        "answer": [ANSWER] * n,
        "trainer_state": None,  # GRPOTrainer passes these too; the reward must accept them
        "log_extra": lambda *a, **k: None,
        "log_metric": lambda *a, **k: None,
    }


def test_trl_reward_on_text_completions() -> None:
    completions = [TWO_CALLS, "<|im_end|>", response(call("get_population", {"city": "Paris"}))]
    rewards = trl.solve_f1(prompts=["q"] * 3, completions=completions, completion_ids=None, **trl_columns(3))
    assert rewards == pytest.approx([2 / 3, -0.5, 1.0])
    assert trl.solve_f1.__name__ == "solve_f1"


def test_trl_reward_on_conversational_completions() -> None:
    parsed = [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_capital", "arguments": {"country": "France"}}},
                {
                    "type": "function",
                    "function": {"name": "get_capital", "arguments": '{"country": "Italy"}'},
                },
            ],
        }
    ]
    as_text = [{"role": "assistant", "content": TWO_CALLS}]
    rewards = trl.solve_precision(prompts=[[], []], completions=[parsed, as_text], **trl_columns(2))
    assert rewards == pytest.approx([0.5, 0.5])


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def verl_batch(tokenizer, responses: list[str], extra_infos: list[dict]):
    """A DataProto shaped like the rollout's output: left-padded prompts, right-padded responses."""
    from verl import DataProto

    prompt_ids = [
        tokenizer.encode(f"<|im_start|>user\nquestion {i}<|im_end|>") for i in range(len(responses))
    ]
    response_ids = [tokenizer.encode(text, add_special_tokens=False) for text in responses]
    prompt_len, response_len = max(map(len, prompt_ids)), max(map(len, response_ids))
    pad = tokenizer.pad_token_id
    prompts = torch.tensor([[pad] * (prompt_len - len(p)) + p for p in prompt_ids])
    responses_t = torch.tensor([r + [pad] * (response_len - len(r)) for r in response_ids])
    mask = torch.tensor(
        [
            [0] * (prompt_len - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (response_len - len(r))
            for p, r in zip(prompt_ids, response_ids, strict=True)
        ]
    )
    n = len(responses)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses_t, "attention_mask": mask},
        non_tensors={
            "data_source": np.array(["ftrl"] * n, dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": ANSWER}] * n, dtype=object),
            "extra_info": np.array(extra_infos, dtype=object),
        },
    ), [len(r) for r in response_ids]


def extra_info(unsolved=UNSOLVED, solve_rate=0.0) -> dict:
    return {
        "codes": json.dumps(CODES),
        "unsolved_set": json.dumps(unsolved),
        "solve_rate": solve_rate,
        "split": "train",
        "env_id": "e1",
    }


RESPONSES = [
    TWO_CALLS,
    response(call("get_population", {"city": "Paris"}), call("get_landmarks", {"city": "Paris"})),
    "The answer is 2,148,000.<|im_end|>",
    '<tool_call>\n{"name": "get_capital", "arguments": {<|im_end|>',
]
EXPECTED_F1 = [2 / 3, 4 / 3, 1.0, -0.3]  # the third row's environment is solved: t = 0 → 1/(1+0)


def verl_config(name: str, manager: str, kind: str = "f1"):
    return OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {
                    "path": str(VERL_ADAPTER),
                    "name": name,
                    "reward_kwargs": {"reward_kind": kind},
                },
                "reward_manager": {"source": "register", "name": manager},
            }
        }
    )


def batch_rows(tokenizer):
    infos = [extra_info(), extra_info(), extra_info(unsolved={}, solve_rate=1.0), extra_info()]
    return verl_batch(tokenizer, RESPONSES, infos)


def test_verl_reward_loop_naive_manager(tokenizer) -> None:
    """verl's own loader imports the adapter by path and its reward loop scores each row."""
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(verl_config("compute_score", "naive"), tokenizer)
    data, _ = batch_rows(tokenizer)

    async def score_all():
        return await asyncio.gather(*(manager.run_single(data[i : i + 1]) for i in range(len(data))))

    results = manager.loop.run_until_complete(score_all())  # the loop the manager was built on
    assert [r["reward_score"] for r in results] == pytest.approx(EXPECTED_F1)
    assert [r["reward_extra_info"]["tool_calls"] for r in results] == [2.0, 2.0, 0.0, 0.0]


def test_verl_batch_reward_manager(tokenizer) -> None:
    """verl's batch manager hands the whole batch to compute_score_batch: one sandbox batch."""
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager import BatchRewardManager

    compute = get_custom_reward_fn(verl_config("compute_score_batch", "batch", kind="precision"))
    manager = BatchRewardManager(tokenizer, num_examine=0, compute_score=compute)
    data, lengths = batch_rows(tokenizer)
    output = manager(data, return_dict=True)
    tensor = output["reward_tensor"]
    scores = [tensor[i, lengths[i] - 1].item() for i in range(len(lengths))]
    assert scores == pytest.approx([0.5, 1.0, 1.0, -0.3])
    assert tensor.sum().item() == pytest.approx(sum(scores))
    assert output["reward_extra_info"]["solved"] == [1.0, 2.0, 0.0, 0.0]


def test_verl_adapter_names_missing_extra_info(tokenizer) -> None:
    from rewards.verl import compute_score

    with pytest.raises(ValueError, match="extra_info lacks codes, unsolved_set"):
        compute_score("ftrl", TWO_CALLS, ANSWER, {"solve_rate": 0.0, "split": "train"})
