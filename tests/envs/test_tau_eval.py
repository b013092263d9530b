"""τ-bench evaluation against a real loopback chat-completions server that plays both parties.

The server answers model "agent" by replaying a scripted plan per task (by default the task's
golden actions as OpenAI tool calls, one per turn, then a message carrying the task's outputs), and
model "user" by sending the instruction first, then `###STOP###` once the agent asks whether there
is anything else. Everything between them is real: the OpenAI backend over HTTP, the sandboxed
airline database, the golden replay and the digests.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from envs.evaluation.tau_eval import (
    EPISODES_FILE,
    SUMMARY_FILE,
    TauEpisode,
    TauReport,
    evaluate_tau,
    grade_episode,
    pass_hat,
)
from envs.evaluation.user_simulator import GREETING, UserSimulator, load_user_prompt
from envs.jsonl import iter_rows
from envs.sampling import ResumeMismatch
from envs.sandbox import SandboxPool, canonical_digest
from envs.tau_bench import DomainError, DomainTask, load_domain, load_tasks
from policies.backends import Conversation, Generation, GenerationBackend, SamplingParams, load_backend
from policies.backends.openai_backend import OpenAIBackend
from policies.types import ParsedTurn

AGENT_PARAMS = SamplingParams(temperature=0.0, max_new_tokens=256, seed=1)
USER_PARAMS = SamplingParams(temperature=0.5, max_new_tokens=64, seed=2)
CLOSING = "Is there anything else I can help you with?"
GO_ON = "Yes, please go ahead."
STOP = "###STOP###"

Step = tuple[str, Any]  # ("call", (name, arguments)) or ("say", text)


# --- the loopback server ----------------------------------------------------------------------


def golden_steps(task: DomainTask, said: str | None = None) -> list[Step]:
    closing = said if said is not None else f"Done: {', '.join(task.outputs) or 'all set'}."
    return [("call", (a.name, a.arguments)) for a in task.actions] + [("say", f"{closing} {CLOSING}")]


@dataclass
class Scenario:
    """What the server plays. A task's n-th episode (in the order its first agent request arrives)
    plays `plans[task][n]` (the last plan once they run out); the default plan is the golden one."""

    tasks: Sequence[DomainTask]
    plans: dict[int, list[list[Step]]] = field(default_factory=dict)
    failing_agent: set[int] = field(default_factory=set)  # tasks whose agent requests get HTTP 500
    faults: dict[int, deque[str]] = field(default_factory=dict)  # one-off "500" or "stall" per request
    requests: Counter = field(default_factory=Counter)  # (model, task) -> requests
    started: Counter = field(default_factory=Counter)  # task -> episodes begun
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def task_of(self, text: str, exact: bool) -> int:
        found = [
            i for i, t in enumerate(self.tasks) if (t.instruction == text if exact else t.instruction in text)
        ]
        assert len(found) == 1, f"cannot tell the task of {text[:80]!r}"
        return found[0]

    def plan(self, task: int, number: int) -> list[Step]:
        plans = self.plans.get(task) or [golden_steps(self.tasks[task])]
        return plans[min(number, len(plans) - 1)]


def agent_reply(scenario: Scenario, messages: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    instruction = next(m["content"] for m in messages if m["role"] == "user")
    task = scenario.task_of(instruction, exact=True)
    assistant = [m for m in messages if m["role"] == "assistant"]
    if not assistant:
        with scenario.lock:
            number = scenario.started[task]
            scenario.started[task] += 1
    else:  # which plan this episode plays is written beside its tool calls (a plan of messages is plan 0)
        marks = [m["content"] for m in assistant if m.get("tool_calls")]
        number = int(marks[0].removeprefix("[plan ").removesuffix("]")) if marks else 0
    steps = scenario.plan(task, number)
    kind, value = steps[min(len(assistant), len(steps) - 1)]
    if kind == "say":
        return task, {"content": value}
    name, arguments = value
    call = {
        "id": f"c{len(assistant)}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }
    return task, {"content": f"[plan {number}]", "tool_calls": [call]}


def user_reply(scenario: Scenario, messages: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    task = scenario.task_of(messages[0]["content"], exact=False)
    if len(messages) == 2:  # the system prompt and the agent's greeting
        assert messages[1] == {"role": "user", "content": GREETING}
        return task, {"content": scenario.tasks[task].instruction}
    return task, {"content": STOP if CLOSING in messages[-1]["content"] else GO_ON}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    scenario: Scenario

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        scenario = self.scenario
        play = agent_reply if body["model"] == "agent" else user_reply
        task, message = play(scenario, body["messages"])
        agent = body["model"] == "agent"
        with scenario.lock:
            scenario.requests[(body["model"], task)] += 1
            fault = scenario.faults[task].popleft() if agent and scenario.faults.get(task) else None
        if agent and (task in scenario.failing_agent or fault == "500"):
            self.send(500, b'{"error": {"message": "upstream model crashed"}}')
            return
        if fault == "stall":
            scenario.release.wait(5)
            self.close_connection = True
            return
        choice = {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
        self.send(200, json.dumps({"choices": [choice], "usage": usage}).encode())

    def send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Served:
    scenario: Scenario
    base_url: str


@pytest.fixture(scope="module")
def airline(tau_airline_dir: Path):
    return load_domain(tau_airline_dir)


@pytest.fixture
def served(airline) -> Iterator[Served]:
    scenario = Scenario(tasks=airline.tasks)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("PlayHandler", (Handler,), {"scenario": scenario}))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Served(scenario, f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    finally:
        scenario.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=1) as pool:
        yield pool


class Counting(GenerationBackend):
    """Delegates to a backend and records each batch's size."""

    def __init__(self, inner: GenerationBackend) -> None:
        self.inner, self.name, self.batches = inner, inner.name, []

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        self.batches.append(len(conversations))
        return self.inner.generate(conversations, params)


def backends(served: Served, **agent_options: Any) -> tuple[Counting, Counting]:
    if agent_options:
        agent = OpenAIBackend(served.base_url, "agent", **agent_options)
    else:
        agent = load_backend("openai", "agent", base_url=served.base_url)
    return Counting(agent), Counting(load_backend("openai", "user", base_url=served.base_url))


def evaluate(
    served: Served, pool: SandboxPool, domain_dir: Path, out: Path, tasks: list[int], **options: Any
) -> tuple[TauReport, dict[tuple[int, int], TauEpisode]]:
    agent_options = options.pop("agent_options", {})
    agent, user = options.pop("backends", None) or backends(served, **agent_options)
    report = evaluate_tau(
        domain_dir,
        None,
        agent,
        AGENT_PARAMS,
        user,
        USER_PARAMS,
        pool,
        out_dir=out,
        task_indices=tasks,
        **options,
    )
    rows = {(row.task_index, row.trial): row for row in iter_rows(out / EPISODES_FILE, TauEpisode)}
    return report, rows


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / SUMMARY_FILE).read_text())


# --- golden replays pass, wrong actions fail ---------------------------------------------------


def test_golden_replay_scores_pass1_of_one_with_batched_turns(
    served: Served, pool: SandboxPool, tau_airline_dir: Path, airline, tmp_path: Path
) -> None:
    # 1: cancel; 2: five flight changes, output "23553"; 3: flight + baggage change; 44: reads, output "4"
    served.scenario.plans[2] = [golden_steps(airline.tasks[2], said="You save $23,553 in total.")]
    agent, user = backends(served)
    report, rows = evaluate(served, pool, tau_airline_dir, tmp_path, [1, 2, 3, 44], backends=(agent, user))

    assert report.pass_hat == {"pass^1": 1.0} and report.pass_1 == 1.0
    assert (report.tasks, report.trials, report.episodes, report.failed_episodes, report.new_episodes) == (
        4,
        1,
        4,
        0,
        4,
    )
    assert summary(tmp_path) == {
        "benchmark": "tau-bench",
        "domain": "airline",
        "tasks": 4,
        "trials": 1,
        "episodes": 4,
        "pass^1": 1.0,
        "failed_episodes": 0,
        "stop_reasons": {"user_stop": 4},
        "failures": [],
    }
    # One generation call per side per round, over every episode waiting on that side.
    assert user.batches == [4, 1, 2, 1]
    assert agent.batches == [4, 4, 3, 1, 1, 1]
    assert {key: row.turns for key, row in rows.items()} == {(1, 0): 2, (2, 0): 6, (3, 0): 3, (44, 0): 3}
    assert rows[(2, 0)].outputs == {"23553": True} and rows[(44, 0)].outputs == {"4": True}

    expected = airline.fresh_data()  # task 1 cancels Z7GOZK and refunds every payment
    reservation = expected["reservations"]["Z7GOZK"]
    reservation["payment_history"] += [
        {"payment_id": p["payment_id"], "amount": -p["amount"]} for p in list(reservation["payment_history"])
    ]
    reservation["status"] = "cancelled"
    cancel = rows[(1, 0)]
    assert cancel.digest == cancel.golden_digest == canonical_digest(expected)
    assert [(m["role"], m["content"]) for m in cancel.messages] == [
        ("system", airline.wiki),
        ("user", airline.tasks[1].instruction),
        ("assistant", "[plan 0]"),
        ("tool", cancel.messages[3]["content"]),
        ("assistant", f"Done: all set. {CLOSING}"),
        ("user", STOP),
    ]
    assert json.loads(cancel.messages[3]["content"])["status"] == "cancelled"
    assert cancel.messages[2]["tool_calls"][0]["function"]["name"] == "cancel_reservation"
    assert (cancel.reward, cancel.failed, cancel.stop_reason, cancel.reasons) == (1.0, False, "user_stop", [])
    assert cancel.agent_tokens.model_dump() == {"prompt": 20, "completion": 6}
    assert cancel.user_tokens.model_dump() == {"prompt": 20, "completion": 6}


def test_a_wrong_action_or_a_missing_output_scores_zero(
    served: Served, pool: SandboxPool, tau_airline_dir: Path, airline, tmp_path: Path
) -> None:
    wrong = [("call", ("cancel_reservation", {"reservation_id": "XEWRD9"})), ("say", f"Cancelled. {CLOSING}")]
    served.scenario.plans[1] = [wrong]
    served.scenario.plans[44] = [golden_steps(airline.tasks[44], said="You may take several suitcases.")]
    report, rows = evaluate(served, pool, tau_airline_dir, tmp_path, [1, 44])

    assert report.pass_1 == 0.0 and report.failed_episodes == 0
    assert rows[(1, 0)].reasons == ["the final database differs from the one the golden actions produce"]
    assert rows[(1, 0)].db_match is False and rows[(1, 0)].digest != rows[(1, 0)].golden_digest
    assert rows[(44, 0)].reasons == ["required output '4' is in none of the agent's messages"]
    assert rows[(44, 0)].db_match is True and rows[(44, 0)].outputs == {"4": False}


# --- failures are retried, then recorded -----------------------------------------------------


def test_a_failing_endpoint_is_retried_then_the_episode_is_recorded_failed(
    served: Served, pool: SandboxPool, tau_airline_dir: Path, tmp_path: Path
) -> None:
    scenario = served.scenario
    scenario.failing_agent = {39}
    scenario.faults[1] = deque(["500", "stall"])  # task 1: its first request fails twice, then succeeds
    options = {"max_retries": 2, "timeout_s": 0.5, "backoff_base_s": 0.001, "backoff_cap_s": 0.002}
    report, rows = evaluate(served, pool, tau_airline_dir, tmp_path, [1, 39], agent_options=options)

    assert rows[(1, 0)].reward == 1.0  # retried through the 500 and the time-out
    assert scenario.requests[("agent", 1)] == 4  # 2 turns + 2 retries
    failed = rows[(39, 0)]
    assert scenario.requests[("agent", 39)] == 3  # the first attempt and 2 retries
    assert (failed.failed, failed.reward, failed.stop_reason, failed.turns) == (True, 0.0, "error", 0)
    assert failed.error.startswith(f"agent: POST {served.base_url}/chat/completions: HTTP 500")
    assert failed.error.endswith("upstream model crashed (gave up after 3 attempts)")
    assert failed.reasons == [f"the episode failed: {failed.error}"]
    assert report.pass_1 == 0.5 and report.failed_episodes == 1
    assert report.failures == ((39, 0, failed.error),)
    assert summary(tmp_path)["failed_episodes"] == 1
    assert summary(tmp_path)["failures"] == [{"task_index": 39, "trial": 0, "error": failed.error}]
    assert summary(tmp_path)["stop_reasons"] == {"error": 1, "user_stop": 1}

    # Resuming plays nothing; asking to retry failures plays only the failed episode again.
    scenario.failing_agent.clear()
    before = sum(scenario.requests.values())
    assert evaluate(served, pool, tau_airline_dir, tmp_path, [1, 39])[0] == replace(report, new_episodes=0)
    assert sum(scenario.requests.values()) == before
    retried, rows = evaluate(served, pool, tau_airline_dir, tmp_path, [1, 39], retry_failed=True)
    assert (retried.pass_1, retried.failed_episodes, retried.new_episodes) == (1.0, 0, 1)
    assert len((tmp_path / EPISODES_FILE).read_text().splitlines()) == 3


def test_a_broken_sandbox_fails_the_episode_in_any_domain_of_the_shape(
    served: Served, pool: SandboxPool, tmp_path: Path
) -> None:
    domain = tmp_path / "shop"
    domain.mkdir()
    tool = {"type": "function", "function": {"name": "add_item", "parameters": {"type": "object"}}}
    crash = {"type": "function", "function": {"name": "crash", "parameters": {"type": "object"}}}
    (domain / "tools.json").write_text(json.dumps([tool, crash]))
    (domain / "codes.json").write_text(
        json.dumps(
            {
                "add_item": "def add_item(data, name):\n"
                "    data['stock'][name] = data['stock'].get(name, 0) + 1\n"
                "    return 'added'\n",
                "crash": "def crash(data):\n    import os\n    os._exit(3)\n",
            }
        )
    )
    (domain / "stock.json").write_text("{}")
    (domain / "wiki.md").write_text("You run a shop.")
    add = {"function": {"name": "add_item", "arguments": json.dumps({"name": "apple"})}}
    (domain / "tasks.jsonl").write_text(
        json.dumps({"instruction": "Add an apple.", "actions": [add]})
        + "\n"
        + json.dumps({"instruction": "Break the shop.", "actions": []})
        + "\n"
    )
    served.scenario.tasks = load_tasks(domain / "tasks.jsonl")
    served.scenario.plans[1] = [[("call", ("crash", {})), ("say", f"Done. {CLOSING}")]]
    report, rows = evaluate(served, pool, domain, tmp_path / "out", [0, 1])

    assert rows[(0, 0)].reward == 1.0 and rows[(0, 0)].messages[0] == {
        "role": "system",
        "content": "You run a shop.",
    }
    broken = rows[(1, 0)]
    assert broken.failed and broken.stop_reason == "error" and broken.digest is None
    assert broken.error.startswith("sandbox: the episode's database broke during 'crash': ")
    assert (report.pass_1, report.failed_episodes) == (0.5, 1)


# --- how episodes end ------------------------------------------------------------------------


def test_a_transfer_to_a_human_agent_ends_the_episode(
    served: Served, pool: SandboxPool, tau_airline_dir: Path, tmp_path: Path
) -> None:
    transfer = ("call", ("transfer_to_human_agents", {"summary": "The user wants a cancellation."}))
    served.scenario.plans[1] = [[transfer, ("say", "never said")]]
    report, rows = evaluate(served, pool, tau_airline_dir, tmp_path, [13, 1])

    golden = rows[(13, 0)]  # task 13's golden solution is the transfer itself
    assert (golden.stop_reason, golden.turns, golden.reward) == ("transfer", 1, 1.0)
    assert golden.messages[-1]["role"] == "tool" and golden.messages[-1]["content"] == "Transfer successful"
    assert served.scenario.requests[("agent", 13)] == 1 and served.scenario.requests[("user", 13)] == 1
    early = rows[(1, 0)]  # transferring instead of cancelling leaves the database as it was
    assert (early.stop_reason, early.reward) == ("transfer", 0.0)
    assert early.reasons == ["the final database differs from the one the golden actions produce"]
    assert report.pass_1 == 0.5


def test_the_turn_limit_ends_the_episode_with_reward_zero(
    served: Served, pool: SandboxPool, tau_airline_dir: Path, airline, tmp_path: Path
) -> None:
    # Tasks 39 and 41 only read, so the database matches the golden one: only the limit fails them.
    lookup = ("call", ("get_reservation_details", {"reservation_id": "Z7GOZK"}))
    served.scenario.plans[39] = [[lookup] * 10]
    served.scenario.plans[41] = [[("say", "Could you confirm your reservation id?")]]
    report, rows = evaluate(served, pool, tau_airline_dir, tmp_path, [39, 41], max_turns=3)

    limit = ["the turn limit was reached before the user ended the conversation"]
    calls, talk = rows[(39, 0)], rows[(41, 0)]
    assert (calls.stop_reason, calls.turns, calls.reasons, calls.db_match) == ("max_turns", 3, limit, True)
    assert served.scenario.requests[("agent", 39)] == 3
    assert (talk.stop_reason, talk.turns, talk.reasons) == ("max_turns", 3, limit)
    assert [m["role"] for m in talk.messages[1:]] == ["user"] + [
        "assistant",
        "user",
    ] * 3  # the user answers last
    assert talk.messages[-1]["content"] == GO_ON
    assert report.pass_1 == 0.0 and summary(tmp_path)["stop_reasons"] == {"max_turns": 2}


# --- pass^k and resuming ---------------------------------------------------------------------


def test_pass_hat_over_two_trials_matches_the_hand_count(
    served: Served, pool: SandboxPool, tau_airline_dir: Path, airline, tmp_path: Path
) -> None:
    wrong = [("call", ("cancel_reservation", {"reservation_id": "XEWRD9"})), ("say", f"Done. {CLOSING}")]
    served.scenario.plans[44] = [
        golden_steps(airline.tasks[44]),
        golden_steps(airline.tasks[44], said="Several."),
    ]
    served.scenario.plans[3] = [wrong]
    report, rows = evaluate(served, pool, tau_airline_dir, tmp_path, [1, 44, 3], trials=2)

    # Passing trials per task: 1 -> 2 of 2, 44 -> 1 of 2, 3 -> 0 of 2.
    # pass^1 = (2/2 + 1/2 + 0/2) / 3 = 0.5; pass^2 = (C(2,2) + C(1,2) + C(0,2)) / C(2,2) / 3 = 1/3.
    # Which trial of task 44 gets the golden plan depends on which request arrives first.
    rewards = {task: sorted(rows[(task, trial)].reward for trial in (0, 1)) for task in (1, 44, 3)}
    assert rewards == {1: [1.0, 1.0], 44: [0.0, 1.0], 3: [0.0, 0.0]}
    assert report.pass_hat == {"pass^1": 0.5, "pass^2": pytest.approx(1 / 3)}
    assert report.pass_k == pytest.approx(1 / 3)
    written = summary(tmp_path)
    assert (written["tasks"], written["trials"], written["episodes"]) == (3, 2, 6)
    assert written["pass^1"] == 0.5 and written["pass^2"] == pytest.approx(1 / 3)


def test_a_rerun_evaluates_nothing_new_and_a_torn_file_resumes(
    served: Served, pool: SandboxPool, tau_airline_dir: Path, tmp_path: Path
) -> None:
    first, rows = evaluate(served, pool, tau_airline_dir, tmp_path, [1, 44])
    requests = sum(served.scenario.requests.values())
    again, _ = evaluate(served, pool, tau_airline_dir, tmp_path, [1, 44])
    assert sum(served.scenario.requests.values()) == requests
    assert again == replace(first, new_episodes=0)

    episodes = tmp_path / EPISODES_FILE
    lines = episodes.read_bytes().splitlines(keepends=True)
    episodes.write_bytes(lines[0] + lines[1][: len(lines[1]) // 2])  # killed while writing the second
    lost = json.loads(lines[1])["task_index"]
    resumed, rows_after = evaluate(served, pool, tau_airline_dir, tmp_path, [1, 44])
    assert resumed.new_episodes == 1 and resumed.pass_hat == first.pass_hat
    assert served.scenario.started[lost] == 2 and sum(served.scenario.started.values()) == 3
    assert rows_after.keys() == rows.keys() and len(episodes.read_text().splitlines()) == 2

    with pytest.raises(ResumeMismatch, match=r"max_turns: was 30, now 29"):
        evaluate(served, pool, tau_airline_dir, tmp_path, [1, 44], max_turns=29)


# --- bad input -------------------------------------------------------------------------------


def test_bad_arguments_get_one_line_reasons(
    served: Served, pool: SandboxPool, tau_airline_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"task index 50 is out of range: .*tasks.jsonl has tasks 0\.\.49"):
        evaluate(served, pool, tau_airline_dir, tmp_path, [0, 50])
    with pytest.raises(ValueError, match=r"^trials must be an integer >= 1, got 0$"):
        evaluate(served, pool, tau_airline_dir, tmp_path, [0], trials=0)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        json.dumps({"instruction": "x", "actions": [{"name": "fly_me", "arguments": {}}]}) + "\n"
    )
    agent, user = backends(served)
    with pytest.raises(DomainError, match=r"tasks.jsonl: task 0 calls tool\(s\) the domain lacks: fly_me$"):
        evaluate_tau(
            tau_airline_dir, tasks, agent, AGENT_PARAMS, user, USER_PARAMS, pool, out_dir=tmp_path / "o"
        )
    assert served.scenario.requests == Counter()


# --- grading, pass^k and the simulator's view, unit by unit -----------------------------------


def test_grading_follows_tau_bench() -> None:
    said = [
        {
            "role": "assistant",
            "content": "Checking 1,000 things",
            "tool_calls": [{"function": {"name": "f"}}],
        },
        {"role": "tool", "content": "327"},
        {"role": "user", "content": "1,786"},
        {"role": "assistant", "content": "The total is $1,786.50 and THE CODE is abc."},
    ]
    grade = grade_episode(digest="a", golden="a", outputs=["1786", "the code", "1000", "327"], messages=said)
    # Commas are removed from what the agent said and case is ignored; text beside tool calls, tool
    # output and the user's words are not what the agent said.
    assert grade.outputs == {"1786": True, "the code": True, "1000": False, "327": False}
    assert grade.reward == 0.0 and grade.db_match
    assert grade_episode(digest="a", golden="b", outputs=[], messages=said).reasons == (
        "the final database differs from the one the golden actions produce",
    )
    limited = grade_episode(digest="a", golden="a", outputs=[], messages=[], hit_turn_limit=True)
    assert limited.reward == 0.0


@given(st.lists(st.integers(0, 4), min_size=1, max_size=8))
def test_pass_hat_properties(successes: list[int]) -> None:
    scores = pass_hat(successes, 4)
    assert scores["pass^1"] == pytest.approx(sum(successes) / (4 * len(successes)))
    assert all(scores[f"pass^{k}"] >= scores[f"pass^{k + 1}"] for k in range(1, 4))
    assert scores["pass^4"] == pytest.approx(successes.count(4) / len(successes))


def test_pass_hat_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match=r"successes must lie in 0\.\.2, got \[3\]"):
        pass_hat([3], 2)


class Scripted(GenerationBackend):
    name = "scripted"

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)
        self.seen: list[Conversation] = []

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        self.seen.extend(conversations)
        return [Generation(ParsedTurn(content=self.texts.pop(0)), 5, 2, "stop") for _ in conversations]


def test_the_simulator_sees_the_conversation_with_roles_flipped() -> None:
    agent_side = [
        {"role": "system", "content": "wiki"},
        {"role": "user", "content": "I want to cancel."},
        {"role": "assistant", "content": "Looking.", "tool_calls": [{"function": {"name": "get"}}]},
        {"role": "tool", "content": "{...}"},
        {"role": "assistant", "content": "Which reservation?"},
        {"role": "user", "content": "ABC123."},
        {"role": "assistant", "content": "Cancelled."},
    ]
    simulator = UserSimulator(Scripted("Thanks! ###STOP###"), USER_PARAMS, prompt="Play: {instruction}")
    conversation = simulator.conversation("cancel ABC123", agent_side, turn=2, seed=9)
    assert conversation.messages == [
        {"role": "system", "content": "Play: cancel ABC123"},
        {"role": "user", "content": GREETING},
        {"role": "assistant", "content": "I want to cancel."},
        {"role": "user", "content": "Which reservation?"},
        {"role": "assistant", "content": "ABC123."},
        {"role": "user", "content": "Cancelled."},
    ]
    assert (conversation.turn, conversation.seed, conversation.tools) == (2, 9, None)
    (turn,) = simulator.reply([conversation])
    assert (turn.text, turn.stop, turn.prompt_tokens, turn.completion_tokens) == (
        "Thanks! ###STOP###",
        True,
        5,
        2,
    )


def test_the_user_prompt_needs_its_placeholder(tmp_path: Path) -> None:
    assert "{instruction}" in load_user_prompt() and "###STOP###" in load_user_prompt()
    with pytest.raises(
        ValueError, match=r"^prompt: the user-simulator prompt has no \{instruction\} placeholder"
    ):
        UserSimulator(Scripted(), USER_PARAMS, prompt="no placeholder")
    bad = tmp_path / "user.md"
    bad.write_text("Be a user.")
    with pytest.raises(ValueError, match=re.escape(f"{bad}: the user-simulator prompt has no")):
        load_user_prompt(bad)
