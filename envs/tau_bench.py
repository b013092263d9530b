"""τ-bench-style stateful domains: tools that read and change a database held by the episode.

A domain is a folder with `tools.json` (OpenAI function schemas), `codes.json` (tool name → Python
source; every function takes the database as its first argument `data`), one JSON file per
database table, an optional `wiki.md` (the agent policy) and an optional `tasks.jsonl`. Table files
are discovered, not named, so any domain of this shape loads the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESERVED_FILES = {"tools.json", "codes.json"}


class DomainError(ValueError):
    """A domain folder that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class GoldenAction:
    """One tool call of a task's reference solution."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class DomainTask:
    instruction: str
    actions: tuple[GoldenAction, ...]
    outputs: tuple[str, ...] = ()
    data_source: str = ""


@dataclass(frozen=True)
class StatefulDomain:
    name: str
    tools: list[dict[str, Any]]
    codes: dict[str, str]
    tables: dict[str, Any]
    wiki: str = ""
    tasks: tuple[DomainTask, ...] = field(default=(), repr=False)

    def fresh_data(self) -> dict[str, Any]:
        """A deep copy of the database, so every episode starts from the same state."""
        return json.loads(json.dumps(self.tables))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DomainError(f"{path}: missing (a domain needs tools.json and codes.json)") from None
    except json.JSONDecodeError as exc:
        raise DomainError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def _parse_action(raw: Any, where: str) -> GoldenAction:
    function = raw.get("function", raw) if isinstance(raw, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise DomainError(f"{where}: an action needs a function name")
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            reason = f"arguments of {function['name']!r} are not valid JSON ({exc.msg})"
            raise DomainError(f"{where}: {reason}") from None
    if not isinstance(arguments, dict):
        raise DomainError(f"{where}: arguments of {function['name']!r} must be an object")
    return GoldenAction(name=function["name"], arguments=arguments)


def load_tasks(path: Path) -> tuple[DomainTask, ...]:
    tasks = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DomainError(f"{where}: invalid JSON: {exc.msg}") from None
            if not isinstance(raw, dict) or not isinstance(raw.get("instruction"), str):
                raise DomainError(f"{where}: a task needs an 'instruction' string")
            actions = tuple(_parse_action(action, where) for action in raw.get("actions", []))
            tasks.append(
                DomainTask(
                    instruction=raw["instruction"],
                    actions=actions,
                    outputs=tuple(raw.get("outputs", [])),
                    data_source=raw.get("data_source", ""),
                )
            )
    return tuple(tasks)


def load_domain(folder: str | Path) -> StatefulDomain:
    folder = Path(folder)
    if not folder.is_dir():
        raise DomainError(f"{folder}: not a domain folder")
    tools = _read_json(folder / "tools.json")
    codes = _read_json(folder / "codes.json")
    if not isinstance(tools, list) or not isinstance(codes, dict):
        raise DomainError(f"{folder}: tools.json must be a list and codes.json an object")
    names = [tool.get("function", {}).get("name") for tool in tools]
    missing = [name for name in names if name not in codes]
    if missing:
        raise DomainError(f"{folder / 'codes.json'}: no code for tool(s) {', '.join(map(str, missing))}")
    table_files = [path for path in sorted(folder.glob("*.json")) if path.name not in RESERVED_FILES]
    tables = {path.stem: _read_json(path) for path in table_files}
    wiki = (folder / "wiki.md").read_text(encoding="utf-8") if (folder / "wiki.md").is_file() else ""
    tasks = load_tasks(folder / "tasks.jsonl") if (folder / "tasks.jsonl").is_file() else ()
    for index, task in enumerate(tasks):
        unknown = [action.name for action in task.actions if action.name not in codes]
        if unknown:
            names = ", ".join(unknown)
            raise DomainError(f"{folder / 'tasks.jsonl'}: task {index} calls unknown tool(s) {names}")
    return StatefulDomain(name=folder.name, tools=tools, codes=codes, tables=tables, wiki=wiki, tasks=tasks)
