"""The offline `template` generator: seeded synthetic worlds, questions from templates, stdlib tool code.

Entry point: `TemplateGenerator(seed)`, which carries one object per construction stage
(`decomposer`, `documenter`, `integrator`, `scaler`, `deployer`) and `build(request, operations)`.
Invariants: same seed and request, same bytes; no question contains a sub-answer; no tool document
contains a sub-answer; every golden call returns its sub-answer and no wrong enum value does.
"""

from envs.construction.template.generator import TemplateGenerator
from envs.construction.template.templates import COMPUTATIONS, RELATIONS, TEMPLATES

__all__ = ["COMPUTATIONS", "RELATIONS", "TEMPLATES", "TemplateGenerator"]
