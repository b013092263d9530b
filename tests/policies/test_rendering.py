"""Rendering through the model's own chat template, pinned against hand-written Qwen2.5 output."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from policies.parsing import HermesParser, Llama31Parser, Qwen3Parser
from policies.rendering import (
    TEMPLATES_DIR,
    available_templates,
    load_template,
    normalize_messages,
    render_prompt,
    render_prompt_ids,
)
from policies.types import ParsedTurn, ToolCall

# Digests of the verbatim copies of TRL 1.16.0's trl/chat_templates files. A change here must be a
# deliberate re-copy: the prompt format is what the model was trained on.
TEMPLATE_SHA256 = {
    "llama3_1": "e10ca381b1ccc5cf9db52e371f3b6651576caee0a630b452e2816b2d404d4b65",
    "qwen2_5": "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
    "qwen3": "a55ee1b1660128b7098723e0abcd92caa0788061051c62d51cbe87d9cf1974d8",
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "kelvin"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time.",
        "parameters": {"type": "object", "properties": {}},
    },
}

CONVERSATION = [
    {"role": "system", "content": "You are a travel agent."},
    {"role": "user", "content": "Weather in Paris and Zürich?"},
    {
        "role": "assistant",
        "content": "Let me check both.",
        "tool_calls": [
            # OpenAI's form: arguments as JSON text; must not be encoded a second time.
            {
                "id": "call_0_0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_0_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_0_0", "content": "Sunny, 21 C"},
    {"role": "tool", "tool_call_id": "call_0_1", "content": {"sky": "cloudy", "temp": 14}},
]

# Qwen2.5's format, written out by hand.
EXPECTED_QWEN2_5 = (
    "<|im_start|>system\n"
    "You are a travel agent.\n"
    "\n"
    "# Tools\n"
    "\n"
    "You may call one or more functions to assist with the user query.\n"
    "\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string", '
    '"enum": ["celsius", "kelvin"]}}, "required": ["city"]}}}\n'
    '{"type": "function", "function": {"name": "get_time", "description": "Local time.", '
    '"parameters": {"type": "object", "properties": {}}}}\n'
    "</tools>\n"
    "\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n"
    "Weather in Paris and Zürich?<|im_end|>\n"
    "<|im_start|>assistant\n"
    "Let me check both.\n"
    "<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    "</tool_call>\n"
    "<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n"
    "<tool_response>\n"
    "Sunny, 21 C\n"
    "</tool_response>\n"
    "<tool_response>\n"
    '{"sky": "cloudy", "temp": 14}\n'
    "</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """A small Qwen2.5-style tokenizer built offline: byte-level BPE trained on a few rendered
    strings, Qwen2.5's special tokens, the tool tags as normal added tokens, Qwen2.5's template."""
    corpus = [
        EXPECTED_QWEN2_5,
        "Hello, how can I help you today?",
        '{"city": "Paris", "unit": "celsius"}',
    ] * 3
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator(corpus, trainer)
    bpe.add_tokens(TOOL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=["<|im_start|>"],
        chat_template=load_template("qwen2_5"),
    )


def _assistant_segments(text: str, header: str, end: str) -> list[str]:
    return re.findall(re.escape(header) + r"(.*?)" + re.escape(end), text, flags=re.DOTALL)


# --- templates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(TEMPLATE_SHA256))
def test_template_files_are_pinned(name: str) -> None:
    digest = hashlib.sha256((TEMPLATES_DIR / f"{name}.jinja").read_bytes()).hexdigest()
    assert digest == TEMPLATE_SHA256[name]


@pytest.mark.parametrize("name", sorted(TEMPLATE_SHA256))
def test_templates_are_verbatim_copies_of_trl(name: str) -> None:
    spec = importlib.util.find_spec("trl")  # locate the package without importing it (slow)
    assert spec is not None and spec.submodule_search_locations
    trl_file = Path(next(iter(spec.submodule_search_locations))) / "chat_templates" / f"{name}.jinja"
    assert load_template(name) == trl_file.read_text(encoding="utf-8")


def test_available_templates_lists_the_bundled_files_sorted() -> None:
    names = available_templates()
    assert names == sorted(names)
    assert set(TEMPLATE_SHA256) <= set(names)
    assert names == sorted(path.name.removesuffix(".jinja") for path in TEMPLATES_DIR.glob("*.jinja"))


def test_unknown_template_names_the_available_ones() -> None:
    message = f"Unknown chat template 'qwen9'; available templates: {', '.join(available_templates())}"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_template("qwen9")


def test_template_names_cannot_escape_the_folder() -> None:
    with pytest.raises(ValueError, match="Unknown chat template '../templates/qwen2_5'"):
        load_template("../templates/qwen2_5")


# --- the exact Qwen2.5 format ------------------------------------------------------------------------


def test_renders_the_exact_qwen2_5_format(tokenizer: PreTrainedTokenizerFast) -> None:
    assert render_prompt(tokenizer, CONVERSATION, [WEATHER_TOOL, TIME_TOOL]) == EXPECTED_QWEN2_5


def test_without_tools_qwen2_5_adds_its_default_system_prompt(tokenizer: PreTrainedTokenizerFast) -> None:
    text = render_prompt(tokenizer, [{"role": "user", "content": "Hi"}])
    assert text == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_generation_prompt_can_be_left_out(tokenizer: PreTrainedTokenizerFast) -> None:
    text = render_prompt(tokenizer, CONVERSATION, [WEATHER_TOOL, TIME_TOOL], add_generation_prompt=False)
    assert text == EXPECTED_QWEN2_5.removesuffix("<|im_start|>assistant\n")


def test_calls_only_turn_with_none_content(tokenizer: PreTrainedTokenizerFast) -> None:
    messages = [
        {"role": "user", "content": "Time?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": "get_time", "arguments": "{}"}}],
        },
    ]
    text = render_prompt(tokenizer, messages, add_generation_prompt=False)
    assert text.endswith(
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call><|im_end|>\n'
    )


def test_prompt_ids_are_the_tokens_of_the_prompt_text(tokenizer: PreTrainedTokenizerFast) -> None:
    text = render_prompt(tokenizer, CONVERSATION, [WEATHER_TOOL, TIME_TOOL])
    ids = render_prompt_ids(tokenizer, CONVERSATION, [WEATHER_TOOL, TIME_TOOL])
    assert ids == tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    # The same ids transformers' own tokenizing path gives.
    native = tokenizer.apply_chat_template(
        normalize_messages(CONVERSATION),
        tools=[WEATHER_TOOL, TIME_TOOL],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    assert ids == list(native)
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(im_start) == text.count("<|im_start|>") == 5


# --- other templates through chat_template= -----------------------------------------------------------


def test_chat_template_by_name_overrides_the_tokenizers_own(tokenizer: PreTrainedTokenizerFast) -> None:
    text = render_prompt(tokenizer, [{"role": "user", "content": "Hi"}], chat_template="qwen3")
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_chat_template_as_jinja_source(tokenizer: PreTrainedTokenizerFast) -> None:
    source = "{% for m in messages %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
    assert render_prompt(tokenizer, [{"role": "user", "content": "Hi"}], chat_template=source) == "[user:Hi]"


def test_unknown_chat_template_name(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="Unknown chat template 'qwen9'"):
        render_prompt(tokenizer, [{"role": "user", "content": "Hi"}], chat_template="qwen9")


# --- round trips: what the template writes, the parser reads --------------------------------------------


def test_round_trip_qwen2_5_assistant_turn(tokenizer: PreTrainedTokenizerFast) -> None:
    text = render_prompt(tokenizer, CONVERSATION, [WEATHER_TOOL], add_generation_prompt=False)
    (segment,) = _assistant_segments(text, "<|im_start|>assistant\n", "<|im_end|>")
    parsed = HermesParser().parse(segment + "<|im_end|>", turn=0)
    assert parsed == ParsedTurn(
        content="Let me check both.",
        tool_calls=(
            ToolCall("call_0_0", "get_weather", {"city": "Paris"}),
            ToolCall("call_0_1", "get_weather", {"city": "Zürich", "unit": "celsius"}),
        ),
        raw=segment + "<|im_end|>",
    )
    # And back: the parsed turn as a message renders to the same text (a fixed point).
    messages = [*CONVERSATION[:2], parsed.to_message(), *CONVERSATION[3:]]
    assert render_prompt(tokenizer, messages, [WEATHER_TOOL], add_generation_prompt=False) == text


def test_round_trip_qwen3_thinking_turn(tokenizer: PreTrainedTokenizerFast) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "The user wants the weather; call get_weather.",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
    ]
    text = render_prompt(
        tokenizer, messages, [WEATHER_TOOL], add_generation_prompt=False, chat_template="qwen3"
    )
    (segment,) = _assistant_segments(text, "<|im_start|>assistant\n", "<|im_end|>")
    assert segment.startswith(
        "<think>\nThe user wants the weather; call get_weather.\n</think>\n\nChecking.\n"
    )
    parsed = Qwen3Parser().parse(segment, turn=4)
    assert parsed.reasoning == "The user wants the weather; call get_weather."
    assert parsed.content == "Checking."
    assert parsed.tool_calls == (ToolCall("call_4_0", "get_weather", {"city": "Paris"}),)


def test_round_trip_llama3_1_custom_tool_call(tokenizer: PreTrainedTokenizerFast) -> None:
    messages = [
        {"role": "user", "content": "Weather in Zürich?"},
        {
            "role": "assistant",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}}],
        },
    ]
    text = render_prompt(
        tokenizer, messages, [WEATHER_TOOL], add_generation_prompt=False, chat_template="llama3_1"
    )
    (segment,) = _assistant_segments(text, "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>")
    assert segment == '{"name": "get_weather", "parameters": {"city": "Zürich"}}'
    parsed = Llama31Parser().parse(segment + "<|eot_id|>", turn=1)
    assert parsed.tool_calls == (ToolCall("call_1_0", "get_weather", {"city": "Zürich"}),)
    assert parsed.content == "" and parsed.parse_error is None


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**18), 10**18)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
_calls = st.lists(
    st.tuples(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,15}", fullmatch=True),
        st.dictionaries(st.text(max_size=6), _json_values, max_size=4),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(calls=_calls, content=st.text(alphabet=st.characters(exclude_characters="<"), max_size=30))
def test_round_trip_any_calls_through_qwen2_5(
    tokenizer: PreTrainedTokenizerFast, calls: list[tuple[str, dict]], content: str
) -> None:
    """Whatever calls the template writes (any names OpenAI allows, any JSON arguments), the Hermes
    parser reads back exactly, with the surrounding text as content."""
    message = {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {
                "id": f"x{i}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            for i, (name, arguments) in enumerate(calls)
        ],
    }
    text = render_prompt(tokenizer, [{"role": "user", "content": "go"}, message], add_generation_prompt=False)
    segment = text.split("<|im_start|>assistant\n", 1)[1].removesuffix("\n")
    parsed = HermesParser().parse(segment, turn=7)
    assert parsed.parse_error is None
    assert parsed.content == content.strip()
    assert [(call.name, call.arguments) for call in parsed.tool_calls] == calls
    assert [call.id for call in parsed.tool_calls] == [f"call_7_{i}" for i in range(len(calls))]


# --- normalize_messages ----------------------------------------------------------------------------------


def test_normalize_decodes_arguments_and_leaves_the_input_alone() -> None:
    before = copy.deepcopy(CONVERSATION)
    normalized = normalize_messages(CONVERSATION)
    assert CONVERSATION == before
    assert normalized[2]["tool_calls"] == [
        {
            "id": "call_0_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
        },
        {
            "id": "call_0_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}},
        },
    ]
    assert normalized[3] == {"role": "tool", "tool_call_id": "call_0_0", "content": "Sunny, 21 C"}
    assert normalized[4] == {
        "role": "tool",
        "tool_call_id": "call_0_1",
        "content": '{"sky": "cloudy", "temp": 14}',
    }
    assert normalized[:2] == CONVERSATION[:2]
    normalized[2]["tool_calls"][1]["function"]["arguments"]["city"] = "Bern"
    assert CONVERSATION == before


def test_normalize_accepts_flat_calls_and_fills_deterministic_ids() -> None:
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "first"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"name": "a"}, {"name": "b", "arguments": {"x": 1}}],
        },
    ]
    normalized = normalize_messages(messages)
    assert normalized[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1_0", "type": "function", "function": {"name": "a", "arguments": {}}},
            {"id": "call_1_1", "type": "function", "function": {"name": "b", "arguments": {"x": 1}}},
        ],
    }


def test_normalize_drops_empty_tool_calls(tokenizer: PreTrainedTokenizerFast) -> None:
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "tool_calls": []},
        {"role": "assistant", "content": "Anything else?", "tool_calls": None},
    ]
    assert normalize_messages(messages) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "assistant", "content": "Anything else?"},
    ]
    # Llama 3.1's template would otherwise raise "This model only supports single tool-calls at once!".
    text = render_prompt(tokenizer, messages[:2], add_generation_prompt=False, chat_template="llama3_1")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>")


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("hello", "messages must be a list of message dicts, got str"),
        ([["user", "hi"]], "messages[0]: expected a dict with 'role' and 'content', got list"),
        ([{"content": "hi"}], "messages[0]: 'role' must be a string, got None"),
        (
            [{"role": "assistant", "content": "", "tool_calls": "f()"}],
            "messages[0].tool_calls: must be a list, got str",
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}],
                }
            ],
            "messages[0].tool_calls[0]: 'arguments' is not valid JSON (Expecting property name enclosed in "
            "double quotes: line 1 column 2 (char 1))",
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}],
                }
            ],
            "messages[0].tool_calls[0]: 'arguments' must be a JSON object, got list",
        ),
        (
            [{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": {}}}]}],
            "messages[0].tool_calls[0]: 'name' must be a non-empty string, got None",
        ),
        (
            [{"role": "assistant", "content": "", "tool_calls": [{"function": "f"}]}],
            "messages[0].tool_calls[0].function: must be a dict, got str",
        ),
    ],
)
def test_normalize_rejects_malformed_messages_naming_the_field(messages: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        normalize_messages(messages)  # type: ignore[arg-type]


def test_render_rejects_tools_given_as_json_text(tokenizer: PreTrainedTokenizerFast) -> None:
    message = "tools must be a list of OpenAI function schemas (decode JSON first), got str"
    with pytest.raises(ValueError, match=re.escape(message)):
        render_prompt(tokenizer, [{"role": "user", "content": "Hi"}], json.dumps([WEATHER_TOOL]))  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=re.escape("tools[0]: must be a dict (an OpenAI function schema), got str")
    ):
        render_prompt(tokenizer, [{"role": "user", "content": "Hi"}], ["get_weather"])  # type: ignore[list-item]


def test_render_rejects_an_empty_conversation(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="messages is empty: a prompt needs at least one message"):
        render_prompt(tokenizer, [])
