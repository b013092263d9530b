"""The golden check of a τ-bench-style stateful domain: do its tasks' reference solutions hold up?

τ-bench grades an agent's run by two things (../shared/benchmarks/README.md): the database the
agent leaves must equal the one the golden actions leave on a fresh copy (compared by a canonical
hash of the whole structure), and every string in the task's `outputs` must appear in what the
agent said. This module grades the golden actions themselves that way, per task:

- the *agent run*: the oracle plays the golden actions, one per turn, through the real episode
  loop against a fresh database held in a sandbox session, then answers with the task's `outputs`
  (what a reference agent says);
- the *golden database*: the golden actions replayed directly on another fresh session, as the
  benchmark computes its reference; every action must succeed (no exception, no "Error" reply);
- pass: the agent run ended with its answer, its database digest equals the golden one, and the
  outputs are found in its messages by τ-bench's rule.

A task whose empty run (an agent that does nothing: fresh database, says nothing) would also pass
cannot tell a working agent from an idle one; `empty_run_failed` counts the tasks that avoid this.
Tasks run in parallel threads, each with sessions (one worker each) of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs.episode import EpisodeRunner, EpisodeSpec, EpisodeState
from envs.sandbox import SandboxError, SandboxPool, canonical_digest
from envs.tau_bench import DomainError, DomainTask, StatefulDomain, load_domain, load_tasks
from policies.backends import SamplingParams
from policies.oracle import OraclePlan, OraclePolicy, PlannedCall

_ORACLE_PARAMS = SamplingParams()
_SILENT_ANSWER = "Done."


@dataclass(frozen=True)
class TaskGrade:
    """One task's result. `outputs_in_tool_results`: every output string already appears in the
    golden actions' tool replies (False when some output is a figure the agent must work out)."""

    index: int
    passed: bool
    reason: str | None
    empty_run_fails: bool
    has_outputs: bool
    outputs_in_tool_results: bool


@dataclass
class GoldenReport:
    domain: str
    tasks: int = 0
    passed: int = 0
    empty_run_failed: int = 0
    with_outputs: int = 0
    outputs_in_tool_results: int = 0
    failures: list[tuple[int, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "tasks": self.tasks,
            "passed": self.passed,
            "empty_run_failed": self.empty_run_failed,
            "with_outputs": self.with_outputs,
            "outputs_in_tool_results": self.outputs_in_tool_results,
            "failures": [{"index": index, "reason": reason} for index, reason in self.failures],
        }


def said(output: str, messages: Iterable[str]) -> bool:
    """τ-bench's outputs rule: `output` lowercased occurs in a message lowercased, commas removed."""
    needle = output.lower()
    return any(needle in message.lower().replace(",", "") for message in messages)


def check_golden(
    domain_dir: str | Path, tasks_path: str | Path, pool: SandboxPool, *, workers: int | None = None
) -> GoldenReport:
    """Grade every task of `tasks_path` against the domain in `domain_dir` (any folder of that shape).

    `workers` threads run tasks at once (default: the pool's size); each opens two sessions.
    """
    domain = load_domain(domain_dir)
    tasks = load_tasks(Path(tasks_path))
    for index, task in enumerate(tasks):
        unknown = [action.name for action in task.actions if action.name not in domain.codes]
        if unknown:
            raise DomainError(f"{tasks_path}: task {index} calls unknown tool(s) {', '.join(unknown)}")
    empty_digest = canonical_digest(domain.tables)
    threads = workers if workers is not None else pool.size
    if threads < 1:
        raise ValueError(f"workers must be at least 1, got {threads}")
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ftrl-golden") as executor:
        grades = list(executor.map(lambda item: _grade(pool, domain, empty_digest, *item), enumerate(tasks)))
    return _report(domain.name, grades)


def _grade(
    pool: SandboxPool, domain: StatefulDomain, empty_digest: str, index: int, task: DomainTask
) -> TaskGrade:
    has_outputs = bool(task.outputs)
    try:
        golden_digest, replies, failed_action = replay_golden(pool, domain, task)
        agent = _agent_run(pool, domain, task)
    except SandboxError as exc:
        return TaskGrade(index, False, f"sandbox: {exc}", True, has_outputs, False)
    said_by_agent = [str(m.get("content") or "") for m in agent.messages if m["role"] == "assistant"]
    if failed_action is not None:
        reason: str | None = failed_action
    elif agent.stop_reason != "answer":
        reason = f"the agent run ended with {agent.stop_reason}: {agent.error}"
    elif agent.state_digest != golden_digest:
        reason = "the agent run's database differs from the golden database"
    else:
        missing = [output for output in task.outputs if not said(output, said_by_agent)]
        reason = f"outputs not said: {missing}" if missing else None
    return TaskGrade(
        index=index,
        passed=reason is None,
        reason=reason,
        empty_run_fails=golden_digest != empty_digest or has_outputs,
        has_outputs=has_outputs,
        outputs_in_tool_results=has_outputs and all(said(output, replies) for output in task.outputs),
    )


def replay_golden(
    pool: SandboxPool, domain: StatefulDomain, task: DomainTask
) -> tuple[str, list[str], str | None]:
    """The golden database's digest, the tool replies, and the first action that failed (or None)."""
    replies: list[str] = []
    failed: str | None = None
    with pool.session(domain.codes, domain.tables) as session:
        for number, action in enumerate(task.actions):
            result = session.call(action.name, action.arguments)
            replies.append(result.content)
            if failed is None and (not result.ok or result.content.startswith("Error")):
                why = result.error if not result.ok else result.content
                failed = f"golden action {number} ({action.name}) failed: {why}"
        return session.digest(), replies, failed


def _agent_run(pool: SandboxPool, domain: StatefulDomain, task: DomainTask) -> EpisodeState:
    """The oracle as the agent: golden actions one per turn, then the outputs as its answer."""
    plan = OraclePlan(
        turns=tuple((PlannedCall(action.name, action.arguments),) for action in task.actions),
        answer=", ".join(task.outputs) if task.outputs else _SILENT_ANSWER,
    )
    messages = _messages(domain, task)
    runner = EpisodeRunner(
        OraclePolicy({task.instruction: plan}), _ORACLE_PARAMS, pool, max_turns=len(task.actions) + 1
    )
    spec = EpisodeSpec(
        key=("golden", 0), messages=messages, tools=domain.tools, codes=domain.codes, data=domain.tables
    )
    (state,) = runner.run([spec])
    return state


def _messages(domain: StatefulDomain, task: DomainTask) -> list[dict[str, Any]]:
    system = [{"role": "system", "content": domain.wiki}] if domain.wiki else []
    return [*system, {"role": "user", "content": task.instruction}]


def _report(name: str, grades: Sequence[TaskGrade]) -> GoldenReport:
    report = GoldenReport(domain=name, tasks=len(grades))
    for grade in grades:
        report.passed += grade.passed
        report.empty_run_failed += grade.empty_run_fails
        report.with_outputs += grade.has_outputs
        report.outputs_in_tool_results += grade.outputs_in_tool_results
        if grade.reason is not None:
            report.failures.append((grade.index, grade.reason))
    return report
