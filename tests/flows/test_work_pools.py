"""Pools and job templates without a server: the shapes they take and what a job would be given.

A template is rendered the way a Prefect worker renders it (variable defaults, then the
deployment's job variables, through `prefect.utilities.templating.apply_values`), and checked with
the server's own validator, so a template that passes here is one the server stores and a worker
can fill in.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from prefect.server.schemas.actions import validate_base_job_template
from prefect.utilities.templating import apply_values

from deployments.create_pools import cluster_shape
from deployments.pools import (
    CPU_POOL,
    GPU_POOL,
    KUBERNETES_GPU_TEMPLATE,
    PROCESS_TEMPLATE,
    ClusterShape,
    GpuInfrastructure,
    load_job_template,
    pool_specs,
)


def render(template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """What a worker's job configuration becomes for a deployment with these job variables."""
    properties = template["variables"]["properties"]
    values = {name: spec["default"] for name, spec in properties.items() if "default" in spec}
    values.update(job_variables)
    return apply_values(template["job_configuration"], values)


@pytest.mark.parametrize("file_name", [PROCESS_TEMPLATE, KUBERNETES_GPU_TEMPLATE])
def test_templates_pass_the_servers_validation(file_name: str) -> None:
    template = load_job_template(file_name)
    assert validate_base_job_template(template) == template


def test_process_template_keeps_stage_output_unbuffered() -> None:
    job = render(load_job_template(PROCESS_TEMPLATE), {})
    assert job == {  # labels have no default: the key is dropped and the worker adds its own
        "command": None,
        "env": {"PYTHONUNBUFFERED": "1"},
        "name": None,
        "stream_output": True,
        "working_dir": None,
    }


def test_kubernetes_job_asks_for_gpus_on_gpu_nodes() -> None:
    job = render(load_job_template(KUBERNETES_GPU_TEMPLATE), {"image": "registry.example/ftrl-gpu:0.1"})
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/ftrl-gpu:0.1"
    assert container["resources"] == {
        "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": 1},
        "limits": {"memory": "64Gi", "nvidia.com/gpu": 1},
    }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["restartPolicy"] == "Never" and job["job_manifest"]["spec"]["backoffLimit"] == 0
    assert {"name": "runs", "persistentVolumeClaim": {"claimName": "ftrl-runs"}} in pod["volumes"]
    assert {"name": "runs", "mountPath": "/opt/ftrl/runs"} in container["volumeMounts"]
    assert job["env"] == {"FTRL_PROJECT_DIR": "/opt/ftrl", "PYTHONUNBUFFERED": "1"}


def test_kubernetes_job_variables_override_the_defaults() -> None:
    overrides = {
        "image": "img:1",
        "gpus": 8,
        "node_selector": {"gpu-type": "h100"},
        "tolerations": [],
        "namespace": "ml",
    }
    job = render(load_job_template(KUBERNETES_GPU_TEMPLATE), overrides)
    pod = job["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == 8
    assert pod["nodeSelector"] == {"gpu-type": "h100"}
    assert pod["tolerations"] == []
    assert job["namespace"] == "ml" and job["job_manifest"]["metadata"]["namespace"] == "ml"


def test_default_shape_is_one_gpu_machine_with_process_workers() -> None:
    cpu, gpu = pool_specs(ClusterShape())
    assert (cpu.name, cpu.type, cpu.concurrency_limit) == (CPU_POOL, "process", 4)
    assert [(q.name, q.priority, q.concurrency_limit) for q in cpu.queues] == [("construction", 1, None)]
    assert (gpu.name, gpu.type, gpu.concurrency_limit) == (GPU_POOL, "process", 1)
    assert [(q.name, q.priority, q.concurrency_limit) for q in gpu.queues] == [
        ("training", 1, 1),
        ("inference", 2, None),
    ]
    assert gpu.base_job_template == load_job_template(PROCESS_TEMPLATE)


def test_gpu_limit_is_nodes_times_runs_per_node() -> None:
    shape = ClusterShape(cpu_slots=9, gpu_nodes=4, runs_per_gpu_node=2, training_slots=2)
    cpu, gpu = pool_specs(shape)
    assert cpu.concurrency_limit == 9
    assert gpu.concurrency_limit == 8
    assert dict((q.name, q.concurrency_limit) for q in gpu.queues)["training"] == 2


def test_kubernetes_shape_sets_the_image_as_the_pools_default() -> None:
    shape = ClusterShape(gpu_infrastructure=GpuInfrastructure.kubernetes, gpu_image="img:2", gpu_nodes=3)
    _, gpu = pool_specs(shape)
    assert gpu.type == "kubernetes" and gpu.concurrency_limit == 3
    assert gpu.base_job_template["variables"]["properties"]["image"]["default"] == "img:2"
    shipped = load_job_template(KUBERNETES_GPU_TEMPLATE)["variables"]["properties"]["image"]
    assert "default" not in shipped  # the image is --gpu-image, never a guess


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"gpu_infrastructure": "kubernetes"},
            "a Kubernetes GPU pool needs the GPU worker image: give --gpu-image",
        ),
        (
            {"gpu_nodes": 2, "training_slots": 3},
            "training slots (3) exceed the GPU slots (2 nodes x 1 runs per node = 2)",
        ),
        ({"cpu_slots": 0}, "Input should be greater than or equal to 1"),
    ],
)
def test_contradictory_shapes_are_one_line(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        cluster_shape(**options)
