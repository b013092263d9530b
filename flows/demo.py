"""The stage tour (`ftrl demo`, `make tour`): single stages on example environments, in seconds.

`make demo` runs the whole method as a flow (`ftrl run --config configs/cpu-demo.yaml`); this tour
walks every stage that exists end to end on this machine, over environments made from the
packaged examples: the model folder (the tiny model, built offline), trajectory sampling with the
transformers backend, conversion to the training parquet, and the verifiable reward checked
against each environment's golden calls in the sandbox. Everything lands in the run directory
and a JSON report says what happened.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from envs.atomic import atomic_write_text
from envs.convert import ConvertReport, convert_trajectories
from envs.examples import numbered_variants
from envs.jsonl import iter_rows, write_rows
from envs.sampling import SampleReport
from envs.sandbox import SandboxPool
from envs.schema import EnvRow, TrajectoryRow
from rewards.scoring import TurnInput, score_turns
from tasks.profile import PipelineConfig
from tasks.sample import run_sampling

DEMO_ENVIRONMENTS = 6


@dataclass(frozen=True)
class DemoReport:
    run_directory: str
    environments: int
    golden_turn_reward: float
    sampling: dict
    tool_turn_rows: int
    mean_final_solve_rate: float
    conversion: dict
    report: str


def golden_turn(env: EnvRow) -> str:
    """Every golden call of the environment in one Qwen2.5-format turn."""
    calls = [sub["call"] for sub in env.meta_dict().get("sub_questions", [])]
    return (
        "\n".join(f"<tool_call>\n{json.dumps(c, ensure_ascii=False)}\n</tool_call>" for c in calls)
        + "<|im_end|>"
    )


def mean_golden_reward(config: PipelineConfig, envs: list[EnvRow]) -> float:
    """The reward of the golden calls: proof that each environment is solvable and scored right."""
    inputs = [TurnInput(golden_turn(env), env.codes_dict(), env.unsolved(), 0.0, env.answer) for env in envs]
    with SandboxPool(workers=config.sandbox.workers, limits=config.sandbox.limits()) as pool:
        outcomes = score_turns(inputs, parser=config.model.parser, pool=pool)
    return sum(outcome.reward(config.reward.kind) for outcome in outcomes) / len(outcomes)


def final_solve_rates(trajectories: Path) -> dict[tuple[str, int], float]:
    """The last solve rate of every episode (its last row)."""
    last: dict[tuple[str, int], float] = {}
    for row in iter_rows(trajectories, TrajectoryRow):
        last[(row.env_id, row.sample_index)] = row.solve_rate
    return last


def run_demo(config: PipelineConfig, *, progress: bool = True) -> DemoReport:
    run = config.run.directory
    envs = numbered_variants(DEMO_ENVIRONMENTS)
    envs_file = run / "envs" / "examples.jsonl"
    write_rows(envs_file, envs)
    golden = mean_golden_reward(config, envs)

    trajectories = run / "trajectories" / "sample-0.jsonl"
    sampled: SampleReport = run_sampling(config, envs_file, trajectories, progress=progress)
    rates = final_solve_rates(trajectories)
    tool_turn_rows = sum(1 for row in iter_rows(trajectories, TrajectoryRow) if row.turn > 0)

    converted: ConvertReport = convert_trajectories(trajectories, run / "parquet" / "train.parquet")
    report_path = run / "report" / "demo.json"
    report = DemoReport(
        run_directory=str(run),
        environments=len(envs),
        golden_turn_reward=golden,
        sampling={"rows": sampled.rows, "episodes": sampled.episodes, "out": str(sampled.out)},
        tool_turn_rows=tool_turn_rows,
        mean_final_solve_rate=sum(rates.values()) / len(rates),
        conversion={"rows": converted.rows_out, "out": str(converted.out), "sha256": converted.sha256},
        report=str(report_path),
    )
    atomic_write_text(report_path, json.dumps(asdict(report), indent=2, ensure_ascii=False))
    return report
