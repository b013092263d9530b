"""Settings of the training and merging stages, as they appear in a run profile's `train:` and `merge:`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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

    @model_validator(mode="after")
    def _one_source_of_truth(self) -> TrainConfig:
        """Training must parse and score turns exactly as sampling did, so those come from the
        profile's `model.parser` and `reward.kind`, never from a second copy here."""
        owned = {"reward_kind": "reward.kind", "parser": "model.parser"}
        clashes = [
            f"local.{key} (set {where} instead)"
            for key, where in owned.items()
            if key in self.local.model_fields_set
        ]
        if clashes:
            raise ValueError(f"not a training setting: {', '.join(clashes)}")
        return self
