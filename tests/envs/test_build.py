"""`build_environments` with the template generator: verified, deduplicated, leakage-free, reproducible."""

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
    assert report.written + report.left_out_for_test == 120
    assert report.written == len(train) + len(test)
    assert (report.train, report.test) == (len(train), len(test))
    assert {row.split for row in train} == {"train"} and {r.split for r in test} == {"test"}
    # 30 of each type were built, so test holds about 6 of each (a fifth, rounded per kind)
    test_types = Counter(row.meta_dict()["scenario"] for row in test)
    assert set(test_types) == set(SCENARIO_TYPES) and all(4 <= n <= 8 for n in test_types.values())
    assert report.oracle_solve_rate == 1.0
    assert set(report.scenario_types) == set(SCENARIO_TYPES)
    assert set(report.scaling_operations) == set(SCALING_OPS)
    assert sum(report.tools_per_environment.values()) == report.written
    saved = json.loads((out / "report.json").read_text())
    assert saved["written"] == report.written and saved["rejected"] == report.rejected
    markdown = (out / "report.md").read_text()
    assert "### Scenario types" in markdown and "| parallel multi-hop |" in markdown
    assert f"sharing an entity with a test environment: {report.left_out_for_test}" in markdown


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


class _Row:
    """What `split_without_leakage` reads of an environment: its id, scenario type and entities."""

    def __init__(self, env_id: str, scenario: str, entities: list[str]) -> None:
        self.env_id = env_id
        self._meta = {"scenario": scenario, "sub_questions": [{"entities": entities}]}

    def meta_dict(self) -> dict:
        return self._meta


def test_the_split_takes_cheap_rows_per_kind_and_leaves_out_those_that_would_leak() -> None:
    rows = [
        _Row("a", "single-hop", ["x"]),  # leaves out b
        _Row("b", "single-hop", ["x", "y"]),  # leaves out a and c: dearer
        _Row("c", "multi-hop", ["y"]),  # leaves out b
        _Row("d", "multi-hop", ["z"]),  # leaves out nothing
        _Row("e", "single-hop", []),  # no entity: a kind of its own, free
        _Row("f", "single-hop", []),
    ]
    for seed in range(5):
        split = split_without_leakage(rows, 0.5, seed)  # one row of each of the three kinds
        assert {0, 3} < set(split.test) and len(split.test) == 3 and split.left_out == [1]
        assert 2 in split.train and len({4, 5} & set(split.test)) == 1


@st.composite
def _random_rows(draw: st.DrawFn) -> list[_Row]:
    count = draw(st.integers(1, 40))
    return [
        _Row(
            f"env-{index}",
            draw(st.sampled_from(SCENARIO_TYPES)),
            draw(st.lists(st.sampled_from("abcdefghijkl"), max_size=3, unique=True)),
        )
        for index in range(count)
    ]


@settings(max_examples=200, deadline=None)
@given(_random_rows(), st.floats(0.0, 0.9), st.integers(0, 3))
def test_split_properties(rows: list[_Row], fraction: float, seed: int) -> None:
    split = split_without_leakage(rows, fraction, seed)
    every = [*split.train, *split.test, *split.left_out]
    assert sorted(every) == list(range(len(rows)))  # each row in exactly one place
    train = set().union(*(entities_of(rows[i]) for i in split.train))
    test = set().union(*(entities_of(rows[i]) for i in split.test))
    assert not train & test
    kinds = [(row.meta_dict()["scenario"], bool(entities_of(row))) for row in rows]
    for kind, count in Counter(kinds).items():  # every kind gets exactly its share
        assert sum(kinds[i] == kind for i in split.test) == round(fraction * count)
    shuffled = split_without_leakage(list(reversed(rows)), fraction, seed)  # the order rows came in
    assert sorted(rows[i].env_id for i in split.test) == sorted(
        rows[len(rows) - 1 - i].env_id for i in shuffled.test
    )


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
