"""The golden check of stateful domains: the airline domain's 50 tasks, and a domain of another shape."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from envs.golden import check_golden, said
from envs.sandbox import SandboxPool
from envs.tau_bench import DomainError
from support.verification import write_library_domain


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2) as pool:
        yield pool


def test_every_airline_golden_solution_passes(pool: SandboxPool, tau_airline_dir: Path) -> None:
    report = check_golden(tau_airline_dir, tau_airline_dir / "tasks.jsonl", pool)
    assert report.to_json() == {
        "domain": "airline",
        "tasks": 50,
        "passed": 50,
        # 30 tasks' golden actions change the database; task 44 only reads but must say "4".
        "empty_run_failed": 31,
        # Tasks 2, 8 and 9 must say sums the agent works out; only task 44's "4" is in a tool reply.
        "with_outputs": 4,
        "outputs_in_tool_results": 1,
        "failures": [],
    }


def test_any_domain_of_that_shape(pool: SandboxPool, tmp_path: Path) -> None:
    domain, tasks = write_library_domain(tmp_path)
    report = check_golden(domain, tasks, pool, workers=3)
    assert report.to_json() == {
        "domain": "library",
        "tasks": 5,
        "passed": 3,
        "empty_run_failed": 3,  # tasks 0 and 4 write, task 2 must say "Dune"
        "with_outputs": 1,
        "outputs_in_tool_results": 1,
        "failures": [
            {"index": 3, "reason": "golden action 0 (borrow) failed: Error: no book 'zz'"},
            {"index": 4, "reason": "the agent run's database differs from the golden database"},
        ],
    }


def test_tasks_must_name_the_domains_tools(pool: SandboxPool, tmp_path: Path) -> None:
    domain, tasks = write_library_domain(tmp_path)
    tasks.write_text('{"instruction": "x", "actions": [{"name": "fly", "arguments": {}}]}\n')
    with pytest.raises(DomainError) as caught:
        check_golden(domain, tasks, pool)
    assert str(caught.value) == f"{tasks}: task 0 calls unknown tool(s) fly"


def test_outputs_are_found_as_tau_bench_finds_them() -> None:
    assert said("23553", ["You saved $23,553 in total."])
    assert said("Dune", ["the book is DUNE"])
    assert not said("1,000", ["1,000"])  # τ-bench removes commas from the message only
    assert not said("4", [])
