"""`ftrl envs build`: generate, verify, deduplicate and split environments, and report on them.

Every environment that leaves the builder has been proven solvable by `envs.verify` (its golden
calls return their sub-answers in the sandbox, perturbed calls do not, the oracle episode reaches
solve rate 1.0). Train and test share no entity that a sub-answer depends on, and the test split has
the build's mix of scenario types (`split_without_leakage`).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from envs.atomic import atomic_write_text
from envs.construction.stages import (
    SCALING_OPS,
    SCENARIO_TYPES,
    Generator,
    ScalingOp,
    ScenarioRequest,
    run_stages,
    to_env_row,
)
from envs.jsonl import write_rows
from envs.schema import EnvRow
from envs.verify import Verifier

DATA_SOURCE_PREFIX = "ftrl-build"

#: Errors a generator raises for one environment it could not build; anything else is a bug.
GenerationFailure = (ValueError, ValidationError)


@dataclass
class BuildReport:
    generator: str
    seed: int
    requested: int
    attempted: int = 0
    written: int = 0
    train: int = 0
    test: int = 0
    duplicates_removed: int = 0
    left_out_for_test: int = 0
    shared_entities_between_splits: int = 0
    seconds: float = 0.0
    scenario_types: dict[str, int] = field(default_factory=dict)
    domains: dict[str, int] = field(default_factory=dict)
    scaling_operations: dict[str, int] = field(default_factory=dict)
    tools_per_environment: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    oracle_solve_rate: float = 0.0

    def to_markdown(self) -> str:
        def table(title: str, counts: dict[str, int]) -> list[str]:
            rows = [f"| {key} | {value} |" for key, value in counts.items()] or ["| (none) | 0 |"]
            return [f"### {title}", "", "| value | environments |", "| --- | --- |", *rows, ""]

        lines = [
            f"# Environment build: {self.generator} generator, seed {self.seed}",
            "",
            f"- written: {self.written} (train {self.train}, test {self.test}) of {self.requested} requested",
            f"- attempted: {self.attempted}; duplicates removed: {self.duplicates_removed}",
            f"- left out, sharing an entity with a test environment: {self.left_out_for_test}",
            f"- entities shared between train and test: {self.shared_entities_between_splits}",
            f"- oracle solve rate of written environments: {self.oracle_solve_rate:.3f}",
            f"- time: {self.seconds:.1f} s",
            "",
        ]
        lines += table("Scenario types", self.scenario_types)
        lines += table("Domains", self.domains)
        lines += table("Scaling operations", self.scaling_operations)
        lines += table("Tools per environment", self.tools_per_environment)
        lines += table("Rejections by reason", self.rejected)
        return "\n".join(lines)


def plan_requests(
    seed: int,
    start: int = 0,
    scaling_ops: Sequence[ScalingOp] = SCALING_OPS,
    domains: Sequence[str] | None = None,
) -> Iterator[tuple[ScenarioRequest, tuple[ScalingOp, ...]]]:
    """Endless, seeded requests: scenario types in rotation, a random non-empty set of `scaling_ops`,
    and, when `domains` are named, one of them at random (else the generator picks any)."""
    if not scaling_ops:
        raise ValueError("scaling_ops: name at least one scaling operation")
    ops = tuple(op for op in SCALING_OPS if op in scaling_ops)  # the stages' order, whatever the caller's
    index = start
    while True:
        rng = random.Random(f"{seed}/{index}")
        operations = tuple(op for op in ops if rng.random() < 0.5) or (rng.choice(ops),)
        scenario_type = SCENARIO_TYPES[index % len(SCENARIO_TYPES)]
        domain = rng.choice(list(domains)) if domains else None
        yield ScenarioRequest(scenario_type=scenario_type, seed=seed, index=index, domain=domain), operations
        index += 1


def entities_of(row: EnvRow) -> set[str]:
    return {entity for sub in row.meta_dict().get("sub_questions", []) for entity in sub.get("entities", [])}


@dataclass(frozen=True)
class Split:
    """Row indices of each split, and of the rows left out of both to keep them apart."""

    train: list[int]
    test: list[int]
    left_out: list[int]


def split_without_leakage(rows: Sequence[EnvRow], test_fraction: float, seed: int) -> Split:
    """Split `rows` so that no entity appears on both sides and test has the rows' scenario mix.

    Test takes `round(test_fraction * n)` rows of each kind with n rows, a kind being the scenario
    type (`meta.scenario`) and whether the row names an entity at all (a unit conversion does not).
    A row taken for test takes its entities with it: every other row naming one of them can no
    longer be in train, and is left out unless it is taken for test too.

    Keeping whole connected components together (the obvious alternative) fails on generated data:
    entities recur, one component holds most rows, and the few small ones are mostly single-hop
    questions without entities, so the test split showed little multi-hop and few entity lookups.
    Taking rows instead costs train rows, so rows are taken cheapest first: in a seeded order, a
    pass takes the rows that leave out at most `budget` more rows, and the budget grows only while
    a kind's quota is unmet. Within a budget the order is random, so the test split is not made of
    the rows with the rarest entities only.
    """
    entities = [entities_of(row) for row in rows]
    kinds = [
        (str(row.meta_dict().get("scenario") or "unknown"), bool(names))
        for row, names in zip(rows, entities, strict=True)
    ]
    naming: dict[str, set[int]] = {}
    for index, names in enumerate(entities):
        for name in names:
            naming.setdefault(name, set()).add(index)
    quota = {kind: round(test_fraction * count) for kind, count in Counter(kinds).items()}
    order = sorted(range(len(rows)), key=lambda index: rows[index].env_id)
    random.Random(seed).shuffle(order)
    taken: Counter[tuple[str, bool]] = Counter()
    test: set[int] = set()
    left_out: set[int] = set()
    budget = 0
    while any(taken[kind] < wanted for kind, wanted in quota.items()):
        cheapest_refused: int | None = None
        for index in order:
            if index in test or taken[kinds[index]] >= quota[kinds[index]]:
                continue
            cost = {other for name in entities[index] for other in naming[name]} - test - left_out
            cost.discard(index)
            if len(cost) > budget:
                cheapest_refused = min(len(cost), cheapest_refused or len(cost))
                continue
            test.add(index)
            left_out.discard(index)
            left_out |= cost
            taken[kinds[index]] += 1
        if cheapest_refused is None:
            break  # every row of an unmet kind is already in test
        budget = cheapest_refused
    return Split(
        train=[index for index in range(len(rows)) if index not in test and index not in left_out],
        test=sorted(test),
        left_out=sorted(left_out),
    )


def shared_entities(train: Sequence[EnvRow], test: Sequence[EnvRow]) -> int:
    left = set().union(*(entities_of(row) for row in train)) if train else set()
    right = set().union(*(entities_of(row) for row in test)) if test else set()
    return len(left & right)


def build_environments(
    generator: Generator,
    count: int,
    seed: int,
    out_dir: str | Path,
    verifier: Verifier,
    *,
    test_fraction: float = 0.1,
    batch: int = 256,
    max_attempts: int | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    scaling_ops: Sequence[ScalingOp] = SCALING_OPS,
    domains: Sequence[str] | None = None,
) -> BuildReport:
    """Build until `count` verified, distinct environments exist (or `max_attempts`, default 3×count).

    Each environment gets a random non-empty subset of `scaling_ops` (all four by default; a small
    model's demo may keep to the ones that leave prompts short).

    `workers` threads run the stages of a round concurrently: worth it for the llm generator, whose
    stages wait on a model endpoint; the template generator is CPU-bound and needs one.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    started = time.perf_counter()
    out_dir = Path(out_dir)
    limit = max_attempts if max_attempts is not None else 3 * count
    report = BuildReport(generator=generator.name, seed=seed, requested=count)
    rejected: Counter[str] = Counter()
    kept: list[EnvRow] = []
    seen_ids: set[str] = set()
    seen_questions: set[str] = set()
    solve_rates: list[float] = []
    requests = plan_requests(seed, scaling_ops=scaling_ops, domains=domains)
    data_source = f"{DATA_SOURCE_PREFIX}/{generator.name}"
    with ThreadPoolExecutor(max_workers=workers) as threads:
        while len(kept) < count and report.attempted < limit:
            wanted = min(batch, count - len(kept), limit - report.attempted)
            round_ = [next(requests) for _ in range(wanted)]
            report.attempted += len(round_)
            built = threads.map(lambda item: _generate(generator, item[0], item[1], data_source), round_)
            candidates: list[EnvRow] = []
            for outcome in built:
                if isinstance(outcome, str):
                    rejected[outcome] += 1
                    continue
                question = outcome.messages[0]["content"].strip().lower()
                if outcome.env_id in seen_ids or question in seen_questions:
                    report.duplicates_removed += 1
                    continue
                seen_ids.add(outcome.env_id)
                seen_questions.add(question)
                candidates.append(outcome)
            for row, verdict in zip(candidates, verifier.verify(candidates), strict=True):
                if verdict.valid:
                    kept.append(row)
                    solve_rates.append(
                        verdict.oracle_solve_rate if verdict.oracle_solve_rate is not None else 1.0
                    )
                else:
                    rejected[verdict.reason or "invalid"] += 1
            if progress is not None:
                progress(len(kept), count)

    split = split_without_leakage(kept, test_fraction, seed)
    train = [_with_split(kept[i], "train") for i in split.train]
    test = [_with_split(kept[i], "test") for i in split.test]
    write_rows(out_dir / "train.jsonl", train)
    write_rows(out_dir / "test.jsonl", test)

    report.written, report.train, report.test = len(train) + len(test), len(train), len(test)
    report.left_out_for_test = len(split.left_out)
    report.shared_entities_between_splits = shared_entities(train, test)
    report.rejected = dict(sorted(rejected.items()))
    written = [solve_rates[i] for i in (*split.train, *split.test)]
    report.oracle_solve_rate = sum(written) / len(written) if written else 0.0
    _count_shapes(report, [*train, *test])
    report.seconds = time.perf_counter() - started
    atomic_write_text(out_dir / "report.json", json.dumps(asdict(report), indent=2, ensure_ascii=False))
    atomic_write_text(out_dir / "report.md", report.to_markdown())
    return report


def _generate(
    generator: Generator, request: ScenarioRequest, operations: tuple[ScalingOp, ...], data_source: str
) -> EnvRow | str:
    """One environment row, or the reason it could not be built (a stage's own reason if it gives one)."""
    try:
        return to_env_row(run_stages(generator, request, operations), split="train", data_source=data_source)
    except GenerationFailure as exc:
        stage, reason = getattr(exc, "stage", None), getattr(exc, "reason", None)
        return f"{stage}: {reason}" if stage and reason else f"generation: {type(exc).__name__}"


def _with_split(row: EnvRow, split: str) -> EnvRow:
    fields: dict[str, Any] = row.model_dump()
    fields["split"] = split
    return EnvRow(**fields)


def _count_shapes(report: BuildReport, rows: Sequence[EnvRow]) -> None:
    scenarios: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    operations: Counter[str] = Counter()
    tools: Counter[str] = Counter()
    for row in rows:
        meta = row.meta_dict()
        scenarios[meta.get("scenario", "?")] += 1
        domains[meta.get("domain", "?")] += 1
        for op in {record["op"] for record in meta.get("scaling", [])}:
            operations[op] += 1
        tools[str(len(row.tool_names()))] += 1
    report.scenario_types = dict(sorted(scenarios.items()))
    report.domains = dict(sorted(domains.items()))
    report.scaling_operations = dict(sorted(operations.items()))
    report.tools_per_environment = dict(sorted(tools.items(), key=lambda item: int(item[0])))
