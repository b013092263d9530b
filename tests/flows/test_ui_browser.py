"""The Prefect UI as a user sees it, in headless Chromium: the deployments, and a completed full run
with its artifacts (progress, the environment and evaluation tables, the Markdown report).

The run is real: `ftrl deploy` registers the deployments on a fresh server, the full-run deployment
is triggered with a small smoke profile, and `ftrl worker --run-once` executes it. The page shows
what the server holds, so the test asks the API which artifacts the run made and then looks for
each of them on the page. The run page's screenshot is kept with the test's files; with
FTRL_UPDATE_SCREENSHOT=1 it also replaces docs/ui-screenshot.png, which the README shows (a plain
test run never edits the checkout).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from deployments.local_server import ServerAddress, free_port, running_server
from deployments.server import connect
from support.browser import Browser, chromium_binary
from tasks.profile import load_profile

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = chromium_binary()
DEPLOYMENTS = (
    "build",
    "convert",
    "evaluate",
    "full-run",
    "merge",
    "nightly-eval",
    "sample",
    "train",
    "warm-start",
)
#: The smoke profile cut down so that the run takes seconds: fewer environments, fewer steps.
SMALL_RUN = [
    "run.name=ui-full",
    "build.count=12",
    "train.local.max_steps=2",
    "train.local.save_steps=2",
    "train.local.sft.steps=4",
    "train.local.sft.save_steps=4",
    "train.local.sft.logging_steps=2",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerAddress, dict[str, str]]]:
    """A server with the deployments registered, and the environment its clients run with."""
    home = tmp_path_factory.mktemp("prefect-home")
    address = ServerAddress(port=free_port())
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=address.api_url)
    with running_server(address, home=home, log=home / "server.log"):
        deployed = ftrl(env, "deploy", "--profile", "configs/smoke.yaml")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        yield address, env


def ftrl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (`make install` installs it)"
)
def test_ui_shows_the_deployments_and_a_completed_full_run_with_its_artifacts(
    served: tuple[ServerAddress, dict[str, str]], tmp_path: Path
) -> None:
    address, env = served
    config = load_profile(REPO / "configs/smoke.yaml", [*SMALL_RUN, f"run.root={tmp_path / 'runs'}"])
    with connect(address.api_url) as client:
        deployment = client.read_deployment_by_name("full-run/full-run")
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"config": config.model_dump(mode="json")}
        )
    worker = ftrl(env, "worker", "--pool", "ftrl-gpu", "--queue", "training", "--run-once")
    assert worker.returncode == 0, worker.stdout + worker.stderr
    with connect(address.api_url) as client:
        finished = client.read_flow_run(run.id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    assert finished.state is not None and finished.state.name == "Completed", finished.state
    kinds = {artifact.key: artifact.type for artifact in artifacts}
    assert {
        "ui-full-report": "markdown",
        "ui-full-build-report": "table",
        "ui-full-report-results": "table",
    }.items() <= (kinds.items())
    assert "progress" in kinds.values()

    assert CHROMIUM is not None
    with Browser(CHROMIUM, tmp_path / "chromium", height=1200) as browser:
        browser.open(f"{address.url}/v2/deployments")
        browser.wait_for_text(
            f"{len(DEPLOYMENTS)} Deployments", *(f"\n{name}\n{name}\n" for name in DEPLOYMENTS)
        )
        browser.screenshot(tmp_path / "deployments.png")

        browser.open(f"{address.url}/v2/runs/flow-run/{run.id}?tab=Artifacts")
        browser.wait_for_text("ui-full", "Completed", "Deployment\nfull-run", *kinds)
        browser.wait_until_drawn("canvas")  # the run's task graph
        shot = browser.screenshot(tmp_path / "full-run.png")

    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    if os.environ.get("FTRL_UPDATE_SCREENSHOT") == "1":
        docs = REPO / "docs"
        shutil.copyfile(shot, docs / "ui-screenshot.png.partial")
        (docs / "ui-screenshot.png.partial").replace(docs / "ui-screenshot.png")
