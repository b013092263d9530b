"""The vLLM backend on the tiny model, wherever vLLM and a CUDA device are present (GPU workers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is installed only with the gpu extra on GPU workers")
torch = pytest.importorskip("torch")

from policies.backends import Conversation, SamplingParams  # noqa: E402
from policies.backends.vllm_backend import VLLMBackend  # noqa: E402
from policies.rendering import render_prompt_ids  # noqa: E402
from support.tools import WEATHER_TOOL  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM's engine needs a CUDA device"),
]

BATCH = [
    Conversation([{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL], turn=1),
    Conversation([{"role": "user", "content": "Say hello."}]),
    Conversation(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Book a flight."}], seed=9
    ),
]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[VLLMBackend]:
    backend = VLLMBackend(
        tiny_model_dir, dtype="bfloat16", gpu_memory_utilization=0.3, max_model_len=1024, enforce_eager=True
    )
    with backend:
        yield backend


def test_prompts_are_our_rendering_and_counts_are_exact(engine: VLLMBackend) -> None:
    results = engine.generate(BATCH, SamplingParams(temperature=0.0, max_new_tokens=6))
    for conversation, generation in zip(BATCH, results, strict=True):
        assert generation.error is None
        assert generation.prompt_tokens == len(
            render_prompt_ids(engine.tokenizer, conversation.messages, conversation.tools)
        )
        assert 1 <= generation.completion_tokens <= 6
        assert generation.finish_reason == ("length" if generation.completion_tokens == 6 else "stop")


def test_the_same_seed_samples_the_same_turns(engine: VLLMBackend) -> None:
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=3)
    assert engine.generate(BATCH, params) == engine.generate(BATCH, params)


def test_greedy_decoding_repeats_itself(engine: VLLMBackend) -> None:
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    assert engine.generate(BATCH, params) == engine.generate(BATCH, params)


def test_a_conversation_that_cannot_render_fails_alone(engine: VLLMBackend) -> None:
    ok, bad = engine.generate([BATCH[1], Conversation([{"role": None}])], SamplingParams(max_new_tokens=4))
    assert ok.error is None
    assert (bad.finish_reason, bad.error) == (
        "error",
        "cannot render the prompt: messages[0]: 'role' must be a string, got None",
    )
