"""Stage 3 (template generator): tools with overlapping functionality merged into general ones.

Three merges, tried in this order, each only when the merged tool stays sound (`tools.problems`):

- two or more lookups on one kind ("director of a film", "release year of a film") become one tool
  with an `attribute` enum: `get_film_info(film, attribute)`;
- lookups of one family on different kinds ("director of a film", "author of a book") become one tool
  with a type enum: `get_creator(work, work_type)`, the paper's own example;
- computations of one family (two unit conversions) become the family's general tool,
  `convert_length(value, from_unit, to_unit)`.

Golden calls are never edited: each covered sub-question keeps its slots, and the merged tool's
parameters turn them into arguments.
"""

from __future__ import annotations

from collections.abc import Callable

from envs.construction.stages import DocumentedScenario, IntegratedScenario, Scenario, ToolPlan
from envs.construction.template.templates import COMPUTE_FAMILIES, KINDS, LOOKUP_FAMILIES, RELATION_AT
from envs.construction.template.tools import (
    Backing,
    clean_tables,
    copy_tool,
    describe_lookup,
    golden_calls,
    plan,
    problems,
    prune_enums,
    subject_param,
)
from envs.construction.template.world import World


class TemplateIntegrator:
    def __init__(self, world: World) -> None:
        self.world = world

    def integrate(self, documented: DocumentedScenario) -> IntegratedScenario:
        scenario = documented.scenario
        tools = list(documented.tools)
        merged: dict[str, tuple[str, ...]] = {}
        for key, build in (
            (_same_kind, self._merge_kind),
            (_same_family, self._merge_family),
            (_same_computation, self._merge_computation),
        ):
            for group, members in _groups(tools, key).items():
                if len(members) < 2:
                    continue
                ids = [id(tool) for tool in members]
                taken = {tool.document.name for tool in tools if id(tool) not in ids}
                candidate = build(group, members, scenario)
                if candidate is None or candidate.document.name in taken or problems(scenario, [candidate]):
                    continue
                position = next(index for index, tool in enumerate(tools) if id(tool) == ids[0])
                tools = [tool for tool in tools if id(tool) not in ids]
                tools.insert(position, candidate)
                merged[candidate.document.name] = tuple(tool.document.name for tool in members)
        return IntegratedScenario(
            scenario=scenario, tools=tuple(tools), golden_calls=golden_calls(scenario, tools), merged=merged
        )

    def _merge_kind(self, kind: str, members: list[ToolPlan], scenario: Scenario) -> ToolPlan | None:
        attributes = list(dict.fromkeys(a for tool in members for a in tool.backing["tables"][kind][0][1]))
        names = list(dict.fromkeys(row[0] for tool in members for row in tool.backing["tables"][kind]))
        rows = [[name, {a: self.world.get(kind, name).attrs[a] for a in attributes}] for name in names]
        selector = {
            "name": "attribute",
            "slot": "attribute",
            "type": "enum",
            "values": attributes,
            "description": f"Which fact about the {KINDS[kind].label} to look up.",
            "required": True,
        }
        backing: Backing = {
            "kind": "lookup",
            "description": "",
            "params": [subject_param(kind), selector],
            "tables": {kind: rows},
            "output": "value",
            "calls": _calls(members),
        }
        return self._finish(f"get_{kind}_info", backing, scenario)

    def _merge_family(self, family: str, members: list[ToolPlan], scenario: Scenario) -> ToolPlan | None:
        info = LOOKUP_FAMILIES[family]
        kinds = [next(iter(tool.backing["tables"])) for tool in members]
        if len(set(kinds)) != len(kinds):
            return None
        labels = " or ".join(KINDS[kind].label for kind in kinds)
        backing: Backing = {
            "kind": "lookup",
            "family": family,
            "description": "",
            "params": [
                {
                    "name": info.param,
                    "slot": "subject",
                    "type": "string",
                    "description": f"The name or title of the {labels}.",
                    "required": True,
                },
                {
                    "name": info.type_param,
                    "slot": "type",
                    "type": "enum",
                    "values": kinds,
                    "description": f"What {info.param} it is.",
                    "required": True,
                },
            ],
            "tables": {
                kind: copy_tool(tool)["tables"][kind] for kind, tool in zip(kinds, members, strict=True)
            },
            "output": "value",
            "calls": _calls(members),
        }
        return self._finish(info.tool, backing, scenario)

    def _merge_computation(self, family: str, members: list[ToolPlan], scenario: Scenario) -> ToolPlan:
        info = COMPUTE_FAMILIES[family]
        backing: Backing = {
            "kind": "compute",
            "family": family,
            "description": info.description,
            "params": [
                dict(param, values=list(param["values"])) if "values" in param else dict(param)
                for param in info.params
            ],
            "fixed": {},
            "calls": _calls(members),
        }
        rates = {name: rate for tool in members for name, rate in tool.backing.get("rates", [])}
        if rates:
            backing["rates"] = [[name, rate] for name, rate in rates.items()]
        prune_enums(scenario, backing)
        return plan(info.tool, backing)

    def _finish(self, name: str, backing: Backing, scenario: Scenario) -> ToolPlan | None:
        if not clean_tables(backing, {sub.id: sub.answer for sub in scenario.sub_questions}):
            return None
        backing["description"] = describe_lookup(backing)
        return plan(name, backing)


def _calls(members: list[ToolPlan]) -> dict[str, dict]:
    return {sub_id: dict(slots) for tool in members for sub_id, slots in tool.backing["calls"].items()}


def _groups(tools: list[ToolPlan], key: Callable[[ToolPlan], str | None]) -> dict[str, list[ToolPlan]]:
    groups: dict[str, list[ToolPlan]] = {}
    for tool in tools:
        value = key(tool)
        if value is not None:
            groups.setdefault(value, []).append(tool)
    return groups


def _single_lookup(tool: ToolPlan) -> tuple[str, str] | None:
    """(kind, attribute) of a stage-2 lookup: one table, one attribute, no type or selector."""
    backing = tool.backing
    if backing["kind"] != "lookup" or len(backing["tables"]) != 1 or len(backing["params"]) != 1:
        return None
    ((kind, rows),) = backing["tables"].items()
    attributes = list(rows[0][1])
    return (kind, attributes[0]) if len(attributes) == 1 else None


def _same_kind(tool: ToolPlan) -> str | None:
    single = _single_lookup(tool)
    return single[0] if single else None


def _same_family(tool: ToolPlan) -> str | None:
    single = _single_lookup(tool)
    return RELATION_AT[single].family if single else None


def _same_computation(tool: ToolPlan) -> str | None:
    return tool.backing["family"] if tool.backing["kind"] == "compute" else None
