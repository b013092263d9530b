"""Options every profile-reading `ftrl` command takes, shared by the main app and its sub-app modules.

Kept apart from `flows.cli` for the reason `flows.errors` is: a sub-app module that imported the
main app would import the module that mounts it.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

ProfileOption = Annotated[
    Path | None,
    typer.Option("--profile", "-p", help="YAML run profile, e.g. configs/cpu-demo.yaml; default: built-ins."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one setting, e.g. --set sandbox.wall_time_s=5 (repeatable)."),
]


class Backend(str, Enum):
    """The generation backends a command can pick (`policies.backends.BACKENDS`)."""

    transformers = "transformers"
    vllm = "vllm"
    openai = "openai"
