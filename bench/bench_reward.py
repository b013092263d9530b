"""Per-turn reward throughput: this project's sandboxed scorer against the paper's in-process exec.

Both sides score the same few thousand generated Qwen2.5-format responses over the same generated
environments, with the same parser and the same matching rule, so the difference is only how tool
code runs:

- baseline (the paper's released approach, written inline here): every tool call `exec`s the tool
  module in the trainer's own process and runs the function in a fresh thread joined with a 10 s
  timeout — no isolation at all;
- ours: `rewards.scoring.score_turns` in batches, tool calls sent to warm sandboxed workers that
  compile each tool module once.

Run: `make bench` (or `.venv/bin/python bench/bench_reward.py --responses 3000 --batch 256`).
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from dataclasses import dataclass

from envs.sandbox import SandboxPool
from policies.parsing import parse_turn
from rewards.formulas import final_answer_reward, tool_turn_reward
from rewards.matching import CallOutput, contains_answer, count_unsolved, match_calls
from rewards.scoring import TurnInput, score_turns

CITIES = ["Paris", "Rome", "Madrid", "Berlin", "Vienna", "Lisbon", "Oslo", "Athens", "Dublin", "Prague"]

TOOL_CODE = '''import json
import re

_TABLE = {table!r}


def _key(text):
    return re.sub(r"\\s+", " ", text.strip().lower())


def {name}(city, unit="celsius", details=False):
    """Look up {name} for a city; wrong input returns a helpful message, as FTRL tools do."""
    row = _TABLE.get(_key(city))
    if row is None:
        return "Error: unknown city " + json.dumps(city) + "; known: " + ", ".join(sorted(_TABLE))
    if unit != "celsius":
        row = {{k: v * 9 / 5 + 32 if isinstance(v, int) else v for k, v in row.items()}}
    return row if details else row["value"]
'''


@dataclass(frozen=True)
class Environment:
    codes: dict[str, str]
    unsolved_set: dict[str, list[str]]
    answer: str


def make_environment(rng: random.Random, index: int) -> Environment:
    codes, unsolved = {}, {}
    for tool_index in range(rng.randint(1, 3)):
        name = f"lookup_{index}_{tool_index}"
        table = {city.lower(): {"value": rng.randint(-20, 40), "city": city} for city in CITIES}
        codes[name] = TOOL_CODE.format(name=name, table=table)
        unsolved[name] = [str(table[rng.choice(CITIES).lower()]["value"])]
    return Environment(codes=codes, unsolved_set=unsolved, answer=", ".join(a[0] for a in unsolved.values()))


def make_response(rng: random.Random, env: Environment) -> str:
    """A mix like a policy early in training: right calls, wrong arguments, answers, broken format."""
    kind = rng.random()
    tools = list(env.codes)
    if kind < 0.7:
        calls = []
        for _ in range(rng.randint(1, 3)):
            city = rng.choice(CITIES + ["Atlantis"])
            arguments = {"city": city} if rng.random() < 0.9 else {"town": city}
            calls.append(json.dumps({"name": rng.choice(tools), "arguments": arguments}))
        return "".join(f"<tool_call>\n{call}\n</tool_call>\n" for call in calls) + "<|im_end|>"
    if kind < 0.85:
        return f"The answer is {env.answer}.<|im_end|>"
    if kind < 0.95:
        return '<tool_call>\n{"name": "' + tools[0] + '", "arguments": {"city": <|im_end|>'
    return "<|im_end|>"


def baseline_score(response: str, env: Environment) -> float:
    """The paper's way: exec the tool module in-process per call, call it in a thread with a timeout."""
    turn = parse_turn(response, "qwen2.5")
    if not turn.tool_calls:
        return final_answer_reward(
            turn.content,
            states_answer=contains_answer(turn.content, env.answer),
            unsolved_before=count_unsolved(env.unsolved_set),
            solve_rate=0.0,
        )
    outputs = []
    for call in turn.tool_calls:
        result: dict[str, object] = {}

        def run(call=call, result=result) -> None:
            try:
                namespace: dict[str, object] = {}
                exec(env.codes[call.name], namespace)  # noqa: S102 - the unsafe baseline, on purpose
                value = namespace[call.name](**call.arguments)
                result["output"] = (
                    json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
                )
            except Exception:  # noqa: BLE001 - the baseline swallows tool errors like the paper
                result["output"] = None

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout=10.0)
        outputs.append(CallOutput(tool=call.name, output=result.get("output")))  # type: ignore[arg-type]
    match = match_calls(outputs, env.unsolved_set)
    return tool_turn_reward("f1", len(turn.tool_calls), match.solved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=3000)
    parser.add_argument("--environments", type=int, default=200)
    parser.add_argument(
        "--batch", type=int, default=256, help="responses scored per call, as a trainer would"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    envs = [make_environment(rng, i) for i in range(args.environments)]
    work = [(env, make_response(rng, env)) for env in (rng.choice(envs) for _ in range(args.responses))]
    calls = sum(len(parse_turn(response).tool_calls) for _, response in work)

    start = time.perf_counter()
    expected = [baseline_score(response, env) for env, response in work]
    baseline_s = time.perf_counter() - start

    with SandboxPool(workers=args.workers) as pool:
        score_turns([TurnInput(work[0][1], work[0][0].codes, work[0][0].unsolved_set)], pool=pool)  # warm up
        start = time.perf_counter()
        ours = []
        for begin in range(0, len(work), args.batch):
            chunk = work[begin : begin + args.batch]
            inputs = [TurnInput(r, e.codes, e.unsolved_set, 0.0, e.answer) for e, r in chunk]
            ours.extend(outcome.reward("f1") for outcome in score_turns(inputs, pool=pool))
        sandbox_s = time.perf_counter() - start

    if ours != expected:
        differing = sum(a != b for a, b in zip(ours, expected, strict=True))
        raise SystemExit(f"rewards differ between baseline and sandbox on {differing} responses")
    print(f"{len(work)} responses, {calls} tool calls, {args.environments} environments, batch {args.batch}")
    print(f"baseline (in-process exec + thread timeout): {len(work) / baseline_s:8.0f} responses/s")
    print(f"sandboxed pool ({args.workers} warm workers):      {len(work) / sandbox_s:8.0f} responses/s")
    print(f"ratio sandboxed/baseline: {baseline_s / sandbox_s:.2f}x  (identical rewards on all responses)")


if __name__ == "__main__":
    main()
