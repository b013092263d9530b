"""The JSON object in a model's reply.

Models wrap JSON in prose or Markdown fences however they are told; a reply is read as its first
fenced block that decodes to a JSON object, else the JSON value that starts at its first ``{``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from envs.construction.llm._rejections import Reject

__all__ = ["extract_json"]

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n(.*?)```", re.DOTALL)


def extract_json(text: str) -> dict[str, Any]:
    """The reply's JSON object; ``Reject("invalid JSON", ...)`` saying where decoding failed.

    >>> extract_json('Here it is:\\n```json\\n{"a": [1, 2]}\\n```')
    {'a': [1, 2]}
    >>> extract_json('Sure. {"a": 1} Hope that helps.')
    {'a': 1}
    """
    for block in _FENCE.findall(text):
        try:
            value = json.loads(block)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    start = text.find("{")
    if start == -1:
        raise Reject("invalid JSON", "the reply holds no JSON object (no `{` found)")
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as error:
        raise Reject(
            "invalid JSON",
            f"the JSON object is not valid JSON: {error.msg} (line {error.lineno}, column "
            f"{error.colno} of the reply)",
        ) from None
    return value  # a value that starts with `{` is an object
