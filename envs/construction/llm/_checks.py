"""Checks on what a model wrote that pydantic's field types cannot express: that tool parameters are
a JSON Schema, that golden calls fit them, and that tool code defines a function callable with them.

Code is only parsed (``ast``), never executed: it is untrusted, and the sandbox runs it later, when
the environment is verified.
"""

from __future__ import annotations

import ast
import json
import keyword
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from envs.construction.llm._rejections import Reject

__all__ = ["check_arguments", "check_code", "check_parameters"]


def check_parameters(tool: str, parameters: Mapping[str, Any]) -> None:
    """``parameters`` must be an inline object schema (no ``$ref``) whose ``required`` names only its
    ``properties``, which are Python identifiers (tools are called with keyword arguments)."""
    problem = _parameters_problem(parameters)
    if problem:
        raise Reject("parameters are not a valid schema", f"parameters of tool {tool!r}: {problem}")


def check_arguments(tool: str, parameters: Mapping[str, Any], arguments: Mapping[str, Any]) -> None:
    """A golden call's ``arguments`` must validate against the tool's ``parameters``."""
    errors = sorted(Draft202012Validator(dict(parameters)).iter_errors(dict(arguments)), key=str)
    if errors:
        where = ".".join(str(part) for part in errors[0].absolute_path) or "(the arguments)"
        raise Reject(
            "call does not fit its schema",
            f"arguments {json.dumps(arguments, ensure_ascii=False)} of tool {tool!r} do not fit its "
            f"parameters: at {where}: {errors[0].message}",
        )


def check_code(tool: str, source: str, parameters: Mapping[str, Any], calls: list[Mapping[str, Any]]) -> None:
    """``source`` must parse and define a top-level ``def <tool>`` that accepts every parameter of the
    schema by keyword, needs none the schema leaves optional, and binds every golden call."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError) as error:
        where = f" (line {error.lineno})" if isinstance(error, SyntaxError) else ""
        message = error.msg if isinstance(error, SyntaxError) else str(error)
        raise Reject(
            "code does not parse", f"code of tool {tool!r} is not valid Python: {message}{where}"
        ) from None
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == tool]
    if not functions:
        raise Reject(
            "code does not define tool",
            f"code of tool {tool!r} has no top-level function `def {tool}(...)` (async def is not called)",
        )
    signature = _Signature(functions[-1].args)
    properties = list((parameters.get("properties") or {}).keys())
    required = set(parameters.get("required") or [])
    problems = [
        f"it does not accept parameter {name!r}" for name in properties if not signature.accepts(name)
    ]
    problems += [f"parameter {name!r} is positional-only" for name in signature.positional_only]
    problems += [
        f"it needs {name!r}, which the schema does not require"
        for name in signature.needed
        if name not in required
    ]
    for arguments in calls:
        missing = [name for name in signature.needed if name not in arguments]
        if missing:
            problems.append(f"the golden call {json.dumps(arguments, ensure_ascii=False)} lacks {missing}")
    if problems:
        raise Reject(
            "signature does not fit the schema", f"`def {tool}(...)`: " + "; ".join(dict.fromkeys(problems))
        )


class _Signature:
    """What a ``def`` accepts when called with keyword arguments only, as the sandbox calls tools."""

    def __init__(self, args: ast.arguments) -> None:
        positional = [*args.posonlyargs, *args.args]
        first_default = len(positional) - len(args.defaults)
        self.keywords = {arg.arg for arg in args.args} | {arg.arg for arg in args.kwonlyargs}
        self.any_keyword = args.kwarg is not None
        self.needed = [arg.arg for arg in positional[:first_default]]
        self.positional_only = [arg.arg for arg in args.posonlyargs[:first_default]]
        self.needed += [
            arg.arg for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True) if default is None
        ]

    def accepts(self, name: str) -> bool:
        return name in self.keywords or self.any_keyword


def _parameters_problem(parameters: Mapping[str, Any]) -> str | None:
    try:
        Draft202012Validator.check_schema(dict(parameters))
    except SchemaError as error:
        where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        return f"not a JSON Schema: at {where}: {error.message}"
    if _has_ref(parameters):
        return "it uses $ref; write every schema inline (a model reading the tool cannot follow references)"
    if parameters.get("type") != "object":
        return f'the top level must be {{"type": "object", ...}}, got type {parameters.get("type")!r}'
    properties = parameters.get("properties", {})
    unknown = [name for name in parameters.get("required", []) if name not in properties]
    if unknown:
        return f"required names {unknown}, which are not in properties"
    bad = [name for name in properties if not name.isidentifier() or keyword.iskeyword(name)]
    if bad:
        return f"parameter names {bad} are not Python identifiers (tools are called with keyword arguments)"
    return None


def _has_ref(schema: Any) -> bool:
    if isinstance(schema, Mapping):
        return "$ref" in schema or any(_has_ref(value) for value in schema.values())
    if isinstance(schema, list):
        return any(_has_ref(item) for item in schema)
    return False
