"""The episode loop: a policy talks to many environments at once, one batched generation per turn.

Each live episode contributes one conversation to every turn's batch, so 64 environments cost about
as many model calls as one long episode. Tool calls run in the sandbox — stateless environments
send every call of the turn to the pool as one batch, stateful ones (τ-bench domains) call into the
database their episode holds inside one worker — and each output is matched against the
still-unsolved sub-answers exactly as the reward defines it (`rewards.matching`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from envs.sandbox import SandboxError, SandboxPool, StatefulSession, ToolResult, canonical_digest
from envs.schema import EnvRow
from envs.tool_calls import run_tool_calls
from policies.backends import Conversation, Generation, GenerationBackend, SamplingParams
from policies.backends.base import derive_seed
from policies.types import ParsedTurn
from rewards.formulas import EpisodeMetrics, episode_metrics
from rewards.matching import CallOutput, count_unsolved, match_calls

StopReason = Literal["answer", "max_turns", "error"]


@dataclass(frozen=True)
class EpisodeSpec:
    """What one episode starts from. `data` set means a stateful domain holding that database."""

    key: tuple[str, int]
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    codes: dict[str, str]
    unsolved: dict[str, list[str]] = field(default_factory=dict)
    data: dict[str, Any] | None = None
    seed: int | None = None

    @classmethod
    def for_env(cls, env: EnvRow, sample_index: int, run_seed: int) -> EpisodeSpec:
        """Sample `sample_index` of an environment row, seeded from the run seed and its identity
        (never its position in a batch), so resumed and sharded runs sample it identically."""
        return cls(
            key=(env.env_id, sample_index),
            messages=env.messages,
            tools=env.tool_schemas(),
            codes=env.codes_dict(),
            unsolved=env.unsolved(),
            seed=derive_seed(run_seed, env.env_id, sample_index),
        )


@dataclass
class EpisodeState:
    """An episode in progress; the loop mutates it turn by turn."""

    spec: EpisodeSpec
    messages: list[dict[str, Any]]
    unsolved: dict[str, list[str]]
    total: int
    turn: int = 0
    calls: int = 0
    solved: int = 0
    stop_reason: StopReason | None = None
    error: str | None = None
    session: StatefulSession | None = field(default=None, repr=False)
    final_data: dict[str, Any] | None = field(default=None, repr=False)
    state_digest: str | None = None

    @property
    def done(self) -> bool:
        return self.stop_reason is not None

    @property
    def solve_rate(self) -> float:
        return 1.0 - count_unsolved(self.unsolved) / self.total if self.total else 1.0

    @property
    def metrics(self) -> EpisodeMetrics:
        return episode_metrics(self.calls, self.solved, self.total)


TurnCallback = Callable[[EpisodeState], None]


def tool_message(call_id: str, name: str, result: ToolResult) -> dict[str, Any]:
    """What the model sees back: the output, or the error text so it can correct itself."""
    content = result.content if result.ok else f"Error: {result.error}"
    return {"role": "tool", "tool_call_id": call_id, "name": name, "content": content}


class EpisodeRunner:
    """Runs episodes to completion with one policy, a sandbox pool and a turn limit."""

    def __init__(
        self,
        backend: GenerationBackend,
        params: SamplingParams,
        pool: SandboxPool,
        *,
        max_turns: int = 20,
        on_tool_turn: TurnCallback | None = None,
    ) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.backend, self.params, self.pool = backend, params, pool
        self.max_turns = max_turns
        self.on_tool_turn = on_tool_turn

    def run(self, specs: Sequence[EpisodeSpec]) -> list[EpisodeState]:
        states = [self._start(spec) for spec in specs]
        try:
            while live := [state for state in states if not state.done]:
                generations = self.backend.generate([self._conversation(s) for s in live], self.params)
                stepping = [(s, g) for s, g in zip(live, generations, strict=True) if self._accept(s, g)]
                self._run_tools(stepping)
        finally:
            for state in states:
                self._finish(state)
        return states

    def _start(self, spec: EpisodeSpec) -> EpisodeState:
        session = self.pool.session(spec.codes, spec.data) if spec.data is not None else None
        unsolved = {tool: list(answers) for tool, answers in spec.unsolved.items()}
        return EpisodeState(
            spec=spec,
            messages=[dict(message) for message in spec.messages],
            unsolved=unsolved,
            total=count_unsolved(unsolved),
            session=session,
        )

    def _conversation(self, state: EpisodeState) -> Conversation:
        seed = None if state.spec.seed is None else state.spec.seed + state.turn
        return Conversation(messages=state.messages, tools=state.spec.tools, turn=state.turn, seed=seed)

    def _accept(self, state: EpisodeState, generation: Generation) -> bool:
        """Record the assistant turn; True when it called tools and the episode goes on."""
        if generation.error is not None:
            state.stop_reason, state.error = "error", generation.error
            return False
        turn: ParsedTurn = generation.turn
        state.messages.append(turn.to_message())
        if not turn.tool_calls:
            state.stop_reason = "answer"
            return False
        return True

    def _run_tools(self, stepping: list[tuple[EpisodeState, Generation]]) -> None:
        stateless = [(s, g) for s, g in stepping if s.session is None]
        batched = run_tool_calls(self.pool, [(s.spec.codes, g.turn.tool_calls) for s, g in stateless])
        results_of = {id(state): results for (state, _), results in zip(stateless, batched, strict=True)}
        for state, generation in stepping:
            if state.session is not None:
                session = state.session
                results = [session.call(call.name, call.arguments) for call in generation.turn.tool_calls]
            else:
                results = results_of[id(state)]
            self._record(state, generation.turn, results)

    def _record(self, state: EpisodeState, turn: ParsedTurn, results: list[ToolResult]) -> None:
        outputs = [
            CallOutput(call.name, r.content if r.ok else None)
            for call, r in zip(turn.tool_calls, results, strict=True)
        ]
        match = match_calls(outputs, state.unsolved)
        state.unsolved = match.remaining
        state.calls += len(results)
        state.solved += match.solved
        state.turn += 1
        for call, result in zip(turn.tool_calls, results, strict=True):
            state.messages.append(tool_message(call.id, call.name, result))
        if self.on_tool_turn is not None:
            self.on_tool_turn(state)
        if state.turn >= self.max_turns:
            state.stop_reason = "max_turns"

    @staticmethod
    def _finish(state: EpisodeState) -> None:
        if state.session is not None:
            try:
                state.final_data = state.session.state()
                state.state_digest = canonical_digest(state.final_data)
            except SandboxError as exc:  # the worker died mid-episode: its database is not trustworthy
                state.stop_reason, state.error = "error", str(exc)
            finally:
                state.session.close()
                state.session = None
