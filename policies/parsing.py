"""Tool-call parsers: read one generated assistant turn into content, tool calls and reasoning.

Formats (one parser each, looked up by name in ``PARSERS``):

- ``hermes`` / ``qwen2.5``: ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, any number
  of blocks per turn, free text around them (Qwen2.5's and Hermes' chat templates).
- ``qwen3``: the same calls after an optional ``<think>...</think>`` block, which becomes ``reasoning``.
  A turn that starts inside the block (the template put ``<think>`` in the prompt) is read the same way.
- ``llama3.1``: ``<|python_tag|>{"name": ..., "parameters": {...}}``, several separated by ``;`` or
  newlines, and the bare JSON object ``{"name": ..., "parameters": {...}}`` that Llama 3.1 emits for
  custom tools. Built-in tool syntax (``brave_search.call(query=...)``) is not a call here.

The contract every parser keeps, because a parser sits inside the RL loop, where one exception would
stop a run over one degenerate sample:

- trailing end tokens (``<|im_end|>``, ``<|eot_id|>``...) and whitespace are removed first;
- a call is a JSON object with a non-empty string ``name`` and ``arguments`` (alias ``parameters``) that
  is an object or the JSON text of one; a missing ``arguments`` means ``{}``; other fields are ignored;
- if any call in the turn is malformed (unterminated tag, broken JSON, bad name or arguments), the turn
  parses to its whole text as content, no calls, and ``parse_error`` says why: the reward, not the
  parser, decides what a malformed turn is worth, and it needs the stray tags to see it;
- ``parse`` never raises on a ``str``; ids are ``tool_call_id(turn, i)``, deterministic.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, ClassVar, NoReturn

from policies.types import ParsedTurn, ToolCall, tool_call_id

__all__ = [
    "PARSERS",
    "HermesParser",
    "Llama31Parser",
    "Qwen3Parser",
    "ToolCallParser",
    "get_parser",
    "parse_turn",
]


class _Malformed(Exception):
    """A call that cannot be read. Raised and caught inside ``parse``; it never reaches a caller."""


def _reject_constant(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not valid JSON")


def _finite_float(literal: str) -> float:
    # 1e400 decodes to inf, which json.dumps would write back as the non-JSON word Infinity.
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"number {literal} is out of range")
    return value


# Strict JSON: NaN, Infinity and overflowing numbers are errors, so every decoded call re-encodes
# to valid JSON text in ToolCall.to_openai.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _json_error(error: Exception) -> str:
    if isinstance(error, RecursionError):
        return "JSON nested too deeply"
    return f"broken JSON ({error.msg if isinstance(error, json.JSONDecodeError) else error})"


def _decode_at(text: str, pos: int, what: str) -> tuple[Any, int]:
    """Decode the JSON value starting at ``pos``; return it and the index just past it."""
    try:
        return _DECODER.raw_decode(text, pos)
    except (ValueError, RecursionError) as error:
        raise _Malformed(f"{what}: {_json_error(error)}") from None


def _call_from_object(obj: Any, turn: int, index: int) -> ToolCall:
    what = f"tool call {index + 1}"
    if not isinstance(obj, dict):
        raise _Malformed(f"{what}: not a JSON object")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise _Malformed(f'{what}: "name" is missing or not a non-empty string')
    key = "arguments" if "arguments" in obj else "parameters"  # error messages name the key the model used
    arguments = obj.get(key, {})
    if isinstance(arguments, str):
        # Some models (and OpenAI's own format) give arguments as JSON text.
        try:
            arguments = _DECODER.decode(arguments)
        except (ValueError, RecursionError) as error:
            raise _Malformed(f'{what}: "{key}" string is {_json_error(error)}') from None
    if not isinstance(arguments, dict):
        raise _Malformed(f'{what}: "{key}" is not a JSON object')
    try:
        # A JSON escape such as "\ud800" decodes to a lone surrogate, which no UTF-8 file can hold:
        # caught here, it cannot crash the trajectory writer later.
        json.dumps([name, arguments], ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _Malformed(f"{what}: lone surrogate in the call (not valid Unicode)") from None
    return ToolCall(id=tool_call_id(turn, index), name=name, arguments=arguments)


def _strip_end_tokens(text: str, end_tokens: tuple[str, ...]) -> str:
    """Remove trailing whitespace and end tokens, repeatedly (``...<|im_end|>\\n<|endoftext|>``)."""
    body = text.rstrip()
    while True:
        token = next((token for token in end_tokens if body.endswith(token)), None)
        if token is None:
            return body
        body = body[: -len(token)].rstrip()


class ToolCallParser(ABC):
    """Reads one generated assistant turn. Subclasses set ``name`` and ``end_tokens`` and implement
    ``_split_calls``; the base class owns end-token stripping and the malformed-turn rule."""

    name: ClassVar[str]
    end_tokens: ClassVar[tuple[str, ...]]

    def parse(self, text: str, turn: int = 0) -> ParsedTurn:
        """Parse ``text``, the model's output for assistant turn number ``turn`` (used for call ids).

        Never raises for a ``str``: malformed calls give a ``ParsedTurn`` with ``parse_error`` set.
        """
        if not isinstance(text, str):
            raise TypeError(
                f"{type(self).__name__}.parse() needs the generated text as str, got {type(text)}"
            )
        return replace(self._read(_strip_end_tokens(text, self.end_tokens), turn), raw=text)

    def _read(self, body: str, turn: int) -> ParsedTurn:
        try:
            content, calls = self._split_calls(body, turn)
        except _Malformed as error:
            return ParsedTurn(content=body.strip(), parse_error=str(error))
        return ParsedTurn(content=content, tool_calls=calls)

    @abstractmethod
    def _split_calls(self, body: str, turn: int) -> tuple[str, tuple[ToolCall, ...]]:
        """Return (content outside the calls, calls); raise ``_Malformed`` for any unreadable call."""


_CALL_OPEN, _CALL_CLOSE = "<tool_call>", "</tool_call>"


class HermesParser(ToolCallParser):
    """``<tool_call>{json}</tool_call>`` blocks, as Qwen2.5 and Hermes models write them."""

    name = "hermes"
    end_tokens = ("<|im_end|>", "<|endoftext|>")

    def _split_calls(self, body: str, turn: int) -> tuple[str, tuple[ToolCall, ...]]:
        outside: list[str] = []
        calls: list[ToolCall] = []
        pos = 0
        while True:
            start = body.find(_CALL_OPEN, pos)
            stray = body.find(_CALL_CLOSE, pos)
            if stray != -1 and (start == -1 or stray < start):
                raise _Malformed(f"{_CALL_CLOSE} without {_CALL_OPEN}")
            if start == -1:
                outside.append(body[pos:])
                return "".join(outside).strip(), tuple(calls)
            outside.append(body[pos:start])
            obj, pos = self._block(body, start + len(_CALL_OPEN), len(calls))
            calls.append(_call_from_object(obj, turn, len(calls)))

    @staticmethod
    def _block(body: str, pos: int, index: int) -> tuple[Any, int]:
        """Decode the JSON of the block whose body starts at ``pos``; return it and the index past
        ``</tool_call>``. The JSON is decoded before the closing tag is looked for, so a string value
        that contains ``</tool_call>`` does not cut the block short."""
        what = f"tool call {index + 1}"
        if body.find(_CALL_CLOSE, pos) == -1:
            raise _Malformed(f"{what}: unterminated {_CALL_OPEN}")
        obj, end = _decode_at(body, _skip_space(body, pos), what)
        end = _skip_space(body, end)
        if not body.startswith(_CALL_CLOSE, end):
            if end == len(body):
                raise _Malformed(f"{what}: unterminated {_CALL_OPEN}")
            raise _Malformed(f"{what}: text after the JSON object inside {_CALL_OPEN}")
        return obj, end + len(_CALL_CLOSE)


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


class Qwen3Parser(HermesParser):
    """Qwen3: an optional ``<think>...</think>`` block, then Hermes-style calls.

    The block counts only where Qwen3 writes it: at the start of the turn, or, when the generation
    prompt already opened it (thinking-only templates), as a ``</think>`` before any ``<tool_call>``.
    Think tags elsewhere, e.g. inside call arguments, are plain text; call tags inside the block are
    reasoning. A turn cut off inside the block is all reasoning so far: empty content, no calls, and
    ``parse_error`` notes the truncation.
    """

    name = "qwen3"

    def _read(self, body: str, turn: int) -> ParsedTurn:
        start = _skip_space(body, 0)
        if body.startswith(_THINK_OPEN, start):
            start += len(_THINK_OPEN)
            closed = body.find(_THINK_CLOSE, start)
            if closed == -1:
                return ParsedTurn(
                    content="", reasoning=body[start:].strip(), parse_error=f"unterminated {_THINK_OPEN}"
                )
            reasoning = body[start:closed]
        else:
            closed = body.find(_THINK_CLOSE)
            if closed == -1 or _CALL_OPEN in body[:closed]:
                return super()._read(body, turn)
            reasoning = body[:closed]
        rest = body[closed + len(_THINK_CLOSE) :]
        return replace(super()._read(rest, turn), reasoning=reasoning.strip())


_PYTHON_TAG = "<|python_tag|>"
_BARE_CALL_START = re.compile(r'\s*\{\s*"name"\s*:')


class Llama31Parser(ToolCallParser):
    """Llama 3.1: ``<|python_tag|>`` followed by JSON calls, or a bare JSON call as the whole turn.

    A turn of bare JSON objects is calls when its first object carries ``name`` and ``parameters``
    (or ``arguments``); other JSON is an ordinary answer. A turn that starts like a call
    (``{"name":``) but does not decode is malformed. Objects after the first (bare or tagged) may be
    separated by ``;``, newlines or further python tags.
    """

    name = "llama3.1"
    end_tokens = ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")

    def _split_calls(self, body: str, turn: int) -> tuple[str, tuple[ToolCall, ...]]:
        # Bare JSON first, so that a python tag inside a call's string argument is not a separator.
        if body.lstrip().startswith("{"):
            try:
                objects = _json_sequence(body, 0)
            except _Malformed:
                if _BARE_CALL_START.match(body):
                    raise
            else:
                if _looks_like_call(objects[0]):
                    return "", _calls(objects, turn)
        tag = body.find(_PYTHON_TAG)
        if tag == -1:
            return body.strip(), ()
        objects = _json_sequence(body, tag + len(_PYTHON_TAG))
        if not objects:
            raise _Malformed(f"no tool call after {_PYTHON_TAG}")
        return body[:tag].strip(), _calls(objects, turn)


def _looks_like_call(obj: Any) -> bool:
    return isinstance(obj, dict) and "name" in obj and ("parameters" in obj or "arguments" in obj)


def _calls(objects: list[Any], turn: int) -> tuple[ToolCall, ...]:
    return tuple(_call_from_object(obj, turn, index) for index, obj in enumerate(objects))


def _json_sequence(text: str, pos: int) -> list[Any]:
    """Decode JSON values from ``pos`` to the end, separated by whitespace, ``;`` or python tags."""
    values: list[Any] = []
    while True:
        while pos < len(text):
            if text[pos].isspace() or text[pos] == ";":
                pos += 1
            elif text.startswith(_PYTHON_TAG, pos):
                pos += len(_PYTHON_TAG)
            else:
                break
        if pos == len(text):
            return values
        value, pos = _decode_at(text, pos, f"tool call {len(values) + 1}")
        values.append(value)


PARSERS: dict[str, type[ToolCallParser]] = {
    "hermes": HermesParser,
    "qwen2.5": HermesParser,
    "qwen3": Qwen3Parser,
    "llama3.1": Llama31Parser,
}


def get_parser(name: str) -> ToolCallParser:
    """A parser by the name a profile gives (``PARSERS``' keys); a miss lists the known names."""
    try:
        return PARSERS[name]()
    except (KeyError, TypeError):
        known = sorted(PARSERS)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"Unknown tool-call parser {name!r}; known parsers: {', '.join(known)}.{hint}"
        ) from None


def parse_turn(text: str, parser: str = "qwen2.5", turn: int = 0) -> ParsedTurn:
    """Parse one generated turn with the parser named ``parser``.

    >>> parse_turn('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call><|im_end|>', turn=2).tool_calls
    (ToolCall(id='call_2_0', name='f', arguments={'x': 1}),)
    """
    return get_parser(parser).parse(text, turn)
