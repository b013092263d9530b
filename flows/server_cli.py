"""`ftrl ui`, `ftrl deploy`, `ftrl worker`: the pipeline on a long-lived Prefect server.

    ftrl ui                                          # server and UI on http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    ftrl deploy                                      # pools, queues, limits, then every deployment
    ftrl worker --pool ftrl-cpu                      # runs the CPU stages (build, convert, merge)
    ftrl worker --pool ftrl-gpu --gpus 0,1           # on a GPU machine: one worker per GPU share
    prefect deployment run convert/convert --params '{"trajectories": {"kind": "trajectories",
        "path": "runs/x/trajectories/sample-1/KEY/trajectories.jsonl"}}'   # a stage alone

`ftrl ui` binds loopback unless told otherwise and never sends analytics. Basic auth is on when
PREFECT_SERVER_API_AUTH_STRING (server) is set, and clients then need the same USER:PASSWORD in
PREFECT_API_AUTH_STRING; neither value is ever printed. Workers run the deployments from this
checkout (the pull step in prefect.yaml moves to $FTRL_PROJECT_DIR, which `ftrl worker` sets).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from deployments.local_server import (
    LOOPBACK,
    ServerAddress,
    port_is_free,
    server_environment,
    start_server,
    stop,
    wait_until_healthy,
)
from deployments.options import (
    ApiUrlOption,
    CpuSlotsOption,
    GpuImageOption,
    GpuInfrastructureOption,
    GpuNodesOption,
    RunsPerGpuNodeOption,
    TrainingSlotsOption,
)
from deployments.pools import GPU_POOL, GPU_WORKER_LIMIT, GpuInfrastructure
from flows.errors import reports_user_errors
from flows.options import ProfileOption, SetOption

if TYPE_CHECKING:
    from prefect.client.schemas.objects import DeploymentSchedule

#: The checkout that holds prefect.yaml and the flows it names.
PROJECT_DIR = Path(__file__).resolve().parents[1]


def _child_environment(api_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PREFECT_API_URL"] = api_url
    env.setdefault("FTRL_PROJECT_DIR", str(PROJECT_DIR))
    return env


def _run_until_done(process: subprocess.Popen[str]) -> int:
    """Wait for a child that serves until stopped, and never leave it running without us.

    Ctrl-C reaches the whole foreground process group, so the child is already stopping; a
    SIGTERM (a service manager, `kill`) reaches only us and is passed on.
    """
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: process.send_signal(signum))
    try:
        return process.wait()
    except KeyboardInterrupt:
        stop(process)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


@reports_user_errors
def ui(
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback exposes the server to the network.")
    ] = LOOPBACK,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the UI and its API.")] = 4200,
    auth_string: Annotated[
        str | None,
        typer.Option(
            envvar="PREFECT_SERVER_API_AUTH_STRING",
            show_envvar=True,
            show_default=False,
            help="Basic auth as USER:PASSWORD; prefer the environment variable, which stays out of `ps`.",
        ),
    ] = None,
    home: Annotated[
        Path | None,
        typer.Option(help="PREFECT_HOME of the server: its SQLite database lives here; default Prefect's."),
    ] = None,
) -> None:
    """Start a Prefect server with its UI, print where it is, and serve until Ctrl-C.

    Flows that run with PREFECT_API_URL set to the printed API URL (`ftrl run`, workers) report
    here. For a shared server use PostgreSQL: set PREFECT_SERVER_DATABASE_CONNECTION_URL first.
    """
    if auth_string is not None:
        user, _, password = auth_string.partition(":")
        if not user or not password:
            raise ValueError("the basic-auth string must look like USER:PASSWORD")
    address = ServerAddress(host=host, port=port)
    if not port_is_free(address):
        raise ValueError(f"port {port} on {host} is in use (another server?): choose one with --port")
    env = server_environment(address, auth_string=auth_string, home=home)
    typer.echo("starting the Prefect server (the first start creates its database) ...")
    process = start_server(env)
    try:
        wait_until_healthy(address.local_api_url, process)
    except BaseException:
        stop(process)
        raise
    typer.echo(f"Prefect UI: {address.url}")
    typer.echo(f"clients: export PREFECT_API_URL={address.api_url}")
    if auth_string is not None:
        typer.echo("basic auth is on: clients need PREFECT_API_AUTH_STRING set to the same USER:PASSWORD")
    elif address.host not in ("127.0.0.1", "::1", "localhost"):
        typer.echo(
            f"warning: the server listens on {host} without authentication; "
            "set PREFECT_SERVER_API_AUTH_STRING to require USER:PASSWORD",
            err=True,
        )
    raise typer.Exit(code=_run_until_done(process))


@reports_user_errors
def deploy(
    name: Annotated[
        list[str] | None,
        typer.Option(help="Deploy only these (e.g. convert, or convert/convert); repeatable. Default: all."),
    ] = None,
    pools: Annotated[
        bool, typer.Option(help="Create or update the work pools, queues and limits first.")
    ] = True,
    profile: ProfileOption = None,
    set_: SetOption = None,
    api_url: ApiUrlOption = None,
    cpu_slots: CpuSlotsOption = 4,
    gpu_infrastructure: GpuInfrastructureOption = GpuInfrastructure.process,
    gpu_nodes: GpuNodesOption = 1,
    runs_per_gpu_node: RunsPerGpuNodeOption = 1,
    training_slots: TrainingSlotsOption = 1,
    gpu_image: GpuImageOption = None,
) -> None:
    """Register the deployments of prefect.yaml on the server, creating their work pools first.

    With --profile or --set, every deployment starts from that resolved profile (its `config`
    parameter) instead of the built-in defaults. Safe to run again: pools and deployments are
    updated in place, flow runs are kept.
    """
    from deployments.create_pools import apply_pools, cluster_shape
    from deployments.pools import pool_specs
    from deployments.server import ServerError, connect, resolve_api_url
    from tasks.profile import load_profile

    config = load_profile(profile, set_ or []) if profile is not None or set_ else None

    shape = cluster_shape(
        cpu_slots=cpu_slots,
        gpu_infrastructure=gpu_infrastructure,
        gpu_nodes=gpu_nodes,
        runs_per_gpu_node=runs_per_gpu_node,
        training_slots=training_slots,
        gpu_image=gpu_image,
    )
    url = resolve_api_url(api_url)
    if pools:
        with connect(url) as client:
            for line in apply_pools(client, pool_specs(shape)):
                typer.echo(line)
    selection = [arg for one in name for arg in ("--name", one)] if name else ["--all"]
    with tempfile.TemporaryDirectory(prefix="ftrl-deploy-") as scratch:
        project_file = PROJECT_DIR / "prefect.yaml"
        if config is not None:
            project_file = _with_profile(project_file, config.model_dump(mode="json"), Path(scratch))
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "prefect",
                "deploy",
                *selection,
                "--prefect-file",
                str(project_file),
                "--no-prompt",
            ],
            cwd=PROJECT_DIR,
            env=_child_environment(url),
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        typer.echo(result.stdout + result.stderr, err=True)
        raise ServerError(f"prefect deploy failed with status {result.returncode}; its output is above")
    with connect(url) as client:
        flows = {flow.id: flow.name for flow in client.read_flows()}
        listed = sorted(
            f"{flows[d.flow_id]}/{d.name}: {d.work_pool_name}/{d.work_queue_name}{_schedules(d.schedules)}"
            for d in client.read_deployments()
        )
    for line in listed:
        typer.echo(f"deployment {line}")


def _with_profile(project_file: Path, config: dict[str, Any], scratch: Path) -> Path:
    """A copy of the project file whose deployments all take `config` as their profile."""
    project = yaml.safe_load(project_file.read_text(encoding="utf-8"))
    for deployment in project["deployments"]:
        deployment.setdefault("parameters", {})["config"] = config
    copy = scratch / "prefect.yaml"
    copy.write_text(yaml.safe_dump(project, sort_keys=False), encoding="utf-8")
    return copy


def _schedules(schedules: list[DeploymentSchedule]) -> str:
    """', cron 0 2 * * * Europe/Berlin (off)' per schedule: what runs when, and whether it will."""
    parts = []
    for one in schedules:
        cron = getattr(one.schedule, "cron", None)
        text = f"cron {cron}" if cron else type(one.schedule).__name__
        zone = getattr(one.schedule, "timezone", None)
        parts.append(f", {text}{f' {zone}' if zone else ''}{'' if one.active else ' (off)'}")
    return "".join(parts)


@reports_user_errors
def worker(
    pool: Annotated[str, typer.Option(help="Work pool to serve, e.g. ftrl-cpu or ftrl-gpu.")],
    queue: Annotated[
        list[str] | None, typer.Option(help="Serve only these queues of the pool (repeatable).")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help=f"Runs at once; default {GPU_WORKER_LIMIT} on {GPU_POOL}, else no cap."),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(help="GPUs this worker's runs may use, e.g. 0,1 (CUDA_VISIBLE_DEVICES); default all."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Worker name shown in the UI.")] = None,
    run_once: Annotated[bool, typer.Option(help="Take the runs due now, finish them, exit.")] = False,
    api_url: ApiUrlOption = None,
) -> None:
    """Start a worker that takes flow runs from a work pool and runs them from this checkout."""
    from deployments.server import ServerError, connect, resolve_api_url

    if gpus is not None and not all(part.strip().isdigit() for part in gpus.split(",")):
        raise ValueError(f"--gpus {gpus!r}: give GPU indices separated by commas, e.g. 0,1")
    url = resolve_api_url(api_url)
    with connect(url) as client:
        pools = {found.name: found for found in client.read_work_pools()}
        if pool not in pools:
            known = ", ".join(sorted(pools)) or "none"
            raise ServerError(f"no work pool {pool!r} on {url} (pools: {known}); `ftrl deploy` makes them")
        queues = {found.name for found in client.read_work_queues(work_pool_name=pool)}
    unknown = sorted(set(queue or []) - queues)
    if unknown:
        have = ", ".join(sorted(queues))
        raise ServerError(f"pool {pool!r} has no queue {', '.join(unknown)} (queues: {have})")
    if pools[pool].type == "kubernetes" and importlib.util.find_spec("prefect_kubernetes") is None:
        raise ServerError(
            f"pool {pool!r} runs Kubernetes jobs: install prefect-kubernetes where this worker runs "
            "(pip install prefect-kubernetes)"
        )
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool]
    command += ["--install-policy", "never", "--no-create-pool-if-not-found"]
    for one in queue or []:
        command += ["--work-queue", one]
    limit = limit if limit is not None else (GPU_WORKER_LIMIT if pool == GPU_POOL else None)
    if limit is not None:
        command += ["--limit", str(limit)]
    if name is not None:
        command += ["--name", name]
    if run_once:
        command.append("--run-once")
    env = _child_environment(url)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpus.replace(" ", "")
    raise typer.Exit(code=_run_until_done(subprocess.Popen(command, env=env, text=True)))
