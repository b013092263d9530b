"""The `ftrl` command: one entry point for every stage of the pipeline.

Each subcommand is a thin adapter: it loads and validates the run profile first (so a bad profile
fails before any work), then calls the room that does the work. User mistakes end with one line on
stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
import yaml

from flows.envs_cli import envs_app
from flows.errors import reports_user_errors
from flows.eval_cli import analyze_app, eval_command
from flows.options import Backend, ProfileOption, SetOption
from flows.run_cli import run_command
from flows.server_cli import deploy, ui, worker
from flows.train_cli import merge_command, train_command
from tasks.profile import PipelineConfig, load_profile

app = typer.Typer(
    name="ftrl",
    help=(
        "Teach a language model to use tools with reinforcement learning (the FTRL method).\n\n"
        "The pipeline builds tool-use environments, rolls a model out in them, trains it against a "
        "verifiable reward, merges and evaluates it. Every command reads its settings from a YAML run "
        "profile (configs/*.yaml) that --set KEY.PATH=VALUE can override."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
model_app = typer.Typer(help="Build models for local runs and tests.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect and check run profiles.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(config_app, name="config")
app.add_typer(envs_app, name="envs")
app.add_typer(analyze_app, name="analyze")
app.command("eval")(eval_command)
app.command("run")(run_command)
app.command("train")(train_command)
app.command("merge")(merge_command)
app.command("ui")(ui)
app.command("deploy")(deploy)
app.command("worker")(worker)


class TinyTemplate(str, Enum):
    qwen25 = "qwen2.5"
    compact = "compact"


def resolve_profile(profile: Path | None, overrides: list[str] | None) -> PipelineConfig:
    return load_profile(profile, overrides or [])


TINY_HELP = (
    "Build the tiny local Qwen2-architecture model (about 1.2M parameters) in seconds, offline; "
    "--pretrain-steps adds its copy pre-training (minutes).\n\n"
    "The folder loads with transformers' AutoTokenizer and AutoModelForCausalLM like any real model: "
    "safetensors weights, a byte-level BPE tokenizer, <tool_call> and <tool_response> as normal tokens. "
    "Tests and the CPU demo use it; a real model is just a folder path in a profile."
)


@model_app.command("tiny", help=TINY_HELP)
@reports_user_errors
def model_tiny(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder to create (replaced if it holds a tiny model).")
    ],
    template: Annotated[
        TinyTemplate,
        typer.Option(help="'qwen2.5': Qwen2.5's exact chat template; 'compact': terse tool block for CPU."),
    ] = TinyTemplate.qwen25,
    seed: Annotated[int, typer.Option(help="Seed of the random weights; same seed, same bytes.")] = 0,
    pretrain_steps: Annotated[
        int,
        typer.Option(
            min=0,
            help="Steps of copy pre-training (~0.18 s each on 2 cores); 1,800 teach copying unseen names.",
        ),
    ] = 0,
) -> None:
    from policies.tiny_model import TinyModelSpec, build_tiny_model

    spec = TinyModelSpec(template=template.value, seed=seed, pretrain_steps=pretrain_steps)
    path = build_tiny_model(out, spec, log=typer.echo)
    typer.echo(f"built tiny model ({template.value} template, seed {seed}) in {path}")


@config_app.command("show")
@reports_user_errors
def config_show(profile: ProfileOption = None, set_: SetOption = None) -> None:
    """Validate a profile with its overrides and print every resolved setting as YAML."""
    config = resolve_profile(profile, set_)
    typer.echo(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).rstrip())


@app.command("sample")
@reports_user_errors
def sample(
    envs: Annotated[Path, typer.Option("--envs", help="Environment rows (FTRL JSONL) to roll out in.")],
    out: Annotated[Path, typer.Option("--out", help="Trajectory JSONL to write (resumes if interrupted).")],
    backend: Annotated[Backend | None, typer.Option(help="Generation backend; default: profile.")] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model folder (transformers, vllm) or served model name (openai); default: profile."
        ),
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")
    ] = None,
    samples_per_env: Annotated[int | None, typer.Option(help="Episodes per environment.")] = None,
    max_turns: Annotated[int | None, typer.Option(help="Turn limit per episode (paper: 20).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (paper: 1.0).")] = None,
    seed: Annotated[int | None, typer.Option(help="Run seed; same seed and inputs, same rows.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Roll a model out in every environment and write FTRL trajectory rows, one after each tool turn.

    Killed at any point and started again with the same arguments, it finishes with exactly the rows
    an uninterrupted run would have written.
    """
    from tasks.sample import run_sampling

    flags = {
        "generation.backend": backend.value if backend else None,
        "generation.base_url": base_url,
        "generation.temperature": temperature,
        "sample.samples_per_env": samples_per_env,
        "sample.max_turns": max_turns,
        "sample.seed": seed,
    }
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None]
    config = resolve_profile(profile, [*(set_ or []), *overrides])
    report = run_sampling(config, envs, out, model=model, progress=progress)
    typer.echo(
        f"wrote {report.rows} trajectory rows from {report.episodes} episodes to {report.out} "
        f"({report.chunks_resumed} of {report.chunks} chunks resumed from an earlier run)"
    )


@app.command("convert")
@reports_user_errors
def convert(
    trajectories: Annotated[Path, typer.Argument(help="Trajectory JSONL written by `ftrl sample`.")],
    out: Annotated[Path, typer.Option("--out", help="Training parquet to write (VeRL, TRL, datasets).")],
    split: Annotated[
        list[str] | None, typer.Option(help="Splits to keep (repeatable); default: train only.")
    ] = None,
    skip_bad: Annotated[bool, typer.Option(help="Skip and count bad rows, not stop.")] = False,
) -> None:
    """Convert trajectory rows into the training parquet, streaming in bounded memory.

    Every row becomes one prompt (its message prefix and tools) for the next turn, with the codes,
    unsolved sub-answers and solve rate the reward needs.
    """
    from envs.convert import convert_trajectories

    report = convert_trajectories(trajectories, out, splits=split or ["train"], skip_bad=skip_bad)
    typer.echo(
        f"wrote {report.rows_out} training rows to {report.out} (schema {report.schema_version}, "
        f"sha256 {report.sha256[:12]}); skipped {report.skipped_split} of other splits "
        f"and {len(report.skipped_bad)} bad rows"
    )
    for error in report.skipped_bad:
        typer.echo(f"skipped {error}", err=True)


@app.command("demo")
@reports_user_errors
def demo(profile: ProfileOption = Path("configs/cpu-demo.yaml"), set_: SetOption = None) -> None:
    """Run the CPU pipeline on example environments: tiny model, sampling, parquet, sandboxed rewards."""
    from flows.demo import run_demo

    config = resolve_profile(profile, set_)
    report = run_demo(config)
    sampling, conversion = report.sampling, report.conversion
    typer.echo(f"run directory {report.run_directory}:")
    typer.echo(
        f"  reward of the golden calls of {report.environments} environments: "
        f"Solve-{config.reward.kind.upper()} {report.golden_turn_reward:.3f} (sandboxed, so each is solvable)"
    )
    typer.echo(
        f"  sampled {sampling['episodes']} episodes with the model: {sampling['rows']} trajectory rows, "
        f"{report.tool_turn_rows} after tool-calling turns, mean final solve rate "
        f"{report.mean_final_solve_rate:.3f} -> {sampling['out']}"
    )
    typer.echo(f"  converted {conversion['rows']} rows to the training parquet -> {conversion['out']}")
    typer.echo(f"  report -> {report.report}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
