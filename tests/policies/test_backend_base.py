"""The backend interface: validated settings, per-conversation seeds, the factory and its errors."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.backends import (
    BACKENDS,
    BackendError,
    Conversation,
    Generation,
    GenerationBackend,
    SamplingParams,
    load_backend,
)
from policies.backends.base import failed, row_seeds
from policies.types import ParsedTurn


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": -0.1}, "SamplingParams.temperature must be >= 0, got -0.1"),
        ({"temperature": "hot"}, "SamplingParams.temperature must be a number >= 0, got 'hot'"),
        ({"top_p": 0.0}, "SamplingParams.top_p must be in (0, 1], got 0.0"),
        ({"top_p": 1.5}, "SamplingParams.top_p must be in (0, 1], got 1.5"),
        ({"max_new_tokens": 0}, "SamplingParams.max_new_tokens must be >= 1, got 0"),
        ({"max_new_tokens": 2.5}, "SamplingParams.max_new_tokens must be an integer >= 1, got 2.5"),
        ({"seed": -1}, "SamplingParams.seed must be a non-negative integer or None, got -1"),
        ({"seed": True}, "SamplingParams.seed must be a non-negative integer or None, got True"),
        ({"enable_thinking": "yes"}, "SamplingParams.enable_thinking must be true, false or null, got 'yes'"),
    ],
)
def test_bad_sampling_settings_are_refused_by_name(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SamplingParams(**settings)


def test_the_defaults_are_the_papers_sampling() -> None:
    assert SamplingParams() == SamplingParams(
        temperature=1.0, top_p=1.0, max_new_tokens=1024, seed=0, enable_thinking=None
    )
    with pytest.raises(
        ValueError, match=r"^Conversation.seed must be a non-negative integer or None, got -3$"
    ):
        Conversation([], seed=-3)


def test_row_seeds_derive_from_the_batch_seed_unless_a_conversation_has_its_own() -> None:
    plain = Conversation([{"role": "user", "content": "hi"}])
    own = Conversation(plain.messages, seed=5)
    # sha256 of the JSON text "[seed, index]", first 4 bytes big-endian, top bit cleared
    assert row_seeds([plain, plain, plain], SamplingParams()) == [725179572, 305562302, 1674293078]
    assert row_seeds([plain, own], SamplingParams(seed=7)) == [497646839, 5]
    assert row_seeds([plain, own], SamplingParams(seed=None)) == [None, 5]


@given(seed=st.integers(0, 2**63), size=st.integers(1, 40))
def test_derived_seeds_are_31_bit_repeatable_and_distinct_within_a_batch(seed: int, size: int) -> None:
    batch = [Conversation([])] * size
    seeds = row_seeds(batch, SamplingParams(seed=seed))
    assert seeds == row_seeds(batch, SamplingParams(seed=seed))
    assert all(isinstance(s, int) and 0 <= s < 2**31 for s in seeds)
    assert len(set(seeds)) == size


def test_a_failed_generation_is_an_empty_turn_with_its_reason() -> None:
    assert failed("HTTP 400", prompt_tokens=3) == Generation(
        turn=ParsedTurn(content=""),
        prompt_tokens=3,
        completion_tokens=0,
        finish_reason="error",
        error="HTTP 400",
    )


def test_a_backend_closes_when_its_block_ends() -> None:
    class Counting(GenerationBackend):
        name = "counting"
        closed = 0

        def generate(self, conversations, params):  # type: ignore[no-untyped-def]
            return [failed("unused") for _ in conversations]

        def close(self) -> None:
            self.closed += 1

    with Counting() as backend:
        assert backend.generate([Conversation([])], SamplingParams()) == [failed("unused")]
    assert backend.closed == 1
    with pytest.raises(TypeError):
        GenerationBackend()  # type: ignore[abstract]


def test_an_unknown_backend_name_lists_the_known_ones() -> None:
    assert list(BACKENDS) == ["transformers", "vllm", "openai"]
    with pytest.raises(BackendError) as raised:
        load_backend("vlm", "model")  # type: ignore[arg-type]
    assert (
        str(raised.value)
        == "Unknown backend 'vlm'; known backends: transformers, vllm, openai. Did you mean 'vllm'?"
    )


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_the_vllm_backend_without_vllm_says_how_to_get_it(tiny_model_dir: Path) -> None:
    with pytest.raises(
        BackendError, match=r"^the vllm backend needs vLLM, which is not importable .*\[gpu\]"
    ):
        load_backend("vllm", str(tiny_model_dir))
