"""The environment row and trajectory row: the one data contract every stage reads and writes.

Rows are FTRL-compatible, so the paper's released JSONL files load unchanged: `tools`, `codes`,
`unsolved_set` (and this project's `meta`) stay JSON *strings*, as FTRL stores them, and a string
given in a file is kept byte for byte. Already-decoded values are accepted too and encoded with
`json.dumps(value, ensure_ascii=False)`, the encoding FTRL's own scripts use. Decoded views come from
methods (`tool_schemas()`, `codes_dict()`, ...) that decode afresh on every call, so a caller may
mutate what it gets (the sampler pops solved sub-answers) without touching the row.

Validation reads tool code with `ast.parse` only: code written by an LLM is never executed here.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import keyword
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1


def json_type_name(value: Any) -> str:
    """Name a decoded JSON value by its JSON type, for messages a user reads ("got array")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def compute_env_id(
    messages: list[dict[str, Any]],
    tools: str | list[dict[str, Any]],
    codes: str | dict[str, str],
    unsolved_set: str | dict[str, list[str]],
    answer: str,
) -> str:
    """Hash an environment's content into a 16-hex-digit id.

    JSON strings are decoded first and everything is re-encoded with sorted keys, so the id depends
    on what the environment *is*, not on key order or whitespace in the file that carried it.
    """
    content = [messages, _loads(tools), _loads(codes), _loads(unsolved_set), answer]
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem joined by "; ", each naming its field: "field 'codes': ...".

    Pydantic's default text spans several lines and links to its docs; a JSONL reader reports one
    line per bad row, so the reason must fit on it.
    """
    problems = []
    for error in exc.errors():
        where = _loc_text(error["loc"])
        if error["type"] == "missing":
            reason = "missing"
        elif error["type"] == "value_error":
            reason = str(error["ctx"]["error"])
        else:
            reason = error["msg"]
            if "input" in error and not isinstance(error["input"], dict | list):
                reason += f" (got {_short_repr(error['input'])})"
        problems.append(f"field '{where}': {reason}" if where else reason)
    return "; ".join(problems).replace("\n", " ")


class EnvRow(BaseModel):
    """One environment: a question, the tools that solve it, their code, and what is left to solve.

    Unknown columns are kept (`extra="allow"`): FTRL's released files and later versions of this
    schema may carry columns this version does not know, and a read-then-write must not drop them.
    """

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(
        description="Chat so far; the first non-system turn is the user's."
    )
    tools: str = Field(
        description='JSON array of OpenAI function schemas {"type": "function", "function": {...}}.'
    )
    codes: str = Field(
        description="JSON object: tool name -> Python source defining a top-level `def <name>`."
    )
    unsolved_set: str = Field(description="JSON object: tool name -> sub-answers not yet produced by a call.")
    answer: str = Field(description="The final answer to the user's question.")
    solve_rate: float = Field(0.0, ge=0.0, le=1.0, description="Share of sub-answers already solved.")
    data_source: str = Field(description="Where the environment came from (a dataset or generator name).")
    split: Literal["train", "test"]
    env_id: str = Field("", description="Content hash (`compute_env_id`); computed when empty.")
    meta: str = Field("{}", description="JSON object: scenario, sub-questions, scaling, generator, checks.")

    @field_validator("messages")
    @classmethod
    def _check_messages(cls, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not messages:
            raise ValueError("must not be empty: the user question comes first")
        for index, message in enumerate(messages):
            if not isinstance(message.get("role"), str):
                raise ValueError(f"message {index} has no string 'role'")
        first = next((m for m in messages if m["role"] != "system"), None)
        if first is None:
            raise ValueError("there is no user question (no message other than system messages)")
        if first["role"] != "user":
            raise ValueError(
                f"the first non-system message must be the user question, got role {first['role']!r}"
            )
        return messages

    @field_validator("tools", mode="before")
    @classmethod
    def _check_tools(cls, value: Any) -> str:
        text, tools = _json_field(value, list, "an array of function schemas")
        names: set[str] = set()
        for index, tool in enumerate(tools):
            name = _schema_name(index, tool)
            if name in names:
                raise ValueError(f"tool {name!r} is named twice")
            names.add(name)
        return text

    @field_validator("codes", mode="before")
    @classmethod
    def _check_codes(cls, value: Any, info: ValidationInfo) -> str:
        text, codes = _json_field(value, dict, "an object of tool name -> Python source")
        for name, source in codes.items():
            if not isinstance(source, str):
                raise ValueError(
                    f"code of {name!r} must be a string of Python source, got {json_type_name(source)}"
                )
        for name in _known_tool_names(info):
            if name not in codes:
                raise ValueError(f"tool {name!r} is named in tools but codes do not define it")
            _check_defines(name, codes[name])
        return text

    @field_validator("unsolved_set", mode="before")
    @classmethod
    def _check_unsolved_set(cls, value: Any, info: ValidationInfo) -> str:
        text, unsolved = _json_field(value, dict, "an object of tool name -> list of sub-answers")
        for name, answers in unsolved.items():
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                raise ValueError(f"sub-answers of {name!r} must be a list of strings")
        if "tools" in info.data:
            known = set(_known_tool_names(info))
            for name in unsolved:
                if name not in known:
                    raise ValueError(f"tool {name!r} is not named in tools")
        return text

    @field_validator("meta", mode="before")
    @classmethod
    def _check_meta(cls, value: Any) -> str:
        return _json_field(value, dict, "an object")[0]

    @model_validator(mode="after")
    def _fill_env_id(self) -> EnvRow:
        if not self.env_id:
            self.env_id = compute_env_id(
                self.messages, self.tools, self.codes, self.unsolved_set, self.answer
            )
        return self

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The tool schemas, decoded: what a chat template's `tools=` argument takes."""
        return json.loads(self.tools)

    def tool_names(self) -> list[str]:
        """Tool names in the order `tools` lists them."""
        return [tool["function"]["name"] for tool in self.tool_schemas()]

    def codes_dict(self) -> dict[str, str]:
        return json.loads(self.codes)

    def unsolved(self) -> dict[str, list[str]]:
        return json.loads(self.unsolved_set)

    def meta_dict(self) -> dict[str, Any]:
        return json.loads(self.meta)


class TrajectoryRow(EnvRow):
    """An environment after `turn` tool-calling turns of `policy`: the prefix, what is still unsolved.

    `env_id` is required: it is the id of the environment the trajectory ran in, which a hash of the
    (grown) message prefix and (shrunk) unsolved set could not recover.
    """

    env_id: str = Field(description="The id of the environment this trajectory was sampled in.")
    turn: int = Field(ge=0, description="Tool-calling turns taken so far.")
    policy: str = Field(min_length=1, description="Name of the policy that sampled the trajectory.")

    @field_validator("env_id")
    @classmethod
    def _require_env_id(cls, env_id: str) -> str:
        if not env_id:
            raise ValueError("a trajectory row must carry its environment's env_id; it is empty")
        return env_id


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _json_field(value: Any, expected: type, shape: str) -> tuple[str, Any]:
    """Accept a JSON string or the decoded value; return (the string to store, the decoded value)."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        text = value
    elif isinstance(value, list | dict):
        decoded = value
        text = json.dumps(value, ensure_ascii=False)
    else:
        raise ValueError(f"expected a JSON string of {shape}, got {json_type_name(value)}")
    if not isinstance(decoded, expected):
        raise ValueError(f"expected JSON of {shape}, got {json_type_name(decoded)}")
    return text, decoded


def _schema_name(index: int, tool: Any) -> str:
    """Check one OpenAI function schema and return its name, which must be usable as a `def` name."""
    function = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
        raise ValueError(f'item {index} is not a function schema {{"type": "function", "function": {{...}}}}')
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"item {index} has no function name")
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"tool name {name!r} (item {index}) is not a Python identifier")
    if not isinstance(function.get("description", ""), str):
        raise ValueError(f"description of tool {name!r} must be a string")
    if not isinstance(function.get("parameters", {}), dict):
        raise ValueError(f"parameters of tool {name!r} must be a JSON schema object")
    return name


def _known_tool_names(info: ValidationInfo) -> list[str]:
    """Names from the already validated `tools` field; none when `tools` itself failed."""
    tools = info.data.get("tools")
    return [] if tools is None else [tool["function"]["name"] for tool in json.loads(tools)]


@functools.lru_cache(maxsize=4096)
def _top_level_functions(source: str) -> frozenset[str] | str:
    """Names of a module's top-level functions, or why it does not parse.

    Cached because every trajectory row of an environment repeats its codes: parsing them once per
    row made `ast.parse` most of the conversion time (measured 3x faster with the cache).
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError) as exc:
        return f"{exc.msg} (line {exc.lineno})" if isinstance(exc, SyntaxError) else str(exc)
    return frozenset(node.name for node in tree.body if isinstance(node, ast.FunctionDef))


def _check_defines(name: str, source: str) -> None:
    functions = _top_level_functions(source)
    if isinstance(functions, str):
        raise ValueError(f"code of tool {name!r} is not valid Python: {functions}")
    if name not in functions:
        raise ValueError(f"code of tool {name!r} does not define a top-level function `def {name}(...)`")


def _loc_text(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
