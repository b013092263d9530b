"""`ftrl envs`: check and inspect environment files and τ-bench-style stateful domains.

    ftrl envs validate runs/demo/envs/train.jsonl            # summary; exit 1 if any row is rejected
    ftrl envs validate envs.jsonl --json | jq .rejected      # the same as one JSON object
    ftrl envs show runs/demo/envs/train.jsonl 3              # the environment on line 3, readably
    ftrl envs check-golden ../shared/benchmarks/tau-bench/airline \\
        ../shared/benchmarks/tau-bench/airline/tasks.jsonl  # replay and grade every golden solution

User mistakes (a missing file, a line that is not an environment, a broken domain folder) end with
one `error:` line and exit status 2.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flows.errors import reports_user_errors
from flows.options import ProfileOption, SetOption

if TYPE_CHECKING:  # the rooms load only when a command runs, so `ftrl --help` stays fast
    from envs.schema import EnvRow
    from envs.verify import ValidationReport

envs_app = typer.Typer(
    help="Check and inspect environment files and stateful (τ-bench-style) domains.", no_args_is_help=True
)

WorkersOption = Annotated[
    int | None,
    typer.Option("--workers", min=1, help="Sandbox worker processes; default: one per usable CPU."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the summary.")]

_LISTED_REJECTIONS = 20


@envs_app.command("validate")
@reports_user_errors
def validate(
    file: Annotated[Path, typer.Argument(help="Environment JSONL (this project's or the paper's format).")],
    as_json: JsonOption = False,
    workers: WorkersOption = None,
    batch: Annotated[int, typer.Option(min=1, help="Rows verified together.")] = 256,
) -> None:
    """Verify every environment of a file; exit 0 when all are valid, 1 when any is rejected.

    Rows whose meta records golden calls are proven solvable in the sandbox: each golden call must
    return its sub-answer (under the reward's matching rule), a call with one argument changed must
    not, and the oracle episode must reach solve rate 1.0. Rows without golden calls (the paper's
    released format) are checked for schema, code that defines every tool, and sub-answers whose
    tools exist.
    """
    from envs.sandbox import SandboxPool
    from envs.verify import validate_file

    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such environment file")
    with SandboxPool(workers=workers) as pool:
        report = validate_file(file, pool, batch=batch)
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        typer.echo(_validation_summary(report))
    raise typer.Exit(code=0 if report.valid == report.total else 1)


@envs_app.command("show")
@reports_user_errors
def show(
    file: Annotated[Path, typer.Argument(help="Environment JSONL.")],
    line: Annotated[int, typer.Argument(help="1-based line number of the row, as `validate` reports it.")],
) -> None:
    """Print one environment readably: question, answer, tools, sub-questions with golden calls, code."""
    from envs.jsonl import iter_numbered
    from envs.schema import EnvRow

    if line < 1:
        raise ValueError(f"line numbers start at 1, got {line}")
    last = 0
    for number, item in iter_numbered(file):
        last = number
        if number == line:
            if not isinstance(item, EnvRow):
                raise item
            typer.echo(render_environment(item, f"{file}:{number}"))
            return
        if number > line:
            raise ValueError(f"{file}:{line} is a blank line")
    raise ValueError(f"{file} has no line {line}: its last row is on line {last}")


@envs_app.command("check-golden")
@reports_user_errors
def check_golden_command(
    domain_dir: Annotated[Path, typer.Argument(help="Domain folder: tools.json, codes.json, table files.")],
    tasks: Annotated[Path, typer.Argument(help="Tasks JSONL: instruction, golden actions, outputs.")],
    as_json: JsonOption = False,
    workers: WorkersOption = None,
) -> None:
    """Replay every task's golden actions in the sandbox and grade them as τ-bench grades an agent.

    A task passes when the oracle playing its golden actions through the episode loop leaves the
    same database as the golden actions replayed on a fresh copy, and says the task's outputs.
    Also counts the tasks an agent that does nothing would fail (`empty_run_failed`). Exit 0 when
    every task passes.
    """
    from envs.golden import check_golden
    from envs.sandbox import SandboxPool

    if not tasks.is_file():
        raise FileNotFoundError(f"{tasks}: no such tasks file")
    with SandboxPool(workers=workers) as pool:
        report = check_golden(domain_dir, tasks, pool)
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        lines = [
            f"{report.domain}: {report.tasks} tasks, {report.passed} passed, {len(report.failures)} failed",
            f"  an agent that does nothing fails {report.empty_run_failed} of them "
            f"(the other {report.tasks - report.empty_run_failed} only read, or change nothing)",
            f"  {report.with_outputs} tasks have outputs to say; in {report.outputs_in_tool_results} "
            "they appear verbatim in the golden actions' tool replies",
        ]
        lines += [f"  task {index}: {reason}" for index, reason in report.failures]
        typer.echo("\n".join(lines))
    raise typer.Exit(code=0 if report.passed == report.tasks else 1)


# --------------------------------------------------------------------------- rendering


def _validation_summary(report: ValidationReport) -> str:
    rate = "n/a" if report.oracle_solve_rate is None else f"{report.oracle_solve_rate:.3f}"
    lines = [
        f"{report.path}: {report.total} environments, {report.valid} valid, "
        f"{report.total - report.valid} rejected",
        f"  with golden calls: {report.with_golden}; mean oracle solve rate: {rate}",
    ]
    if report.rejected:
        lines.append("rejected by reason:")
        lines += [f"  {count:>6}  {reason}" for reason, count in report.rejected.items()]
        lines.append("rejected rows:")
        for rejected in report.rejected_rows[:_LISTED_REJECTIONS]:
            env = f" ({rejected.env_id})" if rejected.env_id else ""
            lines.append(f"  line {rejected.line}{env}: {rejected.reason}: {rejected.detail}")
        hidden = len(report.rejected_rows) - _LISTED_REJECTIONS
        if hidden > 0:
            lines.append(f"  ... and {hidden} more (--json lists every one)")
    return "\n".join(lines)


def render_environment(row: EnvRow, where: str) -> str:
    """One environment as a person reads it."""
    meta = row.meta_dict()
    lines = [f"environment {row.env_id} ({where})"]
    lines.append(f"  data source: {row.data_source}; split: {row.split}; solve rate: {row.solve_rate}")
    if "scenario" in meta or "generator" in meta:
        lines.append(
            f"  scenario: {meta.get('scenario', '?')}; domain: {meta.get('domain', '?')}; "
            f"generator: {meta.get('generator', '?')}" + (f" (seed {meta['seed']})" if "seed" in meta else "")
        )
    lines += ["", "messages:"]
    for message in row.messages:
        lines.append(f"  [{message['role']}] {_indented(str(message.get('content') or ''), 4).lstrip()}")
    lines += ["", f"answer: {row.answer}", "", f"tools ({len(row.tool_schemas())}):"]
    for tool in row.tool_schemas():
        lines += _tool_lines(tool["function"])
    subs = meta.get("sub_questions")
    if isinstance(subs, list) and subs:
        lines += ["", "sub-questions:"]
        for index, sub in enumerate(subs):
            lines += _sub_question_lines(index, sub)
    lines += ["", "unsolved set:"]
    lines += [f"  {name}: {', '.join(map(repr, answers))}" for name, answers in row.unsolved().items()]
    scaling = meta.get("scaling")
    if isinstance(scaling, list) and scaling:
        lines += ["", "scaling:"]
        lines += [f"  {rec.get('op')} on {rec.get('tool')}: {rec.get('detail')}" for rec in scaling]
    for name, code in row.codes_dict().items():
        lines += ["", f"code of {name}:", _indented(code.rstrip(), 2)]
    return "\n".join(lines)


def _tool_lines(function: dict[str, Any]) -> list[str]:
    parameters = function.get("parameters") or {}
    properties = parameters.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = parameters.get("required")
    required = set(required) if isinstance(required, list) else set()
    signature = ", ".join(
        f"{name}{'' if name in required else '?'}: {_type_text(schema)}"
        for name, schema in properties.items()
    )
    lines = [f"  {function['name']}({signature})"]
    if function.get("description"):
        lines.append(f"      {function['description']}")
    for name, schema in properties.items():
        if isinstance(schema, dict) and schema.get("description"):
            lines.append(f"      {name}: {schema['description']}")
    return lines


def _type_text(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    if isinstance(schema.get("enum"), list):
        return "|".join(json.dumps(option, ensure_ascii=False) for option in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_text(schema.get('items'))}"
    return "|".join(kind) if isinstance(kind, list) else str(kind)


def _sub_question_lines(index: int, sub: Any) -> list[str]:
    if not isinstance(sub, dict):
        return [f"  {index + 1}. (malformed: {sub!r})"]
    after = f" [after {', '.join(sub['depends_on'])}]" if sub.get("depends_on") else ""
    lines = [f"  {sub.get('id', f'q{index + 1}')}{after} {sub.get('question', '')} -> {sub.get('answer')!r}"]
    call = sub.get("call")
    if isinstance(call, dict):
        arguments = call.get("arguments") or {}
        shown = ", ".join(
            f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in arguments.items()
        )
        lines.append(f"      golden call: {call.get('name')}({shown})")
    return lines


def _indented(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "\n".join(pad + line if line else line for line in text.splitlines())


class GeneratorName(str, Enum):
    template = "template"
    llm = "llm"


@envs_app.command("build")
@reports_user_errors
def build(
    out: Annotated[Path, typer.Option("--out", help="Folder for train.jsonl, test.jsonl, report.json/.md.")],
    generator: Annotated[
        GeneratorName | None,
        typer.Option(help="template (offline, seeded) or llm (a model drives the stages)."),
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Verified environments to write.")] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed, same environments.")] = None,
    test_fraction: Annotated[
        float | None, typer.Option(help="Share held out as test (no shared entities).")
    ] = None,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Build environments with the five stages, keep only those proven solvable, split without leakage.

    Every written environment passed verification in the sandbox (golden calls return their
    sub-answers, perturbed calls do not, the oracle episode solves it); duplicates are removed and
    train and test share no entity a sub-answer depends on.
    """
    from flows.cli import resolve_profile
    from tasks.build import run_build

    flags = {
        "build.generator": generator.value if generator else None,
        "build.count": count,
        "build.seed": seed,
        "build.test_fraction": test_fraction,
    }
    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None]
    config = resolve_profile(profile, [*(set_ or []), *overrides])
    report = run_build(config, out)
    typer.echo(
        f"wrote {report.written} verified environments to {out} (train {report.train}, test {report.test}) "
        f"in {report.seconds:.1f} s; {report.left_out_for_test} left out for sharing an entity with a "
        f"test environment; {report.attempted} attempted, {report.duplicates_removed} duplicates, "
        f"{sum(report.rejected.values())} rejected; oracle solve rate {report.oracle_solve_rate:.3f}"
    )
    typer.echo(f"scenario types: {_counts(report.scenario_types)}")
    typer.echo(f"scaling operations: {_counts(report.scaling_operations)}")
    if report.rejected:
        typer.echo(f"rejected: {_counts(report.rejected)}")
    typer.echo(f"report: {out / 'report.md'}")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "none"
