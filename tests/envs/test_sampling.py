"""Trajectory sampling: exact rows with the oracle policy, determinism, and resume after SIGKILL."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from envs.jsonl import iter_rows
from envs.sampling import ResumeMismatch, SampleSettings, sample_trajectories
from envs.sandbox import SandboxPool
from envs.schema import TrajectoryRow
from policies.backends import SamplingParams
from policies.oracle import OraclePlan, OraclePolicy, PlannedCall
from support.envs_files import example_rows, variant_rows, write_envs
from support.processes import kill_when

REPO = Path(__file__).resolve().parents[2]
PARAMS = SamplingParams(temperature=1.0, max_new_tokens=48, seed=0)


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2) as pool:
        yield pool


def oracle_for(rows) -> OraclePolicy:
    plans = {}
    for env in rows:
        meta = env.meta_dict()
        calls = [PlannedCall(**sub["call"]) for sub in meta["sub_questions"]]
        turns = tuple((c,) for c in calls) if meta["scenario"] == "multi-hop" else (tuple(calls),)
        plans[env.messages[0]["content"]] = OraclePlan(turns=turns, answer=env.answer)
    return OraclePolicy(plans)


def test_oracle_rows_are_exactly_the_ftrl_trajectory(tmp_path: Path, pool: SandboxPool) -> None:
    rows = example_rows()
    envs = write_envs(tmp_path / "envs.jsonl", rows)
    out = tmp_path / "traj.jsonl"
    settings = SampleSettings(samples_per_env=2, max_turns=20, seed=1, chunk_episodes=4, policy="oracle")
    report = sample_trajectories(envs, out, oracle_for(rows), PARAMS, pool, settings, progress=False)

    written = list(iter_rows(out, TrajectoryRow))
    assert (report.episodes, report.rows, report.chunks, report.chunks_resumed) == (6, 14, 2, 0)
    assert len(written) == 14
    single, parallel, multi = rows
    expected_keys = [
        (single.env_id, 0, 0), (single.env_id, 0, 1), (single.env_id, 1, 0), (single.env_id, 1, 1),
        (parallel.env_id, 0, 0), (parallel.env_id, 0, 1), (parallel.env_id, 1, 0), (parallel.env_id, 1, 1),
        (multi.env_id, 0, 0), (multi.env_id, 0, 1), (multi.env_id, 0, 2),
        (multi.env_id, 1, 0), (multi.env_id, 1, 1), (multi.env_id, 1, 2),
    ]  # fmt: skip
    assert [(r.env_id, r.sample_index, r.turn) for r in written] == expected_keys

    fresh, after_first, after_second = written[8:11]
    assert fresh.messages == multi.messages and fresh.unsolved_set == multi.unsolved_set
    assert fresh.solve_rate == 0.0 and fresh.policy == "oracle"
    assert [m["role"] for m in after_first.messages] == ["user", "assistant", "tool"]
    assert json.loads(after_first.unsolved_set) == {"find_landmark_country": [], "get_currency": ["Euro"]}
    assert after_first.solve_rate == 0.5
    assert after_second.messages[-1] == {
        "role": "tool",
        "tool_call_id": "call_1_0",
        "name": "get_currency",
        "content": "Euro",
    }
    assert after_second.solve_rate == 1.0
    assert {r.answer for r in written[8:]} == {"Euro"} and {r.codes for r in written[8:]} == {multi.codes}
    assert not out.with_name("traj.jsonl.parts").exists()


def test_max_envs_rolls_out_only_the_first_environments(tmp_path: Path, pool: SandboxPool) -> None:
    rows = example_rows()
    envs = write_envs(tmp_path / "envs.jsonl", rows)
    out = tmp_path / "traj.jsonl"
    settings = SampleSettings(samples_per_env=2, chunk_episodes=4, policy="oracle", max_envs=2)
    report = sample_trajectories(envs, out, oracle_for(rows), PARAMS, pool, settings, progress=False)
    assert (report.episodes, report.rows) == (4, 8)  # single and parallel: 2 samples of 2 turns each
    assert {row.env_id for row in iter_rows(out, TrajectoryRow)} == {rows[0].env_id, rows[1].env_id}


def test_repeated_environment_is_refused(tmp_path: Path, pool: SandboxPool) -> None:
    rows = example_rows()
    envs = write_envs(tmp_path / "envs.jsonl", [rows[0], rows[1], rows[0]])
    with pytest.raises(ValueError, match=r"is both row 1 and row 3; use --samples-per-env"):
        sample_trajectories(envs, tmp_path / "t.jsonl", oracle_for(rows), PARAMS, pool, progress=False)


def test_parts_of_another_run_are_not_mixed_in(tmp_path: Path, pool: SandboxPool) -> None:
    rows = example_rows()
    envs = write_envs(tmp_path / "envs.jsonl", rows)
    out = tmp_path / "t.jsonl"
    parts = tmp_path / "t.jsonl.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text(json.dumps({"settings": {"seed": 99}}))
    with pytest.raises(ResumeMismatch, match=r"different backend, envs_sha256, sampling, settings; rerun"):
        sample_trajectories(envs, out, oracle_for(rows), PARAMS, pool, progress=False)
    assert not out.exists()


def ftrl_sample(envs: Path, out: Path, model: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "flows.cli", "sample", "--envs", str(envs), "--out", str(out),
        "--model", str(model), "--max-turns", "3", "--seed", "7", "--no-progress",
        "--set", "sample.chunk_episodes=2", "--set", "generation.max_new_tokens=40",
        "--set", "sandbox.workers=1",
        *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_output(tmp_path: Path, tiny_compact_model_dir: Path) -> None:
    envs = write_envs(tmp_path / "envs.jsonl", variant_rows(12))
    reference = tmp_path / "reference.jsonl"
    done = ftrl_sample(envs, reference, tiny_compact_model_dir)
    stdout, stderr = done.communicate(timeout=600)
    assert done.returncode == 0, stderr
    assert "from 12 episodes" in stdout and "0 of 6 chunks resumed" in stdout

    out = tmp_path / "resumed.jsonl"
    parts = tmp_path / "resumed.jsonl.parts"
    victim = ftrl_sample(envs, out, tiny_compact_model_dir)
    kill_when(victim, parts / "chunk-000001.jsonl")
    assert not out.exists(), "the run finished before it could be killed"

    resumed = ftrl_sample(envs, out, tiny_compact_model_dir)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    chunks_resumed = int(stdout.split("(")[1].split(" of ")[0])
    assert chunks_resumed >= 2
    assert out.read_bytes() == reference.read_bytes()
    rows = list(iter_rows(out, TrajectoryRow))
    keys = [(r.env_id, r.sample_index, r.turn) for r in rows]
    assert len(keys) == len(set(keys)) and {r.turn for r in rows} >= {0}
    assert len({r.env_id for r in rows}) == 12
    assert not parts.exists()
