"""The data that flows between the five construction stages, and the stage interfaces.

1. decompose: a `ScenarioRequest` becomes a `Scenario` — a question split into sub-questions with
   sub-answers, in one of four scenario types;
2. document: one tool document per sub-question and its golden call (`DocumentedScenario`);
3. integrate: tools with overlapping functionality merged into fewer, more general ones, golden
   calls rewritten to match (`IntegratedScenario`);
4. scale: functional generalization, parameter expansion, parameter-type generalization and
   toolset extension applied and recorded (`ScaledScenario`);
5. deploy: Python code for every tool (`DeployedEnvironment`), which becomes an `EnvRow`.

`ToolPlan.backing` is the one place a generator keeps what a tool must compute (its data, the
relation it looks up); the stages after it read and rewrite it, and deploy turns it into code.
The meta written into each environment row (`environment_meta`) is what verification, the oracle
policy and the build report read back.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from envs.schema import EnvRow
from rewards.matching import contains_answer

ScenarioType = Literal["single-hop", "parallel single-hop", "multi-hop", "parallel multi-hop"]
SCENARIO_TYPES: tuple[ScenarioType, ...] = (
    "single-hop",
    "parallel single-hop",
    "multi-hop",
    "parallel multi-hop",
)

ScalingOp = Literal[
    "functional generalization", "parameter expansion", "parameter-type generalization", "toolset extension"
]
SCALING_OPS: tuple[ScalingOp, ...] = (
    "functional generalization",
    "parameter expansion",
    "parameter-type generalization",
    "toolset extension",
)


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioRequest(_Stage):
    """What to build: the scenario type, and the seed and index that make the result reproducible."""

    scenario_type: ScenarioType
    seed: int
    index: int = 0
    domain: str | None = None


class SubQuestion(_Stage):
    """One step of a decomposed question. `depends_on` chains multi-hop steps (ids of earlier steps
    whose answers this step's call needs); `entities` are what its answer depends on, for leakage
    checks between train and test."""

    id: str = Field(pattern=r"^q[0-9]+$")
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    depends_on: tuple[str, ...] = ()
    entities: tuple[str, ...] = ()


class Scenario(_Stage):
    scenario_type: ScenarioType
    domain: str
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1, description="The final answer the user wants.")
    sub_questions: tuple[SubQuestion, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_shape(self) -> Scenario:
        ids = [sub.id for sub in self.sub_questions]
        if len(set(ids)) != len(ids):
            raise ValueError(f"sub-question ids repeat: {ids}")
        for position, sub in enumerate(self.sub_questions):
            unknown = [dep for dep in sub.depends_on if dep not in ids[:position]]
            if unknown:
                raise ValueError(f"{sub.id} depends on {unknown}, which are not earlier sub-questions")
        chained = any(sub.depends_on for sub in self.sub_questions)
        roots = sum(1 for sub in self.sub_questions if not sub.depends_on)
        expected = {
            "single-hop": len(ids) == 1,
            "parallel single-hop": len(ids) >= 2 and not chained,
            "multi-hop": len(ids) >= 2 and chained and roots == 1,
            "parallel multi-hop": len(ids) >= 3 and chained and roots >= 2,
        }[self.scenario_type]
        if not expected:
            raise ValueError(f"sub-questions do not have the shape of a {self.scenario_type} scenario")
        if contains_answer(self.question, self.answer):
            raise ValueError("the question contains its own answer (under the reward's matching rule)")
        return self


class ToolDocument(_Stage):
    """An OpenAI function schema."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    description: str = Field(min_length=1)
    parameters: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


class ToolPlan(_Stage):
    document: ToolDocument
    covers: tuple[str, ...] = Field(default=(), description="Sub-question ids this tool answers.")
    backing: dict[str, Any] = Field(default_factory=dict, description="Generator data: what it computes.")


class GoldenCall(_Stage):
    sub_question: str
    name: str
    arguments: dict[str, Any]


class ScalingRecord(_Stage):
    op: ScalingOp
    tool: str
    detail: str


class _Toolset(_Stage):
    scenario: Scenario
    tools: tuple[ToolPlan, ...]
    golden_calls: tuple[GoldenCall, ...]

    @model_validator(mode="after")
    def _check_calls(self) -> _Toolset:
        names = [tool.document.name for tool in self.tools]
        if len(set(names)) != len(names):
            raise ValueError(f"tool names repeat: {names}")
        answered = [call.sub_question for call in self.golden_calls]
        wanted = [sub.id for sub in self.scenario.sub_questions]
        if sorted(answered) != sorted(wanted):
            raise ValueError(f"golden calls answer {answered}, the scenario asks {wanted}")
        unknown = [call.name for call in self.golden_calls if call.name not in names]
        if unknown:
            raise ValueError(f"golden calls name unknown tools {unknown}")
        return self

    def tool(self, name: str) -> ToolPlan:
        return next(tool for tool in self.tools if tool.document.name == name)


class DocumentedScenario(_Toolset):
    """Stage 2: one tool per sub-question."""


class IntegratedScenario(_Toolset):
    """Stage 3: overlapping tools merged; `merged` maps each new tool to the tools it replaced."""

    merged: dict[str, tuple[str, ...]] = Field(default_factory=dict)


class ScaledScenario(_Toolset):
    """Stage 4: the toolset made harder; every operation applied is recorded."""

    merged: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    scaling: tuple[ScalingRecord, ...] = ()


class DeployedEnvironment(_Stage):
    """Stage 5: runnable code for every tool of the scaled toolset."""

    scaled: ScaledScenario
    codes: dict[str, str]
    generator: str
    seed: int

    @model_validator(mode="after")
    def _check_codes(self) -> DeployedEnvironment:
        missing = [tool.document.name for tool in self.scaled.tools if tool.document.name not in self.codes]
        if missing:
            raise ValueError(f"no code for tools {missing}")
        return self


# --------------------------------------------------------------------------- stage interfaces


class Decomposer(Protocol):
    def decompose(self, request: ScenarioRequest) -> Scenario: ...


class Documenter(Protocol):
    def document(self, scenario: Scenario) -> DocumentedScenario: ...


class Integrator(Protocol):
    def integrate(self, documented: DocumentedScenario) -> IntegratedScenario: ...


class Scaler(Protocol):
    def scale(self, integrated: IntegratedScenario, operations: tuple[ScalingOp, ...]) -> ScaledScenario: ...


class Deployer(Protocol):
    def deploy(self, scaled: ScaledScenario) -> DeployedEnvironment: ...


class Generator(Protocol):
    """A full set of stages under one name (`template`, `llm`)."""

    name: str
    decomposer: Decomposer
    documenter: Documenter
    integrator: Integrator
    scaler: Scaler
    deployer: Deployer


def run_stages(
    generator: Generator, request: ScenarioRequest, operations: tuple[ScalingOp, ...]
) -> DeployedEnvironment:
    scenario = generator.decomposer.decompose(request)
    documented = generator.documenter.document(scenario)
    integrated = generator.integrator.integrate(documented)
    scaled = generator.scaler.scale(integrated, operations)
    return generator.deployer.deploy(scaled)


# --------------------------------------------------------------------------- to an environment row


def environment_meta(env: DeployedEnvironment) -> dict[str, Any]:
    """The row's `meta`: scenario, sub-questions with golden calls and sub-answers, scaling, provenance."""
    scaled = env.scaled
    calls = {call.sub_question: call for call in scaled.golden_calls}
    return {
        "scenario": scaled.scenario.scenario_type,
        "domain": scaled.scenario.domain,
        "sub_questions": [
            {
                "id": sub.id,
                "question": sub.question,
                "answer": sub.answer,
                "depends_on": list(sub.depends_on),
                "entities": list(sub.entities),
                "call": {"name": calls[sub.id].name, "arguments": calls[sub.id].arguments},
            }
            for sub in scaled.scenario.sub_questions
        ],
        "merged": {name: list(old) for name, old in scaled.merged.items()},
        "scaling": [record.model_dump() for record in scaled.scaling],
        "generator": env.generator,
        "seed": env.seed,
    }


def to_env_row(env: DeployedEnvironment, *, split: Literal["train", "test"], data_source: str) -> EnvRow:
    scaled = env.scaled
    calls = {call.sub_question: call for call in scaled.golden_calls}
    unsolved: dict[str, list[str]] = {}
    for sub in scaled.scenario.sub_questions:
        unsolved.setdefault(calls[sub.id].name, []).append(sub.answer)
    return EnvRow(
        messages=[{"role": "user", "content": scaled.scenario.question}],
        tools=json.dumps([tool.document.to_openai() for tool in scaled.tools], ensure_ascii=False),
        codes=json.dumps(env.codes, ensure_ascii=False),
        unsolved_set=json.dumps(unsolved, ensure_ascii=False),
        answer=scaled.scenario.answer,
        solve_rate=0.0,
        data_source=data_source,
        split=split,
        meta=json.dumps(environment_meta(env), ensure_ascii=False),
    )
