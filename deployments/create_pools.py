"""Create or update the pipeline's work pools, their queues and concurrency limits on a Prefect server.

    python -m deployments.create_pools                                  # PREFECT_API_URL's server
    python -m deployments.create_pools --api-url http://prefect:4200/api \\
        --cpu-slots 8 --gpu-nodes 4 --runs-per-gpu-node 2                 # process workers on GPU machines
    python -m deployments.create_pools --gpu-infrastructure kubernetes \\
        --gpu-image registry.example/ftrl-gpu:0.1 --gpu-nodes 4           # GPU jobs on Kubernetes

Running it again is safe: it makes the server match the description (limits, queues, job
templates) and leaves flow runs and deployments alone. `ftrl deploy` runs it before registering
the deployments.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from pydantic import ValidationError

from deployments.options import (
    ApiUrlOption,
    CpuSlotsOption,
    GpuImageOption,
    GpuInfrastructureOption,
    GpuNodesOption,
    RunsPerGpuNodeOption,
    TrainingSlotsOption,
)
from deployments.pools import ClusterShape, GpuInfrastructure, PoolSpec, pool_specs
from deployments.server import ServerError, connect, resolve_api_url


class PoolTypeConflict(ServerError):
    """A pool of the right name but another type exists; Prefect cannot change a pool's type."""


def apply_pools(client: SyncPrefectClient, specs: Sequence[PoolSpec]) -> list[str]:
    """Make the server's pools, queues and limits match `specs`; one summary line per pool."""
    lines = []
    for spec in specs:
        _check_type(client, spec)
        client.create_work_pool(
            WorkPoolCreate(
                name=spec.name,
                type=spec.type,
                description=spec.description,
                base_job_template=spec.base_job_template,
                concurrency_limit=spec.concurrency_limit,
            ),
            overwrite=True,
        )
        queues = []
        for queue in spec.queues:
            fields = {
                "description": queue.description,
                "priority": queue.priority,
                "concurrency_limit": queue.concurrency_limit,
            }
            try:
                existing = client.read_work_queue_by_name(queue.name, work_pool_name=spec.name)
            except ObjectNotFound:
                client.create_work_queue(name=queue.name, work_pool_name=spec.name, **fields)
            else:
                client.update_work_queue(existing.id, **fields)
            limit = "no limit" if queue.concurrency_limit is None else f"limit {queue.concurrency_limit}"
            queues.append(f"{queue.name} (priority {queue.priority}, {limit})")
        lines.append(
            f"pool {spec.name} ({spec.type}, limit {spec.concurrency_limit}): queues {', '.join(queues)}"
        )
    return lines


def _check_type(client: SyncPrefectClient, spec: PoolSpec) -> None:
    try:
        existing = client.read_work_pool(spec.name)
    except ObjectNotFound:
        return
    if existing.type != spec.type:
        raise PoolTypeConflict(
            f"work pool {spec.name!r} exists as a {existing.type} pool, not {spec.type}; a pool's type "
            f"cannot change: remove it with `prefect work-pool delete {spec.name}` and run this again"
        )


def create_pools(
    api_url: ApiUrlOption = None,
    cpu_slots: CpuSlotsOption = 4,
    gpu_infrastructure: GpuInfrastructureOption = GpuInfrastructure.process,
    gpu_nodes: GpuNodesOption = 1,
    runs_per_gpu_node: RunsPerGpuNodeOption = 1,
    training_slots: TrainingSlotsOption = 1,
    gpu_image: GpuImageOption = None,
) -> None:
    """Create or update the CPU and GPU work pools, their queues and concurrency limits."""
    try:
        shape = cluster_shape(
            cpu_slots=cpu_slots,
            gpu_infrastructure=gpu_infrastructure,
            gpu_nodes=gpu_nodes,
            runs_per_gpu_node=runs_per_gpu_node,
            training_slots=training_slots,
            gpu_image=gpu_image,
        )
        with connect(resolve_api_url(api_url)) as client:
            lines = apply_pools(client, pool_specs(shape))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    for line in lines:
        typer.echo(line)


def cluster_shape(**options: object) -> ClusterShape:
    """The shape the options describe; a contradiction is one plain ValueError line, not pydantic's report."""
    try:
        return ClusterShape.model_validate(options)
    except ValidationError as exc:
        reasons = (str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())
        raise ValueError("; ".join(reasons)) from None


def main() -> None:
    typer.run(create_pools)


if __name__ == "__main__":
    main()
