"""Hand-written trajectory rows shared by the conversion tests (not a test module).

Two rows of one two-tool environment: fresh (turn 0), and after one tool-calling turn that solved the
capital, with the assistant's call in OpenAI form (arguments as JSON text) and the tool's reply.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CAPITAL_TOOL = {
    "type": "function",
    "function": {
        "name": "get_capital",
        "description": "Capital city of a country.",
        "parameters": {
            "type": "object",
            "properties": {"country": {"type": "string", "description": "Country name, e.g. 'Japan'."}},
            "required": ["country"],
        },
    },
}
POPULATION_TOOL = {
    "type": "function",
    "function": {
        "name": "get_population",
        "description": "Population of a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "year": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TOOLS = json.dumps([CAPITAL_TOOL, POPULATION_TOOL])
CODES = json.dumps(
    {
        "get_capital": "def get_capital(country):\n    return {'france': 'Paris'}[country.lower()]\n",
        "get_population": "def get_population(city, year=2024):\n    return {'paris': '2,148,000'}[city]\n",
    }
)
QUESTION = "How many people live in the capital of France?"

FRESH_ROW: dict[str, Any] = {
    "messages": [{"role": "user", "content": QUESTION}],
    "tools": TOOLS,
    "codes": CODES,
    "unsolved_set": json.dumps({"get_capital": ["Paris"], "get_population": ["2,148,000"]}),
    "answer": "2,148,000",
    "solve_rate": 0.0,
    "data_source": "hand-written",
    "split": "train",
    "env_id": "0123456789abcdef",
    "meta": json.dumps({"scenario": "multi-hop"}),
    "turn": 0,
    "policy": "tiny",
}

AFTER_CALL_ROW: dict[str, Any] = {
    **FRESH_ROW,
    "messages": [
        {"role": "user", "content": QUESTION},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0_0",
                    "type": "function",
                    "function": {"name": "get_capital", "arguments": '{"country": "France"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0_0", "name": "get_capital", "content": "Paris"},
    ],
    "unsolved_set": json.dumps({"get_capital": [], "get_population": ["2,148,000"]}),
    "solve_rate": 0.5,
    "turn": 1,
}


def write_jsonl(path: Path, rows: Iterable[dict[str, Any] | str]) -> Path:
    """One line per row; a string is written as the line itself (for malformed lines)."""
    lines = (row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path
