"""`ftrl ui`, `ftrl deploy`, `ftrl worker` on a user's mistakes: one `error:` line, status 2, no server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployments.local_server import ServerAddress, free_port, server_environment
from flows.cli import app

REPO = Path(__file__).resolve().parents[2]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_deploy_without_a_server_url_says_how_to_get_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path)  # no profile that could name a server
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "deploy"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: no Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api, as `ftrl ui` prints) "
        "or give --api-url\n"
    )


def test_worker_names_the_server_it_cannot_reach() -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    code, _, stderr = invoke("worker", "--pool", "ftrl-cpu", "--api-url", url)
    assert code == 2
    assert stderr.startswith(f"error: cannot reach the Prefect server at {url}: ")
    assert stderr.count("\n") == 1


def test_deploy_checks_the_cluster_shape_before_calling_anyone() -> None:
    code, _, stderr = invoke(
        "deploy", "--gpu-infrastructure", "kubernetes", "--api-url", "http://127.0.0.1:9/api"
    )
    assert code == 2
    assert stderr == "error: a Kubernetes GPU pool needs the GPU worker image: give --gpu-image IMAGE\n"


def test_ui_refuses_an_auth_string_without_a_password_and_never_echoes_it() -> None:
    code, stdout, stderr = invoke("ui", "--auth-string", "admin-only", "--port", str(free_port()))
    assert code == 2
    assert stderr == "error: the basic-auth string must look like USER:PASSWORD\n"
    assert "admin-only" not in stdout + stderr


def test_ui_refuses_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, stderr = invoke("ui", "--port", str(port))
    assert code == 2
    assert stderr == f"error: port {port} on 127.0.0.1 is in use (another server?): choose one with --port\n"


def test_worker_refuses_gpu_names_that_are_not_indices() -> None:
    code, _, stderr = invoke(
        "worker", "--pool", "ftrl-gpu", "--gpus", "0,gpu1", "--api-url", "http://127.0.0.1:9/api"
    )
    assert code == 2
    assert stderr == "error: --gpus '0,gpu1': give GPU indices separated by commas, e.g. 0,1\n"


def test_server_environment_binds_as_asked_with_analytics_off(tmp_path: Path) -> None:
    caller = {"PATH": "/bin", "PREFECT_API_URL": "http://elsewhere:4200/api"}
    env = server_environment(ServerAddress("127.0.0.1", 4321), auth_string="u:p", home=tmp_path, base=caller)
    assert env == {
        "PATH": "/bin",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": "4321",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": "http://127.0.0.1:4321/api",
        "PREFECT_SERVER_API_AUTH_STRING": "u:p",
        "PREFECT_HOME": str(tmp_path),
    }


def test_a_proxys_ui_api_url_is_kept_and_a_wildcard_bind_is_named_by_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "gpu-head")
    address = ServerAddress("0.0.0.0", 4200)
    assert (address.url, address.local_api_url) == ("http://gpu-head:4200", "http://127.0.0.1:4200/api")
    assert server_environment(address, base={})["PREFECT_UI_API_URL"] == "http://gpu-head:4200/api"
    proxied = server_environment(address, base={"PREFECT_UI_API_URL": "https://prefect.example/api"})
    assert proxied["PREFECT_UI_API_URL"] == "https://prefect.example/api"
