"""Real VeRL FSDP actor checkpoints of a local model, written on CPU by real FSDP ranks.

The merge tests need what a VeRL run leaves behind, not an imitation of it: so each job shards the
model the way VeRL's FSDP engine does (FSDP1 with a transformer-layer wrap policy and a device mesh,
VeRL's default ``strategy: fsdp``; or FSDP2 through VeRL's own ``apply_fsdp2``) and saves it, with an
optimizer, through VeRL's own ``FSDPCheckpointManager``. Ranks are fresh processes joined by gloo: no
accelerator is needed. FSDP1 only needs ``device_id=cpu`` and no ``sync_module_states`` (which VeRL
sets to broadcast rank 0's weights; here every rank loads the same folder).

The saved weights are the model folder's, bit for bit, so that folder is the reference a merge is
compared with.
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class CheckpointJob:
    """One checkpoint to write.

    Attributes:
        strategy: ``"fsdp"`` (FSDP1, VeRL's default) or ``"fsdp2"``.
        model_dir: the Hugging Face folder to load (in fp32, as VeRL's actor trains).
        actor_dir: where ``FSDPCheckpointManager`` saves, e.g. ``.../global_step_1/actor``.
    """

    strategy: Literal["fsdp", "fsdp2"]
    model_dir: str
    actor_dir: str


def write_fsdp_checkpoints(runs: Mapping[int, Sequence[CheckpointJob]]) -> None:
    """Write ``runs[world_size]``'s jobs, in order, as ``world_size`` FSDP ranks.

    Each world size is its own process group, and the groups run at the same time: most of a rank's
    time is importing torch and VeRL, which overlaps well. A failing rank raises here with its
    traceback, after every other rank has been stopped.
    """
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="fsdp-rendezvous-") as folder:
        groups = [
            mp.start_processes(
                _rank_main,
                args=(world_size, f"file://{Path(folder) / f'store-{world_size}'}", list(jobs)),
                nprocs=world_size,
                join=False,
                start_method="spawn",
            )
            for world_size, jobs in runs.items()
        ]
        try:
            for group in groups:
                while not group.join():
                    pass
        finally:
            for group in groups:
                for process in group.processes:
                    if process.is_alive():
                        process.terminate()
                        process.join()


def _rank_main(rank: int, world_size: int, init_method: str, jobs: list[CheckpointJob]) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    # Ranks share the cores: one thread each keeps them from fighting over them.
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=init_method,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        mesh = init_device_mesh("cpu", (world_size,), mesh_dim_names=("fsdp",))
        for job in jobs:
            _write(job, mesh)
    finally:
        dist.destroy_process_group()


def _write(job: CheckpointJob, mesh: Any) -> None:
    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from verl.utils.checkpoint.fsdp_checkpoint_manager import FSDPCheckpointManager

    tokenizer = AutoTokenizer.from_pretrained(job.model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(job.model_dir, dtype=torch.float32, local_files_only=True)
    model = _shard(model, job.strategy, mesh)
    manager = FSDPCheckpointManager(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters()),
        lr_scheduler=None,
        processing_class=tokenizer,
        checkpoint_config={"save_contents": ["model", "optimizer", "extra"], "load_contents": ["model"]},
    )
    manager.save_checkpoint(job.actor_dir, global_step=1)
    dist.barrier()


def _shard(model: Any, strategy: str, mesh: Any) -> Any:
    import torch

    if strategy == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy
        from verl.utils.fsdp_utils import get_fsdp_wrap_policy

        return FullyShardedDataParallel(
            model,
            auto_wrap_policy=get_fsdp_wrap_policy(model, config=None),
            device_id=torch.device("cpu"),
            sharding_strategy=ShardingStrategy.FULL_SHARD,
            device_mesh=mesh,
            sync_module_states=False,
            use_orig_params=False,
        )
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from verl.utils.fsdp_utils import apply_fsdp2

    policy = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    options = {"mesh": mesh, "mp_policy": policy, "offload_policy": None, "reshard_after_forward": True}
    apply_fsdp2(model, options, {})
    return model
