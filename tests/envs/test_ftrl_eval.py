"""`ftrl eval` on FTRL environments: metrics recomputed from the saved episodes, hand-worked scores from a
scripted endpoint that also fails, the oracle's perfect score, pass@k, and resuming after a kill."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from fractions import Fraction
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from envs.chunks import ResumeMismatch
from envs.evaluation.ftrl_eval import (
    FtrlEvalSettings,
    evaluate_ftrl,
    pass_at_k,
    pass_ks,
)
from envs.examples import numbered_variants
from envs.jsonl import write_rows
from envs.sandbox import SandboxPool
from envs.schema import EnvRow
from flows.cli import app
from policies.backends import SamplingParams
from policies.oracle import OraclePlan, OraclePolicy, PlannedCall
from support.http import JsonHandler
from support.processes import kill_when

REPO = Path(__file__).resolve().parents[2]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=32, seed=0)
runner = CliRunner()


def split_rows(count: int) -> list[EnvRow]:
    """`count` example environments marked as test split."""
    return [row.model_copy(update={"split": "test"}) for row in numbered_variants(count)]


def write_test_envs(path: Path, count: int) -> Path:
    write_rows(path, split_rows(count))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2) as pool:
        yield pool


def oracle_for(rows: list[EnvRow]) -> OraclePolicy:
    """Golden calls: a multi-hop chain one call per turn, independent calls all in one turn."""
    plans = {}
    for env in rows:
        meta = env.meta_dict()
        calls = [PlannedCall(**sub["call"]) for sub in meta["sub_questions"]]
        turns = tuple((c,) for c in calls) if meta["scenario"] == "multi-hop" else (tuple(calls),)
        plans[env.messages[0]["content"]] = OraclePlan(turns=turns, answer=env.answer)
    return OraclePolicy(plans)


# --- the tiny model through the command line ------------------------------------------------------


def test_tiny_model_summary_equals_a_recomputation_from_the_episodes(
    tmp_path: Path, tiny_compact_model_dir: Path
) -> None:
    data = write_test_envs(tmp_path / "test.jsonl", 6)
    out = tmp_path / "eval"
    args = ["eval", "--benchmark", "ftrl", "--data", str(data), "--model", str(tiny_compact_model_dir)]
    args += ["--out", str(out), "--max-turns", "3", "--no-progress"]
    args += ["--set", "generation.max_new_tokens=24", "--set", "sandbox.workers=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output

    summary = json.loads((out / "summary.json").read_text())
    episodes = read_jsonl(out / "episodes.jsonl")
    rows = split_rows(6)
    assert [e["env_id"] for e in episodes] == [row.env_id for row in rows]
    for episode, row in zip(episodes, rows, strict=True):
        assistant = [m for m in episode["messages"] if m["role"] == "assistant"]
        calls = sum(len(m.get("tool_calls") or []) for m in assistant)
        assert episode["calls"] == calls
        assert episode["total"] == sum(len(answers) for answers in row.unsolved().values())
        assert episode["messages"][0] == row.messages[0]
        c, s, t = episode["calls"], episode["solved"], episode["total"]
        assert episode["solve_precision"] == (s / c if c else 1.0)
        assert episode["solve_rate"] == s / t
        assert episode["solve_f1"] == 2 * s / (c + t)
        assert episode["passed"] == (s == t)
        assert episode["stop_reason"] in ("answer", "max_turns") and episode["error"] is None

    def mean(key: str, chosen: list[dict[str, Any]]) -> float:
        return sum(e[key] for e in chosen) / len(chosen)

    assert summary["tasks"] == summary["episodes"] == 6 and summary["failed_episodes"] == 0
    for key in ("solve_precision", "solve_rate", "solve_f1"):
        assert summary[key] == mean(key, episodes)
        assert 0.0 <= summary[key] <= 1.0
    assert summary["pass@1"] == mean("passed", episodes)
    for scenario in ("single-hop", "parallel single-hop", "multi-hop"):
        chosen = [e for e in episodes if e["scenario"] == scenario]
        assert summary["by_scenario"][scenario]["solve_f1"] == mean("solve_f1", chosen)
        assert summary["by_scenario"][scenario]["tasks"] == 2
    assert f"| solve_f1 | {summary['solve_f1']:.4f} |" in (out / "summary.md").read_text()
    assert f"solve_f1 {summary['solve_f1']:.4f}" in result.stdout
    assert "(0 of 1 chunks resumed" in result.stdout


# --- a scripted endpoint: hand-worked scores, retries, and an episode that fails ------------------

# Case numbers of numbered_variants(6): 0 and 3 single-hop (FR capital), 1 and 4 parallel
# (populations of Oslo and Lima), 2 and 5 multi-hop (the Louvre's country, then its currency).
CAPITAL = ("get_country_capital", {"iso_code": "FR"})
OSLO, LIMA, ROME = (("get_city_population", {"city": city}) for city in ("Oslo", "Lima", "Rome"))
LOUVRE = ("find_landmark_country", {"landmark": "the Louvre"})
SCRIPTS: dict[int, list[list[tuple[str, dict[str, Any]]] | str]] = {
    0: [[CAPITAL], "Paris."],  # 1 call, 1 of 1 solved: P 1, R 1, F1 1
    1: [[OSLO, LIMA, ROME], "709,000 and 10,092,000."],  # 3 calls, 2 of 2: P 2/3, R 1, F1 4/5
    2: [[LOUVRE], "France."],  # stops after the first hop, 1 of 2: P 1, R 1/2, F1 2/3
    3: [[CAPITAL], "Paris."],  # the endpoint fails every time: recorded failed, all metrics 0
    4: [[OSLO, LIMA], "Both."],  # one HTTP 500 first, then golden: P 1, R 1, F1 1
    5: ["I do not know."],  # no call at all: P 1 (nothing wrong called), R 0, F1 0
}
ALWAYS_FAILS, FAILS_ONCE = 3, 4


class ScriptedEndpoint(JsonHandler):
    """A chat-completions server that plays `SCRIPTS` by the case number in the question."""

    protocol_version = "HTTP/1.1"
    requests: dict[int, int]
    lock: threading.Lock

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        question = next(m["content"] for m in body["messages"] if m["role"] == "user")
        case = int(re.search(r"\(case (\d+)\)", question).group(1))
        with self.lock:
            self.requests[case] = self.requests.get(case, 0) + 1
            attempt = self.requests[case]
        if case == ALWAYS_FAILS or (case == FAILS_ONCE and attempt == 1):
            self.send_json(500, {"error": {"message": f"scripted outage for case {case}"}})
            return
        turn = SCRIPTS[case][sum(m["role"] == "assistant" for m in body["messages"])]
        if isinstance(turn, str):
            message: dict[str, Any] = {"role": "assistant", "content": turn}
        else:
            calls = [
                {"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                for i, (name, args) in enumerate(turn)
            ]
            message = {"role": "assistant", "content": None, "tool_calls": calls}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        self.send_json(200, {"choices": [choice], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})


@pytest.fixture
def endpoint() -> Iterator[tuple[str, dict[int, int]]]:
    requests: dict[int, int] = {}
    handler = type("Handler", (ScriptedEndpoint,), {"requests": requests, "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_scripted_endpoint_gives_hand_worked_scores_and_counts_the_failed_episode(
    tmp_path: Path, endpoint: tuple[str, dict[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, requests = endpoint
    monkeypatch.delenv("FTRL_TEST_NO_KEY", raising=False)
    data = write_test_envs(tmp_path / "test.jsonl", 6)
    out = tmp_path / "eval"
    args = ["eval", "--data", str(data), "--backend", "openai", "--model", "scripted", "--base-url", base_url]
    args += ["--out", str(out), "--no-progress", "--set", "generation.max_retries=1"]
    args += ["--set", "generation.api_key_env=FTRL_TEST_NO_KEY", "--set", "sandbox.workers=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output

    # Each request is retried once: case 3 fails twice and gives up, case 4 fails once and goes on.
    assert requests == {0: 2, 1: 2, 2: 2, 3: 2, 4: 3, 5: 1}
    episodes = {
        int(re.search(r"case (\d+)", e["messages"][0]["content"]).group(1)): e
        for e in read_jsonl(out / "episodes.jsonl")
    }
    expected = {  # (calls, solved, total, P, R, F1, passed, stop_reason)
        0: (1, 1, 1, 1.0, 1.0, 1.0, True, "answer"),
        1: (3, 2, 2, 2 / 3, 1.0, 4 / 5, True, "answer"),
        2: (1, 1, 2, 1.0, 1 / 2, 2 / 3, False, "answer"),
        3: (0, 0, 1, 0.0, 0.0, 0.0, False, "error"),
        4: (2, 2, 2, 1.0, 1.0, 1.0, True, "answer"),
        5: (0, 0, 2, 1.0, 0.0, 0.0, False, "answer"),
    }
    for case, values in expected.items():
        e = episodes[case]
        got = (e["calls"], e["solved"], e["total"], e["solve_precision"], e["solve_rate"], e["solve_f1"])
        assert got + (e["passed"], e["stop_reason"]) == values, case
    failed = episodes[ALWAYS_FAILS]
    assert failed["error"] == (
        f"POST {base_url}/chat/completions: HTTP 500 Internal Server Error: scripted outage for case 3 "
        "(gave up after 2 attempts)"
    )
    assert failed["messages"] == [split_rows(6)[3].messages[0]]
    assert all(episodes[case]["error"] is None for case in (0, 1, 2, 4, 5))

    summary = json.loads((out / "summary.json").read_text())
    assert (summary["tasks"], summary["episodes"], summary["failed_episodes"]) == (6, 6, 1)
    assert summary["solve_precision"] == pytest.approx(float(Fraction(7, 9)), abs=1e-15)
    assert summary["solve_rate"] == pytest.approx(float(Fraction(7, 12)), abs=1e-15)
    assert summary["solve_f1"] == pytest.approx(float(Fraction(26, 45)), abs=1e-15)
    assert summary["pass@1"] == 0.5
    by_scenario = summary["by_scenario"]
    assert by_scenario["single-hop"] == {
        "tasks": 2,
        "episodes": 2,
        "failed_episodes": 1,
        "solve_precision": 0.5,
        "solve_rate": 0.5,
        "solve_f1": 0.5,
        "pass@1": 0.5,
    }
    assert by_scenario["parallel single-hop"]["solve_f1"] == pytest.approx(0.9, abs=1e-15)
    assert by_scenario["multi-hop"]["solve_rate"] == 0.25
    assert by_scenario["multi-hop"]["solve_f1"] == pytest.approx(1 / 3, abs=1e-15)
    assert summary["failures"] == [{"env_id": failed["env_id"], "sample_index": 0, "error": failed["error"]}]
    markdown = (out / "summary.md").read_text()
    assert "6 tasks, 6 episodes, 1 failed (scored 0)." in markdown
    assert f"| {failed['env_id']} | 0 | POST {base_url}/chat/completions: HTTP 500" in markdown
    assert "(1 failed, scored 0)" in result.stdout


# --- the oracle, pass@k, resuming -------------------------------------------------------------------


def test_oracle_scores_one_on_every_metric_and_pass_at_k(tmp_path: Path, pool: SandboxPool) -> None:
    rows = split_rows(6)
    data = tmp_path / "test.jsonl"
    write_rows(
        data, [*rows, *(row.model_copy(update={"split": "train"}) for row in numbered_variants(9)[6:])]
    )
    settings = FtrlEvalSettings(samples_per_env=4, chunk_episodes=5, model="oracle")
    params = SamplingParams(temperature=1.0, max_new_tokens=32, seed=3)
    report = evaluate_ftrl(data, tmp_path / "eval", oracle_for(rows), params, pool, settings, progress=False)

    summary = report.summary
    assert (summary["tasks"], summary["episodes"], summary["samples_per_env"]) == (6, 24, 4)
    assert (report.chunks, report.chunks_resumed) == (5, 0)
    metrics = ("solve_precision", "solve_rate", "solve_f1", "pass@1", "pass@2", "pass@4")
    assert {key: summary[key] for key in metrics} == dict.fromkeys(metrics, 1.0)
    for group in (*summary["by_scenario"].values(), *summary["by_data_source"].values()):
        assert group["solve_f1"] == 1.0
    assert summary["model"] == "oracle" and summary["split"] == "test"


def test_pass_at_k_hand_worked_values() -> None:
    assert pass_at_k(5, 2, 2) == 1 - 3 / 10  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 2) == 0.5
    assert pass_at_k(3, 1, 3) == 1.0  # every draw holds the one correct sample
    assert pass_at_k(6, 0, 3) == 0.0
    assert (
        pass_ks(1) == [1]
        and pass_ks(2) == [1, 2]
        and pass_ks(6) == [1, 2, 4, 6]
        and pass_ks(8) == [1, 2, 4, 8]
    )
    with pytest.raises(
        ValueError, match=re.escape("pass@k needs 1 <= k <= n and 0 <= c <= n, got n=3, c=4, k=1")
    ):
        pass_at_k(3, 4, 1)


@given(st.integers(1, 7).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_the_chance_a_random_k_subset_holds_a_correct_sample(nck: tuple[int, int, int]) -> None:
    n, c, k = nck
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(index < c for index in subset) for subset in subsets)
    assert pass_at_k(n, c, k) == pytest.approx(hits / len(subsets), abs=1e-12)


def test_a_rerun_evaluates_only_missing_chunks(tmp_path: Path, pool: SandboxPool) -> None:
    rows = split_rows(6)
    data = write_test_envs(tmp_path / "test.jsonl", 6)
    out = tmp_path / "eval"
    settings = FtrlEvalSettings(chunk_episodes=2)
    first = evaluate_ftrl(data, out, oracle_for(rows), GREEDY, pool, settings, progress=False)
    reference = (out / "episodes.jsonl").read_bytes()
    assert (first.chunks, first.chunks_resumed) == (3, 0)

    again = evaluate_ftrl(data, out, oracle_for(rows), GREEDY, pool, settings, progress=False)
    assert (again.chunks, again.chunks_resumed) == (3, 3)
    assert (out / "episodes.jsonl").read_bytes() == reference and again.summary == first.summary

    # What a kill after the first chunk leaves: its part on disk, nothing joined. The part is marked,
    # so the joined output shows whether it was reused or played again.
    lines = reference.decode().splitlines(keepends=True)
    parts = out / "episodes.jsonl.parts"
    parts.mkdir()
    shutil.copy(out / "manifest.json", parts / "manifest.json")
    marked = [line.replace('"answer": "Paris"', '"answer": "Paris (resumed)"') for line in lines[:2]]
    (parts / "chunk-000000.jsonl").write_text("".join(marked))
    (out / "episodes.jsonl").unlink()
    (out / "summary.json").unlink()
    resumed = evaluate_ftrl(data, out, oracle_for(rows), GREEDY, pool, settings, progress=False)
    assert (resumed.chunks, resumed.chunks_resumed) == (3, 1)
    assert (out / "episodes.jsonl").read_text().splitlines(keepends=True) == marked + lines[2:]
    assert not parts.exists()
    assert resumed.summary["solve_f1"] == 1.0

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "episodes.jsonl").write_text('{"task_index": 0}\n')
    with pytest.raises(
        FileExistsError, match=re.escape(f"{foreign}: holds episodes.jsonl of another evaluation")
    ):
        evaluate_ftrl(data, foreign, oracle_for(rows), GREEDY, pool, settings, progress=False)

    other = FtrlEvalSettings(chunk_episodes=2, max_turns=5)
    with pytest.raises(
        ResumeMismatch, match=re.escape(f"{out}: holds work of a run with different settings;")
    ):
        evaluate_ftrl(data, out, oracle_for(rows), GREEDY, pool, other, progress=False)


# --- user mistakes --------------------------------------------------------------------------------


def eval_error(*args: str) -> str:
    result = runner.invoke(app, ["eval", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_user_mistakes_are_one_line(tmp_path: Path) -> None:
    train_only = tmp_path / "train.jsonl"
    write_rows(train_only, numbered_variants(3))
    out = str(tmp_path / "eval")
    assert eval_error("--data", str(train_only), "--out", out, "--model", "m", "--backend", "openai") == (
        f"error: {train_only}: no environments with split 'test' to evaluate (found 3 train)"
    )
    repeated = tmp_path / "repeated.jsonl"
    rows = split_rows(2)
    write_rows(repeated, [rows[0], rows[1], rows[0]])
    assert eval_error("--data", str(repeated), "--out", out, "--model", "m", "--backend", "openai") == (
        f"error: {repeated}: environment {rows[0].env_id} is both row 1 and row 3; "
        "use --trials to play an environment several times"
    )
    assert eval_error("--data", str(repeated), "--out", out, "--trials", "3") == (
        "error: 3 samples per environment (--trials) need a temperature above 0: "
        "greedy decoding plays the same episode every time"
    )
    assert eval_error("--data", str(train_only), "--domain-dir", "x", "--out", out) == (
        "error: --domain-dir do(es) not apply to --benchmark ftrl"
    )
    assert eval_error("--out", out) == "error: --benchmark ftrl needs --data FILE (environment JSONL)"
    assert (
        eval_error("--benchmark", "tau-bench", "--out", out)
        == "error: --benchmark tau-bench needs --domain-dir DIR"
    )
    missing = tmp_path / "missing.jsonl"
    assert eval_error("--data", str(missing), "--out", out, "--backend", "openai", "--model", "m") == (
        f"error: {missing}: no such environment file"
    )


# --- τ-bench through the same command -----------------------------------------------------------


def test_tau_bench_branch_writes_the_shared_summary_layout(
    tmp_path: Path, tiny_compact_model_dir: Path, tau_airline_dir: Path
) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text((tau_airline_dir / "tasks.jsonl").read_text().splitlines()[0] + "\n")
    out = tmp_path / "tau"
    args = ["eval", "--benchmark", "tau-bench", "--domain-dir", str(tau_airline_dir), "--tasks", str(tasks)]
    args += ["--model", str(tiny_compact_model_dir), "--out", str(out), "--max-turns", "2"]
    args += ["--set", "generation.max_new_tokens=16", "--set", "sandbox.workers=1", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"] == "tau-bench" and summary["tasks"] == 1
    assert 0.0 <= summary["pass^1"] <= 1.0
    assert "| pass^1 |" in (out / "summary.md").read_text()


# --- a real kill ----------------------------------------------------------------------------------


def ftrl_eval(data: Path, out: Path, model: Path) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "flows.cli", "eval", "--data", str(data), "--out", str(out),
        "--model", str(model), "--max-turns", "3", "--trials", "2", "--temperature", "1.0", "--seed", "5",
        "--no-progress", "--set", "sample.chunk_episodes=2", "--set", "generation.max_new_tokens=24",
        "--set", "sandbox.workers=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread: a tiny model on a busy machine runs faster
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
def test_killed_evaluation_resumes_to_the_uninterrupted_result(
    tmp_path: Path, tiny_compact_model_dir: Path
) -> None:
    data = write_test_envs(tmp_path / "test.jsonl", 12)
    reference = tmp_path / "reference"
    done = ftrl_eval(data, reference, tiny_compact_model_dir)
    stdout, stderr = done.communicate(timeout=600)
    assert done.returncode == 0, stderr
    assert "(0 of 12 chunks resumed" in stdout

    out = tmp_path / "resumed"
    parts = out / "episodes.jsonl.parts"
    victim = ftrl_eval(data, out, tiny_compact_model_dir)
    kill_when(victim, parts / "chunk-000001.jsonl")
    assert not (out / "summary.json").exists(), "the run finished before it could be killed"

    resumed = ftrl_eval(data, out, tiny_compact_model_dir)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert int(re.search(r"\((\d+) of 12 chunks resumed", stdout).group(1)) >= 2
    assert (out / "episodes.jsonl").read_bytes() == (reference / "episodes.jsonl").read_bytes()
    assert (out / "summary.json").read_bytes() == (reference / "summary.json").read_bytes()
    assert not parts.exists()
    assert json.loads((out / "summary.json").read_text())["episodes"] == 24
