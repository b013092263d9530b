"""Property-based tests: random and adversarial text never breaks a parser, and well-formed calls
always come back exactly."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.parsing import HermesParser, Llama31Parser, Qwen3Parser, ToolCallParser
from policies.types import ParsedTurn, ToolCall, tool_call_id

PARSER_CLASSES = [HermesParser, Qwen3Parser, Llama31Parser]  # "qwen2.5" is HermesParser under another name

FRAGMENTS = [
    "<tool_call>", "</tool_call>", "<think>", "</think>", "<|python_tag|>",
    "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>",
    "<", ">", "<|", "|>", "tool_call",
    "{", "}", "[", "]", ":", ",", ";", '"', "\\", "\n", " ", "\t",
    '"name"', '"arguments"', '"parameters"', '"f"', '""', '"{}"', '"{\\"x\\": 1}"',
    "1", "-0", "1e999", "NaN", "Infinity", "null", "true", "9" * 40,
    '{"name": "f", "arguments": {}}', '{"name": "g", "parameters": {"x": [1, {"y": null}]}}',
    '"\\u00e9"', '"\\ud800"', "é", "🙂", "\u2028", "\x00", "\ud800",
]  # fmt: skip

_fragment_soup = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=40).map("".join)

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
_arguments = st.dictionaries(st.text(max_size=5), _json_values, max_size=3)
_names = st.text(min_size=1, max_size=10)
_calls = st.lists(st.tuples(_names, _arguments), min_size=1, max_size=3)
# Free text that cannot contain a tag or an end token, so it is content by construction.
_plain = st.text(alphabet=st.characters(exclude_characters="<"), max_size=15)


def hermes_block(name: str, arguments: dict, *, as_string: bool = False) -> str:
    payload = json.dumps(arguments, ensure_ascii=False)
    return (
        "<tool_call>\n"
        + json.dumps({"name": name, "arguments": payload if as_string else arguments})
        + "\n</tool_call>"
    )


@st.composite
def hermes_turns(draw: st.DrawFn) -> tuple[str, list[tuple[str, dict]], str]:
    """A well-formed Hermes turn: (text, its calls, the content it should parse to)."""
    calls = draw(_calls)
    pieces = [draw(_plain) for _ in range(len(calls) + 1)]
    blocks = [hermes_block(name, arguments, as_string=draw(st.booleans())) for name, arguments in calls]
    text = pieces[0] + "".join(block + piece for block, piece in zip(blocks, pieces[1:], strict=True))
    return text, calls, "".join(pieces).strip()


@st.composite
def llama_turns(draw: st.DrawFn) -> tuple[str, list[tuple[str, dict]], str]:
    """A well-formed Llama 3.1 turn with ``<|python_tag|>``: (text, its calls, its content)."""
    calls = draw(_calls)
    content = draw(_plain)
    objects = [json.dumps({"name": name, "parameters": arguments}) for name, arguments in calls]
    separators = [draw(st.sampled_from([";", "; ", "\n", ";\n", "<|python_tag|>", ""])) for _ in objects[1:]]
    body = objects[0] + "".join(sep + obj for sep, obj in zip(separators, objects[1:], strict=True))
    return f"{content}<|python_tag|>{body}", calls, content.strip()


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A well-formed turn of any format with a few random cuts, insertions and repeats."""
    text = draw(st.one_of(hermes_turns(), llama_turns()))[0]
    if draw(st.booleans()):
        text = f"<think>{draw(_plain)}</think>{text}"
    for _ in range(draw(st.integers(1, 4))):
        i, j = sorted(draw(st.integers(0, len(text))) for _ in range(2))
        edit = draw(st.sampled_from(["cut", "insert", "repeat"]))
        if edit == "cut":
            text = text[:i] + text[j:]
        elif edit == "insert":
            text = text[:i] + draw(st.sampled_from(FRAGMENTS)) + text[i:]
        else:
            text = text[:j] + text[i:j] + text[j:]
    return text


any_text = st.one_of(st.text(), _fragment_soup, mutated())


def _reject_constant(constant: str) -> None:
    raise ValueError(constant)


def check_turn(parsed: ParsedTurn, text: str, turn: int) -> None:
    """What every parse of every string must satisfy."""
    assert isinstance(parsed, ParsedTurn)
    assert parsed.raw == text
    assert isinstance(parsed.content, str) and parsed.content == parsed.content.strip()
    assert parsed.reasoning is None or isinstance(parsed.reasoning, str)
    assert parsed.parse_error is None or (isinstance(parsed.parse_error, str) and parsed.parse_error)
    assert isinstance(parsed.tool_calls, tuple)
    if parsed.parse_error is not None:
        assert parsed.tool_calls == ()
    for index, call in enumerate(parsed.tool_calls):
        assert isinstance(call, ToolCall)
        assert call.id == tool_call_id(turn, index)
        assert isinstance(call.name, str) and call.name
        assert isinstance(call.arguments, dict) and all(isinstance(key, str) for key in call.arguments)
        # The arguments re-encode to strict JSON (no NaN/Infinity) that decodes to the same object.
        encoded = call.to_openai()["function"]["arguments"]
        assert json.loads(encoded, parse_constant=_reject_constant) == call.arguments
        assert call.name.encode("utf-8") and encoded.encode("utf-8")  # storable as UTF-8 JSONL
    message = parsed.to_message()
    assert message["content"] == parsed.content
    assert len(message.get("tool_calls", [])) == len(parsed.tool_calls)


@pytest.mark.parametrize("parser_cls", PARSER_CLASSES)
@settings(max_examples=2000, deadline=None)
@given(text=any_text, turn=st.integers(0, 40))
def test_any_text_parses_without_raising(parser_cls: type[ToolCallParser], text: str, turn: int) -> None:
    check_turn(parser_cls().parse(text, turn), text, turn)


@settings(max_examples=300, deadline=None)
@given(text=any_text)
def test_hermes_malformed_turns_keep_every_stray_tag_in_content(text: str) -> None:
    """The reward's malformed-call penalty looks for the tags in the content: they must all be there."""
    parsed = HermesParser().parse(text)
    if parsed.parse_error is not None:
        for tag in ("<tool_call>", "</tool_call>"):
            assert parsed.content.count(tag) == text.count(tag)
    if "<tool_call>" not in text and "</tool_call>" not in text:
        assert parsed.parse_error is None and parsed.tool_calls == ()


@pytest.mark.parametrize("parser_cls", PARSER_CLASSES)
@settings(max_examples=200, deadline=None)
@given(text=any_text, data=st.data())
def test_end_tokens_and_trailing_space_do_not_change_the_parse(
    parser_cls: type[ToolCallParser], text: str, data: st.DataObject
) -> None:
    parser = parser_cls()
    suffix = data.draw(st.lists(st.sampled_from([*parser.end_tokens, "\n", " "]), min_size=1, max_size=3))
    padded = text + "".join(suffix)
    assert parser.parse(padded) == replace(parser.parse(text), raw=padded)


@pytest.mark.parametrize("parser_cls", PARSER_CLASSES)
@settings(max_examples=200, deadline=None)
@given(text=any_text, turns=st.tuples(st.integers(0, 99), st.integers(0, 99)))
def test_the_turn_number_only_changes_ids(
    parser_cls: type[ToolCallParser], text: str, turns: tuple[int, int]
) -> None:
    first, second = (parser_cls().parse(text, turn) for turn in turns)
    assert replace(first, tool_calls=()) == replace(second, tool_calls=())
    assert [(c.name, c.arguments) for c in first.tool_calls] == [
        (c.name, c.arguments) for c in second.tool_calls
    ]


@settings(max_examples=200, deadline=None)
@given(turn=hermes_turns(), number=st.integers(0, 30))
def test_well_formed_hermes_calls_come_back_exactly(turn: tuple[str, list, str], number: int) -> None:
    text, calls, content = turn
    for parser in (HermesParser(), Qwen3Parser()):
        parsed = parser.parse(text + "<|im_end|>", number)
        assert parsed.parse_error is None
        assert parsed.content == content
        assert parsed.tool_calls == tuple(
            ToolCall(tool_call_id(number, i), name, arguments) for i, (name, arguments) in enumerate(calls)
        )


@settings(max_examples=300, deadline=None)
@given(turn=hermes_turns(), reasoning=_plain)
def test_well_formed_qwen3_thinking_turns_come_back_exactly(
    turn: tuple[str, list, str], reasoning: str
) -> None:
    text, calls, content = turn
    parsed = Qwen3Parser().parse(f"<think>\n{reasoning}\n</think>\n\n{text}")
    assert (parsed.reasoning, parsed.content, parsed.parse_error) == (reasoning.strip(), content, None)
    assert [(call.name, call.arguments) for call in parsed.tool_calls] == calls


@settings(max_examples=300, deadline=None)
@given(turn=llama_turns())
def test_well_formed_llama_calls_come_back_exactly(turn: tuple[str, list, str]) -> None:
    text, calls, content = turn
    parsed = Llama31Parser().parse(text + "<|eom_id|>", 1)
    assert (parsed.content, parsed.parse_error) == (content, None)
    assert [(call.name, call.arguments) for call in parsed.tool_calls] == calls


@settings(max_examples=300, deadline=None)
@given(
    turn=st.one_of(
        hermes_turns().map(lambda t: (HermesParser(), t[0])),
        hermes_turns().map(lambda t: (Qwen3Parser(), f"<think>{t[2]}</think>{t[0]}")),
        llama_turns().map(lambda t: (Llama31Parser(), t[0])),
        st.lists(_calls, min_size=1, max_size=1).map(
            lambda c: (Llama31Parser(), json.dumps({"name": c[0][0][0], "parameters": c[0][0][1]}))
        ),
    ),
    data=st.data(),
)
def test_a_cut_off_turn_never_invents_a_call(turn: tuple[ToolCallParser, str], data: st.DataObject) -> None:
    """Generation stopped at any point (max tokens) yields only calls the full turn has, in order."""
    parser, text = turn
    cut = data.draw(st.integers(0, len(text)))
    full, prefix = parser.parse(text).tool_calls, parser.parse(text[:cut]).tool_calls
    assert prefix == full[: len(prefix)]
