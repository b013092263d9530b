"""One hand-written FTRL-style environment shared by the reward tests (not a test module)."""

import json

CODES = {
    "get_capital": (
        "import json\n\n"
        'CAPITALS = {"france": "Paris", "italy": "Rome", "japan": "Tokyo"}\n\n\n'
        "def _norm(name):\n"
        "    return name.strip().lower()\n\n\n"
        "def get_capital(country):\n"
        "    if _norm(country) not in CAPITALS:\n"
        '        return "Error: unknown country " + json.dumps(country)\n'
        "    return CAPITALS[_norm(country)]\n"
    ),
    "get_population": (
        "def get_population(city, year=2024):\n"
        '    table = {"paris": "2,148,000", "rome": "2,873,000"}\n'
        '    return {"city": city, "year": year, "population": table.get(city.lower(), "unknown")}\n'
    ),
    "get_landmarks": (
        'def get_landmarks(city):\n    return ["Eiffel Tower", "Louvre"] if city == "Paris" else []\n'
    ),
    "get_city_de": 'def get_city_de(city):\n    return {"Munich": "München"}.get(city, city)\n',
    "broken_tool": 'def broken_tool(x):\n    raise ValueError("database offline")\n',
}

UNSOLVED = {
    "get_capital": ["Paris"],
    "get_population": ["2148000"],
    "get_landmarks": ["Eiffel Tower, Louvre"],
    "get_city_de": ["münchen"],
}

ANSWER = "2,148,000"


def call(name: str, arguments: dict | str) -> str:
    """One Qwen2.5/Hermes tool call block, as the model writes it."""
    payload = {"name": name, "arguments": arguments}
    return f"<tool_call>\n{json.dumps(payload, ensure_ascii=False)}\n</tool_call>"


def response(*blocks: str, prefix: str = "", end: str = "<|im_end|>") -> str:
    return prefix + "\n".join(blocks) + end
