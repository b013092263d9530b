"""Loading τ-bench-style domain folders: the real airline data, and clear errors for broken folders."""

import json
from pathlib import Path

import pytest

from envs.tau_bench import DomainError, GoldenAction, load_domain


def test_airline_domain_loads(tau_airline_dir: Path) -> None:
    domain = load_domain(tau_airline_dir)
    assert domain.name == "airline"
    assert sorted(domain.tables) == ["flights", "reservations", "users"]
    assert len(domain.tools) == 14 and set(domain.codes) >= {t["function"]["name"] for t in domain.tools}
    assert len(domain.tasks) == 50
    first = domain.tasks[0]
    assert first.actions[0].name == "book_reservation"
    assert first.actions[0].arguments["user_id"] == "mia_li_3668"
    assert domain.wiki.startswith("#")


def test_fresh_data_is_an_independent_copy(tau_airline_dir: Path) -> None:
    domain = load_domain(tau_airline_dir)
    data = domain.fresh_data()
    data["users"].clear()
    assert domain.fresh_data()["users"]


def make_domain(tmp_path: Path, **files: str) -> Path:
    defaults = {
        "tools.json": json.dumps([{"type": "function", "function": {"name": "get", "parameters": {}}}]),
        "codes.json": json.dumps({"get": "def get(data, key):\n    return data['items'][key]\n"}),
        "items.json": json.dumps({"a": 1}),
    }
    defaults.update({name.replace("_", "."): text for name, text in files.items()})
    for name, text in defaults.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_any_table_names_load(tmp_path: Path) -> None:
    domain = load_domain(make_domain(tmp_path, tasks_jsonl='{"instruction": "x", "actions": []}\n'))
    assert domain.tables == {"items": {"a": 1}}
    assert domain.tasks[0].actions == ()


def test_json_string_and_object_arguments(tmp_path: Path) -> None:
    task = {
        "instruction": "x",
        "actions": [
            {"function": {"name": "get", "arguments": '{"key": "a"}'}},
            {"name": "get", "arguments": {"key": "b"}},
        ],
    }
    domain = load_domain(make_domain(tmp_path, tasks_jsonl=json.dumps(task)))
    assert domain.tasks[0].actions == (GoldenAction("get", {"key": "a"}), GoldenAction("get", {"key": "b"}))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"codes_json": "{}"}, r"codes\.json: no code for tool\(s\) get"),
        ({"tools_json": "[oops"}, r"tools\.json:1: invalid JSON"),
        ({"tasks_jsonl": '{"instruction": "x"}\nnot json\n'}, r"tasks\.jsonl:2: invalid JSON"),
        ({"tasks_jsonl": '{"actions": []}\n'}, r"tasks\.jsonl:1: a task needs an 'instruction' string"),
        (
            {"tasks_jsonl": '{"instruction": "x", "actions": [{"name": "fly", "arguments": {}}]}\n'},
            r"task 0 calls unknown tool\(s\) fly",
        ),
        (
            {"tasks_jsonl": '{"instruction": "x", "actions": [{"name": "get", "arguments": "{bad"}]}\n'},
            r"tasks\.jsonl:1: arguments of 'get' are not valid JSON",
        ),
    ],
)
def test_broken_domains_name_file_and_reason(tmp_path: Path, files: dict, message: str) -> None:
    with pytest.raises(DomainError, match=message):
        load_domain(make_domain(tmp_path, **files))


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DomainError, match="not a domain folder"):
        load_domain(tmp_path / "nowhere")
