"""Command-line options for the cluster's shape, shared by `deployments.create_pools` and `ftrl deploy`.

Kept apart from the modules that talk to a server so that declaring a command does not import
Prefect's client.
"""

from __future__ import annotations

from typing import Annotated

import typer

from deployments.pools import GpuInfrastructure

ApiUrlOption = Annotated[
    str | None,
    typer.Option("--api-url", help="Prefect API URL (http://HOST:PORT/api); default: PREFECT_API_URL."),
]
CpuSlotsOption = Annotated[int, typer.Option(min=1, help="Flow runs the CPU pool runs at once.")]
GpuInfrastructureOption = Annotated[
    GpuInfrastructure,
    typer.Option(help="process: workers on the GPU machines; kubernetes: jobs asking for nvidia.com/gpu."),
]
GpuNodesOption = Annotated[int, typer.Option(min=1, help="GPU machines or Kubernetes GPU nodes.")]
RunsPerGpuNodeOption = Annotated[
    int, typer.Option(min=1, help="GPU flow runs one node takes at once (one worker per run on processes).")
]
TrainingSlotsOption = Annotated[
    int, typer.Option(min=1, help="Training and full runs at once (one per Ray cluster).")
]
GpuImageOption = Annotated[
    str | None, typer.Option(help="GPU worker image for Kubernetes jobs (the gpu extra installed).")
]
