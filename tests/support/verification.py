"""Rows and domains for verification tests: the packaged examples with one thing broken, and a tiny
stateful domain unlike the airline one (other table files, other tools)."""

import json
from pathlib import Path
from typing import Any

from envs.examples import load_examples
from envs.jsonl import write_rows
from envs.schema import EnvRow

WRONG_CAPITAL = (
    "CAPITALS = {'FR': 'Lyon', 'IT': 'Rome'}\n\n\n"
    "def get_country_capital(iso_code):\n"
    "    return CAPITALS.get(iso_code.strip().upper(), 'Error: unknown ISO code')\n"
)
ALWAYS_PARIS = "def get_country_capital(iso_code):\n    return 'Paris'\n"


def example(scenario: str) -> EnvRow:
    return next(row for row in load_examples() if row.meta_dict()["scenario"] == scenario)


def changed(row: EnvRow, **fields: Any) -> EnvRow:
    """`row` with some fields replaced (decoded values are accepted) and a fresh env_id."""
    return EnvRow(**{**row.model_dump(), **fields, "env_id": ""})


def with_code(row: EnvRow, name: str, code: str) -> EnvRow:
    return changed(row, codes={**row.codes_dict(), name: code})


def with_meta(row: EnvRow, **meta: Any) -> EnvRow:
    return changed(row, meta={**row.meta_dict(), **meta})


def mixed_file(path: Path) -> Path:
    """Lines: 3 valid examples, a wrong golden value, a paper row, blank, bad JSON, 3 schema failures."""
    single = example("single-hop")
    rows = [row.model_dump() for row in load_examples()]
    rows.append(with_code(single, "get_country_capital", WRONG_CAPITAL).model_dump())
    rows.append(changed(single, meta={}).model_dump())
    write_rows(path, rows)
    undefined = {
        **single.model_dump(),
        "codes": json.dumps({"get_country_capital": "def other():\n    return 1\n"}),
    }
    unknown = {**single.model_dump(), "unsolved_set": json.dumps({"no_such_tool": ["Paris"]})}
    missing = {k: v for k, v in single.model_dump().items() if k != "answer"}
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n{not json\n")
        for obj in (undefined, unknown, missing):
            handle.write(json.dumps(obj) + "\n")
    return path


LIBRARY_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(properties)},
        },
    }
    for name, description, properties in [
        ("get_book", "Details of a book.", {"book_id": {"type": "string"}}),
        ("borrow", "Lend a book to a member.", {"book_id": {"type": "string"}, "member": {"type": "string"}}),
        ("stamp", "Stamp a member's card with a random number.", {"member": {"type": "string"}}),
    ]
]
LIBRARY_CODES = {
    "get_book": (
        "import json\n\n\ndef get_book(data, book_id):\n"
        "    book = data['books'].get(book_id)\n"
        "    return json.dumps(book) if book else f'Error: no book {book_id!r}'\n"
    ),
    "borrow": (
        "def borrow(data, book_id, member):\n"
        "    if book_id not in data['books']:\n"
        "        return f'Error: no book {book_id!r}'\n"
        "    data['books'][book_id]['holder'] = member\n"
        "    data['members'][member]['loans'] += 1\n"
        "    return 'ok'\n"
    ),
    "stamp": (
        "import random\n\n\ndef stamp(data, member):\n"
        "    data['members'][member]['stamp'] = random.random()\n"
        "    return 'stamped'\n"
    ),
}


def _action(name: str, **arguments: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


LIBRARY_TASKS = [
    {
        "instruction": "Borrow b1 for ana.",
        "actions": [_action("borrow", book_id="b1", member="ana")],
        "outputs": [],
    },
    {"instruction": "Look at b1.", "actions": [_action("get_book", book_id="b1")], "outputs": []},
    {"instruction": "Which book is b2?", "actions": [_action("get_book", book_id="b2")], "outputs": ["Dune"]},
    {
        "instruction": "Borrow zz for ana.",
        "actions": [_action("borrow", book_id="zz", member="ana")],
        "outputs": [],
    },
    {"instruction": "Stamp ana's card.", "actions": [_action("stamp", member="ana")], "outputs": []},
]


def write_library_domain(folder: Path) -> tuple[Path, Path]:
    """A domain folder (tables `books` and `members`) and, beside it, a tasks file for it.

    Tasks: 0 writes (passes; an empty run fails), 1 only reads (passes; an empty run passes too),
    2 reads and must say "Dune" (passes; an empty run fails), 3's golden action fails, 4 writes a
    random number, so two replays never agree.
    """
    domain = folder / "library"
    domain.mkdir(parents=True)
    (domain / "tools.json").write_text(json.dumps(LIBRARY_TOOLS))
    (domain / "codes.json").write_text(json.dumps(LIBRARY_CODES))
    books = {"b1": {"title": "Emma", "holder": None}, "b2": {"title": "Dune", "holder": None}}
    (domain / "books.json").write_text(json.dumps(books))
    (domain / "members.json").write_text(json.dumps({"ana": {"loans": 0}}))
    tasks = folder / "library-tasks.jsonl"
    tasks.write_text("".join(json.dumps(task) + "\n" for task in LIBRARY_TASKS))
    return domain, tasks
