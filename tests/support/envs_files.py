"""Environment files for sampling tests: the packaged examples, and many distinct variants of them."""

from importlib import resources
from pathlib import Path

from envs.jsonl import iter_rows, write_rows
from envs.schema import EnvRow


def example_rows() -> list[EnvRow]:
    with resources.as_file(resources.files("envs.examples") / "ftrl_examples.jsonl") as path:
        return list(iter_rows(path))


def variant_rows(count: int) -> list[EnvRow]:
    """`count` distinct environments: the examples with a numbered question (so each has its own id)."""
    rows = []
    for index in range(count):
        base = example_rows()[index % 3]
        messages = [{**base.messages[0], "content": f"{base.messages[0]['content']} (case {index})"}]
        rows.append(EnvRow(**{**base.model_dump(), "messages": messages, "env_id": ""}))
    return rows


def write_envs(path: Path, rows: list[EnvRow]) -> Path:
    write_rows(path, rows)
    return path
