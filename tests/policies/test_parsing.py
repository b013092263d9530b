"""Tool-call parsers on hand-worked turns: well-formed, odd-but-valid, and malformed."""

from __future__ import annotations

import re

import pytest

from policies.parsing import (
    PARSERS,
    HermesParser,
    Llama31Parser,
    Qwen3Parser,
    ToolCallParser,
    get_parser,
    parse_turn,
)
from policies.types import ParsedTurn, ToolCall, tool_call_id

WEATHER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TIME = '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'


def hermes(text: str, turn: int = 0) -> ParsedTurn:
    return HermesParser().parse(text, turn)


def malformed(text: str, reason: str, content: str | None = None) -> ParsedTurn:
    """What a malformed turn parses to: all of it as content, no calls, the reason."""
    return ParsedTurn(content=text.strip() if content is None else content, raw=text, parse_error=reason)


# --- types ----------------------------------------------------------------------------------------


def test_tool_call_ids_are_positional() -> None:
    assert tool_call_id(0, 0) == "call_0_0"
    assert tool_call_id(12, 3) == "call_12_3"


def test_tool_call_to_openai_carries_arguments_as_json_text() -> None:
    call = ToolCall("call_2_1", "convert", {"amount": 3.5, "to": "€", "tags": ["a"]})
    assert call.to_openai() == {
        "id": "call_2_1",
        "type": "function",
        "function": {"name": "convert", "arguments": '{"amount": 3.5, "to": "€", "tags": ["a"]}'},
    }


def test_parsed_turn_to_message() -> None:
    call = ToolCall("call_0_0", "get_time", {})
    with_calls = ParsedTurn("Checking.", (call,), reasoning="think", raw="...")
    assert with_calls.to_message() == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "call_0_0", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
        ],
    }
    assert ParsedTurn("Paris.").to_message() == {"role": "assistant", "content": "Paris."}


# --- Hermes / Qwen2.5 -----------------------------------------------------------------------------


def test_single_call() -> None:
    text = WEATHER + "<|im_end|>"
    assert hermes(text, turn=3) == ParsedTurn(
        content="", tool_calls=(ToolCall("call_3_0", "get_weather", {"city": "Paris"}),), raw=text
    )


def test_several_calls_in_one_turn_keep_their_order_and_ids() -> None:
    parsed = hermes(f"{WEATHER}\n{TIME}\n{WEATHER}", turn=2)
    assert parsed.tool_calls == (
        ToolCall("call_2_0", "get_weather", {"city": "Paris"}),
        ToolCall("call_2_1", "get_time", {}),
        ToolCall("call_2_2", "get_weather", {"city": "Paris"}),
    )
    assert parsed.content == "" and parsed.parse_error is None


def test_text_before_between_and_after_calls_is_content() -> None:
    parsed = hermes(f"Let me check.\n{WEATHER} and {TIME}\nDone soon.")
    assert parsed.content == "Let me check.\n and \nDone soon."
    assert [call.name for call in parsed.tool_calls] == ["get_weather", "get_time"]


def test_arguments_given_as_a_json_string() -> None:
    parsed = hermes(
        '<tool_call>{"name": "f", "arguments": "{\\"city\\": \\"Zürich\\", \\"n\\": [1, 2]}"}</tool_call>'
    )
    assert parsed.tool_calls == (ToolCall("call_0_0", "f", {"city": "Zürich", "n": [1, 2]}),)


def test_parameters_is_an_alias_of_arguments() -> None:
    parsed = hermes('<tool_call>{"name": "f", "parameters": {"x": 1}}</tool_call>')
    assert parsed.tool_calls == (ToolCall("call_0_0", "f", {"x": 1}),)


def test_arguments_wins_over_parameters() -> None:
    parsed = hermes('<tool_call>{"name": "f", "parameters": {"x": 1}, "arguments": {"y": 2}}</tool_call>')
    assert parsed.tool_calls == (ToolCall("call_0_0", "f", {"y": 2}),)


def test_unknown_fields_are_ignored() -> None:
    text = (
        '<tool_call>{"id": "a", "type": "function", "name": "f", "arguments": {"x": 1}, "why": 1}</tool_call>'
    )
    assert hermes(text, turn=1).tool_calls == (ToolCall("call_1_0", "f", {"x": 1}),)


def test_missing_arguments_mean_no_arguments() -> None:
    assert hermes('<tool_call>{"name": "get_time"}</tool_call>').tool_calls == (
        ToolCall("call_0_0", "get_time", {}),
    )


def test_compact_and_spaced_blocks() -> None:
    parsed = hermes(
        '<tool_call>{"name":"f","arguments":{}}</tool_call><tool_call>  \n\t{"name":"g"} \n</tool_call>'
    )
    assert [call.name for call in parsed.tool_calls] == ["f", "g"]


def test_a_closing_tag_inside_a_json_string_does_not_end_the_block() -> None:
    parsed = hermes('<tool_call>{"name": "echo", "arguments": {"text": "a </tool_call> b"}}</tool_call>')
    assert parsed.tool_calls == (ToolCall("call_0_0", "echo", {"text": "a </tool_call> b"}),)


def test_end_tokens_are_stripped_only_at_the_end() -> None:
    assert hermes("Paris.<|im_end|>").content == "Paris."
    assert hermes("Paris.<|im_end|>\n<|endoftext|>\n").content == "Paris."
    assert hermes("Paris.<|im_end|><|im_end|>").content == "Paris."
    assert hermes("Par<|im_end|>is.").content == "Par<|im_end|>is."
    # Another model's end token is text to this parser.
    assert hermes("Paris.<|eot_id|>").content == "Paris.<|eot_id|>"


def test_plain_answer() -> None:
    text = "  The flight leaves at 9:40.\n<|im_end|>"
    assert hermes(text) == ParsedTurn(content="The flight leaves at 9:40.", raw=text)


@pytest.mark.parametrize("text", ["", "   \n", "<|im_end|>", "<|endoftext|>", "\n<|im_end|>\n"])
def test_empty_output(text: str) -> None:
    assert hermes(text) == ParsedTurn(content="", raw=text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('<tool_call>\n{"name": "f", "arguments": {"x": 1}}', "tool call 1: unterminated <tool_call>"),
        (
            '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_',
            "tool call 1: unterminated <tool_call>",
        ),
        ('<tool_call>\n{"name": "f", "argu', "tool call 1: unterminated <tool_call>"),
        ("<tool_call>", "tool call 1: unterminated <tool_call>"),
        (f"{WEATHER}\n<tool_call>", "tool call 2: unterminated <tool_call>"),
        (
            '<tool_call>{"name": "f", "arguments": {"t": "</tool_call>"}}',
            "tool call 1: unterminated <tool_call>",
        ),
        ('{"name": "f", "arguments": {}}\n</tool_call>', "</tool_call> without <tool_call>"),
        (f"{WEATHER}</tool_call>", "</tool_call> without <tool_call>"),
        (
            '<tool_call>{"name": "f", "arguments": {"x": 1}</tool_call>',
            "tool call 1: broken JSON (Expecting ',' delimiter)",
        ),
        (
            "<tool_call>{name: f}</tool_call>",
            "tool call 1: broken JSON (Expecting property name enclosed in double quotes)",
        ),
        ("<tool_call></tool_call>", "tool call 1: broken JSON (Expecting value)"),
        ("<tool_call><tool_call>{}</tool_call>", "tool call 1: broken JSON (Expecting value)"),
        (
            '<tool_call>{"name": "f"} {"name": "g"}</tool_call>',
            "tool call 1: text after the JSON object inside <tool_call>",
        ),
        (
            '<tool_call>{"name": "f", "arguments": {"x": NaN}}</tool_call>',
            "tool call 1: broken JSON (NaN is not valid JSON)",
        ),
        (
            '<tool_call>{"name": "f", "arguments": {"x": 1e999}}</tool_call>',
            "tool call 1: broken JSON (number 1e999 is out of range)",
        ),
        ("<tool_call>" + "[" * 50_000 + "</tool_call>", "tool call 1: JSON nested too deeply"),
        (
            '<tool_call>{"name": "f", "arguments": {"x": "\\ud800"}}</tool_call>',
            "tool call 1: lone surrogate in the call (not valid Unicode)",
        ),
        (
            '<tool_call>{"name": "\ud83d", "arguments": {}}</tool_call>',
            "tool call 1: lone surrogate in the call (not valid Unicode)",
        ),
        ('<tool_call>["f", {}]</tool_call>', "tool call 1: not a JSON object"),
        (
            '<tool_call>{"arguments": {}}</tool_call>',
            'tool call 1: "name" is missing or not a non-empty string',
        ),
        (
            '<tool_call>{"name": 7, "arguments": {}}</tool_call>',
            'tool call 1: "name" is missing or not a non-empty string',
        ),
        (
            '<tool_call>{"name": "", "arguments": {}}</tool_call>',
            'tool call 1: "name" is missing or not a non-empty string',
        ),
        (
            '<tool_call>{"name": "f", "arguments": [1]}</tool_call>',
            'tool call 1: "arguments" is not a JSON object',
        ),
        (
            '<tool_call>{"name": "f", "arguments": null}</tool_call>',
            'tool call 1: "arguments" is not a JSON object',
        ),
        (
            '<tool_call>{"name": "f", "arguments": "[1]"}</tool_call>',
            'tool call 1: "arguments" is not a JSON object',
        ),
        (
            '<tool_call>{"name": "f", "arguments": "{x"}</tool_call>',
            'tool call 1: "arguments" string is broken JSON '
            "(Expecting property name enclosed in double quotes)",
        ),
        (
            '<tool_call>{"name": "f", "arguments": ""}</tool_call>',
            'tool call 1: "arguments" string is broken JSON (Expecting value)',
        ),
    ],
)
def test_malformed_calls_leave_the_whole_turn_as_content(text: str, reason: str) -> None:
    assert hermes(text) == malformed(text, reason)


def test_integers_past_pythons_digit_limit_are_broken_json() -> None:
    text = '<tool_call>{"name": "f", "arguments": {"x": ' + "9" * 5000 + "}}</tool_call>"
    parsed = hermes(text)
    assert parsed.tool_calls == () and parsed.content == text
    assert parsed.parse_error is not None and parsed.parse_error.startswith("tool call 1: broken JSON (")


def test_one_bad_call_spoils_the_turn_so_the_reward_sees_the_stray_tags() -> None:
    text = f'Sure.\n{WEATHER}\n<tool_call>\n{{"name": "get_time", "arguments": 5}}\n</tool_call><|im_end|>'
    parsed = hermes(text, turn=4)
    assert parsed == ParsedTurn(
        content=text.removesuffix("<|im_end|>"),
        raw=text,
        parse_error='tool call 2: "arguments" is not a JSON object',
    )
    assert "<tool_call>" in parsed.content and "</tool_call>" in parsed.content


# --- Qwen3 ----------------------------------------------------------------------------------------


def qwen3(text: str, turn: int = 0) -> ParsedTurn:
    return Qwen3Parser().parse(text, turn)


def test_thinking_then_calls() -> None:
    text = f"<think>\nNeed the weather first.\n</think>\n\nChecking.\n{WEATHER}<|im_end|>"
    assert qwen3(text, turn=1) == ParsedTurn(
        content="Checking.",
        tool_calls=(ToolCall("call_1_0", "get_weather", {"city": "Paris"}),),
        reasoning="Need the weather first.",
        raw=text,
    )


def test_thinking_then_answer() -> None:
    assert qwen3("<think>easy</think>\n\nParis.") == ParsedTurn(
        "Paris.", reasoning="easy", raw="<think>easy</think>\n\nParis."
    )


def test_empty_thinking_block_is_empty_reasoning() -> None:
    # What Qwen3 writes after a prompt rendered with enable_thinking=False, or when it skips thinking.
    parsed = qwen3("<think>\n\n</think>\n\nHi!")
    assert (parsed.reasoning, parsed.content) == ("", "Hi!")


def test_no_thinking_block_is_no_reasoning() -> None:
    parsed = qwen3(f"Checking. {TIME}")
    assert parsed.reasoning is None and parsed.content == "Checking." and len(parsed.tool_calls) == 1


def test_turn_that_starts_inside_the_thinking_block() -> None:
    # Thinking-only models' templates end the prompt with "<think>\n"; the turn holds only the close.
    parsed = qwen3(f"Weather needed.\n</think>\n\n{WEATHER}")
    assert parsed.reasoning == "Weather needed."
    assert parsed.tool_calls == (ToolCall("call_0_0", "get_weather", {"city": "Paris"}),)


def test_tags_inside_the_thinking_block_are_reasoning_not_calls() -> None:
    text = "<think>\nMaybe <tool_call>{broken</think>\nParis."
    assert qwen3(text) == ParsedTurn(content="Paris.", reasoning="Maybe <tool_call>{broken", raw=text)


def test_unterminated_thinking_is_all_reasoning_and_no_calls() -> None:
    text = f"<think>\nLet me call {WEATHER} maybe"
    assert qwen3(text) == ParsedTurn(
        content="", reasoning=f"Let me call {WEATHER} maybe", raw=text, parse_error="unterminated <think>"
    )


def test_malformed_call_after_thinking_keeps_the_reasoning_apart() -> None:
    text = '<think>ok</think>\nSure <tool_call>{"name": "f"'
    assert qwen3(text) == ParsedTurn(
        content='Sure <tool_call>{"name": "f"',
        reasoning="ok",
        raw=text,
        parse_error="tool call 1: unterminated <tool_call>",
    )


def test_think_tags_inside_call_arguments_are_text() -> None:
    text = '<tool_call>{"name": "echo", "arguments": {"t": "<think>x</think>"}}</tool_call>'
    assert qwen3(text) == ParsedTurn("", (ToolCall("call_0_0", "echo", {"t": "<think>x</think>"}),), raw=text)
    text = 'Ok. <tool_call>{"name": "echo", "arguments": {"t": "</think>"}}</tool_call>'
    assert qwen3(text).reasoning is None and qwen3(text).content == "Ok."


def test_only_the_first_thinking_block_is_reasoning() -> None:
    parsed = qwen3("<think>a</think>b<think>c</think>d")
    assert (parsed.reasoning, parsed.content) == ("a", "b<think>c</think>d")


# --- Llama 3.1 ------------------------------------------------------------------------------------


def llama(text: str, turn: int = 0) -> ParsedTurn:
    return Llama31Parser().parse(text, turn)


def test_python_tag_call() -> None:
    text = '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eom_id|>'
    assert llama(text, turn=2) == ParsedTurn(
        content="", tool_calls=(ToolCall("call_2_0", "get_weather", {"city": "Paris"}),), raw=text
    )


def test_python_tag_several_calls_separated_by_semicolons_newlines_and_tags() -> None:
    text = (
        'Let me look.<|python_tag|>{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {}}\n'
        '{"name": "c", "arguments": "{\\"y\\": 2}"}<|python_tag|>{"name": "d", "parameters": {}}<|eot_id|>'
    )
    parsed = llama(text, turn=5)
    assert parsed.content == "Let me look."
    assert parsed.tool_calls == (
        ToolCall("call_5_0", "a", {"x": 1}),
        ToolCall("call_5_1", "b", {}),
        ToolCall("call_5_2", "c", {"y": 2}),
        ToolCall("call_5_3", "d", {}),
    )


def test_bare_json_call_as_llama_3_1_writes_custom_tool_calls() -> None:
    text = '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>'
    assert llama(text) == ParsedTurn(
        content="", tool_calls=(ToolCall("call_0_0", "get_weather", {"city": "Paris"}),), raw=text
    )


def test_python_tag_inside_a_bare_call_argument_is_text() -> None:
    text = '{"name": "echo", "parameters": {"t": "<|python_tag|>"}}'
    assert llama(text).tool_calls == (ToolCall("call_0_0", "echo", {"t": "<|python_tag|>"}),)


def test_bare_calls_may_be_separated_like_tagged_ones() -> None:
    text = '{"name": "a", "parameters": {}};\n{"name": "b", "parameters": {}}<|python_tag|>{"name": "c"}'
    assert [call.name for call in llama(text).tool_calls] == ["a", "b", "c"]


def test_json_answer_before_a_python_tag_is_content() -> None:
    parsed = llama('{"answer": 1}\n<|python_tag|>{"name": "a", "parameters": {}}')
    assert parsed.content == '{"answer": 1}' and parsed.tool_calls == (ToolCall("call_0_0", "a", {}),)


def test_bare_json_that_is_not_a_call_is_an_answer() -> None:
    for text in ('{"answer": 42}', '{"name": "Alice", "age": 31}', "[1, 2]", "{not json at all"):
        assert llama(text) == ParsedTurn(content=text, raw=text)


def test_llama_plain_answer_and_empty_output() -> None:
    assert llama("It is sunny.<|eot_id|>") == ParsedTurn("It is sunny.", raw="It is sunny.<|eot_id|>")
    assert llama("<|eot_id|>") == ParsedTurn("", raw="<|eot_id|>")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<|python_tag|>", "no tool call after <|python_tag|>"),
        ("<|python_tag|> ; \n", "no tool call after <|python_tag|>"),
        ('<|python_tag|>brave_search.call(query="x")', "tool call 1: broken JSON (Expecting value)"),
        (
            '<|python_tag|>{"name": "a", "parameters": {"x": 1}',
            "tool call 1: broken JSON (Expecting ',' delimiter)",
        ),
        (
            '<|python_tag|>{"name": "a", "parameters": {}}; {"name": ',
            "tool call 2: broken JSON (Expecting value)",
        ),
        ('<|python_tag|>{"name": "a", "parameters": 3}', 'tool call 1: "parameters" is not a JSON object'),
        ('<|python_tag|>{"parameters": {}}', 'tool call 1: "name" is missing or not a non-empty string'),
        ('{"name": "get_weather", "parameters": {"city": ', "tool call 1: broken JSON (Expecting value)"),
        ('{"name": "a", "parameters": {}} and then some text', "tool call 2: broken JSON (Expecting value)"),
        ('{"name": "a", "parameters": []}', 'tool call 1: "parameters" is not a JSON object'),
    ],
)
def test_llama_malformed_calls(text: str, reason: str) -> None:
    assert llama(text) == malformed(text, reason)


# --- registry -------------------------------------------------------------------------------------


def test_parsers_by_name() -> None:
    assert PARSERS == {
        "hermes": HermesParser,
        "qwen2.5": HermesParser,
        "qwen3": Qwen3Parser,
        "llama3.1": Llama31Parser,
    }
    for name, cls in PARSERS.items():
        parser = get_parser(name)
        assert type(parser) is cls and isinstance(parser, ToolCallParser)
        assert parser.end_tokens and all(isinstance(token, str) for token in parser.end_tokens)
    assert (HermesParser.name, Qwen3Parser.name, Llama31Parser.name) == ("hermes", "qwen3", "llama3.1")


def test_unknown_parser_lists_the_known_names() -> None:
    message = (
        "Unknown tool-call parser 'qwen25'; known parsers: hermes, llama3.1, qwen2.5, qwen3. "
        "Did you mean 'qwen2.5'?"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        get_parser("qwen25")
    with pytest.raises(
        ValueError, match=re.escape("Unknown tool-call parser 'mistral'; known parsers: hermes")
    ):
        parse_turn("hi", parser="mistral")


def test_parse_turn_defaults_to_qwen2_5() -> None:
    assert parse_turn(f"Ok.{TIME}<|im_end|>", turn=9) == hermes(f"Ok.{TIME}<|im_end|>", turn=9)
    assert parse_turn(f"<think>x</think>{TIME}", parser="qwen3").reasoning == "x"


def test_non_text_input_is_a_type_error() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape("HermesParser.parse() needs the generated text as str, got <class 'bytes'>"),
    ):
        hermes(b"<tool_call>")  # type: ignore[arg-type]
