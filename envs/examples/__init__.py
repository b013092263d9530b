"""Example environments in the FTRL row format, packaged for the demo, benchmarks and tests.

Three hand-written environments, one per scenario shape (single-hop, parallel single-hop,
multi-hop with a distracting tool), whose `meta` carries the golden calls of every sub-question.
"""

from __future__ import annotations

from importlib import resources

from envs.jsonl import iter_rows
from envs.schema import EnvRow

EXAMPLES_FILE = "ftrl_examples.jsonl"


def load_examples() -> list[EnvRow]:
    with resources.as_file(resources.files(__name__) / EXAMPLES_FILE) as path:
        return list(iter_rows(path))


def numbered_variants(count: int) -> list[EnvRow]:
    """`count` distinct environments cycling through the examples, each question numbered.

    Numbering changes the question text, hence the `env_id`, so a file of variants holds no
    repeated environment (the sampler refuses repeats).
    """
    examples = load_examples()
    rows = []
    for index in range(count):
        base = examples[index % len(examples)]
        question = {**base.messages[0], "content": f"{base.messages[0]['content']} (case {index})"}
        rows.append(EnvRow(**{**base.model_dump(), "messages": [question, *base.messages[1:]], "env_id": ""}))
    return rows
