"""Stage 5's writer: the Python source of one tool — one function, stdlib only, data and all.

The code is written for the tool it serves, not interpreted from a spec: every argument gets
exactly the checks its parameter needs (a helpful message for each way it can be wrong), the data
sits in literals (the needed rows plus distractors, or a unit or rate table), and only then comes
the lookup or the computation. Small code matters: every environment row is parsed on validation
and compiled in the sandbox, and a generic interpreter in each tool made that the slowest step.
Computations embed their function from `runtime` verbatim, so their arithmetic is the same code
the generator used to compute the sub-answers.

Every parameter defaults to None, so a missing argument gets a message instead of a TypeError, and
`**unexpected` turns an invented argument into one too. Locals start with an underscore, which no
parameter name does, so no argument can shadow them.
"""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from envs.construction.stages import ToolPlan
from envs.construction.template import runtime
from envs.construction.template.templates import COMPUTE_FAMILIES
from envs.construction.template.tools import compute_spec, lookup_data

_NORMALISED = "' '.join({}.split()).lower()"


@functools.cache
def function_source(function: Callable[..., Any]) -> str:
    """A runtime function's source without its docstring, indented to sit inside a tool's body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    definition = tree.body[0]
    assert isinstance(definition, ast.FunctionDef)
    if isinstance(definition.body[0], ast.Expr) and isinstance(definition.body[0].value, ast.Constant):
        definition.body = definition.body[1:]
    return textwrap.indent(ast.unparse(definition), "    ")


def tool_source(tool: ToolPlan, answers: Sequence[str]) -> str:
    """The code of `tool`; `answers` are every sub-answer, which its error hints must never name."""
    backing = tool.backing
    params = backing["params"]
    names = [param["name"] for param in params]
    unknown = f". This tool takes: {', '.join(names)}."
    lines = [
        f"def {tool.document.name}({''.join(f'{name}=None, ' for name in names)}**unexpected):",
        f"    {tool.document.description!r}",
    ]
    if _has_type(params, "date"):
        lines.append(function_source(runtime._is_date))
    lines += [
        "    if unexpected:",
        f"        return 'Error: unknown argument(s) ' + ', '.join(sorted(unexpected)) + {unknown!r}",
    ]
    for param in params:
        lines += _validate(param, param["name"], param["name"], "    ")
    body = _lookup if backing["kind"] == "lookup" else _compute
    lines += body(backing, answers)
    return "\n".join(lines) + "\n"


def _has_type(params: Sequence[dict[str, Any]], kind: str) -> bool:
    return any(p["type"] == kind or p["type"] == "object" and _has_type(p["fields"], kind) for p in params)


def _validate(param: dict[str, Any], expr: str, where: str, pad: str) -> list[str]:
    """Lines that check `expr` against `param` and put the checked value in `_<slot>`."""
    if param["type"] == "object":
        keys = [field["name"] for field in param["fields"]]
        message = f"Error: '{where}' must be an object with exactly the keys {', '.join(keys)}."
        lines = [
            f"{pad}if not isinstance({expr}, dict) or sorted({expr}) != {sorted(keys)!r}:",
            f"{pad}    return {message!r}",
        ]
        for field in param["fields"]:
            lines += _validate(field, f"{expr}[{field['name']!r}]", f"{where}.{field['name']}", pad)
        return lines
    if param.get("required"):
        return _check(param, expr, where, pad)
    return [
        f"{pad}_{param['slot']} = {param['default']!r}",
        f"{pad}if {expr} is not None:",
        *_check(param, expr, where, pad + "    "),
    ]


def _check(param: dict[str, Any], expr: str, where: str, pad: str) -> list[str]:
    kind, target = param["type"], f"_{param['slot']}"
    about = param["description"][0].lower() + param["description"][1:].rstrip(".")
    must = f"Error: '{where}' {'is required and must' if param.get('required') else 'must'} be"

    def fail(condition: str, message: str) -> list[str]:
        return [f"{pad}if {condition}:", f"{pad}    return {message!r}"]

    if kind == "string":
        return [
            *fail(
                f"not isinstance({expr}, str) or not {expr}.strip()", f"{must} a non-empty string ({about})."
            ),
            f"{pad}{target} = {expr}.strip()",
        ]
    if kind == "enum":
        choices = {runtime.norm(value): value for value in param["values"]}
        lookup = f"{choices!r}.get({_NORMALISED.format(expr)}) if isinstance({expr}, str) else None"
        return [
            f"{pad}{target} = {lookup}",
            *fail(f"{target} is None", f"{must} one of: {', '.join(param['values'])}."),
        ]
    if kind == "date":
        return [
            f"{pad}{target} = {expr}.strip() if isinstance({expr}, str) else ''",
            *fail(f"not _is_date({target})", f"{must} a calendar date written YYYY-MM-DD ({about})."),
        ]
    if kind == "boolean":
        return [*fail(f"not isinstance({expr}, bool)", f"{must} true or false."), f"{pad}{target} = {expr}"]
    if kind == "list":
        items = f"all(isinstance(_x, str) and _x.strip() for _x in {expr})"
        return [
            *fail(
                f"not isinstance({expr}, list) or not {expr} or not {items}",
                f"{must} a non-empty list of strings ({about}).",
            ),
            *fail(
                f"len({{{_NORMALISED.format('_x')} for _x in {expr}}}) != len({expr})",
                f"Error: '{where}' names the same item twice; list each one once.",
            ),
            f"{pad}{target} = [_x.strip() for _x in {expr}]",
        ]
    number = (
        f"isinstance({expr}, bool) or not isinstance({expr}, (int, float))"
        f" or {expr} != {expr} or abs({expr}) == float('inf')"
    )
    lines = fail(number, f"{must} a number ({about}).")
    if kind == "integer":
        lines += fail(f"{expr} != int({expr})", f"Error: '{where}' must be a whole number ({about}).")
        lines.append(f"{pad}{target} = int({expr})")
    else:
        lines.append(f"{pad}{target} = {expr}")
    if "minimum" in param:
        low, high = param["minimum"], param["maximum"]
        lines += fail(
            f"not {low!r} <= {target} <= {high!r}", f"Error: '{where}' must be between {low} and {high}."
        )
    return lines


def _slots(params: Sequence[dict[str, Any]]) -> list[str]:
    found = []
    for param in params:
        found += _slots(param["fields"]) if param["type"] == "object" else [param["slot"]]
    return found


def _lookup(backing: dict[str, Any], answers: Sequence[str]) -> list[str]:
    tables, about = lookup_data(backing, answers)
    slots = _slots(backing["params"])
    many = any(param["type"] == "list" for param in backing["params"])
    record = backing["output"] == "record"
    error = (
        "'Error: unknown ' + _about[_kind][0] + ' \"' + _name + '\".' + _about[_kind][3]"
        " + ' Use the exact ' + _about[_kind][2] + ' as written.'"
    )
    lines = [
        f"    _tables = {tables!r}",
        f"    _about = {about!r}",
        f"    _kind = {'_type' if 'type' in slots else repr(next(iter(tables)))}",
        "    _found = {}",
        f"    for _name in {'_subject' if many else '[_subject]'}:",
        f"        _row = _tables[_kind].get({_NORMALISED.format('_name')})",
        "        if _row is None:",
        f"            return {error}",
    ]
    if "attribute" in slots and not record:
        missing = (
            "'Error: \"' + _attribute + '\" is not known for ' + _about[_kind][1]"
            " + '; choose one of: ' + ', '.join(_row[1]) + '.'"
        )
        lines += [
            "        if _attribute not in _row[1]:",
            f"            return {missing}",
            "        _found[_row[0]] = {_attribute: _row[1][_attribute]}",
        ]
    else:
        lines.append("        _found[_row[0]] = dict(_row[1])")
    if many:
        value = "_value" if record else "next(iter(_value.values()))"
        return [*lines, f"    return {{_name: {value} for _name, _value in _found.items()}}"]
    lines.append("    _name, _value = next(iter(_found.items()))")
    if "include_subject" in slots:
        lines += ["    if _include_subject:", "        return {_about[_kind][0]: _name, **_value}"]
    if record:
        return [*lines, "    return _value"]
    if "output_format" in slots:
        lines += ["    if _output_format == 'json':", "        return _value"]
    return [*lines, "    return str(next(iter(_value.values())))"]


def _compute(backing: dict[str, Any], answers: Sequence[str]) -> list[str]:
    family = runtime.FAMILIES[COMPUTE_FAMILIES[backing["family"]].runtime]
    slots = _slots(backing["params"])
    inputs = [slot for slot in slots if slot not in ("precision", "output_format")]
    values = ", ".join(
        [*(f"{k!r}: {v!r}" for k, v in backing["fixed"].items()), *(f"{s!r}: _{s}" for s in inputs)]
    )
    lines = [
        f"    _values = {{{values}}}",
        f"    _spec = {compute_spec(backing, answers)!r}",
        function_source(runtime._fmt),
        function_source(family),
        f"    _result = {family.__name__}(_values, _spec)",
        "    if isinstance(_result, str):",
        "        return _result",
        f"    _text = _fmt(_result[0], {'_precision' if 'precision' in slots else 2})",
    ]
    if "output_format" in slots:
        lines += ["    if _output_format == 'json':", "        return {'result': _text, 'unit': _result[1]}"]
    return [*lines, "    return (_text + ' ' + _result[1]).strip()"]
