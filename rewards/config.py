"""Settings of the verifiable reward, as they appear in a run profile's `reward:` section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from rewards.formulas import RewardKind


class RewardConfig(BaseModel):
    """Which per-turn reward the trainer optimises (the paper's default is Solve-F1)."""

    model_config = ConfigDict(extra="forbid")

    kind: RewardKind = Field("f1", description="Solve-F1, Solve-P, Solve-R or Solve-PR.")
