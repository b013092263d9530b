"""τ-bench-style evaluation: an agent serves a simulated customer over a live database, graded by state.

Any domain folder of the shape in `envs.tau_bench` works. Each episode is a three-party loop, as in
τ-bench: the simulated user (`UserSimulator`) opens with its request; the agent, with the domain's
`wiki.md` as system prompt and its tools, either calls tools — run at once in the episode's own
sandboxed database — and goes on, or writes a message, which the user answers. The episode ends when
the user says `###STOP###`, when the agent calls a transfer tool (`transfer_to_human_agents`), or at
the turn limit (30 agent turns by default).

Grading is τ-bench's: the golden actions are replayed on a fresh database (`envs.golden`'s replay),
and the episode passes when its final database has the same canonical digest and every required
output string appears, case-insensitively and with commas removed from the message, in one of the
messages the agent wrote to the user. As in τ-bench an episode cut off by the turn limit scores 0:
the user never said the goal was met. pass^k is τ-bench's too: the mean over tasks of
C(c, k) / C(n, k), for c passing trials out of n.

Many episodes advance together: every round makes one batched generation call for all episodes
waiting on the user and one for all waiting on the agent. Backends retry failed requests; an
episode whose model still fails, or whose sandbox breaks, is written down as failed with the reason
and counts as a failure in every score: nothing is dropped. Each finished episode is appended to
`episodes.jsonl` at once, so a killed run resumes where it stopped and a rerun evaluates only what
is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from math import comb
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from envs.atomic import atomic_write_text, file_sha256
from envs.episode import tool_message
from envs.evaluation.user_simulator import UserSimulator, UserTurn
from envs.golden import replay_golden, said
from envs.jsonl import JsonlAppender, iter_rows
from envs.sampling import ResumeMismatch
from envs.sandbox import SandboxError, SandboxPool, StatefulSession
from envs.tau_bench import DomainError, DomainTask, StatefulDomain, load_domain, load_tasks
from policies.backends import Conversation, Generation, GenerationBackend, SamplingParams
from policies.backends.base import derive_seed

__all__ = [
    "EPISODES_FILE",
    "MANIFEST_FILE",
    "SUMMARY_FILE",
    "TERMINATE_TOOLS",
    "Grade",
    "TauEpisode",
    "TauReport",
    "evaluate_tau",
    "golden_digest",
    "grade_episode",
    "pass_hat",
]

logger = logging.getLogger(__name__)

EPISODES_FILE = "episodes.jsonl"
SUMMARY_FILE = "summary.json"
MANIFEST_FILE = "tau_run.json"
TERMINATE_TOOLS = ("transfer_to_human_agents",)

StopReason = Literal["user_stop", "transfer", "max_turns", "error"]


class TokenCounts(BaseModel):
    prompt: int = 0
    completion: int = 0


class TauEpisode(BaseModel):
    """One finished episode, one line of `episodes.jsonl`.

    `reward` is 1.0 or 0.0. `failed` means the episode could not be played or graded (a model that
    kept failing, a broken sandbox); `error` then says why, and the reward is 0. `reasons` lists
    every reason a played episode scored 0. `messages` is the agent's whole conversation.
    """

    task_index: int
    trial: int
    reward: float
    failed: bool
    stop_reason: StopReason
    error: str | None = None
    reasons: list[str]
    turns: int
    db_match: bool | None = None
    outputs: dict[str, bool]
    digest: str | None = None
    golden_digest: str | None = None
    agent_tokens: TokenCounts
    user_tokens: TokenCounts
    messages: list[dict[str, Any]]


@dataclass(frozen=True)
class Grade:
    reward: float
    reasons: tuple[str, ...]
    outputs: dict[str, bool]
    db_match: bool


def said_to_user(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """The agent's messages to the user: its turns without tool calls (text beside calls is not sent)."""
    return [
        str(message.get("content") or "")
        for message in messages
        if message.get("role") == "assistant" and not message.get("tool_calls")
    ]


def grade_episode(
    *,
    digest: str,
    golden: str,
    outputs: Sequence[str],
    messages: Sequence[Mapping[str, Any]],
    hit_turn_limit: bool = False,
) -> Grade:
    """τ-bench's reward of one played episode.

    >>> said = [{"role": "assistant", "content": "You saved $23,553 in total."}]
    >>> grade_episode(digest="d", golden="d", outputs=["23553"], messages=said)
    Grade(reward=1.0, reasons=(), outputs={'23553': True}, db_match=True)
    """
    agent_said = said_to_user(messages)
    found = {output: said(output, agent_said) for output in outputs}
    reasons = []
    if hit_turn_limit:
        reasons.append("the turn limit was reached before the user ended the conversation")
    db_match = digest == golden
    if not db_match:
        reasons.append("the final database differs from the one the golden actions produce")
    reasons.extend(
        f"required output {output!r} is in none of the agent's messages"
        for output in outputs
        if not found[output]
    )
    return Grade(reward=0.0 if reasons else 1.0, reasons=tuple(reasons), outputs=found, db_match=db_match)


def pass_hat(successes: Sequence[int], trials: int) -> dict[str, float]:
    """τ-bench's pass^k for k = 1..trials: the chance that k trials drawn from a task's n all pass,
    averaged over tasks. `successes[i]` is how many of task i's `trials` trials passed.

    >>> pass_hat([2, 1, 0], 2)
    {'pass^1': 0.5, 'pass^2': 0.3333333333333333}
    """
    if not successes:
        raise ValueError("pass^k needs at least one task")
    if any(not 0 <= c <= trials for c in successes):
        raise ValueError(f"successes must lie in 0..{trials}, got {list(successes)}")
    return {
        f"pass^{k}": sum(comb(c, k) / comb(trials, k) for c in successes) / len(successes)
        for k in range(1, trials + 1)
    }


def golden_digest(pool: SandboxPool, domain: StatefulDomain, task: DomainTask) -> str:
    """The canonical digest of a fresh database after the task's golden actions (`envs.golden`'s replay).

    A golden action that fails is kept, as in τ-bench (it changed what it changed), and logged: the
    task itself is then suspect. Raises SandboxError if the sandbox breaks during the replay.
    """
    digest, _, failed_action = replay_golden(pool, domain, task)
    if failed_action is not None:
        logger.warning("%s: %s", domain.name, failed_action)
    return digest


@dataclass
class _Episode:
    """One episode in progress; the loop mutates it round by round."""

    task_index: int
    trial: int
    task: DomainTask
    messages: list[dict[str, Any]]
    session: StatefulSession | None = None
    waiting_on: Literal["user", "agent"] = "user"
    turns: int = 0
    user_turns: int = 0
    stop_reason: StopReason | None = None
    error: str | None = None
    digest: str | None = None
    agent_tokens: TokenCounts = field(default_factory=TokenCounts)
    user_tokens: TokenCounts = field(default_factory=TokenCounts)

    def fail(self, error: str) -> None:
        self.stop_reason, self.error = "error", error


@dataclass(frozen=True)
class TauReport:
    """What an evaluation produced, over the selected tasks and all their trials (resumed ones included).

    `pass_hat` maps "pass^1".."pass^{trials}" to scores; `new_episodes` counts those played by this
    call (0 when a rerun found everything done).
    """

    domain: str
    tasks: int
    trials: int
    episodes: int
    pass_hat: dict[str, float]
    failed_episodes: int
    new_episodes: int
    episodes_path: Path
    summary_path: Path
    failures: tuple[tuple[int, int, str], ...] = ()

    @property
    def pass_1(self) -> float:
        return self.pass_hat["pass^1"]

    @property
    def pass_k(self) -> float:
        return self.pass_hat[f"pass^{self.trials}"]


class _TauRunner:
    """Plays episodes to the end, `max_live` at a time, and hands each finished one to `finish`."""

    def __init__(
        self,
        domain: StatefulDomain,
        agent: GenerationBackend,
        agent_params: SamplingParams,
        user: UserSimulator,
        pool: SandboxPool,
        *,
        max_turns: int,
        max_live: int,
        terminate_tools: frozenset[str],
    ) -> None:
        self.domain, self.agent, self.agent_params = domain, agent, agent_params
        self.user, self.pool = user, pool
        self.max_turns, self.max_live = max_turns, max_live
        self.terminate_tools = terminate_tools
        self.system = [{"role": "system", "content": domain.wiki}] if domain.wiki else []

    def run(self, keys: Sequence[tuple[int, int]], tasks: Sequence[DomainTask], out: JsonlAppender) -> None:
        pending = deque(keys)
        live: list[_Episode] = []
        golden: dict[int, str | SandboxError] = {}
        try:
            while pending or live:
                while pending and len(live) < self.max_live:
                    task_index, trial = pending.popleft()
                    live.append(self._start(task_index, trial, tasks[task_index]))
                self._user_round([e for e in live if e.stop_reason is None and e.waiting_on == "user"])
                self._agent_round([e for e in live if e.stop_reason is None and e.waiting_on == "agent"])
                for episode in [e for e in live if e.stop_reason is not None]:
                    live.remove(episode)
                    self._close(episode)
                    out.write(self._record(episode, golden))
        finally:
            for episode in live:
                if episode.session is not None:
                    episode.session.close()

    def _start(self, task_index: int, trial: int, task: DomainTask) -> _Episode:
        episode = _Episode(task_index=task_index, trial=trial, task=task, messages=list(self.system))
        try:
            episode.session = self.pool.session(self.domain.codes, self.domain.tables)  # it copies them
        except SandboxError as exc:
            episode.fail(f"sandbox: cannot open the episode's database: {exc}")
        return episode

    def _seed(self, params: SamplingParams, side: str, episode: _Episode, turn: int) -> int | None:
        """Per episode and turn, so a trial's samples do not depend on which episodes share its batch."""
        if params.seed is None:
            return None
        return derive_seed(params.seed, side, episode.task_index, episode.trial, turn)

    def _user_round(self, episodes: list[_Episode]) -> None:
        if not episodes:
            return
        conversations = [
            self.user.conversation(
                e.task.instruction,
                e.messages,
                turn=e.user_turns,
                seed=self._seed(self.user.params, "user", e, e.user_turns),
            )
            for e in episodes
        ]
        for episode, turn in zip(episodes, self.user.reply(conversations), strict=True):
            self._accept_user(episode, turn)

    def _accept_user(self, episode: _Episode, turn: UserTurn) -> None:
        if turn.error is not None:
            episode.fail(f"user simulator: {turn.error}")
            return
        episode.user_tokens.prompt += turn.prompt_tokens
        episode.user_tokens.completion += turn.completion_tokens
        episode.user_turns += 1
        episode.messages.append({"role": "user", "content": turn.text})
        if turn.stop:
            episode.stop_reason = "user_stop"
        elif episode.turns >= self.max_turns:
            episode.stop_reason = "max_turns"
        else:
            episode.waiting_on = "agent"

    def _agent_round(self, episodes: list[_Episode]) -> None:
        if not episodes:
            return
        conversations = [
            Conversation(
                messages=e.messages,
                tools=self.domain.tools,
                turn=e.turns,
                seed=self._seed(self.agent_params, "agent", e, e.turns),
            )
            for e in episodes
        ]
        generations = self.agent.generate(conversations, self.agent_params)
        for episode, generation in zip(episodes, generations, strict=True):
            self._accept_agent(episode, generation)

    def _accept_agent(self, episode: _Episode, generation: Generation) -> None:
        if generation.error is not None:
            episode.fail(f"agent: {generation.error}")
            return
        episode.agent_tokens.prompt += generation.prompt_tokens
        episode.agent_tokens.completion += generation.completion_tokens
        episode.turns += 1
        turn = generation.turn
        episode.messages.append(turn.to_message())
        if not turn.tool_calls:
            episode.waiting_on = "user"
            return
        session = episode.session
        assert session is not None  # an episode without a database failed at its start
        for call in turn.tool_calls:
            episode.messages.append(tool_message(call.id, call.name, session.call(call.name, call.arguments)))
            if session.broken is not None:
                episode.fail(f"sandbox: the episode's database broke during {call.name!r}: {session.broken}")
                return
            if call.name in self.terminate_tools:
                episode.stop_reason = "transfer"
                return
        if episode.turns >= self.max_turns:
            episode.stop_reason = "max_turns"

    def _close(self, episode: _Episode) -> None:
        """Read the final database's digest and free the worker."""
        session, episode.session = episode.session, None
        if session is None:
            return
        try:
            if episode.stop_reason != "error":
                episode.digest = session.digest()
        except SandboxError as exc:
            episode.fail(f"sandbox: cannot read the final database: {exc}")
        finally:
            session.close()

    def _golden(
        self, task_index: int, task: DomainTask, cache: dict[int, str | SandboxError]
    ) -> str | SandboxError:
        if task_index not in cache:
            try:
                cache[task_index] = golden_digest(self.pool, self.domain, task)
            except SandboxError as exc:
                cache[task_index] = exc
        return cache[task_index]

    def _record(self, episode: _Episode, cache: dict[int, str | SandboxError]) -> TauEpisode:
        grade: Grade | None = None
        golden: str | None = None
        if episode.stop_reason != "error":
            replayed = self._golden(episode.task_index, episode.task, cache)
            if isinstance(replayed, SandboxError):
                episode.fail(f"golden replay: {replayed}")
            else:
                golden = replayed
                assert episode.digest is not None
                grade = grade_episode(
                    digest=episode.digest,
                    golden=golden,
                    outputs=episode.task.outputs,
                    messages=episode.messages,
                    hit_turn_limit=episode.stop_reason == "max_turns",
                )
        row = TauEpisode(
            task_index=episode.task_index,
            trial=episode.trial,
            reward=grade.reward if grade else 0.0,
            failed=grade is None,
            stop_reason=episode.stop_reason or "error",
            error=episode.error,
            reasons=list(grade.reasons) if grade else [f"the episode failed: {episode.error}"],
            turns=episode.turns,
            db_match=grade.db_match if grade else None,
            outputs=grade.outputs if grade else {output: False for output in episode.task.outputs},
            digest=episode.digest,
            golden_digest=golden,
            agent_tokens=episode.agent_tokens,
            user_tokens=episode.user_tokens,
            messages=episode.messages,
        )
        logger.info(
            "task %d trial %d: reward %g (%s after %d turns)%s",
            row.task_index,
            row.trial,
            row.reward,
            row.stop_reason,
            row.turns,
            f": {row.error}" if row.error else "",
        )
        return row


def evaluate_tau(
    domain_dir: str | Path,
    tasks_path: str | Path | None,
    agent: GenerationBackend,
    agent_params: SamplingParams,
    user: GenerationBackend,
    user_params: SamplingParams,
    pool: SandboxPool,
    *,
    trials: int = 1,
    max_turns: int = 30,
    out_dir: str | Path,
    task_indices: Sequence[int] | None = None,
    user_prompt: str | None = None,
    terminate_tools: Sequence[str] = TERMINATE_TOOLS,
    max_live: int = 16,
    retry_failed: bool = False,
) -> TauReport:
    """Evaluate `agent` on a τ-bench-style domain, `trials` times per task; write episodes and a summary.

    Args:
        domain_dir: the domain folder (tools.json, codes.json, tables, wiki.md).
        tasks_path: a tasks JSONL file; `None` takes the domain's own `tasks.jsonl`.
        agent, agent_params: the model under test and its sampling settings.
        user, user_params: the model that plays the customer and its own settings.
        pool: the sandbox pool; every live episode holds one worker with its own database.
        trials: episodes per task (n of pass^k).
        max_turns: agent turns per episode (each generation counts one, whatever it holds).
        out_dir: gets `episodes.jsonl` (one `TauEpisode` per line, appended as episodes end),
            `summary.json` and `tau_run.json` (the settings, checked when a run resumes).
        task_indices: the tasks to evaluate (0-based lines of the tasks file); `None` for all.
        user_prompt: the simulator's system prompt template (`{instruction}` marks the task);
            `None` for `prompts/tau_user.md`.
        terminate_tools: tools whose call ends the episode (they must leave the database as it is).
        max_live: episodes played at once; bounds the sandbox workers and databases held.
        retry_failed: play again the episodes a previous run recorded as failed.

    Episodes already in `episodes.jsonl` are not played again (failed ones are, with `retry_failed`;
    the newest line of a (task, trial) counts). Raises `DomainError` for an unusable domain or tasks
    file, `ValueError` for bad arguments, `ResumeMismatch` when `out_dir` holds a run with other settings.
    """
    for name, value in (("trials", trials), ("max_turns", max_turns), ("max_live", max_live)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    domain = load_domain(domain_dir)
    tasks_file = Path(tasks_path) if tasks_path is not None else Path(domain_dir) / "tasks.jsonl"
    tasks = _load_tasks(tasks_file, domain)
    selected = _select(task_indices, len(tasks), tasks_file)
    simulator = UserSimulator(user, user_params, prompt=user_prompt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_manifest(
        out / MANIFEST_FILE,
        {
            "domain": domain.name,
            "tasks_sha256": file_sha256(tasks_file),
            "max_turns": max_turns,
            "terminate_tools": sorted(terminate_tools),
            "agent": {"backend": agent.name, "params": asdict(agent_params)},
            "user": {
                "backend": user.name,
                "params": asdict(user_params),
                "prompt_sha256": hashlib.sha256(simulator.prompt.encode("utf-8")).hexdigest(),
            },
        },
    )
    episodes_path = out / EPISODES_FILE
    runner = _TauRunner(
        domain,
        agent,
        agent_params,
        simulator,
        pool,
        max_turns=max_turns,
        max_live=max_live,
        terminate_tools=frozenset(terminate_tools),
    )
    with JsonlAppender(episodes_path) as appender:  # entering drops a half-written last line
        done = _latest_rows(episodes_path)
        todo = [
            (task_index, trial)
            for task_index in selected
            for trial in range(trials)
            if (task_index, trial) not in done or (retry_failed and done[(task_index, trial)].failed)
        ]
        runner.run(todo, tasks, appender)
    return _summarize(domain.name, selected, trials, episodes_path, out / SUMMARY_FILE, len(todo))


def _load_tasks(path: Path, domain: StatefulDomain) -> tuple[DomainTask, ...]:
    if not path.is_file():
        raise DomainError(f"{path}: no such tasks file")
    tasks = load_tasks(path)
    if not tasks:
        raise DomainError(f"{path}: no tasks")
    for index, task in enumerate(tasks):
        unknown = sorted({action.name for action in task.actions} - set(domain.codes))
        if unknown:
            raise DomainError(f"{path}: task {index} calls tool(s) the domain lacks: {', '.join(unknown)}")
    return tasks


def _select(task_indices: Sequence[int] | None, count: int, path: Path) -> list[int]:
    if task_indices is None:
        return list(range(count))
    selected = list(dict.fromkeys(task_indices))
    if not selected:
        raise ValueError("task_indices is empty: select at least one task, or pass None for all")
    for index in selected:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
            raise ValueError(f"task index {index!r} is out of range: {path} has tasks 0..{count - 1}")
    return selected


def _check_manifest(path: Path, settings: dict[str, Any]) -> None:
    """Write the run's settings, or check them against those of the run whose episodes are here."""
    if not path.exists():
        atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResumeMismatch(f"{path}: unreadable ({exc}); remove it or use another out_dir") from None
    changed = [key for key in sorted(set(settings) | set(previous)) if previous.get(key) != settings.get(key)]
    if changed:
        details = "; ".join(f"{key}: was {previous.get(key)!r}, now {settings.get(key)!r}" for key in changed)
        raise ResumeMismatch(
            f"{path}: this folder holds episodes played with other settings ({details}); "
            "use another out_dir, or the same settings to resume"
        )


def _latest_rows(path: Path) -> dict[tuple[int, int], TauEpisode]:
    """The newest row of every (task, trial) in the file: a retried episode supersedes its failure."""
    rows: dict[tuple[int, int], TauEpisode] = {}
    if path.exists():
        for row in iter_rows(path, TauEpisode):
            rows[(row.task_index, row.trial)] = row
    return rows


def _summarize(
    domain: str, selected: Sequence[int], trials: int, episodes_path: Path, summary_path: Path, new: int
) -> TauReport:
    rows = _latest_rows(episodes_path)
    chosen = [rows[(task_index, trial)] for task_index in selected for trial in range(trials)]
    successes = [
        sum(rows[(task_index, trial)].reward == 1.0 for trial in range(trials)) for task_index in selected
    ]
    scores = pass_hat(successes, trials)
    failures = tuple((row.task_index, row.trial, row.error or "") for row in chosen if row.failed)
    summary = {
        "benchmark": "tau-bench",
        "domain": domain,
        "tasks": len(selected),
        "trials": trials,
        "episodes": len(chosen),
        **scores,
        "failed_episodes": len(failures),
        "stop_reasons": dict(sorted(Counter(row.stop_reason for row in chosen).items())),
        "failures": [{"task_index": t, "trial": k, "error": error} for t, k, error in failures],
    }
    atomic_write_text(summary_path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return TauReport(
        domain=domain,
        tasks=len(selected),
        trials=trials,
        episodes=len(chosen),
        pass_hat=scores,
        failed_episodes=len(failures),
        new_episodes=new,
        episodes_path=episodes_path,
        summary_path=summary_path,
        failures=failures,
    )
