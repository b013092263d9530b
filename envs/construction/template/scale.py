"""Stage 4 (template generator): the four complexity-scaling strategies, each recorded.

- functional generalization: a lookup answers more than its sub-question (more attributes, chosen
  with an `attribute` enum or all returned at once); a narrow computation becomes its family's
  general tool (`km_to_miles(km)` → `convert_length(value, from_unit, to_unit)`);
- parameter expansion: optional parameters (`output_format`, `include_subject`, `precision`) whose
  defaults keep the answer unchanged, so golden calls leave them out;
- parameter-type generalization: a string parameter becomes an enum, a list, or an object that
  packs several arguments;
- toolset extension: distractor tools for facts and computations the question does not need.

The tools come out in a seeded random order, so where a needed tool is listed says nothing.
Each operation is tried on the tools in a seeded order and kept only if the result is still sound
(`tools.problems`: golden calls answer, wrong enum values do not, documents leak no sub-answer);
an operation that fits no tool is skipped and not recorded. Golden arguments are re-derived from
each call's slots after every change.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

from envs.construction.stages import (
    SCALING_OPS,
    IntegratedScenario,
    ScaledScenario,
    ScalingOp,
    ScalingRecord,
    Scenario,
    ToolPlan,
)
from envs.construction.template.templates import (
    COMPUTATIONS,
    COMPUTE_FAMILIES,
    KINDS,
    LOOKUP_FAMILIES,
    RELATIONS,
    RELATIONS_BY_KIND,
    Relation,
)
from envs.construction.template.tools import (
    OPTIONS,
    Backing,
    clean_tables,
    compute_tool,
    copy_tool,
    describe_lookup,
    golden_calls,
    lookup_tool,
    plan,
    problems,
    prune_enums,
)
from envs.construction.template.world import World
from rewards.matching import matches

Change = tuple[list[ToolPlan], str, str]  # the new toolset, the tool changed, and what was done


class TemplateScaler:
    def __init__(self, world: World) -> None:
        self.world = world

    def scale(self, integrated: IntegratedScenario, operations: tuple[ScalingOp, ...]) -> ScaledScenario:
        unknown = [op for op in operations if op not in SCALING_OPS]
        if unknown:
            raise ValueError(f"unknown scaling operations {unknown}; choose from: {', '.join(SCALING_OPS)}")
        scenario = integrated.scenario
        names = [tool.document.name for tool in integrated.tools]
        rng = random.Random("scale/" + scenario.model_dump_json() + json.dumps([names, list(operations)]))
        appliers: dict[str, Callable[[Scenario, list[ToolPlan], int, random.Random], Change | None]] = {
            "functional generalization": self._generalize_function,
            "parameter expansion": self._expand_parameters,
            "parameter-type generalization": self._generalize_types,
        }
        tools = list(integrated.tools)
        records = []
        for op in dict.fromkeys(operations):
            if op == "toolset extension":
                change = self._extend_toolset(scenario, tools, rng)
                changes = [change] if change else []
            else:
                targets = [index for index, tool in enumerate(tools) if tool.backing["calls"]]
                rng.shuffle(targets)
                changes = (appliers[op](scenario, tools, index, rng) for index in targets)
            for change in changes:
                if change is None:
                    continue
                candidate, name, detail = change
                new_names = [tool.document.name for tool in candidate]
                if len(set(new_names)) == len(new_names) and not problems(scenario, candidate):
                    tools = candidate
                    records.append(ScalingRecord(op=op, tool=name, detail=detail))
                    break
        # Integration lists the tools the golden calls need first and extension appends distractors
        # after them: left so, "call the first tool" would solve every environment without reading
        # the question. The final toolset is shown in a seeded random order instead.
        rng.shuffle(tools)
        return ScaledScenario(
            scenario=scenario,
            tools=tuple(tools),
            golden_calls=golden_calls(scenario, tools),
            merged=dict(integrated.merged),
            scaling=tuple(records),
        )

    # ---- functional generalization

    def _generalize_function(
        self, scenario: Scenario, tools: list[ToolPlan], index: int, rng: random.Random
    ) -> Change | None:
        tool = tools[index]
        backing = copy_tool(tool)
        if backing["kind"] == "compute":
            if not backing["fixed"] or backing.get("typed"):  # a packed object would come apart
                return None
            family = COMPUTE_FAMILIES[backing["family"]]
            backing["params"] = [
                *(
                    dict(param, values=list(param["values"])) if "values" in param else dict(param)
                    for param in family.params
                ),
                *(param for param in backing["params"] if not param.get("required")),
            ]
            backing["fixed"] = {}
            backing["description"] = family.description
            prune_enums(scenario, backing)
            detail = f"{tool.document.name} became {family.tool}, with every input a parameter"
            return _replace(tools, index, plan(family.tool, backing)), family.tool, detail
        added = []
        for kind, rows in backing["tables"].items():
            extra = [r for r in RELATIONS_BY_KIND[kind] if r.attribute not in rows[0][1]]
            rng.shuffle(extra)
            for relation in extra[: rng.randint(1, 3)]:
                for name, attrs in rows:
                    attrs[relation.attribute] = self.world.get(kind, name).attrs[relation.attribute]
                added.append(relation.noun)
        if not added or not clean_tables(backing, _answers(scenario)):
            return None
        selector = next((param for param in backing["params"] if param["slot"] == "attribute"), None)
        attributes = list(dict.fromkeys(a for rows in backing["tables"].values() for a in rows[0][1]))
        if selector is not None:
            selector["values"] = attributes
            how = "more values of 'attribute'"
        elif backing["output"] == "value" and rng.random() < 0.5:
            backing["params"].append(
                {
                    "name": "attribute",
                    "slot": "attribute",
                    "type": "enum",
                    "values": attributes,
                    "description": "Which fact to look up.",
                    "required": True,
                }
            )
            how = "a new 'attribute' parameter chooses which"
        else:
            backing["output"] = "record"
            how = "all returned together"
        backing["description"] = describe_lookup(backing)
        name = tool.document.name
        if "family" not in backing and name.startswith("get_") and not name.endswith("_info"):
            name = f"get_{next(iter(backing['tables']))}_info"
        became = f"{tool.document.name} became {name}" if name != tool.document.name else name
        detail = f"{became}: it also gives {', '.join(added)} ({how})"
        return _replace(tools, index, plan(name, backing)), name, detail

    # ---- parameter expansion

    def _expand_parameters(
        self, scenario: Scenario, tools: list[ToolPlan], index: int, rng: random.Random
    ) -> Change | None:
        tool = tools[index]
        backing = copy_tool(tool)
        present = {param["name"] for param in backing["params"]}
        options = [dict(option) for option in OPTIONS[backing["kind"]] if option["name"] not in present]
        if not options:
            return None
        chosen = options[: rng.randint(1, len(options))]
        backing["params"] += chosen
        names = ", ".join(option["name"] for option in chosen)
        return (
            _replace(tools, index, plan(tool.document.name, backing)),
            tool.document.name,
            f"optional {names}",
        )

    # ---- parameter-type generalization

    def _generalize_types(
        self, scenario: Scenario, tools: list[ToolPlan], index: int, rng: random.Random
    ) -> Change | None:
        tool = tools[index]
        if tool.backing.get("typed"):
            return None
        answers = list(_answers(scenario).values())
        choices: list[Callable[[Backing], str | None]]
        if tool.backing["kind"] == "lookup":
            choices = [
                lambda b: _subject_to_enum(b, answers),
                _subject_to_list,
                _subject_to_object,
            ]
        else:
            choices = [lambda b: _currency_to_enum(b, answers), _pack_object]
        rng.shuffle(choices)
        for choice in choices:
            attempt = copy_tool(tool)
            detail = choice(attempt)
            if detail is not None:
                attempt["typed"] = True
                return _replace(tools, index, plan(tool.document.name, attempt)), tool.document.name, detail
        return None

    # ---- toolset extension

    def _extend_toolset(self, scenario: Scenario, tools: list[ToolPlan], rng: random.Random) -> Change | None:
        answers = list(_answers(scenario).values())
        covered = {
            (kind, attribute)
            for tool in tools
            if tool.backing["kind"] == "lookup"
            for kind, rows in tool.backing["tables"].items()
            for attribute in rows[0][1]
        }
        kinds = {
            kind for tool in tools if tool.backing["kind"] == "lookup" for kind in tool.backing["tables"]
        }
        families = {tool.backing["family"] for tool in tools if tool.backing["kind"] == "compute"}
        taken = {tool.document.name for tool in tools}
        added: list[ToolPlan] = []
        for _ in range(rng.randint(1, 3)):
            roll = rng.random()
            if roll < 0.5:
                pool = [r for r in RELATIONS if r.kind in kinds and (r.kind, r.attribute) not in covered]
            elif roll < 0.75:
                pool = [r for r in RELATIONS if (r.kind, r.attribute) not in covered]
            else:
                pool = [c for c in COMPUTATIONS if c.family not in families]
            pool = [t for t in pool if t.tool not in taken]
            if not pool:
                continue
            template = rng.choice(pool)
            if isinstance(template, Relation):
                tool = lookup_tool(self.world, template, {}, answers, rng)
                covered.add((template.kind, template.attribute))
            else:
                tool = compute_tool(self.world, template, {}, answers, rng)
                families.add(template.family)
            taken.add(tool.document.name)
            added.append(tool)
        if not added:
            return None
        names = ", ".join(tool.document.name for tool in added)
        return [*tools, *added], added[0].document.name, f"distractor tools added: {names}"


def _answers(scenario: Scenario) -> dict[str, str]:
    return {sub.id: sub.answer for sub in scenario.sub_questions}


def _replace(tools: list[ToolPlan], index: int, tool: ToolPlan) -> list[ToolPlan]:
    return [*tools[:index], tool, *tools[index + 1 :]]


def _subject(backing: Backing) -> dict | None:
    return next((p for p in backing["params"] if p["slot"] == "subject" and p["type"] == "string"), None)


def _subject_to_enum(backing: Backing, answers: list[str]) -> str | None:
    """Only when no name in the tables is a sub-answer: the enum is in the document the model reads."""
    param = _subject(backing)
    names = [name for rows in backing["tables"].values() for name, _ in rows]
    if param is None or any(matches(name, answer) for name in names for answer in answers):
        return None
    param.update(type="enum", values=names)
    return f"'{param['name']}' string → enum of {len(names)} names"


def _subject_to_list(backing: Backing) -> str | None:
    param = _subject(backing)
    if param is None:
        return None
    kinds = list(backing["tables"])
    family = backing.get("family")
    old = param["name"]
    param["name"] = f"{LOOKUP_FAMILIES[family].param}s" if family else KINDS[kinds[0]].list_param
    param["type"] = "list"
    param["description"] = "One or more names or titles to look up; the reply maps each to its answer."
    return f"'{old}' string → list of strings '{param['name']}'"


def _subject_to_object(backing: Backing) -> str | None:
    param = _subject(backing)
    if param is None:
        return None
    kinds = list(backing["tables"])
    key = KINDS[kinds[0]].key.replace(" ", "_") if len(kinds) == 1 else "name"
    fields = [dict(param, name=key)]
    kind_param = next((p for p in backing["params"] if p["slot"] == "type"), None)
    if kind_param is not None:
        fields.append(dict(kind_param, name="type"))
        backing["params"].remove(kind_param)
    position = backing["params"].index(param)
    backing["params"][position] = {
        "name": param["name"],
        "slot": "",
        "type": "object",
        "description": f"What to look up: {', '.join(field['name'] for field in fields)}.",
        "required": True,
        "fields": fields,
    }
    return f"'{param['name']}' string → object with {', '.join(field['name'] for field in fields)}"


def _currency_to_enum(backing: Backing, answers: list[str]) -> str | None:
    names = [name for name, _ in backing.get("rates", [])]
    params = [
        p
        for p in backing["params"]
        if p["slot"] in ("from_currency", "to_currency") and p["type"] == "string"
    ]
    if not params or any(matches(name, answer) for name in names for answer in answers):
        return None
    for param in params:
        param.update(type="enum", values=names)
    return f"{', '.join(p['name'] for p in params)} string → enum of {len(names)} currencies"


def _pack_object(backing: Backing) -> str | None:
    """A computation's required arguments packed into one object parameter."""
    packed = [p for p in backing["params"] if p.get("required")]
    if not packed:
        return None
    name = COMPUTE_FAMILIES[backing["family"]].object_param
    backing["params"] = [
        {
            "name": name,
            "slot": "",
            "type": "object",
            "description": f"The inputs: {', '.join(p['name'] for p in packed)}.",
            "required": True,
            "fields": packed,
        },
        *[p for p in backing["params"] if not p.get("required")],
    ]
    return f"{', '.join(p['name'] for p in packed)} packed into object '{name}'"
