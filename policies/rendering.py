"""Render a conversation and its tools into the exact prompt text and token ids a model sees.

Rendering always goes through ``tokenizer.apply_chat_template``, so the prompt is the model's own
format: the sampler, the trainer (VeRL, TRL) and evaluation must see the same tokens, and any
hand-written formatting here would drift from what the model was trained on. The templates in
``policies/templates`` are verbatim copies of TRL's ``trl/chat_templates`` files (pinned by digest in
the tests); they are for tokenizers that carry none, and for checking formats without a hub download.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from policies.types import tool_call_id

__all__ = [
    "available_templates",
    "load_template",
    "normalize_messages",
    "render_prompt",
    "render_prompt_ids",
]

TEMPLATES_DIR = Path(__file__).parent / "templates"


def available_templates() -> list[str]:
    """Names of the bundled chat templates (file names without ``.jinja``), sorted."""
    return sorted(path.stem for path in TEMPLATES_DIR.glob("*.jinja"))


def load_template(name: str) -> str:
    """The Jinja source of a bundled chat template, e.g. ``load_template("qwen2_5")``."""
    known = available_templates()
    if name not in known:
        raise ValueError(f"Unknown chat template {name!r}; available templates: {', '.join(known)}")
    return (TEMPLATES_DIR / f"{name}.jinja").read_text(encoding="utf-8")


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``messages`` in the one shape every bundled template renders correctly.

    - Assistant ``tool_calls`` become ``{"id", "type": "function", "function": {"name", "arguments"}}``
      with ``arguments`` a dict. OpenAI's format carries arguments as JSON text, but Qwen2.5's template
      prints ``arguments | tojson``, which would encode that text a second time. Flat calls
      (``{"name", "arguments"}``) are accepted too; a missing id becomes ``tool_call_id(k, i)`` for the
      ``k``-th assistant message, so rendering stays deterministic.
    - An empty or ``None`` ``tool_calls`` is dropped: Llama 3.1's template treats the mere key as a
      call turn. ``content: None`` (OpenAI's value for a calls-only turn) becomes ``""``, which
      templates can concatenate; a tool result that is not a string becomes its JSON text, the same
      text the reward compares sub-answers against.

    The input is never modified. Malformed messages raise ``ValueError`` naming the message and field.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of message dicts, got {type(messages).__name__}")
    normalized: list[dict[str, Any]] = []
    assistant_turn = 0
    for position, message in enumerate(messages):
        where = f"messages[{position}]"
        if not isinstance(message, Mapping):
            raise ValueError(
                f"{where}: expected a dict with 'role' and 'content', got {type(message).__name__}"
            )
        role = message.get("role")
        if not isinstance(role, str):
            raise ValueError(f"{where}: 'role' must be a string, got {role!r}")
        copy = dict(message)
        if copy.get("content") is None:
            copy["content"] = ""
        if role == "tool" and not isinstance(copy["content"], str):
            copy["content"] = json.dumps(copy["content"], ensure_ascii=False)
        if role == "assistant":
            if copy.get("tool_calls"):
                copy["tool_calls"] = _normalize_tool_calls(copy["tool_calls"], assistant_turn, where)
            else:
                copy.pop("tool_calls", None)
            assistant_turn += 1
        normalized.append(copy)
    return normalized


def _normalize_tool_calls(calls: Any, turn: int, where: str) -> list[dict[str, Any]]:
    if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes)):
        raise ValueError(f"{where}.tool_calls: must be a list, got {type(calls).__name__}")
    normalized = []
    for index, call in enumerate(calls):
        at = f"{where}.tool_calls[{index}]"
        if not isinstance(call, Mapping):
            raise ValueError(f"{at}: must be a dict, got {type(call).__name__}")
        function = call.get("function", call)
        if not isinstance(function, Mapping):
            raise ValueError(f"{at}.function: must be a dict, got {type(function).__name__}")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{at}: 'name' must be a non-empty string, got {name!r}")
        normalized.append(
            {
                "id": call.get("id") or tool_call_id(turn, index),
                "type": "function",
                "function": {"name": name, "arguments": _arguments_dict(function.get("arguments", {}), at)},
            }
        )
    return normalized


def _arguments_dict(arguments: Any, where: str) -> dict[str, Any]:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError as error:
            raise ValueError(f"{where}: 'arguments' is not valid JSON ({error})") from None
    if not isinstance(arguments, Mapping):
        raise ValueError(f"{where}: 'arguments' must be a JSON object, got {type(arguments).__name__}")
    return dict(arguments)


def _check_tools(tools: Any) -> list[dict[str, Any]] | None:
    # A JSON string (as environment rows store tools) would otherwise render character by character.
    if tools is None:
        return None
    if isinstance(tools, (str, bytes)) or not isinstance(tools, Sequence):
        raise ValueError(
            f"tools must be a list of OpenAI function schemas (decode JSON first), got {type(tools).__name__}"
        )
    for index, tool in enumerate(tools):
        if not isinstance(tool, Mapping):
            raise ValueError(
                f"tools[{index}]: must be a dict (an OpenAI function schema), got {type(tool).__name__}"
            )
    return [dict(tool) for tool in tools]


def render_prompt(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
    chat_template: str | None = None,
    **template_variables: Any,
) -> str:
    """The prompt text for ``messages`` and ``tools``, as the tokenizer's chat template writes it.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template (or pass ``chat_template``).
        messages: the conversation, OpenAI-style; see ``normalize_messages``.
        tools: OpenAI function schemas (``{"type": "function", "function": {...}}``), decoded.
        add_generation_prompt: end with the header of a new assistant turn, ready to generate.
        chat_template: a bundled template's name (``available_templates()``) to use instead of the
            tokenizer's own, or Jinja source text (anything containing ``{``), as transformers accepts.
        template_variables: extra variables for the template, e.g. ``enable_thinking=False`` (Qwen3).
    """
    normalized = normalize_messages(messages)
    if not normalized:
        raise ValueError("messages is empty: a prompt needs at least one message")
    template = chat_template
    if chat_template is not None and "{" not in chat_template:
        template = load_template(chat_template)
    return tokenizer.apply_chat_template(
        normalized,
        tools=_check_tools(tools),
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        chat_template=template,
        **template_variables,
    )


def render_prompt_ids(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = True,
    chat_template: str | None = None,
    **template_variables: Any,
) -> list[int]:
    """Token ids of exactly ``render_prompt``'s text.

    ``add_special_tokens=False`` because the template already wrote every special token; letting the
    tokenizer add a BOS again would give a prompt the model never saw in training.
    """
    text = render_prompt(
        tokenizer,
        messages,
        tools,
        add_generation_prompt=add_generation_prompt,
        chat_template=chat_template,
        **template_variables,
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
