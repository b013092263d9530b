"""`build_environments` with the template generator: verified, deduplicated, leakage-free, reproducible."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from envs.construction.build import build_environments, entities_of, split_without_leakage
from envs.construction.stages import SCALING_OPS, SCENARIO_TYPES
from envs.construction.template import TemplateGenerator
from envs.jsonl import iter_rows
from envs.sandbox import SandboxPool
from envs.verify import Verifier


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def built(tmp_path_factory, pool: SandboxPool):
    out = tmp_path_factory.mktemp("build")
    report = build_environments(TemplateGenerator(seed=3), 120, 3, out, Verifier(pool), test_fraction=0.2)
    return out, report


def test_counts_splits_and_report(built) -> None:
    out, report = built
    train, test = list(iter_rows(out / "train.jsonl")), list(iter_rows(out / "test.jsonl"))
    assert report.written == len(train) + len(test) == 120
    assert (report.train, report.test) == (len(train), len(test))
    assert (
        0 < len(test) <= 24
        and {row.split for row in train} == {"train"}
        and {r.split for r in test} == {"test"}
    )
    assert report.oracle_solve_rate == 1.0
    assert set(report.scenario_types) == set(SCENARIO_TYPES)
    assert set(report.scaling_operations) == set(SCALING_OPS)
    assert sum(report.tools_per_environment.values()) == 120
    saved = json.loads((out / "report.json").read_text())
    assert saved["written"] == 120 and saved["rejected"] == report.rejected
    markdown = (out / "report.md").read_text()
    assert "### Scenario types" in markdown and "| parallel multi-hop |" in markdown


def test_no_entity_is_shared_between_train_and_test(built) -> None:
    out, report = built
    train = set().union(*(entities_of(row) for row in iter_rows(out / "train.jsonl")))
    test = set().union(*(entities_of(row) for row in iter_rows(out / "test.jsonl")))
    assert train and test and not train & test
    assert report.shared_entities_between_splits == 0


def test_no_duplicate_environment_or_question(built) -> None:
    out, _ = built
    rows = [*iter_rows(out / "train.jsonl"), *iter_rows(out / "test.jsonl")]
    assert len({row.env_id for row in rows}) == len(rows)
    assert len({row.messages[0]["content"].lower() for row in rows}) == len(rows)


def test_same_seed_same_bytes(tmp_path: Path, pool: SandboxPool) -> None:
    for name in ("a", "b"):
        build_environments(TemplateGenerator(seed=5), 30, 5, tmp_path / name, Verifier(pool))
    for file in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()


def test_leakage_split_keeps_components_together() -> None:
    class Row:
        def __init__(self, env_id: str, entities: list[str]) -> None:
            self.env_id = env_id
            self._meta = {"sub_questions": [{"entities": entities}]}

        def meta_dict(self):
            return self._meta

    rows = [Row("a", ["x"]), Row("b", ["x", "y"]), Row("c", ["y"]), Row("d", ["z"]), Row("e", ["w"])]
    train, test = split_without_leakage(rows, 0.4, seed=0)  # a-b-c is one component of three
    assert sorted(train + test) == [0, 1, 2, 3, 4]
    assert set(test) <= {3, 4} and len(test) == 2


def test_bad_arguments(tmp_path: Path, pool: SandboxPool) -> None:
    with pytest.raises(ValueError, match="count must be at least 1"):
        build_environments(TemplateGenerator(seed=0), 0, 0, tmp_path, Verifier(pool))
    with pytest.raises(ValueError, match="test_fraction must be in"):
        build_environments(TemplateGenerator(seed=0), 5, 0, tmp_path, Verifier(pool), test_fraction=1.0)


def test_a_build_keeps_to_the_scaling_operations_it_is_given(tmp_path: Path, pool: SandboxPool) -> None:
    report = build_environments(
        TemplateGenerator(seed=4), 24, 4, tmp_path, Verifier(pool), scaling_ops=["toolset extension"]
    )
    assert report.scaling_operations == {"toolset extension": report.train + report.test}
    rows = [*iter_rows(tmp_path / "train.jsonl"), *iter_rows(tmp_path / "test.jsonl")]
    assert {op["op"] for row in rows for op in row.meta_dict()["scaling"]} == {"toolset extension"}


def test_the_default_scaling_operations_are_all_four_in_the_stages_order() -> None:
    from envs.construction.build import plan_requests

    every = plan_requests(9)
    named = plan_requests(9, scaling_ops=list(reversed(SCALING_OPS)))
    assert [next(every) for _ in range(50)] == [next(named) for _ in range(50)]
    with pytest.raises(ValueError, match="at least one scaling operation"):
        next(plan_requests(9, scaling_ops=[]))


def test_named_domains_start_every_scenario_there() -> None:
    from envs.construction.build import plan_requests

    requests = plan_requests(2, domains=["people", "places"])
    domains = [next(requests)[0].domain for _ in range(40)]
    assert set(domains) == {"people", "places"}
    assert {next(plan_requests(2))[0].domain} == {None}
