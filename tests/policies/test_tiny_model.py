"""The tiny local model loads like a hub Qwen2.5 model, renders tools exactly, and builds reproducibly."""

import hashlib
import json
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment
from transformers import AutoModelForCausalLM, AutoTokenizer

from policies import tiny_model
from policies.tiny_model import MARKER_FILE, TinyModelSpec, build_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = REPO_ROOT / "policies" / "templates"
ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>", "<tool_response>",
         "</tool_response>"]  # fmt: skip

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
COUNT_TOOL = {
    "type": "function",
    "function": {
        "name": "count_items",
        "description": "Count items.",
        "parameters": {
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"type": "string"}}},
        },
    },
}
WEATHER_CALL = {
    "type": "function",
    "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}},
}
CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL]},
    {"role": "tool", "content": '{"temp": 21}'},
    {"role": "assistant", "content": "It is 21 C in Paris."},
]
CONVERSATION_TAIL = """<|im_start|>user
Weather in Paris?<|im_end|>
<|im_start|>assistant
<tool_call>
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}
</tool_call><|im_end|>
<|im_start|>user
<tool_response>
{"temp": 21}
</tool_response><|im_end|>
<|im_start|>assistant
It is 21 C in Paris.<|im_end|>
"""


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)


@pytest.fixture(scope="module")
def compact_tokenizer(tiny_compact_model_dir):
    return AutoTokenizer.from_pretrained(tiny_compact_model_dir, local_files_only=True)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def render_like_transformers(template_text: str, **context) -> str:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys
    )
    return env.from_string(template_text).render(**context)


# --- loading -------------------------------------------------------------------------------------


def test_folder_loads_as_a_qwen2_model(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    assert model.config.model_type == "qwen2"
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    assert (tiny_model_dir / "model.safetensors").is_file()
    # embeddings 2048*128 (tied with the head) + 4 layers * 246,272 + final norm 128
    assert sum(p.numel() for p in model.parameters()) == 1_247_360
    assert len(tokenizer) == model.config.vocab_size == 2048


def test_added_tokens_sit_at_the_end_in_qwen_order(tokenizer):
    assert tokenizer.convert_tokens_to_ids(ADDED) == list(range(2041, 2048))
    specials = {t.content: t.special for t in tokenizer.added_tokens_decoder.values()}
    assert specials == {token: token.startswith("<|") for token in ADDED}


def test_eos_pad_and_generation_config(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == (
        "<|im_end|>",
        "<|endoftext|>",
        None,
    )
    assert model.config.eos_token_id == tokenizer.eos_token_id == 2043
    assert model.generation_config.eos_token_id == [2043, 2041]
    assert model.generation_config.pad_token_id == model.config.pad_token_id == 2041


def test_tokenizer_json_has_qwen2_pipeline(tiny_model_dir):
    spec = json.loads((tiny_model_dir / "tokenizer.json").read_text())
    assert spec["normalizer"] == {"type": "NFC"}
    assert spec["decoder"]["type"] == "ByteLevel"
    split, byte_level = spec["pre_tokenizer"]["pretokenizers"]
    assert split["pattern"] == {
        "Regex": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
        r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    }
    assert (split["behavior"], split["invert"]) == ("Isolated", False)
    assert (byte_level["type"], byte_level["add_prefix_space"], byte_level["use_regex"]) == (
        "ByteLevel",
        False,
        False,
    )


def test_digits_split_one_by_one_like_qwen2(tokenizer):
    assert tokenizer.tokenize("2024") == ["2", "0", "2", "4"]


# --- tool tags -----------------------------------------------------------------------------------


def test_tool_tags_are_single_ids_that_survive_skipping_special_tokens(tokenizer):
    for tag in ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]:
        assert len(tokenizer.encode(tag)) == 1
    completion = (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
    )
    ids = tokenizer.encode(completion)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<tool_call>")
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == completion.removesuffix("<|im_end|>")
    assert tokenizer.decode(ids) == completion


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.text(), st.sampled_from(ADDED))).map("".join))
def test_encode_decode_round_trips_nfc_text(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == unicodedata.normalize("NFC", text)


# --- chat templates ------------------------------------------------------------------------------


def test_qwen25_template_is_copied_verbatim(tiny_model_dir):
    assert (tiny_model_dir / "chat_template.jinja").read_bytes() == (TEMPLATES / "qwen2_5.jinja").read_bytes()


def test_qwen25_renders_tools_exactly_like_qwen25(tokenizer):
    tool_json = (
        '{"type": "function", "function": {"name": "get_weather", '
        '"description": "Current weather in a city.", "parameters": {"type": "object", '
        '"properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}}, '
        '"required": ["city"]}}}'
    )
    expected = (
        "<|im_start|>system\nYou answer briefly.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{tool_json}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        + CONVERSATION_TAIL
    )
    assert tokenizer.apply_chat_template(CONVERSATION, tools=[WEATHER_TOOL], tokenize=False) == expected


@pytest.mark.parametrize(
    ("messages", "tools", "add_generation_prompt"),
    [
        ([{"role": "user", "content": "Hi"}], None, True),
        ([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}], None, False),
        (CONVERSATION[1:], [WEATHER_TOOL, COUNT_TOOL], True),
        (
            [
                {"role": "user", "content": "Two cities?"},
                {"role": "assistant", "content": "Checking.", "tool_calls": [WEATHER_CALL, WEATHER_CALL]},
                {"role": "tool", "content": "sunny"},
                {"role": "tool", "content": "rain"},
            ],
            [WEATHER_TOOL],
            True,
        ),
    ],
)
def test_qwen25_matches_rendering_the_template_file(tokenizer, messages, tools, add_generation_prompt):
    expected = render_like_transformers(
        (TEMPLATES / "qwen2_5.jinja").read_text(),
        messages=messages,
        tools=tools,
        add_generation_prompt=add_generation_prompt,
    )
    rendered = tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    assert rendered == expected


def test_compact_lists_tools_tersely_and_keeps_qwen_tool_calls(compact_tokenizer):
    expected = (
        "<|im_start|>system\nYou answer briefly.\nTools:\nget_weather(city:string, unit?:c|f)\n"
        "count_items(items?:string[])<|im_end|>\n" + CONVERSATION_TAIL
    )
    rendered = compact_tokenizer.apply_chat_template(
        CONVERSATION, tools=[WEATHER_TOOL, COUNT_TOOL], tokenize=False
    )
    assert rendered == expected


def test_compact_without_system_or_tools_adds_no_system_turn(compact_tokenizer):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    with_tools = compact_tokenizer.apply_chat_template(
        messages, tools=[WEATHER_TOOL], tokenize=False, add_generation_prompt=True
    )
    plain = compact_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    turns = "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n"
    assert with_tools == "<|im_start|>system\nTools:\nget_weather(city:string, unit?:c|f)<|im_end|>\n" + turns
    assert plain == turns
    assert (
        len(compact_tokenizer.apply_chat_template(messages, tools=[WEATHER_TOOL], add_generation_prompt=True))
        < 60
    )


def test_compact_renders_bare_functions_and_type_lists(compact_tokenizer):
    bare = {
        "name": "find",
        "parameters": {"properties": {"q": {"type": ["string", "null"]}, "n": {}, "k": {"enum": [1, 2]}}},
    }
    rendered = compact_tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}], tools=[bare], tokenize=False
    )
    assert rendered.startswith("<|im_start|>system\nTools:\nfind(q?:string|null, n?:any, k?:1|2)<|im_end|>\n")


# --- generation ----------------------------------------------------------------------------------


def test_generate_runs_greedy_and_repeatably(tiny_model_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    inputs = tokenizer.apply_chat_template(
        CONVERSATION[:2],
        tools=[WEATHER_TOOL],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    prompt_len = inputs["input_ids"].shape[1]
    first = model.generate(**inputs, do_sample=False, min_new_tokens=4, max_new_tokens=4)
    second = model.generate(**inputs, do_sample=False, min_new_tokens=4, max_new_tokens=4)
    assert first.shape == (1, prompt_len + 4)
    assert first.tolist() == second.tolist()
    assert all(0 <= i < 2048 for i in first[0, prompt_len:].tolist())


# --- reproducibility -----------------------------------------------------------------------------


def test_rebuild_in_a_fresh_process_is_byte_identical(tiny_model_dir, tmp_path):
    again = tmp_path / "again"
    code = "import sys; from policies.tiny_model import build_tiny_model; build_tiny_model(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(again)], check=True, cwd=REPO_ROOT, capture_output=True)
    assert digests(again) == digests(tiny_model_dir)
    assert set(digests(again)) == {
        "chat_template.jinja",
        "config.json",
        "generation_config.json",
        MARKER_FILE,
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }


def test_templates_and_seeds_share_the_tokenizer(tiny_model_dir, tiny_compact_model_dir, tmp_path):
    qwen, compact = digests(tiny_model_dir), digests(tiny_compact_model_dir)
    reseeded = digests(build_tiny_model(tmp_path / "seed1", TinyModelSpec(seed=1)))
    assert compact["tokenizer.json"] == qwen["tokenizer.json"] == reseeded["tokenizer.json"]
    assert compact["model.safetensors"] == qwen["model.safetensors"] != reseeded["model.safetensors"]
    assert compact["chat_template.jinja"] != qwen["chat_template.jinja"]


def test_marker_records_the_spec(tiny_compact_model_dir):
    marker = json.loads((tiny_compact_model_dir / MARKER_FILE).read_text())
    assert marker["builder"] == tiny_model.BUILDER
    assert TinyModelSpec(**marker["spec"]) == TinyModelSpec(template="compact")


def test_small_vocab_keeps_added_tokens_at_the_end(tmp_path):
    folder = build_tiny_model(tmp_path / "small", TinyModelSpec(vocab_size=300))
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert len(tokenizer) == 300
    assert tokenizer.convert_tokens_to_ids(ADDED) == list(range(293, 300))


# --- where the folder goes -----------------------------------------------------------------------


def test_refuses_to_overwrite_a_folder_that_is_not_a_tiny_build(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    message = (
        f"{target} is not empty and is not a tiny model build (it has no {MARKER_FILE}); "
        "refusing to overwrite it: choose a new or empty output folder"
    )
    with pytest.raises(FileExistsError, match=re.escape(message)):
        build_tiny_model(target)
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]
    assert [p.name for p in target.iterdir()] == ["notes.txt"]


def test_refuses_a_file_in_the_way(tmp_path):
    target = tmp_path / "model"
    target.write_text("x")
    with pytest.raises(FileExistsError, match=re.escape(f"{target} exists and is not a directory")):
        build_tiny_model(target)


def test_builds_into_an_empty_folder_and_creates_parents(tmp_path):
    (tmp_path / "empty").mkdir()
    assert (build_tiny_model(tmp_path / "empty") / MARKER_FILE).is_file()
    assert (build_tiny_model(tmp_path / "a" / "b") / MARKER_FILE).is_file()


def test_rebuild_replaces_a_previous_tiny_build(tmp_path, tiny_model_dir):
    target = build_tiny_model(tmp_path / "model", TinyModelSpec(template="compact"))
    (target / "stale.txt").write_text("from an old build")
    assert build_tiny_model(target) == target
    assert digests(target) == digests(tiny_model_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_interrupted_build_leaves_nothing_and_keeps_the_old_build(tmp_path, monkeypatch):
    target = build_tiny_model(tmp_path / "model")
    before = digests(target)

    def killed(model, folder):
        (folder / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny_model, "_save_quietly", killed)
    with pytest.raises(KeyboardInterrupt):
        build_tiny_model(target, TinyModelSpec(seed=7))
    with pytest.raises(KeyboardInterrupt):
        build_tiny_model(tmp_path / "fresh")
    assert digests(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


# --- spec validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hidden_size": 0}, "TinyModelSpec.hidden_size must be a positive integer, got 0"),
        ({"hidden_size": 130}, "TinyModelSpec.hidden_size (130) must be divisible by num_heads (4)"),
        ({"num_kv_heads": 3}, "TinyModelSpec.num_heads (4) must be divisible by num_kv_heads (3)"),
        (
            {"vocab_size": 262},
            "TinyModelSpec.vocab_size must be an integer >= 263 "
            "(256 byte tokens and 7 added tokens), got 262",
        ),
        ({"template": "llama"}, "TinyModelSpec.template must be one of ['compact', 'qwen2.5'], got 'llama'"),
    ],
)
def test_spec_rejects_bad_shapes(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TinyModelSpec(**kwargs)
