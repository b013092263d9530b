"""Environment files for sampling tests, written from the packaged examples."""

from pathlib import Path

from envs.examples import load_examples, numbered_variants
from envs.jsonl import write_rows
from envs.schema import EnvRow

example_rows = load_examples
variant_rows = numbered_variants


def write_envs(path: Path, rows: list[EnvRow]) -> Path:
    write_rows(path, rows)
    return path
