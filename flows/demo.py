"""The CPU demo: what `make demo` runs.

It walks the parts of the pipeline that exist end to end on this machine — profile, model folder,
chat rendering, sandboxed tool execution, the verifiable reward — over the packaged example
environments, and writes a report into the run directory. Later stages (sampling, training,
evaluation) join it as they land.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from envs.atomic import atomic_write_text
from envs.examples import load_examples
from envs.sandbox import SandboxPool
from envs.schema import EnvRow
from policies.rendering import render_prompt_ids
from rewards.scoring import TurnInput, score_turns
from tasks.model import resolve_model_folder
from tasks.profile import PipelineConfig


@dataclass(frozen=True)
class ScoredTurn:
    env_id: str
    scenario: str
    turn: str
    prompt_tokens: int
    calls: int
    solved: int
    reward: float


def demo_turns(env: EnvRow) -> dict[str, str]:
    """Three turns a policy might write: the golden calls, a call with a wrong argument, an answer."""
    golden = [sub["call"] for sub in env.meta_dict().get("sub_questions", [])]
    blocks = [f"<tool_call>\n{json.dumps(call, ensure_ascii=False)}\n</tool_call>" for call in golden]
    wrong = {"name": golden[0]["name"], "arguments": {"wrong_argument": "x"}}
    return {
        "golden calls": "\n".join(blocks) + "<|im_end|>",
        "wrong argument": f"<tool_call>\n{json.dumps(wrong)}\n</tool_call><|im_end|>",
        "final answer": f"The answer is {env.answer}.<|im_end|>",
    }


def run_demo(config: PipelineConfig) -> tuple[list[ScoredTurn], Path]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_folder(config))
    environments = load_examples()
    inputs, labels = [], []
    for env in environments:
        prompt_tokens = len(render_prompt_ids(tokenizer, env.messages, env.tool_schemas()))
        for name, text in demo_turns(env).items():
            inputs.append(TurnInput(text, env.codes_dict(), env.unsolved(), env.solve_rate, env.answer))
            labels.append((env, name, prompt_tokens))
    with SandboxPool(workers=config.sandbox.workers, limits=config.sandbox.limits()) as pool:
        outcomes = score_turns(inputs, parser=config.model.parser, pool=pool)
    scored = [
        ScoredTurn(
            env_id=env.env_id,
            scenario=env.meta_dict().get("scenario", "?"),
            turn=name,
            prompt_tokens=tokens,
            calls=outcome.calls,
            solved=outcome.solved,
            reward=outcome.reward(config.reward.kind),
        )
        for (env, name, tokens), outcome in zip(labels, outcomes, strict=True)
    ]
    report = config.run.directory / "report" / "demo.json"
    atomic_write_text(report, json.dumps([asdict(turn) for turn in scored], indent=2, ensure_ascii=False))
    return scored, report
