"""Tool plans of the template generator: what `ToolPlan.backing` holds and what is derived from it.

A backing is plain JSON-like data, so every stage can read it, copy it and rewrite it:

- lookup: `{"kind": "lookup", "description", "params", "tables": {kind: [[name, {attribute: value}],
  ...]}, "output": "value" | "record", "calls": {sub-question id: slots}}`
- compute: `{"kind": "compute", "family", "description", "params", "fixed": {slot: value},
  "calls": {...}}`, plus `"rates": [[currency, per US dollar], ...]` for currency conversion.

Parameters name the *slot* they fill (a lookup's "subject", "type", "attribute"; a computation's
"value", "from_unit"...), and a golden call is stored as the slots it needs, never as arguments.
Integration and scaling therefore only rewrite parameters; the golden arguments are re-derived
from the slots (`arguments`), and the document is re-derived from the parameters (`plan`). No
stage has to patch arguments by hand, so none can forget to.

`problems` is the generator's self-check, run in its own process on the shared runtime: each
golden call must produce its sub-answer, no other allowed value of an enum parameter may produce
it, and no tool document may contain any sub-answer.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterable, Sequence
from typing import Any

from envs.construction.stages import GoldenCall, Scenario, ToolDocument, ToolPlan
from envs.construction.template import runtime
from envs.construction.template.templates import (
    COMPUTE_FAMILIES,
    KINDS,
    LOOKUP_FAMILIES,
    REFERENCE_CURRENCY,
    RELATION_AT,
    Computation,
    Relation,
    article,
)
from envs.construction.template.world import World
from rewards.matching import matches

Backing = dict[str, Any]


class StageFailure(ValueError):
    """A stage could not do its job for one input. `stage` and the short, stable `reason` are what a
    build report counts; the message adds the detail a person needs."""

    def __init__(self, stage: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{stage}: {reason}" + (f" ({detail})" if detail else ""))
        self.stage = stage
        self.reason = reason
        self.detail = detail


# The optional parameters that parameter expansion adds; golden calls never pass them, and their
# defaults keep a tool's answer unchanged.
OPTIONS: dict[str, tuple[dict[str, Any], ...]] = {
    "lookup": (
        {
            "name": "output_format",
            "slot": "output_format",
            "type": "enum",
            "values": ["text", "json"],
            "default": "text",
            "required": False,
            "description": "Reply as plain text or as a JSON object keyed by attribute.",
        },
        {
            "name": "include_subject",
            "slot": "include_subject",
            "type": "boolean",
            "default": False,
            "required": False,
            "description": "Also repeat the name that was looked up in the reply.",
        },
    ),
    "compute": (
        {
            "name": "precision",
            "slot": "precision",
            "type": "integer",
            "default": 2,
            "minimum": 0,
            "maximum": 6,
            "required": False,
            "description": "Decimal places of a fractional result.",
        },
        {
            "name": "output_format",
            "slot": "output_format",
            "type": "enum",
            "values": ["text", "json"],
            "default": "text",
            "required": False,
            "description": "Reply as plain text or as a JSON object with the result and its unit.",
        },
    ),
}

_JSON_TYPES = {
    "string": "string",
    "date": "string",
    "enum": "string",
    "number": "number",
    "integer": "integer",
    "boolean": "boolean",
    "list": "array",
    "object": "object",
}

INPUT_TYPES = {"year": "integer", "days": "integer", "date": "date", "currency": "string"}


# --------------------------------------------------------------------------- documents and arguments


def param_schema(param: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _JSON_TYPES[param["type"]], "description": param["description"]}
    if param["type"] == "enum":
        schema["enum"] = list(param["values"])
    elif param["type"] == "date":
        schema["format"] = "date"
    elif param["type"] == "list":
        schema["items"] = {"type": "string"}
    elif param["type"] == "object":
        schema["properties"] = {field["name"]: param_schema(field) for field in param["fields"]}
        schema["required"] = [field["name"] for field in param["fields"]]
        schema["additionalProperties"] = False
    for key in ("default", "minimum", "maximum"):
        if key in param:
            schema[key] = param[key]
    return schema


def parameters_schema(params: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {param["name"]: param_schema(param) for param in params},
        "required": [param["name"] for param in params if param.get("required")],
    }


def plan(name: str, backing: Backing) -> ToolPlan:
    document = ToolDocument(
        name=name, description=backing["description"], parameters=parameters_schema(backing["params"])
    )
    return ToolPlan(document=document, covers=tuple(backing["calls"]), backing=backing)


def arguments(params: Sequence[dict[str, Any]], slots: dict[str, Any]) -> dict[str, Any]:
    """The golden arguments for a call that needs `slots`; optional parameters are left out."""

    def one(param: dict[str, Any]) -> Any:
        value = slots[param["slot"]]
        return [value] if param["type"] == "list" else value

    args: dict[str, Any] = {}
    for param in params:
        if param["type"] == "object":
            args[param["name"]] = {field["name"]: one(field) for field in param["fields"]}
        elif param.get("required"):
            args[param["name"]] = one(param)
    return args


def golden_calls(scenario: Scenario, tools: Iterable[ToolPlan]) -> tuple[GoldenCall, ...]:
    """One call per sub-question, in the scenario's order, from the tool whose backing holds it."""
    owner = {sub_id: tool for tool in tools for sub_id in tool.backing["calls"]}
    calls = []
    for sub in scenario.sub_questions:
        tool = owner[sub.id]
        args = arguments(tool.backing["params"], tool.backing["calls"][sub.id])
        calls.append(GoldenCall(sub_question=sub.id, name=tool.document.name, arguments=args))
    return tuple(calls)


# --------------------------------------------------------------------------- building blocks


def pick_rows(
    world: World, relation: Relation, subjects: Sequence[str], answers: Sequence[str], rng: random.Random
) -> list[list[Any]]:
    """The subjects' rows plus 4-7 distractor rows whose names and values can be no sub-answer."""
    rows = [
        [name, {relation.attribute: world.get(relation.kind, name).attrs[relation.attribute]}]
        for name in subjects
    ]
    wanted = rng.randint(4, 7)
    pool = world.of_kind(relation.kind)
    for entity in rng.sample(pool, min(len(pool), 3 * wanted)):
        if len(rows) >= len(subjects) + wanted:
            break
        value = entity.attrs[relation.attribute]
        if entity.name in subjects or any(matches(entity.name, a) or matches(str(value), a) for a in answers):
            continue
        rows.append([entity.name, {relation.attribute: value}])
    rng.shuffle(rows)
    return rows


def subject_param(kind: str) -> dict[str, Any]:
    info = KINDS[kind]
    return {
        "name": info.param,
        "slot": "subject",
        "type": "string",
        "description": f"The {info.key} of the {info.label}.",
        "required": True,
    }


def lookup_tool(
    world: World,
    relation: Relation,
    calls: dict[str, dict[str, Any]],
    answers: Sequence[str],
    rng: random.Random,
) -> ToolPlan:
    """The stage-2 tool for one relation: a single lookup parameter and its table."""
    subjects = list(dict.fromkeys(slots["subject"] for slots in calls.values()))
    backing = {
        "kind": "lookup",
        "description": relation.description,
        "params": [subject_param(relation.kind)],
        "tables": {relation.kind: pick_rows(world, relation, subjects, answers, rng)},
        "output": "value",
        "calls": calls,
    }
    return plan(relation.tool, backing)


def compute_tool(
    world: World,
    computation: Computation,
    calls: dict[str, dict[str, Any]],
    answers: Sequence[str],
    rng: random.Random,
) -> ToolPlan:
    """The stage-2 tool for one computation: its inputs as parameters, the rest fixed."""
    params = [
        {
            "name": item.name,
            "slot": item.slot,
            "type": INPUT_TYPES.get(item.vtype, "number"),
            "description": item.description,
            "required": True,
        }
        for item in computation.inputs
    ]
    backing: Backing = {
        "kind": "compute",
        "family": computation.family,
        "description": computation.description,
        "params": params,
        "fixed": dict(computation.fixed),
        "calls": calls,
    }
    if computation.family == "currency":
        backing["rates"] = currency_rates(world, calls, answers, rng)
    return plan(computation.tool, backing)


def currency_rates(
    world: World, calls: dict[str, dict[str, Any]], answers: Sequence[str], rng: random.Random
) -> list[list[Any]]:
    """The reference currency, every currency a call needs, and a few distractors."""
    needed = [REFERENCE_CURRENCY]
    for slots in calls.values():
        for slot in ("from_currency", "to_currency"):
            if slots.get(slot) and slots[slot] not in needed:
                needed.append(slots[slot])
    others = [c for c in world.currency_rates if c not in needed and not any(matches(c, a) for a in answers)]
    chosen = needed + rng.sample(others, min(len(others), rng.randint(4, 7)))
    rng.shuffle(chosen)
    return [[name, 1.0 if name == REFERENCE_CURRENCY else world.currency_rates[name]] for name in chosen]


def copy_tool(tool: ToolPlan) -> Backing:
    """A private copy of a tool's backing: a stage never edits the object the previous stage returned."""
    return copy.deepcopy(tool.backing)


# --------------------------------------------------------------------------- the data a tool's code holds


def hints(names: Iterable[str], answers: Sequence[str], limit: int = 5) -> list[str]:
    """Names an error message may suggest: never one that would give away a sub-answer."""
    return [name for name in names if not any(matches(name, a) for a in answers)][:limit]


def lookup_data(backing: Backing, answers: Sequence[str]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """A lookup's tables keyed by normalised name, and per kind: label, plural, key, the hint sentence."""
    tables, about = {}, {}
    for kind, rows in backing["tables"].items():
        info = KINDS[kind]
        tables[kind] = {runtime.norm(name): [name, attrs] for name, attrs in rows}
        known = hints((name for name, _ in rows), answers)
        sentence = f" Known {info.plural} include: {', '.join(known)}." if known else ""
        about[kind] = [info.label, info.plural, info.key, sentence]
    return tables, about


def compute_spec(backing: Backing, answers: Sequence[str]) -> dict[str, Any]:
    """What a computation's code holds besides its slots: a unit table, or exchange rates and hints."""
    spec = dict(COMPUTE_FAMILIES[backing["family"]].extra)
    if "rates" in backing:
        spec["rates"] = {runtime.norm(name): [name, rate] for name, rate in backing["rates"]}
        spec["hints"] = hints((name for name, _ in backing["rates"]), answers)
    return spec


def compute_text(backing: Backing, spec: dict[str, Any], slots: dict[str, Any]) -> str | None:
    """What the computation replies to `slots` with default options, or None for an error reply."""
    function = runtime.FAMILIES[COMPUTE_FAMILIES[backing["family"]].runtime]
    result = function({**backing["fixed"], **slots}, spec)
    if isinstance(result, str):
        return None
    return f"{runtime.format_number(result[0])} {result[1]}".strip()


def compute_value(world: World, family: str, slots: dict[str, Any]) -> Any:
    """What a computation gives for `slots`, by the same function its tool runs (raises on an error reply)."""
    info = COMPUTE_FAMILIES[family]
    rates = {runtime.norm(REFERENCE_CURRENCY): [REFERENCE_CURRENCY, 1.0]}
    rates.update({runtime.norm(name): [name, rate] for name, rate in world.currency_rates.items()})
    result = runtime.FAMILIES[info.runtime](slots, {**info.extra, "rates": rates, "hints": []})
    if isinstance(result, str):
        raise ValueError(result)
    return result[0]


def shifted(value: int | float) -> tuple[int | float, int | float]:
    """A number moved up and down by half its size plus one: how verification perturbs numbers."""
    step = 1 + abs(value) // 2 if isinstance(value, int) else 1.0 + abs(value) / 2
    return value + step, value - step


def _inputs(params: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The required parameters a call passes, object fields included: what a wrong call can change."""
    found = []
    for param in params:
        if param["type"] == "object":
            found += _inputs(param["fields"])
        elif param.get("required"):
            found.append(param)
    return found


def variants(backing: Backing, slots: dict[str, Any], *, numbers: bool = True) -> list[tuple[str, Any]]:
    """(slot, wrong value) pairs a wrong call could pass: other enum values and moved numbers."""
    found: list[tuple[str, Any]] = []
    for param in _inputs(backing["params"]):
        slot, value = param["slot"], slots.get(param["slot"])
        if param["type"] == "enum":
            found += [(slot, other) for other in param["values"] if other != value]
        elif numbers and param["type"] in ("number", "integer") and isinstance(value, int | float):
            found += [(slot, moved) for moved in shifted(value)]
    return found


def collisions(backing: Backing, answers: dict[str, str]) -> tuple[list[tuple[str, str]], bool]:
    """Rows with a cell (other than a golden one) that matches a covered sub-answer.

    Returns the distractor rows to drop, and whether a row a golden call needs is among them: then
    a wrong attribute or a neighbouring row could answer for the right one.
    """
    covered = [answers[sub_id] for sub_id in backing["calls"]]
    golden_cells = {(s["type"], s["subject"], s["attribute"]) for s in backing["calls"].values()}
    golden_rows = {(kind, name) for kind, name, _ in golden_cells}
    bad = [
        (kind, name)
        for kind, rows in backing["tables"].items()
        for name, attrs in rows
        if any(
            matches(str(value), answer)
            for attribute, value in attrs.items()
            if (kind, name, attribute) not in golden_cells
            for answer in covered
        )
    ]
    return [row for row in bad if row not in golden_rows], any(row in golden_rows for row in bad)


def clean_tables(backing: Backing, answers: dict[str, str]) -> bool:
    """Drop distractor rows that collide with a covered sub-answer; False if a golden row does."""
    drop, golden_bad = collisions(backing, answers)
    if golden_bad:
        return False
    for kind, rows in backing["tables"].items():
        rows[:] = [row for row in rows if (kind, row[0]) not in drop]
    return True


def problems(scenario: Scenario, tools: Sequence[ToolPlan]) -> list[str]:
    """Why this toolset would fail verification or leak an answer; empty when it is sound.

    Checked on the data, not by running code: a document must not contain any sub-answer; a
    lookup's golden cell must hold its sub-answer and no other cell may match it (a wrong row, a
    wrong attribute, a wrong kind); a computation must give its sub-answer, and no other enum value
    and no moved number may give it too.
    """
    answers = {sub.id: sub.answer for sub in scenario.sub_questions}
    every = list(answers.values())
    found = []
    for tool in tools:
        name, backing = tool.document.name, tool.backing
        text = json.dumps(tool.document.to_openai(), ensure_ascii=False)
        found += [f"the document of {name} contains the sub-answer {a!r}" for a in every if matches(text, a)]
        if backing["kind"] == "lookup":
            found += _lookup_problems(name, backing, answers)
            continue
        spec = compute_spec(backing, every)
        for sub_id, slots in backing["calls"].items():
            output = compute_text(backing, spec, slots)
            if output is None or not matches(output, answers[sub_id]):
                found.append(f"{name} gives {output!r} for {sub_id}, not {answers[sub_id]!r}")
            for slot, wrong in variants(backing, slots):
                output = compute_text(backing, spec, {**slots, slot: wrong})
                if output is not None and matches(output, answers[sub_id]):
                    found.append(f"{name} with {slot}={wrong!r} still gives the answer of {sub_id}")
    return found


def _lookup_problems(name: str, backing: Backing, answers: dict[str, str]) -> list[str]:
    found = []
    tables = backing["tables"]
    for sub_id, slots in backing["calls"].items():
        rows = dict((runtime.norm(n), attrs) for n, attrs in tables.get(slots["type"], []))
        cell = rows.get(runtime.norm(slots["subject"]), {}).get(slots["attribute"])
        if cell is None or not matches(str(cell), answers[sub_id]):
            found.append(f"{name} holds {cell!r} for {sub_id}, not {answers[sub_id]!r}")
    drop, golden_bad = collisions(backing, answers)
    if drop or golden_bad:
        found.append(f"{name} has rows where a wrong name or attribute gives a sub-answer: {drop}")
    names = [runtime.norm(n) for rows in tables.values() for n, _ in rows]
    if len(set(names)) != len(names):
        found.append(f"{name} holds one name twice, so a wrong type could still find it")
    return found


def prune_enums(scenario: Scenario, backing: Backing) -> None:
    """Drop enum values that would make a wrong computation give a right answer (2 + 2 = 2 * 2)."""
    answers = {sub.id: sub.answer for sub in scenario.sub_questions}
    spec = compute_spec(backing, list(answers.values()))
    golden = {(slot, value) for slots in backing["calls"].values() for slot, value in slots.items()}
    for sub_id, slots in backing["calls"].items():
        for slot, wrong in variants(backing, slots, numbers=False):
            output = compute_text(backing, spec, {**slots, slot: wrong})
            if (slot, wrong) not in golden and output is not None and matches(output, answers[sub_id]):
                for param in _inputs(backing["params"]):
                    if param["slot"] == slot and wrong in param["values"]:
                        param["values"].remove(wrong)


def describe_lookup(backing: Backing) -> str:
    """A lookup tool's description, written from what its tables and parameters now offer."""
    tables = backing["tables"]
    selector = any(param["slot"] == "attribute" for param in backing["params"])
    how = (
        " Choose one with 'attribute'."
        if selector
        else " Returns all of them."
        if backing["output"] == "record"
        else ""
    )
    facts = {
        kind: [RELATION_AT[(kind, attribute)].noun for attribute in rows[0][1]]
        for kind, rows in tables.items()
    }
    if "family" in backing:
        parts = [f"the {', '.join(nouns)} of {article(KINDS[kind].label)}" for kind, nouns in facts.items()]
        return f"{LOOKUP_FAMILIES[backing['family']].description}: {'; '.join(parts)}.{how}"
    ((kind, nouns),) = facts.items()
    if len(nouns) == 1 and backing["output"] == "value":
        return RELATION_AT[(kind, next(iter(tables[kind][0][1])))].description
    info = KINDS[kind]
    facts_text = ", ".join(nouns)
    return (
        f"Look up facts about {article(info.label)} ({facts_text}), given the {info.label}'s {info.key}.{how}"
    )
