"""Verification: proof that an environment is solvable, and solvable only by the right calls.

A generator can write a tool that returns the wrong value, a tool that returns the sub-answer
whatever it is asked (so the reward pays for any call), or a question that gives its answer away.
Each of these trains a model on noise, so every environment whose `meta` carries golden calls is
checked before it is written:

1. its golden calls run in the sandbox, and each output must match its sub-answer under the
   reward's own matching rule (`rewards.matching.matches`);
2. each golden call with one argument changed (`perturb_arguments`) must NOT match: the answer has
   to depend on the input;
3. the oracle episode (the golden calls in dependency order, through the real episode loop) must
   reach solve rate 1.0 — which also proves that `unsolved_set` holds nothing the calls cannot find;
4. the question must not contain its answer, nor the tool documents a sub-answer.

Rows without golden calls (the paper's released format) can only be checked statically: schema,
code that defines every tool, sub-answers whose tools exist — `EnvRow` validation does all three.

A rejection carries a short, stable reason (the `REASON_*` constants, used as report keys) and a
detail for the person reading it. All rows of a batch share one `run_batch` for golden calls, one
for perturbed calls and one episode run, which is what makes verification cheap enough to run on
every environment a builder writes.
"""

from __future__ import annotations

import functools
import json
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs.chunks import batched
from envs.episode import EpisodeRunner, EpisodeSpec
from envs.jsonl import RowError, iter_numbered
from envs.sandbox import SandboxPool, ToolCallRequest, ToolResult
from envs.schema import EnvRow
from policies.backends import SamplingParams
from policies.backends.base import derive_seed
from policies.oracle import OraclePlan, OraclePolicy, PlannedCall, question_of
from rewards.matching import answer_pieces, contains_answer, matches

REASON_META = "meta: malformed golden calls"
REASON_UNDEFINED_TOOL = "tool code does not define a tool"
REASON_UNKNOWN_UNSOLVED_TOOL = "unsolved_set names an unknown tool"
REASON_UNKNOWN_GOLDEN_TOOL = "golden call names an unknown tool"
REASON_QUESTION_LEAK = "question contains its answer"
REASON_DOCUMENT_LEAK = "tool documents contain a sub-answer"
REASON_GOLDEN = "golden call does not return its sub-answer"
REASON_PERTURBED = "perturbed call still returns the sub-answer"
REASON_ORACLE = "oracle episode does not solve the environment"

_ORACLE_PARAMS = SamplingParams()  # the oracle ignores sampling settings; the loop needs some
_DETAIL_CHARS = 160


class MetaError(ValueError):
    """A row's `meta` names golden calls but not in a usable shape; the message says what is wrong."""


@dataclass(frozen=True)
class GoldenSub:
    """One sub-question as verification needs it: its sub-answer and the golden call that finds it."""

    id: str
    answer: str
    name: str
    arguments: dict[str, Any]
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class SubQuestionCheck:
    id: str
    golden_ok: bool
    perturbed_rejected: bool
    detail: str


@dataclass(frozen=True)
class Verification:
    """The verdict on one environment. `reason` is a stable `REASON_*` key (None when valid);
    `oracle_solve_rate` is None for rows without golden calls, which get static checks only."""

    env_id: str
    valid: bool
    reason: str | None
    oracle_solve_rate: float | None
    checks: tuple[SubQuestionCheck, ...]
    has_golden: bool
    detail: str = ""


# --------------------------------------------------------------------------- golden calls in meta


def golden_subs(row: EnvRow) -> tuple[GoldenSub, ...] | None:
    """The golden calls `meta` records, or None when it records none (the paper's format).

    Sub-questions without `id` get `q1`, `q2`, ... in order; without `depends_on`, a multi-hop
    scenario is read as a chain (each step needs the previous one) and any other as independent
    steps, which is what those scenario types mean. Raises MetaError on a malformed entry.
    """
    meta = row.meta_dict()
    subs = meta.get("sub_questions")
    if subs is None or subs == []:
        return None
    if not isinstance(subs, list) or not all(isinstance(sub, dict) for sub in subs):
        raise MetaError("meta.sub_questions must be a list of objects")
    if not any("call" in sub for sub in subs):
        return None
    chain = meta.get("scenario") == "multi-hop"
    parsed: list[GoldenSub] = []
    for index, sub in enumerate(subs):
        where = f"meta.sub_questions[{index}]"
        sub_id = sub.get("id", f"q{index + 1}")
        answer, call = sub.get("answer"), sub.get("call")
        if not isinstance(sub_id, str) or not sub_id:
            raise MetaError(f"{where}.id must be a non-empty string")
        if not isinstance(answer, str) or not answer:
            raise MetaError(f"{where}.answer must be a non-empty string")
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise MetaError(f"{where}.call must be an object with a 'name' string")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, dict):
            raise MetaError(f"{where}.call.arguments must be an object")
        earlier = [done.id for done in parsed]
        if "depends_on" in sub:
            depends_on = sub["depends_on"]
            if not isinstance(depends_on, list) or not all(isinstance(dep, str) for dep in depends_on):
                raise MetaError(f"{where}.depends_on must be a list of sub-question ids")
            unknown = [dep for dep in depends_on if dep not in earlier]
            if unknown:
                raise MetaError(f"{where}.depends_on names {unknown}, which are not earlier sub-questions")
        else:
            depends_on = earlier[-1:] if chain else []
        if sub_id in earlier:
            raise MetaError(f"{where}.id {sub_id!r} repeats")
        parsed.append(GoldenSub(sub_id, answer, call["name"], arguments, tuple(depends_on)))
    return tuple(parsed)


def _layers(subs: Sequence[GoldenSub]) -> list[list[GoldenSub]]:
    """Sub-questions grouped by dependency depth: layer 0 needs nothing, layer k needs layer k-1."""
    depth: dict[str, int] = {}
    layers: list[list[GoldenSub]] = []
    for sub in subs:  # dependencies always name earlier steps, so one pass suffices
        depth[sub.id] = 1 + max((depth[dep] for dep in sub.depends_on), default=-1)
        if depth[sub.id] == len(layers):
            layers.append([])
        layers[depth[sub.id]].append(sub)
    return layers


def oracle_plan(row: EnvRow) -> OraclePlan | None:
    """The golden calls as turns (all calls of a dependency layer in one turn), then `row.answer`.

    None when `meta` has no golden calls; MetaError when it has malformed ones.
    """
    subs = golden_subs(row)
    return None if subs is None else _plan(subs, row.answer)


def _plan(subs: Sequence[GoldenSub], answer: str) -> OraclePlan:
    turns = tuple(
        tuple(PlannedCall(sub.name, dict(sub.arguments)) for sub in layer) for layer in _layers(subs)
    )
    return OraclePlan(turns=turns, answer=answer)


# --------------------------------------------------------------------------- perturbation


def perturb_arguments(
    arguments: Mapping[str, Any], tool_schema: Mapping[str, Any], rng_or_seed: random.Random | int
) -> dict[str, Any]:
    """A copy of `arguments` with ONE argument changed: the one the answer most likely depends on.

    That is the first required parameter (in the schema's property order) the call passes, else
    the first parameter it passes. `tool_schema` is an OpenAI function schema, wrapped or not.
    Raises ValueError for a call without arguments: there is nothing to change.
    """
    name = argument_to_perturb(arguments, tool_schema)
    if name is None:
        raise ValueError("a call without arguments cannot be perturbed")
    return perturb_argument(arguments, name, tool_schema, rng_or_seed)


def argument_to_perturb(arguments: Mapping[str, Any], tool_schema: Mapping[str, Any]) -> str | None:
    parameters = _parameters(tool_schema)
    properties = _properties(parameters)
    required = parameters.get("required", [])
    required = set(required) if isinstance(required, list) else set()
    in_order = [name for name in properties if name in arguments]
    for name in in_order:
        if name in required:
            return name
    if in_order:
        return in_order[0]
    return next(iter(arguments), None)


def perturb_argument(
    arguments: Mapping[str, Any],
    name: str,
    tool_schema: Mapping[str, Any],
    rng_or_seed: random.Random | int,
) -> dict[str, Any]:
    """A copy of `arguments` with `name` changed so that no lenient comparison can take it for the
    original: strings get a letter or digit replaced (so they differ after lowercasing and
    whitespace normalisation), numbers move by at least one and by half their size, booleans flip,
    enums switch to another allowed value, lists and objects have their first element changed."""
    if name not in arguments:
        raise KeyError(f"the call has no argument {name!r}; it has {sorted(arguments)}")
    rng = rng_or_seed if isinstance(rng_or_seed, random.Random) else random.Random(rng_or_seed)
    schema = _properties(_parameters(tool_schema)).get(name, {})
    return {**arguments, name: perturb_value(arguments[name], schema, rng)}


def perturb_value(value: Any, schema: Mapping[str, Any], rng: random.Random) -> Any:
    """A value that differs from `value`, of the same JSON type where one exists."""
    schema = schema if isinstance(schema, Mapping) else {}
    enum = schema.get("enum")
    if isinstance(enum, list):
        others = [option for option in enum if _normalised(option) != _normalised(value)]
        if others:
            return others[rng.randrange(len(others))]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return _shifted(value, schema)
    if isinstance(value, str):
        return _altered_text(value, rng)
    if isinstance(value, list):
        items = schema.get("items", {})
        if not value:
            return [_some_value(items)]
        return [perturb_value(value[0], items, rng), *value[1:]]
    if isinstance(value, dict):
        if not value:
            return {"x": "x"}
        key = next(iter(value))
        return {**value, key: perturb_value(value[key], _properties(schema).get(key, {}), rng)}
    return _some_value(schema)


def _parameters(tool_schema: Mapping[str, Any]) -> Mapping[str, Any]:
    function = tool_schema.get("function", tool_schema)
    parameters = function.get("parameters", {}) if isinstance(function, Mapping) else {}
    return parameters if isinstance(parameters, Mapping) else {}


def _properties(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    properties = schema.get("properties", {})
    return properties if isinstance(properties, Mapping) else {}


def _normalised(value: Any) -> Any:
    return " ".join(value.lower().split()) if isinstance(value, str) else value


def _shifted(value: int | float, schema: Mapping[str, Any]) -> int | float:
    """`value` moved by 1 + |value|/2, upward unless that leaves the schema's range."""
    step = 1 + abs(value) // 2 if isinstance(value, int) else 1.0 + abs(value) / 2
    maximum, minimum = schema.get("maximum"), schema.get("minimum")
    up, down = value + step, value - step
    if isinstance(maximum, int | float) and up > maximum:
        if not (isinstance(minimum, int | float) and down < minimum):
            return down
    return up


def _altered_text(text: str, rng: random.Random) -> str:
    """One ASCII letter or digit of the longest alphanumeric run replaced by another of its kind.

    Changing the distinctive word (not a prefix such as "the ") defeats tools that normalise case,
    whitespace or articles, yet keeps the value looking like what the tool expects.
    """
    runs = [match for match in re.finditer(r"[A-Za-z0-9]+", text)]
    if not runs:
        return text + "x"
    run = max(runs, key=lambda match: len(match.group()))
    position = run.start() + rng.randrange(len(run.group()))
    char = text[position]
    if char.isdigit():
        replacement = str((int(char) + rng.randrange(1, 10)) % 10)
    else:
        base = ord("a") if char.islower() else ord("A")
        replacement = chr(base + (ord(char) - base + rng.randrange(1, 26)) % 26)
    return text[:position] + replacement + text[position + 1 :]


def _some_value(schema: Any) -> Any:
    kind = schema.get("type") if isinstance(schema, Mapping) else None
    return {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}.get(kind, "x")


# --------------------------------------------------------------------------- static checks


def description_texts(schema: Any) -> Iterator[str]:
    """Every free-text `description` in a tool schema, at any depth: where a document can leak."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "description" and isinstance(value, str):
                yield value
            else:
                yield from description_texts(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from description_texts(item)


def states_whole(text: str, answer: str) -> bool:
    """Whether `text` states every piece of `answer` as a whole word or number.

    Stricter than the reward's substring rule on purpose: "Lima" must not count as leaked by a
    description that mentions the climate.
    """
    haystack = text.replace(",", "").lower()
    return all(
        re.search(rf"(?<!\w){re.escape(piece)}(?!\w)", haystack) is not None
        for piece in answer_pieces(answer)
    )


def _static_problem(row: EnvRow, subs: Sequence[GoldenSub]) -> tuple[str, str] | None:
    tool_names = set(row.tool_names())
    for sub in subs:
        if sub.name not in tool_names:
            return REASON_UNKNOWN_GOLDEN_TOOL, f"{sub.id} calls {sub.name!r}, which is not among the tools"
    question = question_of(row.messages)
    if contains_answer(question, row.answer):
        return REASON_QUESTION_LEAK, f"the question states the answer {row.answer!r}"
    for tool in row.tool_schemas():
        texts = list(description_texts(tool))
        for sub in subs:
            if any(states_whole(text, sub.answer) for text in texts):
                name = tool["function"]["name"]
                return (
                    REASON_DOCUMENT_LEAK,
                    f"the document of {name!r} states {sub.id}'s answer {sub.answer!r}",
                )
    return None


# --------------------------------------------------------------------------- the verifier


@dataclass
class _Case:
    """One row on its way through verification."""

    row: EnvRow
    subs: tuple[GoldenSub, ...] | None = None
    problem: tuple[str, str] | None = None
    golden: list[ToolResult] = field(default_factory=list)
    perturbed: list[tuple[dict[str, Any], ToolResult] | None] = field(default_factory=list)
    solve_rate: float | None = None

    @functools.cached_property
    def codes(self) -> dict[str, str]:
        return self.row.codes_dict()

    @functools.cached_property
    def tools(self) -> list[dict[str, Any]]:
        return self.row.tool_schemas()

    @property
    def runnable(self) -> bool:
        """Whether its golden calls can be run: meta is well formed and names only existing tools."""
        blocked = self.problem is not None and self.problem[0] in (REASON_META, REASON_UNKNOWN_GOLDEN_TOOL)
        return self.subs is not None and not blocked


class Verifier:
    """Verifies batches of environments against one sandbox pool.

    >>> with SandboxPool(workers=2) as pool:  # doctest: +SKIP
    ...     verdicts = Verifier(pool).verify(rows)

    `seed` fixes which character or value each perturbation changes, so verdicts are reproducible.
    """

    def __init__(self, pool: SandboxPool, *, max_turns: int = 20, seed: int = 0) -> None:
        if max_turns < 1:
            raise ValueError(f"max_turns must be at least 1, got {max_turns}")
        self.pool = pool
        self.max_turns = max_turns
        self.seed = seed

    def verify(self, rows: Sequence[EnvRow]) -> list[Verification]:
        cases = [self._inspect(row) for row in rows]
        runnable = [case for case in cases if case.runnable]
        self._run_golden(runnable)
        self._run_perturbed(runnable)
        self._run_oracle(runnable)
        return [self._verdict(case) for case in cases]

    def _inspect(self, row: EnvRow) -> _Case:
        try:
            subs = golden_subs(row)
        except MetaError as exc:
            return _Case(row, subs=(), problem=(REASON_META, str(exc)))
        if subs is None:
            return _Case(row)
        return _Case(row, subs=subs, problem=_static_problem(row, subs))

    def _run_golden(self, cases: Sequence[_Case]) -> None:
        requests = [
            ToolCallRequest(case.codes[sub.name], sub.name, sub.arguments)
            for case in cases
            for sub in case.subs or ()
        ]
        results = iter(self.pool.run_batch(requests) if requests else [])
        for case in cases:
            case.golden = [next(results) for _ in case.subs or ()]

    def _run_perturbed(self, cases: Sequence[_Case]) -> None:
        planned = [[self._perturbed_request(case, sub) for sub in case.subs or ()] for case in cases]
        requests = [request for per_case in planned for request in per_case if request is not None]
        results = iter(self.pool.run_batch(requests) if requests else [])
        for case, per_case in zip(cases, planned, strict=True):
            case.perturbed = [None if r is None else (r.arguments, next(results)) for r in per_case]

    def _perturbed_request(self, case: _Case, sub: GoldenSub) -> ToolCallRequest | None:
        """The golden call with one argument changed; None for a call without arguments."""
        if not sub.arguments:
            return None
        schema = next(tool for tool in case.tools if tool["function"]["name"] == sub.name)
        seed = derive_seed("perturb", self.seed, case.row.env_id, sub.id)
        return ToolCallRequest(case.codes[sub.name], sub.name, perturb_arguments(sub.arguments, schema, seed))

    def _run_oracle(self, cases: Sequence[_Case]) -> None:
        """Episodes for every case, in rounds: the oracle tells tasks apart by their question, so
        rows that repeat a question go to later rounds instead of sharing (and mixing) one plan."""
        rounds: list[list[tuple[_Case, str, OraclePlan]]] = []
        seen: Counter[str] = Counter()
        for case in cases:
            plan = _plan(case.subs or (), case.row.answer)
            question = question_of(case.row.messages)
            index = seen[question]
            seen[question] += 1
            if index == len(rounds):
                rounds.append([])
            rounds[index].append((case, question, plan))
        for members in rounds:
            policy = OraclePolicy({question: plan for _, question, plan in members})
            runner = EpisodeRunner(policy, _ORACLE_PARAMS, self.pool, max_turns=self.max_turns)
            specs = [
                EpisodeSpec(
                    key=(case.row.env_id, position),
                    messages=case.row.messages,
                    tools=case.tools,
                    codes=case.codes,
                    unsolved=case.row.unsolved(),
                )
                for position, (case, _, _) in enumerate(members)
            ]
            for (case, _, _), state in zip(members, runner.run(specs), strict=True):
                case.solve_rate = state.solve_rate

    def _verdict(self, case: _Case) -> Verification:
        row = case.row
        if case.subs is None:
            return Verification(row.env_id, True, None, None, (), has_golden=False)
        checks = (
            tuple(
                _check(sub, golden, perturbed)
                for sub, golden, perturbed in zip(case.subs, case.golden, case.perturbed, strict=True)
            )
            if case.runnable
            else ()
        )
        reason, detail = case.problem or (None, "")
        if reason is None:
            failed_golden = [check for check in checks if not check.golden_ok]
            failed_perturbed = [check for check in checks if not check.perturbed_rejected]
            if failed_golden:
                reason, detail = REASON_GOLDEN, "; ".join(c.detail for c in failed_golden)
            elif failed_perturbed:
                reason, detail = REASON_PERTURBED, "; ".join(c.detail for c in failed_perturbed)
            elif case.solve_rate != 1.0:
                reason, detail = REASON_ORACLE, f"the golden calls reach solve rate {case.solve_rate:.3f}"
        return Verification(
            env_id=row.env_id,
            valid=reason is None,
            reason=reason,
            oracle_solve_rate=case.solve_rate,
            checks=checks,
            has_golden=True,
            detail=detail,
        )


def _check(
    sub: GoldenSub, golden: ToolResult, perturbed: tuple[dict[str, Any], ToolResult] | None
) -> SubQuestionCheck:
    call = f"{sub.name}({_arguments_text(sub.arguments)})"
    golden_ok = golden.ok and matches(golden.content, sub.answer)
    problems = []
    if not golden_ok:
        got = _clip(golden.content) if golden.ok else f"error {_clip(golden.error or '')}"
        problems.append(f"{sub.id}: {call} returned {got}, which does not contain {sub.answer!r}")
    if perturbed is None:
        perturbed_rejected, note = True, "no argument to perturb"
    else:
        arguments, result = perturbed
        perturbed_rejected = not (result.ok and matches(result.content, sub.answer))
        changed = {key: value for key, value in arguments.items() if sub.arguments.get(key) != value}
        note = f"perturbed {_arguments_text(changed)}"
        if not perturbed_rejected:
            problems.append(
                f"{sub.id}: {sub.name} with {_arguments_text(changed)} still returned {sub.answer!r}"
            )
    return SubQuestionCheck(sub.id, golden_ok, perturbed_rejected, "; ".join(problems) or f"ok ({note})")


def _arguments_text(arguments: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in arguments.items())


def _clip(text: str) -> str:
    return repr(text if len(text) <= _DETAIL_CHARS else text[: _DETAIL_CHARS - 3] + "...")


# --------------------------------------------------------------------------- whole files


@dataclass(frozen=True)
class RejectedRow:
    line: int
    env_id: str
    reason: str
    detail: str


@dataclass
class ValidationReport:
    """What `validate_file` found. `oracle_solve_rate` is the mean over rows with golden calls
    (None when there are none); `rejected` counts rows by reason."""

    path: Path
    total: int = 0
    valid: int = 0
    with_golden: int = 0
    oracle_solve_rate: float | None = None
    rejected: dict[str, int] = field(default_factory=dict)
    rejected_rows: list[RejectedRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "total": self.total,
            "valid": self.valid,
            "with_golden": self.with_golden,
            "oracle_solve_rate": self.oracle_solve_rate,
            "rejected": dict(self.rejected),
            "rejected_rows": [
                {"line": r.line, "env_id": r.env_id, "reason": r.reason, "detail": r.detail}
                for r in self.rejected_rows
            ],
        }


def schema_reason(error: RowError) -> str:
    """A report key for a row that failed to load: code that does not define its tool (missing, not
    Python, no such `def`) and sub-answers of unknown tools get their own keys; anything else is
    `schema: <first field>`, or `schema: line` when the line is not a JSON object at all."""
    undefined = ("does not define a top-level function", "codes do not define it", "is not valid Python")
    if any(phrase in error.reason for phrase in undefined):
        return REASON_UNDEFINED_TOOL
    if "field 'unsolved_set'" in error.reason and "is not named in tools" in error.reason:
        return REASON_UNKNOWN_UNSOLVED_TOOL
    field_name = re.match(r"field '([^'.\[]+)", error.reason)
    return f"schema: {field_name.group(1)}" if field_name else "schema: line"


def validate_file(
    path: str | Path, pool: SandboxPool, *, batch: int = 256, max_turns: int = 20
) -> ValidationReport:
    """Verify every row of an environment file, streaming it `batch` rows at a time."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    verifier = Verifier(pool, max_turns=max_turns)
    report = ValidationReport(Path(path))
    rejected: Counter[str] = Counter()
    solve_rates: list[float] = []

    def reject(line: int, env_id: str, reason: str, detail: str) -> None:
        rejected[reason] += 1
        report.rejected_rows.append(RejectedRow(line, env_id, reason, detail))

    for chunk in batched(iter_numbered(path), batch):
        rows = [(line, item) for line, item in chunk if isinstance(item, EnvRow)]
        verdicts = iter(verifier.verify([row for _, row in rows]))
        for line, item in chunk:
            report.total += 1
            if isinstance(item, RowError):
                reject(line, "", schema_reason(item), item.reason)
                continue
            verdict = next(verdicts)
            if verdict.has_golden:
                report.with_golden += 1
            if verdict.oracle_solve_rate is not None:
                solve_rates.append(verdict.oracle_solve_rate)
            if verdict.valid:
                report.valid += 1
            else:
                reject(line, verdict.env_id, verdict.reason or "invalid", verdict.detail)
    report.rejected = dict(sorted(rejected.items()))
    report.oracle_solve_rate = sum(solve_rates) / len(solve_rates) if solve_rates else None
    return report
