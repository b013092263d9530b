"""Stage 2 (template generator): one tool document, and its golden call, per sub-question.

The documenter reads each sub-question as text, as an LLM documenter would: it parses the question
back into its template and inputs (`templates.parse`), checks the sub-answer against the world,
and writes the tool that answers exactly that — a lookup whose table holds the needed rows plus
distractor rows, or a computation with its fixed parts built in. Sub-questions asking the same
template (the dates of two events) share one tool. A question the template generator did not ask
cannot be parsed, and is refused with a message that says so.
"""

from __future__ import annotations

import random
from typing import Any

from envs.construction.stages import DocumentedScenario, Scenario, SubQuestion
from envs.construction.template import runtime
from envs.construction.template.decompose import resolves
from envs.construction.template.templates import Relation, Template, parse
from envs.construction.template.tools import (
    StageFailure,
    compute_tool,
    compute_value,
    golden_calls,
    lookup_tool,
)
from envs.construction.template.world import World


class TemplateDocumenter:
    def __init__(self, world: World) -> None:
        self.world = world

    def document(self, scenario: Scenario) -> DocumentedScenario:
        rng = random.Random("document/" + scenario.model_dump_json())
        answers = [sub.answer for sub in scenario.sub_questions]
        groups: dict[str, tuple[Template, dict[str, dict[str, Any]]]] = {}
        for sub in scenario.sub_questions:
            template, slots = self.read(sub)
            groups.setdefault(template.name, (template, {}))[1][sub.id] = slots
        tools = [
            (lookup_tool if isinstance(template, Relation) else compute_tool)(
                self.world, template, calls, answers, rng
            )
            for template, calls in groups.values()
        ]
        return DocumentedScenario(
            scenario=scenario, tools=tuple(tools), golden_calls=golden_calls(scenario, tools)
        )

    def read(self, sub: SubQuestion) -> tuple[Template, dict[str, Any]]:
        """The template a sub-question asks and the slots its golden call needs; checks the sub-answer."""
        readings = [r for r in parse(sub.question) if resolves(self.world, r.template, r.inputs)]
        if len(readings) != 1:
            raise StageFailure(
                "document",
                "not a template question",
                f"sub-question {sub.id} ({sub.question!r}) is not one the template generator asks of its "
                f"world (seed {self.world.seed}), so the template documenter cannot document it",
            )
        template, inputs = readings[0].template, readings[0].inputs
        if isinstance(template, Relation):
            slots = {"subject": inputs["s"], "type": template.kind, "attribute": template.attribute}
            expected = str(self.world.get(template.kind, inputs["s"]).attrs[template.attribute])
        else:
            slots = {**template.fixed, **{item.slot: inputs[item.name] for item in template.inputs}}
            expected = runtime.format_number(compute_value(self.world, template.family, slots))
        if expected != sub.answer:
            raise ValueError(
                f"sub-question {sub.id} ({sub.question!r}) has the answer {expected!r}, not {sub.answer!r}"
            )
        return template, slots
