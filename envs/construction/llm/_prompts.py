"""Prompt files, kept as data beside the code: one per stage, plus the message that asks again.

Each file is a ``string.Template`` (``$name`` placeholders; ``$$`` is a literal dollar), so the JSON
examples in it need no escaping. Its first line names the stage ("stage N of 5"), which tells the
model where it is and lets a scripted test server tell the stages apart.
"""

from __future__ import annotations

import functools
import string
from importlib import resources
from typing import Literal

__all__ = ["PROMPT_NAMES", "STAGES", "PromptName", "StageName", "load_prompt", "render_prompt"]

StageName = Literal["decompose", "document", "integrate", "scale", "deploy"]
PromptName = Literal["decompose", "document", "integrate", "scale", "deploy", "retry"]
STAGES: tuple[StageName, ...] = ("decompose", "document", "integrate", "scale", "deploy")
PROMPT_NAMES: tuple[PromptName, ...] = (*STAGES, "retry")


@functools.cache
def load_prompt(name: PromptName) -> string.Template:
    """The packaged prompt file ``prompts/<name>.md``."""
    if name not in PROMPT_NAMES:
        raise ValueError(f"unknown prompt {name!r}; the prompts are {', '.join(PROMPT_NAMES)}")
    text = (resources.files(__package__) / "prompts" / f"{name}.md").read_text(encoding="utf-8")
    return string.Template(text)


def render_prompt(name: PromptName, **values: str) -> str:
    """The prompt with every placeholder filled; a missing value is a bug and raises ``KeyError``."""
    return load_prompt(name).substitute(values)
