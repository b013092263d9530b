"""The converted parquet through VeRL 0.9.1's real CPU code path, token for token against the sampler.

What VeRL does between the parquet and the rollout engine, replayed here without Ray or a GPU: the
configured dataset class (`get_dataset_class`), `RLHFDataset` reading the file, `collate_fn`, a
`DataProto`, per-row keyword arguments as `AgentLoopWorker.generate_sequences` slices them, the agent
loop registry filled from the YAML file as `AgentLoopWorker.__init__` fills it, and the loop built with
`hydra.utils.instantiate` as `_run_agent_loop` builds it. Only the inference server is a fake: it
records the prompt ids it is asked to continue.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import pytest
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoTokenizer
from verl.experimental.agent_loop import agent_loop
from verl.protocol import DataProto
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn, get_dataset_class
from verl.workers.rollout.replica import TokenOutput

from envs.convert import AGENT_NAME, convert_trajectories, iter_training_rows
from envs.schema import TrajectoryRow
from policies.rendering import render_prompt_ids
from policies.verl_agent_loop import FtrlRLHFDataset, write_agent_loop_config
from support.trajectory_rows import AFTER_CALL_ROW, FRESH_ROW, QUESTION, write_jsonl

TWO_TURNS_ROW: dict[str, Any] = {
    **AFTER_CALL_ROW,
    "messages": [
        {"role": "system", "content": "You are a careful assistant. Réponds en français si possible."},
        *AFTER_CALL_ROW["messages"][:1],
        {"role": "assistant", "content": "Two lookups at once.", "tool_calls": [
            {"name": "get_capital", "arguments": {"country": "France"}},
            {"name": "get_population", "arguments": {"city": "Zürich", "year": 2020}},
        ]},
        {"role": "tool", "content": "Paris"},
        {"role": "tool", "content": {"error": "no census for Zürich"}},
        *AFTER_CALL_ROW["messages"][1:],
    ],
    "turn": 2,
}  # fmt: skip
ROWS = [
    FRESH_ROW,
    AFTER_CALL_ROW,
    TWO_TURNS_ROW,
    {**FRESH_ROW, "tools": "[]", "codes": "{}", "unsolved_set": "{}"},
]


class RecordingServer:
    """Stands in for VeRL's LLM server client: records each prompt, answers with an end of turn."""

    def __init__(self, end_id: int) -> None:
        self.end_id = end_id
        self.prompts: list[list[int]] = []

    async def generate(self, *, prompt_ids: list[int], **_: Any) -> TokenOutput:
        self.prompts.append(list(prompt_ids))
        return TokenOutput(token_ids=[self.end_id])


@pytest.fixture
def tokenizer(tiny_model_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def parquet(tmp_path: Path) -> Path:
    src = write_jsonl(tmp_path / "trajectories.jsonl", ROWS)
    return convert_trajectories(src, tmp_path / "train.parquet").out


@pytest.fixture
def loop_registry(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """VeRL's agent loop registry with our YAML loaded into it; restored afterwards."""
    saved = dict(agent_loop._agent_loop_registry)
    for config in OmegaConf.load(write_agent_loop_config(tmp_path / "agent_loops.yaml")):
        agent_loop._agent_loop_registry[config.name] = config
    yield agent_loop._agent_loop_registry
    agent_loop._agent_loop_registry.clear()
    agent_loop._agent_loop_registry.update(saved)


def data_config(tmp_path: Path, **changes: Any) -> Any:
    return OmegaConf.create(
        {
            "prompt_key": "prompt",
            "max_prompt_length": 4096,
            "cache_dir": str(tmp_path / "verl-cache"),
            "custom_cls": {"path": "pkg://policies.verl_agent_loop", "name": "FtrlRLHFDataset"},
            **changes,
        }
    )


def rollout_prompts(
    parquet: Path,
    tokenizer: Any,
    model_dir: Path,
    tmp_path: Path,
    registry: dict[str, Any],
    agent_name: str | None,
) -> list[list[int]]:
    """Prompt ids VeRL sends to its inference server for every row, with the rows' own `agent_name`."""
    config = data_config(tmp_path)
    dataset = get_dataset_class(config)(str(parquet), tokenizer, config)
    batch = DataProto.from_single_dict(collate_fn([dataset[i] for i in range(len(dataset))]))
    trainer_config = OmegaConf.create(
        {"actor_rollout_ref": {"rollout": {"prompt_length": 4096, "response_length": 8}}}
    )
    server = RecordingServer(tokenizer.convert_tokens_to_ids("<|im_end|>"))

    async def run_all() -> None:
        for i in range(len(batch)):
            kwargs = {key: value[i] for key, value in batch.non_tensor_batch.items()}
            name = agent_name or kwargs.pop("agent_name")
            loop = hydra.utils.instantiate(
                config=registry[name],
                trainer_config=agent_loop.DictConfigWrap(config=trainer_config),
                server_manager=server,
                tokenizer=tokenizer,
                processor=None,
                hf_model_type=AutoConfig.from_pretrained(model_dir).model_type,
                dataset_cls=type(dataset),
                data_config=agent_loop.DictConfigWrap(config),
                tools=agent_loop.ToolListWrap([]),
            )
            output = await loop.run({"temperature": 1.0}, **kwargs)
            assert output.prompt_ids == server.prompts[-1]

    asyncio.run(run_all())
    return server.prompts


def sampler_prompts(tokenizer: Any) -> list[list[int]]:
    """What the sampler rendered: `render_prompt_ids(tokenizer, row.messages, row.tool_schemas())`."""
    rows = [TrajectoryRow.model_validate(row) for row in ROWS]
    return [render_prompt_ids(tokenizer, row.messages, row.tool_schemas()) for row in rows]


def test_verl_prompt_ids_equal_the_sampler_s(
    parquet: Path, tokenizer: Any, tiny_model_dir: Path, tmp_path: Path, loop_registry: dict[str, Any]
) -> None:
    got = rollout_prompts(parquet, tokenizer, tiny_model_dir, tmp_path, loop_registry, agent_name=None)
    want = sampler_prompts(tokenizer)
    assert got == want
    text = tokenizer.decode(got[2])
    assert (
        "<tools>" in text
        and '{"name": "get_population", "arguments": {"city": "Zürich", "year": 2020}}' in text
    )
    assert "<tools>" not in tokenizer.decode(got[3])  # a row with no tools renders none, as the sampler did


def test_verl_s_stock_single_turn_loop_would_not(
    parquet: Path, tokenizer: Any, tiny_model_dir: Path, tmp_path: Path, loop_registry: dict[str, Any]
) -> None:
    """Why the custom loop exists: the stock one drops the tools and re-encodes the arguments."""
    got = rollout_prompts(parquet, tokenizer, tiny_model_dir, tmp_path, loop_registry, "single_turn_agent")
    want = sampler_prompts(tokenizer)
    assert [a != b for a, b in zip(got, want, strict=True)] == [True, True, True, False]


def test_agent_loop_config_names_the_loop_every_row_asks_for(tmp_path: Path) -> None:
    path = write_agent_loop_config(tmp_path / "loops.yaml")
    assert OmegaConf.to_container(OmegaConf.load(path)) == [
        {"name": AGENT_NAME, "_target_": "policies.verl_agent_loop.FtrlToolPromptAgentLoop"}
    ]
    assert agent_loop._agent_loop_registry[AGENT_NAME] == {
        "_target_": "policies.verl_agent_loop.FtrlToolPromptAgentLoop"
    }


def test_length_filter_counts_the_tools(parquet: Path, tokenizer: Any, tmp_path: Path) -> None:
    """A prompt over the limit only with its tools: ours drops it; the stock filter undercounts, keeps it."""
    lengths = [len(ids) for ids in sampler_prompts(tokenizer)]
    limit = lengths[0] - 1  # the fresh row's prompt with tools; the one without tools is far shorter
    assert lengths[3] < limit
    ours = FtrlRLHFDataset(str(parquet), tokenizer, data_config(tmp_path, max_prompt_length=limit))
    stock = RLHFDataset(str(parquet), tokenizer, data_config(tmp_path, max_prompt_length=limit))
    assert [json.loads(ours[i]["extra_info"]["tools"]) == [] for i in range(len(ours))] == [True]
    assert len(stock) > len(ours)
    exact = FtrlRLHFDataset(str(parquet), tokenizer, data_config(tmp_path, max_prompt_length=lengths[0]))
    assert [exact[i]["raw_prompt"][-1]["content"] for i in range(len(exact))] == [QUESTION, QUESTION]


@pytest.mark.skipif(
    importlib.util.find_spec("envs.sandbox") is None, reason="envs.sandbox is not written yet"
)
def test_verl_reward_scores_a_turn_from_the_stored_extra_info(parquet: Path) -> None:
    """VeRL passes `extra_info` and `reward_model.ground_truth` to our `compute_score` unchanged."""
    from rewards.verl import compute_score

    record = list(iter_training_rows(parquet))[1]  # capital solved; the population is still to find
    call = '<tool_call>\n{"name": "get_population", "arguments": {"city": "paris"}}\n</tool_call><|im_end|>'
    score = compute_score(
        record["data_source"], call, record["reward_model"]["ground_truth"], record["extra_info"]
    )
    assert score == {"score": 1.0, "tool_calls": 1.0, "solved": 1.0}  # Solve-F1 = 2q/(p+1) = 2/2
