"""Stage 5 (template generator): runnable code for every tool of the scaled toolset.

Before writing code the deployer runs the generator's self-check once more (`tools.problems`): an
environment whose golden calls would not answer, or whose documents give an answer away, is a bug
in an earlier stage, and it is refused here rather than written out.
"""

from __future__ import annotations

from envs.construction.stages import DeployedEnvironment, ScaledScenario
from envs.construction.template.codegen import tool_source
from envs.construction.template.tools import StageFailure, problems

GENERATOR = "template"


class TemplateDeployer:
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def deploy(self, scaled: ScaledScenario) -> DeployedEnvironment:
        found = problems(scaled.scenario, scaled.tools)
        if found:
            raise StageFailure("deploy", "unsound environment", "; ".join(found))
        answers = [sub.answer for sub in scaled.scenario.sub_questions]
        codes = {tool.document.name: tool_source(tool, answers) for tool in scaled.tools}
        return DeployedEnvironment(scaled=scaled, codes=codes, generator=GENERATOR, seed=self.seed)
