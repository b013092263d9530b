"""The episode loop with the oracle policy: real sandbox, real matching, hand-checked trajectories."""

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from envs.episode import EpisodeRunner, EpisodeSpec, EpisodeState
from envs.examples import load_examples
from envs.sandbox import SandboxPool, canonical_digest
from envs.tau_bench import load_domain
from policies.backends import SamplingParams
from policies.oracle import OraclePlan, OraclePolicy, PlannedCall

PARAMS = SamplingParams(temperature=0.0, max_new_tokens=16)


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def examples():
    return {row.meta_dict()["scenario"]: row for row in load_examples()}


def spec(env, sample: int = 0) -> EpisodeSpec:
    return EpisodeSpec(
        key=(env.env_id, sample),
        messages=env.messages,
        tools=env.tool_schemas(),
        codes=env.codes_dict(),
        unsolved=env.unsolved(),
    )


def golden_plan(env, *, one_call_per_turn: bool) -> OraclePlan:
    calls = [PlannedCall(**sub["call"]) for sub in env.meta_dict()["sub_questions"]]
    turns = tuple((call,) for call in calls) if one_call_per_turn else (tuple(calls),)
    return OraclePlan(turns=turns, answer=f"The answer is {env.answer}.")


def test_multi_hop_episode_step_by_step(pool: SandboxPool, examples) -> None:
    env = examples["multi-hop"]
    seen: list[tuple[int, float, dict]] = []

    def record(state: EpisodeState) -> None:
        seen.append((state.turn, state.solve_rate, copy.deepcopy(state.unsolved)))

    policy = OraclePolicy({env.messages[0]["content"]: golden_plan(env, one_call_per_turn=True)})
    (state,) = EpisodeRunner(policy, PARAMS, pool, on_tool_turn=record).run([spec(env)])

    assert seen == [
        (1, 0.5, {"find_landmark_country": [], "get_currency": ["Euro"]}),
        (2, 1.0, {"find_landmark_country": [], "get_currency": []}),
    ]
    assert state.stop_reason == "answer" and state.turn == 2
    assert (state.calls, state.solved, state.total) == (2, 2, 2)
    assert state.metrics.f1 == 1.0
    roles = [m["role"] for m in state.messages]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert state.messages[1]["tool_calls"][0]["id"] == "call_0_0"
    assert state.messages[2] == {
        "role": "tool",
        "tool_call_id": "call_0_0",
        "name": "find_landmark_country",
        "content": "France",
    }
    assert state.messages[4]["content"] == "Euro"
    assert state.messages[5]["content"] == "The answer is Euro."


def test_parallel_calls_in_one_turn_and_batching(pool: SandboxPool, examples) -> None:
    envs = [examples["parallel single-hop"], examples["single-hop"]]
    plans = {env.messages[0]["content"]: golden_plan(env, one_call_per_turn=False) for env in envs}
    states = EpisodeRunner(OraclePolicy(plans), PARAMS, pool).run([spec(env) for env in envs])
    assert [(s.turn, s.calls, s.solved, s.solve_rate) for s in states] == [(1, 2, 2, 1.0), (1, 1, 1, 1.0)]
    population = json.loads(states[0].messages[2]["content"])
    assert population == {"city": "Oslo", "population": "709,000"}


def test_errors_go_back_to_the_model_and_solve_nothing(pool: SandboxPool, examples) -> None:
    env = examples["single-hop"]
    plan = OraclePlan(
        turns=((PlannedCall("get_country_capital", {"code": "FR"}),), (PlannedCall("no_such_tool", {}),)),
        answer="I could not find it.",
    )
    (state,) = EpisodeRunner(OraclePolicy({env.messages[0]["content"]: plan}), PARAMS, pool).run([spec(env)])
    assert state.messages[2]["content"].startswith("Error: TypeError")
    assert "code" in state.messages[2]["content"]
    assert state.messages[4]["content"] == "Error: unknown tool 'no_such_tool'"
    assert (state.calls, state.solved, state.solve_rate) == (2, 0, 0.0)
    assert state.metrics.f1 == 0.0


def test_turn_limit(pool: SandboxPool, examples) -> None:
    env = examples["single-hop"]
    call = PlannedCall("get_country_capital", {"iso_code": "IT"})
    plan = OraclePlan(turns=((call,),) * 5, answer="x")
    runner = EpisodeRunner(OraclePolicy({env.messages[0]["content"]: plan}), PARAMS, pool, max_turns=3)
    (state,) = runner.run([spec(env)])
    assert state.stop_reason == "max_turns" and state.turn == 3 and state.calls == 3
    with pytest.raises(ValueError, match="max_turns must be at least 1"):
        EpisodeRunner(OraclePolicy({}), PARAMS, pool, max_turns=0)


def test_a_failed_generation_ends_only_its_episode(pool: SandboxPool, examples) -> None:
    env = examples["single-hop"]
    plans = {env.messages[0]["content"]: golden_plan(env, one_call_per_turn=False)}
    stranger = EpisodeSpec(
        key=("other", 0), messages=[{"role": "user", "content": "unknown?"}], tools=[], codes={}
    )
    states = EpisodeRunner(OraclePolicy(plans), PARAMS, pool).run([stranger, spec(env)])
    assert states[0].stop_reason == "error" and "no plan" in states[0].error
    assert states[1].stop_reason == "answer" and states[1].solved == 1


def tau_spec(domain, task_index: int) -> EpisodeSpec:
    task = domain.tasks[task_index]
    return EpisodeSpec(
        key=(f"task-{task_index}", 0),
        messages=[{"role": "system", "content": domain.wiki}, {"role": "user", "content": task.instruction}],
        tools=domain.tools,
        codes=domain.codes,
        data=domain.fresh_data(),
    )


def tau_plan(domain, task_index: int) -> OraclePlan:
    task = domain.tasks[task_index]
    turns = tuple((PlannedCall(a.name, a.arguments),) for a in task.actions)
    return OraclePlan(turns=turns, answer="Done.")


def test_tau_bench_golden_cancellation_changes_the_database_exactly(
    pool: SandboxPool, tau_airline_dir: Path
) -> None:
    domain = load_domain(tau_airline_dir)
    policy = OraclePolicy({domain.tasks[1].instruction: tau_plan(domain, 1)})
    (state,) = EpisodeRunner(policy, PARAMS, pool).run([tau_spec(domain, 1)])

    expected = domain.fresh_data()  # task 1: cancel reservation Z7GOZK, refunding every payment
    reservation = expected["reservations"]["Z7GOZK"]
    reservation["payment_history"] += [
        {"payment_id": p["payment_id"], "amount": -p["amount"]} for p in list(reservation["payment_history"])
    ]
    reservation["status"] = "cancelled"
    assert state.stop_reason == "answer" and state.calls == 1
    assert json.loads(state.messages[3]["content"])["status"] == "cancelled"
    assert state.final_data == expected
    assert state.state_digest == canonical_digest(expected)


def test_tau_bench_loop_equals_direct_replay(pool: SandboxPool, tau_airline_dir: Path) -> None:
    domain = load_domain(tau_airline_dir)
    indices = [3, 8]  # flight+baggage change; cancel then re-book
    policy = OraclePolicy({domain.tasks[i].instruction: tau_plan(domain, i) for i in indices})
    states = EpisodeRunner(policy, PARAMS, pool).run([tau_spec(domain, i) for i in indices])
    for index, state in zip(indices, states, strict=True):
        with pool.session(domain.codes, domain.fresh_data()) as session:
            results = [session.call(a.name, a.arguments) for a in domain.tasks[index].actions]
            assert all(r.ok and not r.content.startswith("Error") for r in results)
            assert state.state_digest == session.digest()
        assert state.state_digest != canonical_digest(domain.fresh_data())
