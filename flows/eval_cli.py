"""`ftrl eval` scores a model on a benchmark; `ftrl analyze` compares runs and checkpoints.

    ftrl eval --benchmark ftrl --data runs/demo/envs/test.jsonl --out runs/demo/eval/base
    ftrl eval --benchmark ftrl --data test.jsonl --model runs/demo/checkpoints/iter-1 \\
        --out runs/demo/eval/iter-1
    ftrl eval --benchmark ftrl --data test.jsonl --backend openai --model Qwen2.5-7B-Instruct \\
        --base-url http://127.0.0.1:8000/v1 --trials 4 --temperature 0.7 --out eval/qwen-n4
    ftrl eval --benchmark tau-bench --domain-dir ../shared/benchmarks/tau-bench/airline \\
        --tasks ../shared/benchmarks/tau-bench/airline/tasks.jsonl --backend openai --model agent \\
        --base-url http://127.0.0.1:8000/v1 --user-model gpt-4o \\
        --user-base-url https://api.openai.com/v1 --out eval/tau-airline
    ftrl analyze compare runs/demo/eval/base runs/demo/eval/iter-1 --out runs/demo/report
    ftrl analyze param-diff runs/demo/models/tiny runs/demo/checkpoints/iter-1 --out runs/demo/report

Every evaluation writes `summary.json` (the metrics by name, each in [0, 1]), `summary.md` and
`episodes.jsonl` (every episode's full messages and scores) into `--out`, and resumes there when
killed. User mistakes end with one `error:` line and exit status 2.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.errors import reports_user_errors
from flows.options import Backend, ProfileOption, SetOption

if TYPE_CHECKING:  # the rooms load only when a command runs, so `ftrl --help` stays fast
    from tasks.profile import PipelineConfig

analyze_app = typer.Typer(
    help="Compare evaluation runs, and see where training changed a model's weights.", no_args_is_help=True
)


class Benchmark(str, Enum):
    ftrl = "ftrl"
    tau_bench = "tau-bench"


BENCHMARK_OPTIONS = {
    Benchmark.ftrl: ("--data", "--split"),
    Benchmark.tau_bench: ("--domain-dir", "--tasks", "--user-backend", "--user-model", "--user-base-url"),
}


@reports_user_errors
def eval_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for summary.json, summary.md, episodes.jsonl.")],
    benchmark: Annotated[
        Benchmark, typer.Option(help="Which benchmark format to evaluate on.")
    ] = Benchmark.ftrl,
    data: Annotated[Path | None, typer.Option(help="ftrl: environment JSONL (the paper's format).")] = None,
    split: Annotated[str, typer.Option(help="ftrl: which rows to evaluate (train or test).")] = "test",
    domain_dir: Annotated[
        Path | None, typer.Option(help="tau-bench: domain folder (tools.json, codes.json, tables, wiki.md).")
    ] = None,
    tasks: Annotated[
        Path | None, typer.Option(help="tau-bench: tasks JSONL; default: the domain's tasks.jsonl.")
    ] = None,
    backend: Annotated[
        Backend | None, typer.Option(help="Agent's generation backend; default: profile.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(help="Agent: model folder (transformers, vllm) or served model name (openai)."),
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="Agent's OpenAI-compatible endpoint (openai).")] = None,
    user_backend: Annotated[
        Backend | None, typer.Option(help="tau-bench: the user simulator's backend; default: the agent's.")
    ] = None,
    user_model: Annotated[
        str | None, typer.Option(help="tau-bench: the user simulator's model; default: the agent's.")
    ] = None,
    user_base_url: Annotated[
        str | None, typer.Option(help="tau-bench: the user simulator's endpoint; default: the agent's.")
    ] = None,
    trials: Annotated[
        int, typer.Option(min=1, help="Episodes per environment or task (n of pass@k and pass^k).")
    ] = 1,
    max_turns: Annotated[
        int | None, typer.Option(min=1, help="Turn limit per episode; default: ftrl 20, tau-bench 30.")
    ] = None,
    temperature: Annotated[
        float,
        typer.Option(
            min=0.0, help="Agent's sampling temperature; 0 is greedy (ftrl with --trials > 1 needs > 0)."
        ),
    ] = 0.0,
    user_temperature: Annotated[
        float, typer.Option(min=0.0, help="tau-bench: the user simulator's temperature.")
    ] = 1.0,
    reasoning: Annotated[
        bool | None,
        typer.Option(help="Reasoning (thinking) mode for templates that have one; default: profile."),
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(min=1, help="Longest turn in tokens (the paper: 1024, reasoning 8192).")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Run seed; same seed and inputs, same episodes.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Evaluate a model on a benchmark and write its summary, a Markdown table and every episode.

    **ftrl**: full episodes in the environments of one split (up to 20 turns, greedy by default),
    batched across environments; each scored with Solve-P, Solve-R and Solve-F1, averaged overall,
    per data source and per scenario type, with pass@k for --trials > 1. **tau-bench**: a simulated
    user talks to the agent over a live database; pass^k as τ-bench defines it.

    An episode whose model keeps failing (after the backend's retries) is recorded as failed with
    the reason and scores 0. Killed and rerun with the same arguments, only what is missing is played.
    """
    from tasks.profile import load_profile

    given = {
        "--data": data,
        "--split": split if split != "test" else None,
        "--domain-dir": domain_dir,
        "--tasks": tasks,
        "--user-backend": user_backend,
        "--user-model": user_model,
        "--user-base-url": user_base_url,
    }
    misplaced = [
        flag
        for other, flags in BENCHMARK_OPTIONS.items()
        if other != benchmark
        for flag in flags
        if given[flag] is not None
    ]
    if misplaced:
        raise ValueError(f"{', '.join(misplaced)} do(es) not apply to --benchmark {benchmark.value}")
    flags = {
        "generation.backend": backend.value if backend else None,
        "generation.base_url": base_url,
        "generation.enable_thinking": reasoning,
        "generation.max_new_tokens": max_new_tokens,
    }
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None]
    config = load_profile(profile, [*(set_ or []), *overrides])
    if benchmark == Benchmark.ftrl:
        if data is None:
            raise ValueError("--benchmark ftrl needs --data FILE (environment JSONL)")
        _eval_ftrl(config, data, split, out, model, trials, max_turns, temperature, seed, progress)
    else:
        if domain_dir is None:
            raise ValueError("--benchmark tau-bench needs --domain-dir DIR")
        user = (user_backend.value if user_backend else None, user_model, user_base_url, user_temperature)
        _eval_tau(config, domain_dir, tasks, out, model, user, trials, max_turns, temperature, seed)


def _eval_ftrl(
    config: PipelineConfig,
    data: Path,
    split: str,
    out: Path,
    model: str | None,
    trials: int,
    max_turns: int | None,
    temperature: float,
    seed: int,
    progress: bool,
) -> None:
    from envs.evaluation.ftrl_eval import FtrlEvalSettings, check_sampling, evaluate_ftrl, selected_envs
    from envs.sandbox import SandboxPool
    from tasks.model import backend_for, model_for_backend, sampling_params

    if split not in ("train", "test"):
        raise ValueError(f"--split must be train or test, got {split!r}")
    check_sampling(trials, temperature)  # mistakes fail before a model is built or loaded
    selected_envs(data, split)
    generation = config.generation
    model = model_for_backend(config, generation.backend, model)
    settings = FtrlEvalSettings(
        split=split,  # type: ignore[arg-type]
        samples_per_env=trials,
        max_turns=max_turns or config.sample.max_turns,
        seed=seed,
        chunk_episodes=config.sample.chunk_episodes,
        model=model,
    )
    params = sampling_params(generation, temperature, seed)
    agent = backend_for(config, generation.backend, model, generation.base_url)
    with agent, SandboxPool(workers=config.sandbox.workers, limits=config.sandbox.limits()) as pool:
        report = evaluate_ftrl(data, out, agent, params, pool, settings, progress=progress)
    _echo_summary(report.summary, out)
    typer.echo(f"({report.chunks_resumed} of {report.chunks} chunks resumed from an earlier run)")


def _eval_tau(
    config: PipelineConfig,
    domain_dir: Path,
    tasks: Path | None,
    out: Path,
    model: str | None,
    user: tuple[str | None, str | None, str | None, float],
    trials: int,
    max_turns: int | None,
    temperature: float,
    seed: int,
) -> None:
    from envs.evaluation.reports import load_summary, write_summary_markdown
    from envs.evaluation.tau_eval import evaluate_tau
    from envs.sandbox import SandboxPool
    from tasks.model import backend_for, model_for_backend, sampling_params

    generation = config.generation
    model = model_for_backend(config, generation.backend, model)
    user_backend, user_model, user_base_url, user_temperature = user
    user_backend = user_backend or generation.backend
    same_backend = user_backend == generation.backend
    user_model = user_model or (model if same_backend else model_for_backend(config, user_backend, None))
    user_base_url = user_base_url or (generation.base_url if same_backend else None)
    agent = backend_for(config, generation.backend, model, generation.base_url)
    with agent, backend_for(config, user_backend, user_model, user_base_url) as simulator:
        with SandboxPool(workers=config.sandbox.workers, limits=config.sandbox.limits()) as pool:
            report = evaluate_tau(
                domain_dir,
                tasks,
                agent,
                sampling_params(generation, temperature, seed),
                simulator,
                sampling_params(generation, user_temperature, seed),
                pool,
                trials=trials,
                out_dir=out,
                **({"max_turns": max_turns} if max_turns is not None else {}),
            )
    write_summary_markdown(out)
    _echo_summary(load_summary(out), out)
    typer.echo(f"({report.new_episodes} of {report.episodes} episodes played now, the rest resumed)")


def _echo_summary(summary: dict[str, Any], out: Path) -> None:
    from envs.evaluation.reports import metric_names

    scores = ", ".join(f"{name} {summary[name]:.4f}" for name in metric_names(summary))
    episodes = summary.get("episodes", summary["tasks"])
    typer.echo(
        f"{summary['benchmark']}: {summary['tasks']} tasks, {episodes} episodes "
        f"({summary.get('failed_episodes', 0)} failed, scored 0): {scores} -> {out / 'summary.json'}"
    )


@analyze_app.command("compare")
@reports_user_errors
def compare(
    runs: Annotated[
        list[Path], typer.Argument(help="Evaluation folders (with summary.json); the first is the base.")
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for comparison.md, comparison.json, comparison.png and the line charts."
        ),
    ],
    label: Annotated[
        list[str] | None, typer.Option(help="Name of each run in order (repeatable); default: folder names.")
    ] = None,
    reference: Annotated[
        str | None, typer.Option(help="The run (by label) changes are measured from; default: the first.")
    ] = None,
) -> None:
    """Put evaluation runs side by side — the base model, then each training iteration — with every
    metric's change from the base (or --reference), as Markdown tables, a bar chart and line charts."""
    from envs.evaluation.reports import write_comparison

    report = write_comparison(runs, out, label or None, reference=reference)
    comparison = report.comparison
    for metric in comparison.metrics:
        runs_text = ", ".join(
            f"{name} {value:.4f}"
            for name, value in zip(comparison.labels, comparison.values[metric], strict=True)
        )
        typer.echo(f"{metric}: {runs_text}")
    typer.echo(f"wrote {report.markdown}, {report.json}, {', '.join(map(str, report.charts.values()))}")


@analyze_app.command("param-diff")
@reports_user_errors
def param_diff(
    base: Annotated[Path, typer.Argument(help="Base checkpoint folder (safetensors).")],
    trained: Annotated[Path, typer.Argument(help="Trained checkpoint folder of the same architecture.")],
    out: Annotated[
        Path, typer.Option("--out", help="Folder for param_diff.json and the param_diff.png heat map.")
    ] = Path("param-diff"),
    top: Annotated[int, typer.Option(min=1, help="How many of the largest relative changes to print.")] = 15,
) -> None:
    """Where training changed the weights: ||W1 - W0|| / ||W0|| per tensor, rolled up per layer and
    module (attention q/k/v/o vs MLP gate/up/down projections, norms, embeddings), with a heat map."""
    from envs.evaluation.param_diff import format_top, write_param_diff

    report = write_param_diff(base, trained, out)
    typer.echo(format_top(report.diff, top))
    typer.echo(f"wrote {report.json} and {report.chart}")
