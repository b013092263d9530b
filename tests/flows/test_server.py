"""The pipeline on a real Prefect server, the way a user runs it: `ftrl ui` with basic auth, the pool
script, `ftrl deploy`, and `ftrl worker --run-once` executing a stage deployment to completion.

One server serves the module: started by `ftrl ui` in a temporary PREFECT_HOME on a free port, and
stopped with SIGTERM at the end (which must stop the server process too, freeing the port).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pyarrow.parquet as pq
import pytest
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from deployments.local_server import ServerAddress, free_port, port_is_free, wait_until_healthy
from deployments.server import connect
from envs.convert import convert_trajectories
from envs.examples import numbered_variants
from envs.jsonl import write_rows
from envs.sampling import SampleSettings, sample_trajectories
from envs.sandbox import SandboxPool
from envs.verify import oracle_plan
from policies.backends import SamplingParams
from policies.oracle import OraclePolicy, question_of
from tasks.profile import load_profile
from tasks.references import path_sha256

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
AUTH = "ftrl-admin:correct-horse-battery"


@dataclass(frozen=True)
class Server:
    address: ServerAddress
    log: Path
    env: dict[str, str]  # what a client of this server runs with

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )


def clean_environment(home: Path) -> dict[str, str]:
    """This process's environment without any Prefect setting that could point elsewhere."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(home)
    return env


def wait_for_line(log: Path, prefix: str, process: subprocess.Popen[str], timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith(prefix):
                return line
        assert process.poll() is None, f"ftrl ui exited with {process.returncode}:\n{log.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"no line starting {prefix!r} in {log}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("prefect-home")
    address = ServerAddress(port=free_port())
    log = home / "ftrl-ui.log"
    env = clean_environment(home)
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "ui", "--port", str(address.port)],
            cwd=REPO,
            env={**env, "PREFECT_SERVER_API_AUTH_STRING": AUTH},
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_until_healthy(address.api_url, process)
        wait_for_line(log, "basic auth is on", process)
        client_env = {**env, "PREFECT_API_URL": address.api_url, "PREFECT_API_AUTH_STRING": AUTH}
        yield Server(address=address, log=log, env=client_env)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert port_is_free(address), "the server outlived `ftrl ui`"


@pytest.fixture
def client_settings(server: Server) -> Iterator[None]:
    """This process's Prefect client pointed at the module's server, with its credentials."""
    with temporary_settings(updates={PREFECT_API_URL: server.address.api_url, PREFECT_API_AUTH_STRING: AUTH}):
        yield


def test_ui_prints_where_it_serves_binds_loopback_and_requires_basic_auth(server: Server) -> None:
    lines = server.log.read_text().splitlines()
    assert f"Prefect UI: http://127.0.0.1:{server.address.port}" in lines
    assert f"clients: export PREFECT_API_URL=http://127.0.0.1:{server.address.port}/api" in lines
    assert "correct-horse-battery" not in server.log.read_text()

    listening = {
        conn.laddr.ip
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == server.address.port
    }
    assert listening == {"127.0.0.1"}

    api = server.address.api_url
    settings = httpx.get(f"{server.address.url}/ui-settings").json()
    assert (settings["api_url"], settings["auth"]) == (api, "BASIC")
    assert httpx.post(f"{api}/flows/filter", json={}).status_code == 401
    assert httpx.post(f"{api}/flows/filter", json={}, auth=("ftrl-admin", "wrong")).status_code == 401
    assert httpx.post(f"{api}/flows/filter", json={}, auth=tuple(AUTH.split(":"))).status_code == 200


def test_pool_script_creates_pools_queues_and_limits_and_can_run_again(
    server: Server, client_settings: None
) -> None:
    shape = ["--cpu-slots", "6", "--gpu-nodes", "2", "--runs-per-gpu-node", "2", "--training-slots", "2"]
    for _ in range(2):  # the second run finds everything in place and changes nothing
        result = server.run("-m", "deployments.create_pools", *shape)
        assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "pool ftrl-cpu (process, limit 6): queues construction (priority 1, no limit)",
        "pool ftrl-gpu (process, limit 4): queues training (priority 1, limit 2), "
        "inference (priority 2, no limit)",
    ]
    with connect(server.address.api_url) as client:
        pools = {pool.name: pool for pool in client.read_work_pools()}
        assert {name: (pool.type, pool.concurrency_limit) for name, pool in pools.items()} == {
            "ftrl-cpu": ("process", 6),
            "ftrl-gpu": ("process", 4),
        }
        queues = {
            (queue.work_pool_name, queue.name): (queue.priority, queue.concurrency_limit)
            for name in pools
            for queue in client.read_work_queues(work_pool_name=name)
            if queue.name != "default"
        }
    assert queues == {
        ("ftrl-cpu", "construction"): (1, None),
        ("ftrl-gpu", "training"): (1, 2),
        ("ftrl-gpu", "inference"): (2, None),
    }

    conflict = server.run(
        "-m", "deployments.create_pools", "--gpu-infrastructure", "kubernetes", "--gpu-image", "i:1"
    )
    assert conflict.returncode == 2
    assert conflict.stderr == (
        "error: work pool 'ftrl-gpu' exists as a process pool, not kubernetes; a pool's type cannot change: "
        "remove it with `prefect work-pool delete ftrl-gpu` and run this again\n"
    )


def test_clients_without_the_credentials_get_one_line(server: Server) -> None:
    env = {**server.env, "PREFECT_API_AUTH_STRING": "ftrl-admin:wrong"}
    result = subprocess.run(
        [sys.executable, "-m", "deployments.create_pools"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"error: the Prefect server at {server.address.api_url} refused the credentials: set "
        "PREFECT_API_AUTH_STRING to the USER:PASSWORD the server was started with\n"
    )


@pytest.fixture(scope="module")
def deployed(server: Server) -> subprocess.CompletedProcess[str]:
    """`ftrl deploy` with the smoke profile: pools first, then every deployment of prefect.yaml."""
    result = server.run(
        "-m", "flows.cli", "deploy", "--profile", "configs/smoke.yaml", "--set", "run.name=served"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_deploy_registers_every_deployment_with_the_profile(
    server: Server, deployed: subprocess.CompletedProcess[str], client_settings: None
) -> None:
    assert deployed.stdout.splitlines()[2:] == [
        "deployment build/build: ftrl-cpu/construction",
        "deployment convert/convert: ftrl-cpu/construction",
        "deployment evaluate/evaluate: ftrl-gpu/inference",
        "deployment full-run/full-run: ftrl-gpu/training",
        "deployment merge/merge: ftrl-cpu/construction",
        "deployment nightly-eval/nightly-eval: ftrl-gpu/inference, cron 0 2 * * * Europe/Berlin (off)",
        "deployment sample/sample: ftrl-gpu/inference",
        "deployment train/train: ftrl-gpu/training",
        "deployment warm-start/warm-start: ftrl-gpu/training",
    ]
    profile = load_profile(REPO / "configs/smoke.yaml", ["run.name=served"]).model_dump(mode="json")
    with connect(server.address.api_url) as client:
        deployments = {deployment.name: deployment for deployment in client.read_deployments()}
    assert all(deployment.parameters["config"] == profile for deployment in deployments.values())
    assert all(deployment.enforce_parameter_schema for deployment in deployments.values())
    nightly = deployments["nightly-eval"]
    assert nightly.parameters["models"] == [{"name": "base", "path": "models/base"}]
    assert nightly.parameters["benchmarks"] == [
        {"name": "ftrl-test", "kind": "ftrl", "data": "data/ftrl-test.jsonl"}
    ]
    # Stage inputs are references given when a run is triggered, so the form asks for them.
    assert deployments["convert"].parameter_openapi_schema["required"] == ["config", "trajectories"]
    assert deployments["train"].parameter_openapi_schema["required"] == ["config", "data"]
    assert deployments["warm-start"].parameter_openapi_schema["required"] == ["config", "envs"]


def write_trajectories(folder: Path) -> Path:
    """Oracle trajectories in six example environments: real rows, no model needed."""
    envs = numbered_variants(6)
    write_rows(folder / "envs.jsonl", envs)
    oracle = OraclePolicy({question_of(env.messages): oracle_plan(env) for env in envs})
    params = SamplingParams(temperature=1.0, max_new_tokens=48, seed=0)
    with SandboxPool(workers=2) as pool:
        settings = SampleSettings(policy="oracle")
        report = sample_trajectories(
            folder / "envs.jsonl", folder / "traj.jsonl", oracle, params, pool, settings, progress=False
        )
    return report.out


def test_worker_runs_a_stage_deployment_to_completion(
    server: Server, deployed: subprocess.CompletedProcess[str], client_settings: None, tmp_path: Path
) -> None:
    trajectories = write_trajectories(tmp_path)
    expected = convert_trajectories(trajectories, tmp_path / "direct.parquet", splits=["train"])
    parameters = {
        "config": {"run": {"name": "served-convert", "root": str(tmp_path / "runs")}},
        "trajectories": {"path": str(trajectories), "kind": "trajectories"},
    }
    with connect(server.address.api_url) as client:
        deployment = client.read_deployment_by_name("convert/convert")
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)

    worker = server.run(
        "-m", "flows.cli", "worker", "--pool", "ftrl-cpu", "--queue", "construction", "--run-once"
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr

    with connect(server.address.api_url) as client:
        finished = client.read_flow_run(flow_run.id)
    assert finished.state is not None and finished.state.name == "Completed", finished.state
    assert finished.work_pool_name == "ftrl-cpu" and finished.work_queue_name == "construction"
    (written,) = (tmp_path / "runs" / "served-convert" / "parquet").rglob("*.parquet")
    assert path_sha256(written) == expected.sha256  # the same bytes a direct conversion writes
    # Each environment's fresh row plus one per tool-calling turn: single- and parallel-hop examples
    # call once, the multi-hop one twice, so two rounds of the three examples give 6 + 2 * 4 rows.
    assert pq.read_metadata(written).num_rows == expected.rows_out == 14
