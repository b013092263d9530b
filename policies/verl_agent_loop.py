"""VeRL extension points that render each training row with its own tool schemas.

In VeRL 0.9.1 `RLHFDataset` hands a row's messages to the rollout's agent loop as `raw_prompt`, and
the stock `SingleTurnAgentLoop` tokenizes them with no tools at all; its overlong-prompt filter does
not see them either. FTRL rows each carry their own tools, and the prompt VeRL trains on must be,
token for token, the prompt the sampler saw. So, through VeRL's own extension points:

- `FtrlToolPromptAgentLoop`, registered as `envs.convert.AGENT_NAME`, which every converted row names
  in its `agent_name` column: VeRL's single-turn loop, fed the decoded messages and the row's tools;
- `FtrlRLHFDataset`: `RLHFDataset` whose length filter measures that same prompt.

A VeRL run enables both with (`write_agent_loop_config` writes the YAML file)::

    actor_rollout_ref.rollout.agent.agent_loop_config_path=<agent_loops.yaml>
    data.custom_cls.path=pkg://policies.verl_agent_loop data.custom_cls.name=FtrlRLHFDataset

This module imports VeRL; nothing on the CPU path imports this module.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import datasets
import yaml
from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.utils.tokenizer import normalize_token_ids
from verl.utils.tokenizer.chat_template import apply_chat_template

from envs.atomic import atomic_write_text
from envs.convert import AGENT_NAME, decode_prompt, row_tools

__all__ = ["AGENT_LOOP_CONFIG", "FtrlRLHFDataset", "FtrlToolPromptAgentLoop", "write_agent_loop_config"]

logger = logging.getLogger(__name__)


@register(AGENT_NAME)
class FtrlToolPromptAgentLoop(SingleTurnAgentLoop):
    """`SingleTurnAgentLoop` that renders the row's decoded messages with the row's tool schemas.

    VeRL builds one loop instance per sample (`AgentLoopWorker._run_agent_loop`), so keeping the row's
    tools on the instance between `run` and the prompt build cannot mix rows up.
    """

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        self._row_tools = row_tools(kwargs["extra_info"])
        kwargs["raw_prompt"] = decode_prompt(kwargs["raw_prompt"])
        return await super().run(sampling_params, **kwargs)

    async def ct_build_initial_tokens(
        self, messages: list[dict], tools: Any = None, **kwargs: Any
    ) -> list[int]:
        # The parent's `run` passes no tools; the row's own are the ones the sampler rendered with.
        return await super().ct_build_initial_tokens(messages, tools=self._row_tools, **kwargs)


AGENT_LOOP_CONFIG = [
    {"name": AGENT_NAME, "_target_": f"{__name__}.{FtrlToolPromptAgentLoop.__qualname__}"},
]


def write_agent_loop_config(path: str | Path) -> Path:
    """Write the YAML that VeRL's `agent.agent_loop_config_path` loads into each rollout worker.

    The `@register` above only fills the registry of a process that imports this module; VeRL's
    rollout workers (Ray actors) learn about custom loops from this file instead.
    """
    atomic_write_text(path, yaml.safe_dump(AGENT_LOOP_CONFIG, sort_keys=False))
    return Path(path)


class FtrlRLHFDataset(RLHFDataset):
    """`RLHFDataset` whose overlong-prompt filter counts the prompt the agent loop will build.

    The stock filter renders the stored messages without tools and with tool-call arguments still
    JSON text, so it undercounts, and prompts over `max_prompt_length` would reach the loop, which
    cuts them from the left (the system turn with the tools goes first). Text-only, like FTRL rows.
    """

    def maybe_filter_out_long_prompts(self, dataframe: datasets.Dataset | None = None) -> datasets.Dataset:
        if not self.filter_overlong_prompts:
            return dataframe
        limit = self.max_prompt_length
        before = len(dataframe)
        dataframe = dataframe.filter(
            lambda doc: self._prompt_length(doc) <= limit,
            num_proc=self.num_workers,
            desc=f"Filtering prompts longer than {limit} tokens (tools included)",
        )
        logger.info("kept %d of %d rows with prompts of at most %d tokens", len(dataframe), before, limit)
        return dataframe

    def _prompt_length(self, doc: dict[str, Any]) -> int:
        kwargs = {
            key: value
            for key, value in self.apply_chat_template_kwargs.items()
            if key not in ("tokenize", "return_dict", "return_tensors")
        }
        ids = apply_chat_template(
            self.tokenizer,
            decode_prompt(doc[self.prompt_key]),
            tokenize=True,
            add_generation_prompt=True,
            tools=row_tools(doc["extra_info"]),
            **kwargs,
        )
        return len(normalize_token_ids(ids))
