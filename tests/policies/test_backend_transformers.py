"""The transformers backend on the tiny model: exact token counts, parsed tool calls, seeded sampling,
left padding that changes nothing, and one-line errors for bad model folders."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from policies.backends import BackendError, Conversation, SamplingParams, load_backend
from policies.backends.transformers_backend import TransformersBackend
from policies.rendering import load_template, normalize_messages, render_prompt_ids
from policies.types import ParsedTurn, ToolCall
from support.tools import WEATHER_TOOL

WEATHER = [{"role": "user", "content": "Weather in Paris?"}]
HELLO = [{"role": "user", "content": "Say hello."}]
LONG = [
    {"role": "system", "content": "You are a careful travel agent who checks every detail twice."},
    {"role": "user", "content": "Find me a cheap flight from Lisbon to Oslo next week, please."},
]
WEATHER_ANSWER = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'
)
HELLO_ANSWER = "Hello there.<|im_end|>"
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=40)


def _copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _save_weights(model: torch.nn.Module, folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def trained_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model after ~3 s of training to answer WEATHER with a tool call and HELLO with text,
    so that greedy decoding stops on ``<|im_end|>`` at a known token."""
    folder = _copy_model(tiny_model_dir, tmp_path_factory.mktemp("trained") / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    examples = []
    for messages, tools, answer in ((WEATHER, [WEATHER_TOOL], WEATHER_ANSWER), (HELLO, None, HELLO_ANSWER)):
        prompt = render_prompt_ids(tokenizer, messages, tools)
        target = tokenizer(answer, add_special_tokens=False)["input_ids"]
        examples.append((torch.tensor([prompt + target]), torch.tensor([[-100] * len(prompt) + target])))
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    # One thread: for matrices this small a second one gains little when the machine is idle and,
    # measured, makes the loop up to ten times slower when other processes hold the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(100):
            loss = sum(model(input_ids=ids, labels=labels).loss for ids, labels in examples)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    _save_weights(model, folder)
    return folder


@pytest.fixture(scope="module")
def noisy_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with larger random weights: at the default init its greedy output is one token
    repeated whatever the prompt, which would hide a padding bug; here it depends on the prompt."""
    folder = _copy_model(tiny_model_dir, tmp_path_factory.mktemp("noisy") / "model")
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    torch.manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, 0.1)
    _save_weights(model, folder)
    return folder


@pytest.fixture(scope="module")
def trained(trained_dir: Path) -> Iterator[TransformersBackend]:
    with TransformersBackend(trained_dir, device="cpu") as backend:
        yield backend


@pytest.fixture(scope="module")
def noisy(noisy_dir: Path) -> Iterator[TransformersBackend]:
    with TransformersBackend(noisy_dir, device="cpu") as backend:
        yield backend


def _prompt_length(backend: TransformersBackend, conversation: Conversation) -> int:
    return len(render_prompt_ids(backend.tokenizer, conversation.messages, conversation.tools))


def _token_count(backend: TransformersBackend, text: str) -> int:
    return len(backend.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_a_batch_of_three_gives_parsed_turns_and_exact_counts(trained: TransformersBackend) -> None:
    batch = [
        Conversation(WEATHER, tools=[WEATHER_TOOL], turn=3),
        Conversation(HELLO),
        Conversation(LONG, tools=[WEATHER_TOOL], turn=1),
    ]
    weather, hello, long = trained.generate(batch, SamplingParams(temperature=0.0, max_new_tokens=30))

    assert weather.turn == ParsedTurn(
        content="", tool_calls=(ToolCall("call_3_0", "get_weather", {"city": "Paris"}),), raw=WEATHER_ANSWER
    )
    assert (weather.finish_reason, weather.error) == ("stop", None)
    assert weather.completion_tokens == _token_count(trained, WEATHER_ANSWER) == 24
    assert hello.turn == ParsedTurn(content="Hello there.", raw=HELLO_ANSWER)
    assert (hello.finish_reason, hello.completion_tokens) == ("stop", 6)
    for conversation, generation in zip(batch, (weather, hello, long), strict=True):
        assert generation.prompt_tokens == _prompt_length(trained, conversation)
    assert long.prompt_tokens > weather.prompt_tokens > hello.prompt_tokens  # mixed lengths, order kept
    assert 1 <= long.completion_tokens <= 30


def test_results_follow_the_callers_order_whatever_the_batch_split(trained: TransformersBackend) -> None:
    batch = [Conversation(HELLO), Conversation(LONG), Conversation(WEATHER, tools=[WEATHER_TOOL])]
    forward = trained.generate(batch, GREEDY)
    backward = trained.generate(batch[::-1], GREEDY)
    assert backward == forward[::-1]
    trained.batch_size = 1
    try:
        assert trained.generate(batch, GREEDY) == forward
    finally:
        trained.batch_size = 64


def test_greedy_decoding_repeats_itself(noisy: TransformersBackend) -> None:
    batch = [Conversation(HELLO), Conversation(LONG)]
    params = SamplingParams(temperature=0.0, max_new_tokens=12, seed=None)
    assert noisy.generate(batch, params) == noisy.generate(batch, params)


def test_a_conversation_alone_and_in_a_left_padded_batch_decode_the_same(noisy: TransformersBackend) -> None:
    batch = [Conversation(HELLO), Conversation(LONG, tools=[WEATHER_TOOL]), Conversation(WEATHER)]
    params = SamplingParams(temperature=0.0, max_new_tokens=16)
    together = noisy.generate(batch, params)
    alone = [noisy.generate([conversation], params)[0] for conversation in batch]
    assert together == alone
    assert len({generation.turn.raw for generation in together}) == 3  # the outputs depend on the prompt


def test_the_same_seed_samples_the_same_turns_and_another_seed_does_not(noisy: TransformersBackend) -> None:
    batch = [Conversation(HELLO), Conversation(LONG)]
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=5)
    first = noisy.generate(batch, params)
    assert noisy.generate(batch, params) == first
    other = noisy.generate(batch, SamplingParams(temperature=1.0, max_new_tokens=12, seed=6))
    assert [g.turn.raw for g in other] != [g.turn.raw for g in first]


def test_copies_of_one_prompt_in_a_batch_get_different_samples(noisy: TransformersBackend) -> None:
    generations = noisy.generate([Conversation(HELLO)] * 4, SamplingParams(max_new_tokens=12, seed=0))
    assert len({generation.turn.raw for generation in generations}) == 4


def test_a_conversations_own_seed_samples_the_same_alone_and_in_a_batch(noisy: TransformersBackend) -> None:
    mine = Conversation(LONG, seed=7)
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=123)
    alone = noisy.generate([mine], params)[0]
    crowd = noisy.generate([Conversation(HELLO), Conversation(WEATHER), mine], params)[2]
    assert crowd == alone


def test_top_p_keeps_only_the_most_likely_token_when_tiny(noisy: TransformersBackend) -> None:
    batch = [Conversation(HELLO), Conversation(LONG)]
    nucleus = noisy.generate(batch, SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=10, seed=3))
    greedy = noisy.generate(batch, SamplingParams(temperature=0.0, max_new_tokens=10))
    assert nucleus == greedy


def test_hitting_max_new_tokens_finishes_with_length(noisy: TransformersBackend) -> None:
    (generation,) = noisy.generate([Conversation(LONG)], SamplingParams(temperature=0.0, max_new_tokens=5))
    assert (generation.finish_reason, generation.completion_tokens, generation.error) == ("length", 5, None)
    assert generation.turn.raw and "<|im_end|>" not in generation.turn.raw


def test_enable_thinking_reaches_a_template_that_reads_it(trained_dir: Path, tmp_path: Path) -> None:
    folder = _copy_model(trained_dir, tmp_path / "qwen3-template")
    (folder / "chat_template.jinja").write_text(load_template("qwen3"), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)

    def expected_length(**variables: bool) -> int:
        text = tokenizer.apply_chat_template(
            normalize_messages(HELLO), tokenize=False, add_generation_prompt=True, **variables
        )
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    with TransformersBackend(folder, parser="qwen3", device="cpu") as backend:
        lengths = {
            thinking: backend.generate(
                [Conversation(HELLO)], SamplingParams(max_new_tokens=1, enable_thinking=thinking)
            )[0].prompt_tokens
            for thinking in (None, True, False)
        }
    assert lengths == {None: expected_length(), True: expected_length(enable_thinking=True),
                       False: expected_length(enable_thinking=False)}  # fmt: skip
    assert lengths[False] > lengths[True]  # the empty <think></think> block the template adds


def test_a_conversation_that_cannot_render_fails_alone(trained: TransformersBackend) -> None:
    broken = Conversation([{"role": 3, "content": "hi"}])
    hello, bad = trained.generate([Conversation(HELLO), broken], GREEDY)
    assert hello.turn.content == "Hello there."
    assert bad.finish_reason == "error"
    assert bad.error == "cannot render the prompt: messages[0]: 'role' must be a string, got 3"
    assert (bad.turn, bad.prompt_tokens, bad.completion_tokens) == (ParsedTurn(content=""), 0, 0)


def test_a_failing_sub_batch_becomes_errors_not_an_exception(
    trained: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(**kwargs: object) -> None:
        raise RuntimeError("CUDA out of memory\nTried to allocate 2 GiB")

    monkeypatch.setattr(trained.model, "generate", out_of_memory)
    results = trained.generate([Conversation(HELLO), Conversation(WEATHER)], GREEDY)
    assert [r.error for r in results] == ["generation failed: RuntimeError: CUDA out of memory"] * 2
    assert [r.prompt_tokens for r in results] == [
        _prompt_length(trained, Conversation(c)) for c in (HELLO, WEATHER)
    ]


def test_load_backend_builds_it_and_close_frees_the_weights(trained_dir: Path) -> None:
    backend = load_backend("transformers", str(trained_dir), device="cpu", batch_size=2)
    assert isinstance(backend, TransformersBackend)
    assert (backend.name, backend.batch_size, backend.device.type) == ("transformers", 2, "cpu")
    assert backend.end.stop_ids == {
        backend.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")
    }
    backend.close()
    backend.close()
    assert backend.model is None


def test_a_missing_model_folder_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(BackendError, match=f"^{re.escape(str(missing))}: model folder does not exist$"):
        TransformersBackend(missing)


def test_a_file_or_a_folder_without_config_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(BackendError, match=f"^{re.escape(str(tmp_path / 'weights.bin'))}: not a folder"):
        TransformersBackend(tmp_path / "weights.bin")
    with pytest.raises(
        BackendError,
        match=f"^{re.escape(str(tmp_path / 'config.json'))}: missing, so {re.escape(str(tmp_path))} is not",
    ):
        TransformersBackend(tmp_path)


def test_a_tokenizer_without_a_chat_template_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy_model(tiny_model_dir, tmp_path / "no-template")
    (folder / "chat_template.jinja").unlink()
    with pytest.raises(BackendError) as raised:
        TransformersBackend(folder)
    assert str(raised.value) == (
        f"{folder}: the tokenizer has no chat template (neither chat_template.jinja nor a 'chat_template' "
        "entry in tokenizer_config.json)"
    )


def test_an_unknown_parser_or_dtype_is_a_setup_error(tiny_model_dir: Path) -> None:
    with pytest.raises(BackendError, match=r"Unknown tool-call parser 'qwen25'.*Did you mean 'qwen2.5'\?"):
        TransformersBackend(tiny_model_dir, parser="qwen25")
    with pytest.raises(
        BackendError, match="^dtype must be one of auto, float32, bfloat16, float16, got 'fp8'$"
    ):
        TransformersBackend(tiny_model_dir, dtype="fp8")
