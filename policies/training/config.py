"""Settings of the training and merging stages, as they appear in a run profile's `train:` and `merge:`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.training.local_backend import LocalTrainConfig
from policies.training.merge import MergeConfig
from policies.training.verl_backend import VerlConfig

__all__ = ["LocalTrainConfig", "MergeConfig", "TrainConfig", "VerlConfig"]


class TrainConfig(BaseModel):
    """Which trainer runs, and each trainer's own settings (only the chosen one is used)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["local", "verl"] = Field(
        "local", description="local: TRL GRPOTrainer (CPU or one GPU); verl: VeRL on a GPU cluster."
    )
    local: LocalTrainConfig = Field(default_factory=LocalTrainConfig)
    verl: VerlConfig = Field(default_factory=VerlConfig)
