"""The five stages, each one prompt to the model and the checks on its answer.

The model answers with a small payload (what it must invent), and each stage assembles the contract's
stage object from it and from what earlier stages fixed: the scenario type comes from the request,
tool names that golden calls must keep come from the previous toolset, and `backing` (the cases
each tool's code must answer: arguments and the sub-answer they return) is derived from the golden
calls, never asked for, so it cannot disagree with them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from envs.construction.llm._checks import check_arguments, check_code, check_parameters
from envs.construction.llm._driver import Driver
from envs.construction.llm._prompts import render_prompt
from envs.construction.llm._rejections import Reject
from envs.construction.stages import (
    DeployedEnvironment,
    DocumentedScenario,
    GoldenCall,
    IntegratedScenario,
    ScaledScenario,
    ScalingOp,
    ScalingRecord,
    Scenario,
    ScenarioRequest,
    SubQuestion,
    ToolDocument,
    ToolPlan,
)
from envs.verify import description_texts, states_whole  # the verifier's own leak rule
from policies.backends.base import derive_seed
from rewards.matching import contains_answer

__all__ = ["LLMDecomposer", "LLMDeployer", "LLMDocumenter", "LLMIntegrator", "LLMScaler"]

GENERATOR_NAME = "llm"


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ScenarioOut(_Payload):
    domain: str = Field(min_length=1)
    question: str
    answer: str
    sub_questions: tuple[SubQuestion, ...]


class _DocumentedTool(ToolDocument):
    sub_question: str
    arguments: dict[str, Any]


class _DocumentOut(_Payload):
    tools: tuple[_DocumentedTool, ...] = Field(min_length=1)


class _MergedTool(ToolDocument):
    replaces: tuple[str, ...] = Field(min_length=1)


class _IntegrateOut(_Payload):
    tools: tuple[_MergedTool, ...] = Field(min_length=1)
    calls: tuple[GoldenCall, ...]


class _ScaleOut(_Payload):
    tools: tuple[ToolDocument, ...] = Field(min_length=1)
    calls: tuple[GoldenCall, ...]
    scaling: tuple[ScalingRecord, ...] = Field(min_length=1)


class _DeployOut(_Payload):
    codes: dict[str, str]


# --------------------------------------------------------------------------- stages


class LLMDecomposer:
    """Stage 1: a question in the requested scenario type, with its sub-questions and sub-answers.

    Without a domain in the request, a topic is drawn from ``source_material`` (seeded by the
    request), so a large build spreads over the topics instead of repeating the model's favourite.
    """

    def __init__(self, driver: Driver, source_material: Sequence[str] = ()) -> None:
        self.driver = driver
        self.source_material = tuple(source_material)

    def decompose(self, request: ScenarioRequest) -> Scenario:
        prompt = render_prompt(
            "decompose",
            scenario_type=request.scenario_type,
            domain=request.domain or "any",
            topic=self._topic(request),
            variation=f"{request.seed}/{request.index}",
        )

        def read(payload: dict[str, Any]) -> Scenario:
            out = _ScenarioOut.model_validate(payload)
            return Scenario(
                scenario_type=request.scenario_type,
                domain=request.domain or out.domain,
                question=out.question,
                answer=out.answer,
                sub_questions=out.sub_questions,
            )

        return self.driver.ask("decompose", prompt, read)

    def _topic(self, request: ScenarioRequest) -> str:
        if not self.source_material:
            return "none"
        pick = derive_seed("llm-topic", self.driver.seed, request.seed, request.index)
        return self.source_material[pick % len(self.source_material)]


class LLMDocumenter:
    """Stage 2: one tool document and golden call per sub-question, so the task is solvable by
    construction; a step that depends on another passes that step's answer in its arguments."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def document(self, scenario: Scenario) -> DocumentedScenario:
        prompt = render_prompt("document", scenario=_dump(scenario.model_dump(mode="json")))

        def read(payload: dict[str, Any]) -> DocumentedScenario:
            out = _DocumentOut.model_validate(payload)
            answered = [tool.sub_question for tool in out.tools]
            wanted = [sub.id for sub in scenario.sub_questions]
            if sorted(answered) != sorted(wanted):
                raise Reject(
                    "not one tool per sub-question",
                    f"the tools answer sub-questions {answered}; the scenario has {wanted}: write "
                    "exactly one tool for each sub-question",
                )
            documents = [_document(tool) for tool in out.tools]
            calls = tuple(
                GoldenCall(sub_question=t.sub_question, name=t.name, arguments=t.arguments) for t in out.tools
            )
            _check_toolset(scenario, documents, calls)
            return DocumentedScenario(
                scenario=scenario, tools=_plans(scenario, documents, calls), golden_calls=calls
            )

        return self.driver.ask("document", prompt, read)


class LLMIntegrator:
    """Stage 3: tools with overlapping functionality merged into fewer, more general ones.

    A single tool has nothing to merge with, so it passes through without a request.
    """

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def integrate(self, documented: DocumentedScenario) -> IntegratedScenario:
        if len(documented.tools) == 1:
            return IntegratedScenario(
                scenario=documented.scenario, tools=documented.tools, golden_calls=documented.golden_calls
            )
        prompt = render_prompt("integrate", toolset=_dump(_toolset_view(documented)))
        old_names = [tool.document.name for tool in documented.tools]
        old_calls = {call.sub_question: call.name for call in documented.golden_calls}
        scenario = documented.scenario

        def read(payload: dict[str, Any]) -> IntegratedScenario:
            out = _IntegrateOut.model_validate(payload)
            replaced = [name for tool in out.tools for name in tool.replaces]
            unknown = [name for name in replaced if name not in old_names]
            if unknown:
                raise Reject(
                    "replaces an unknown tool", f"`replaces` names {unknown}; the tools are {old_names}"
                )
            if sorted(replaced) != sorted(old_names):
                raise Reject(
                    "tools not replaced exactly once",
                    f"`replaces` lists {replaced}; every one of {old_names} must be replaced by exactly one "
                    "new tool (a tool that merges with nothing replaces itself)",
                )
            _check_calls_match(scenario, out.calls)
            owner = {old: tool.name for tool in out.tools for old in tool.replaces}
            for call in out.calls:
                expected = owner[old_calls[call.sub_question]]
                if call.name != expected:
                    raise Reject(
                        "call uses the wrong tool",
                        f"sub-question {call.sub_question} was answered by {old_calls[call.sub_question]!r}, "
                        f"which {expected!r} replaces, but its call names {call.name!r}",
                    )
            documents = [_document(tool) for tool in out.tools]
            _check_toolset(scenario, documents, out.calls)
            return IntegratedScenario(
                scenario=scenario,
                tools=_plans(scenario, documents, out.calls),
                golden_calls=out.calls,
                merged={tool.name: tool.replaces for tool in out.tools if tool.replaces != (tool.name,)},
            )

        return self.driver.ask("integrate", prompt, read)


class LLMScaler:
    """Stage 4: the requested scaling operations, applied by the model and each one recorded.

    Existing tools keep their names (golden calls stay on the same tool); new tools are distractors
    and must come with a toolset-extension record. With no operation requested, nothing is asked.
    """

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def scale(self, integrated: IntegratedScenario, operations: tuple[ScalingOp, ...]) -> ScaledScenario:
        if not operations:
            return ScaledScenario(
                scenario=integrated.scenario,
                tools=integrated.tools,
                golden_calls=integrated.golden_calls,
                merged=integrated.merged,
            )
        prompt = render_prompt(
            "scale",
            toolset=_dump(_toolset_view(integrated)),
            operations=_dump(list(dict.fromkeys(operations))),
        )
        before = {tool.document.name: tool.document for tool in integrated.tools}
        old_calls = {call.sub_question: call.name for call in integrated.golden_calls}
        scenario = integrated.scenario

        def read(payload: dict[str, Any]) -> ScaledScenario:
            out = _ScaleOut.model_validate(payload)
            after = {tool.name: tool for tool in out.tools}
            dropped = [name for name in before if name not in after]
            if dropped:
                raise Reject(
                    "existing tool dropped", f"tools {dropped} are missing; keep every existing tool by name"
                )
            _check_calls_match(scenario, out.calls)
            for call in out.calls:
                if call.name != old_calls[call.sub_question]:
                    raise Reject(
                        "call moved to another tool",
                        f"sub-question {call.sub_question} must still be answered by "
                        f"{old_calls[call.sub_question]!r}, not {call.name!r}",
                    )
            _check_toolset(scenario, out.tools, out.calls)  # schemas first: the records read them
            _check_records(out.scaling, operations, before, after)
            return ScaledScenario(
                scenario=scenario,
                tools=_plans(scenario, out.tools, out.calls),
                golden_calls=out.calls,
                merged=integrated.merged,
                scaling=out.scaling,
            )

        return self.driver.ask("scale", prompt, read)


class LLMDeployer:
    """Stage 5: Python code for every tool, checked by parsing only (the sandbox runs it later)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    def deploy(self, scaled: ScaledScenario) -> DeployedEnvironment:
        prompt = render_prompt("deploy", tools=_dump(_deploy_view(scaled)))
        names = [tool.document.name for tool in scaled.tools]

        def read(payload: dict[str, Any]) -> DeployedEnvironment:
            codes = _DeployOut.model_validate(payload).codes
            missing = [name for name in names if name not in codes]
            if missing:
                raise Reject("code missing for a tool", f"`codes` has no entry for {missing}")
            extra = [name for name in codes if name not in names]
            if extra:
                raise Reject("code for an unknown tool", f"`codes` names {extra}; the tools are {names}")
            for tool in scaled.tools:
                name = tool.document.name
                calls = [call.arguments for call in scaled.golden_calls if call.name == name]
                check_code(name, codes[name], tool.document.parameters, calls)
            return DeployedEnvironment(
                scaled=scaled,
                codes={name: codes[name] for name in names},
                generator=GENERATOR_NAME,
                seed=self.driver.seed,
            )

        return self.driver.ask("deploy", prompt, read)


# --------------------------------------------------------------------------- shared checks and views


def _check_calls_match(scenario: Scenario, calls: Iterable[GoldenCall]) -> None:
    answered = [call.sub_question for call in calls]
    wanted = [sub.id for sub in scenario.sub_questions]
    if sorted(answered) != sorted(wanted):
        raise Reject(
            "calls do not match sub-questions",
            f"`calls` answer sub-questions {answered}; the scenario has {wanted}: one call for each",
        )


def _check_toolset(
    scenario: Scenario, documents: Sequence[ToolDocument], calls: Iterable[GoldenCall]
) -> None:
    """Every schema is a JSON Schema whose descriptions state no sub-answer (the verifier's rule,
    applied here so the model can fix it), every call fits its tool, and a step that depends on
    another passes that step's answer: the chain a multi-hop task needs is in the golden calls."""
    by_name = {document.name: document for document in documents}
    subs = {sub.id: sub for sub in scenario.sub_questions}
    for document in documents:
        check_parameters(document.name, document.parameters)
        texts = list(description_texts(document.to_openai()))
        for sub in scenario.sub_questions:
            if any(states_whole(text, sub.answer) for text in texts):
                raise Reject(
                    "tool document states a sub-answer",
                    f"a description in tool {document.name!r} states {sub.id}'s answer {sub.answer!r}; "
                    "descriptions say what a tool does, never what it returns for this question",
                )
    for call in calls:
        if call.name not in by_name:
            raise Reject(
                "call names unknown tool",
                f"the call for {call.sub_question} names {call.name!r}; tools are {list(by_name)}",
            )
        check_arguments(call.name, by_name[call.name].parameters, call.arguments)
        text = json.dumps(call.arguments, ensure_ascii=False)
        for dependency in subs[call.sub_question].depends_on:
            if not contains_answer(text, subs[dependency].answer):
                raise Reject(
                    "call ignores the answer it depends on",
                    f"{call.sub_question} depends on {dependency}, so the arguments of its call must contain "
                    f"{dependency}'s answer {subs[dependency].answer!r}; they are {text}",
                )


def _check_records(
    records: Sequence[ScalingRecord],
    operations: Sequence[ScalingOp],
    before: dict[str, ToolDocument],
    after: dict[str, ToolDocument],
) -> None:
    """Each record names a requested operation and a tool it really changed; every operation is applied."""
    unrequested = [record.op for record in records if record.op not in operations]
    if unrequested:
        raise Reject(
            "operation not requested", f"records apply {unrequested}; only {list(operations)} were asked for"
        )
    missing = [op for op in operations if op not in {record.op for record in records}]
    if missing:
        raise Reject("operation not applied", f"no record applies {missing}; apply every requested operation")
    new = [name for name in after if name not in before]
    extended = {record.tool for record in records if record.op == "toolset extension"}
    for record in records:
        if record.tool not in after:
            raise Reject(
                "record names unknown tool",
                f"a {record.op} record names {record.tool!r}; tools are {list(after)}",
            )
        if (record.op == "toolset extension") != (record.tool in new):
            raise Reject(
                "toolset extension mismatch",
                f"a {record.op} record names {record.tool!r}: toolset extension records name new tools, "
                f"every other operation changes an existing tool ({list(before)})",
            )
        old, changed = before.get(record.tool), after[record.tool]
        if old is None:
            continue
        old_props, new_props = old.parameters.get("properties", {}), changed.parameters.get("properties", {})
        if record.op == "parameter expansion" and not set(new_props) > set(old_props):
            raise Reject(
                "parameter expansion adds no parameter",
                f"{record.tool!r} had parameters {sorted(old_props)} and now has {sorted(new_props)}",
            )
        if record.op == "parameter-type generalization" and all(
            new_props.get(p) == s for p, s in old_props.items()
        ):
            raise Reject(
                "parameter-type generalization changes no type",
                f"no existing parameter of {record.tool!r} has a new schema",
            )
        if record.op == "functional generalization" and changed == old:
            raise Reject("functional generalization changes nothing", f"{record.tool!r} is unchanged")
    unrecorded = [name for name in new if name not in extended]
    if unrecorded:
        raise Reject(
            "new tool without toolset extension", f"new tools {unrecorded} have no toolset extension record"
        )


def _document(tool: ToolDocument) -> ToolDocument:
    """The bare tool document of a payload's tool, without the payload's own fields."""
    return ToolDocument(name=tool.name, description=tool.description, parameters=tool.parameters)


def _plans(
    scenario: Scenario, documents: Sequence[ToolDocument], calls: Sequence[GoldenCall]
) -> tuple[ToolPlan, ...]:
    """Tool plans whose `backing` lists the cases the code must answer: each golden call's arguments
    and the sub-answer it returns (none for a distractor)."""
    answers = {sub.id: sub.answer for sub in scenario.sub_questions}
    plans = []
    for document in documents:
        mine = [call for call in calls if call.name == document.name]
        cases = [
            {
                "sub_question": call.sub_question,
                "arguments": call.arguments,
                "answer": answers[call.sub_question],
            }
            for call in mine
        ]
        plans.append(
            ToolPlan(
                document=document, covers=tuple(call.sub_question for call in mine), backing={"cases": cases}
            )
        )
    return tuple(plans)


def _toolset_view(toolset: DocumentedScenario | IntegratedScenario) -> dict[str, Any]:
    scenario = toolset.scenario
    return {
        "question": scenario.question,
        "sub_questions": [
            {"id": sub.id, "question": sub.question, "answer": sub.answer, "depends_on": list(sub.depends_on)}
            for sub in scenario.sub_questions
        ],
        "tools": [tool.document.model_dump(mode="json") for tool in toolset.tools],
        "calls": [call.model_dump(mode="json") for call in toolset.golden_calls],
    }


def _deploy_view(scaled: ScaledScenario) -> list[dict[str, Any]]:
    return [
        {
            **tool.document.model_dump(mode="json"),
            "must_return": [
                {"arguments": case["arguments"], "answer": case["answer"]} for case in tool.backing["cases"]
            ],
        }
        for tool in scaled.tools
    ]


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)
