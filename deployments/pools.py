"""The work pools, queues and concurrency limits that the deployments in prefect.yaml run on.

prefect.yaml names two pools and three queues, and nothing else; the shape of the cluster (how many
GPU nodes, how many runs each takes, processes or Kubernetes jobs) changes only the limits and job
templates made here, so the same prefect.yaml serves a laptop and a cluster:

- ``ftrl-cpu``, a process pool for the CPU stages (queue ``construction``): environment
  construction, conversion, merging.
- ``ftrl-gpu`` for what runs a model: sampling and evaluation (queue ``inference``), training and
  the full run, which executes its stages in its own process (queue ``training``); likewise the
  nightly evaluation (``inference``). Either a process pool served by one worker per GPU slot on
  the GPU machines, or a Kubernetes pool whose jobs ask for ``nvidia.com/gpu`` on GPU nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

CPU_POOL = "ftrl-cpu"
GPU_POOL = "ftrl-gpu"

#: Flow runs one GPU worker takes at once: a run owns the GPUs its worker sees (all of the machine's,
#: or the share its worker was given with CUDA_VISIBLE_DEVICES), so a node with several GPU slots runs
#: several workers, one per share.
GPU_WORKER_LIMIT = 1

#: The pools' job templates, files beside this module.
PROCESS_TEMPLATE = "process-job-template.json"
KUBERNETES_GPU_TEMPLATE = "kubernetes-gpu-job-template.json"


class GpuInfrastructure(str, Enum):
    """Where GPU flow runs execute."""

    process = "process"
    kubernetes = "kubernetes"


class ClusterShape(BaseModel):
    """How much work the pools may take at once; each limit is enforced by the Prefect server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu_slots: int = Field(4, ge=1, description="Flow runs the CPU pool runs at once.")
    gpu_infrastructure: GpuInfrastructure = Field(
        GpuInfrastructure.process, description="process: workers on GPU machines; kubernetes: GPU jobs."
    )
    gpu_nodes: int = Field(1, ge=1, description="GPU machines (or Kubernetes GPU nodes) in the cluster.")
    runs_per_gpu_node: int = Field(
        1, ge=1, description="GPU flow runs one node takes at once; each run owns its node's share of GPUs."
    )
    training_slots: int = Field(
        1,
        ge=1,
        description="Training and full runs at once; one per Ray cluster, since a run drives all of it.",
    )
    gpu_image: str | None = Field(None, description="GPU worker image; required for Kubernetes.")

    @model_validator(mode="after")
    def _consistent(self) -> ClusterShape:
        if self.gpu_infrastructure is GpuInfrastructure.kubernetes and not self.gpu_image:
            raise ValueError("a Kubernetes GPU pool needs the GPU worker image: give --gpu-image IMAGE")
        if self.training_slots > self.gpu_slots:
            raise ValueError(
                f"training slots ({self.training_slots}) exceed the GPU slots "
                f"({self.gpu_nodes} nodes x {self.runs_per_gpu_node} runs per node = {self.gpu_slots})"
            )
        return self

    @property
    def gpu_slots(self) -> int:
        return self.gpu_nodes * self.runs_per_gpu_node


@dataclass(frozen=True)
class QueueSpec:
    name: str
    priority: int
    concurrency_limit: int | None
    description: str


@dataclass(frozen=True)
class PoolSpec:
    name: str
    type: str
    base_job_template: dict[str, Any]
    concurrency_limit: int
    description: str
    queues: tuple[QueueSpec, ...]


def load_job_template(file_name: str) -> dict[str, Any]:
    """One of the job templates shipped beside this module, as the dict a work pool stores."""
    return json.loads(resources.files("deployments").joinpath(file_name).read_text(encoding="utf-8"))


def pool_specs(shape: ClusterShape) -> tuple[PoolSpec, PoolSpec]:
    """The CPU and the GPU pool for a cluster of this shape."""
    cpu = PoolSpec(
        name=CPU_POOL,
        type="process",
        base_job_template=load_job_template(PROCESS_TEMPLATE),
        concurrency_limit=shape.cpu_slots,
        description="CPU stages: environment construction, conversion, merging.",
        queues=(QueueSpec("construction", 1, None, "Environment construction, conversion, merging."),),
    )
    if shape.gpu_infrastructure is GpuInfrastructure.kubernetes:
        gpu_template = load_job_template(KUBERNETES_GPU_TEMPLATE)
        gpu_template["variables"]["properties"]["image"]["default"] = shape.gpu_image
        where = f"Kubernetes jobs asking for nvidia.com/gpu on {shape.gpu_nodes} GPU node(s)"
    else:
        gpu_template = load_job_template(PROCESS_TEMPLATE)
        where = f"one worker per GPU slot on {shape.gpu_nodes} GPU machine(s)"
    gpu = PoolSpec(
        name=GPU_POOL,
        type=shape.gpu_infrastructure.value,
        base_job_template=gpu_template,
        concurrency_limit=shape.gpu_slots,
        description=(
            f"Full runs, sampling, training, evaluation: {where}, {shape.runs_per_gpu_node} run(s) per node "
            f"({shape.gpu_slots} at once)."
        ),
        queues=(
            QueueSpec("training", 1, shape.training_slots, "Training and full runs (TRL, or VeRL over Ray)."),
            QueueSpec("inference", 2, None, "Sampling, evaluation, the nightly evaluation."),
        ),
    )
    return cpu, gpu
