"""Copy pre-training: what a row asks the model to predict, how copying is measured, and that a
pre-trained tiny build is as reproducible as a random one."""

import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from policies.tiny_model import MARKER_FILE, TinyModelSpec, build_tiny_model, built_spec
from policies.tiny_pretrain import IGNORE, _row, copy_accuracy, pretrain_copying

TEXT = list(range(10_000, 10_300))  # text and span tokens never overlap, so a row can be read back
SPANS = range(256, 2040)


def runs_of_span_tokens(ids: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i, token in enumerate(ids):
        if token in SPANS:
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
    return runs


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=3))
def test_row_plants_one_span_repeatedly_and_asks_only_for_its_repeats(seed: int, repeats: int) -> None:
    ids, labels = _row(random.Random(seed), TEXT, SPANS, repeats=repeats)
    runs = runs_of_span_tokens(ids)
    assert len(runs) == 1 + repeats  # at least one text token between the copies keeps them apart
    span = ids[slice(*runs[0])]
    assert 4 <= len(span) <= 16 and all(ids[slice(*run)] == span for run in runs)
    expected = list(ids)
    expected[slice(*runs[0])] = [IGNORE] * len(span)  # nothing predicts the first copy
    for start, _ in runs[1:]:
        expected[start] = IGNORE  # nor which span follows the text
    assert labels == expected


def test_rows_without_text_are_the_bare_copy_task() -> None:
    ids, labels = _row(random.Random(3), (), SPANS, repeats=1)
    span_length = len(ids) // 2
    assert ids[:span_length] == ids[span_length:]
    assert labels == [IGNORE] * (span_length + 1) + ids[span_length + 1 :]


class InductionCopier(torch.nn.Module):
    """Predicts, at each position, the token that followed the last earlier occurrence of the current
    token: the rule an induction head implements, written out."""

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        ids = input_ids[0].tolist()
        logits = torch.zeros(1, len(ids), max(SPANS) + 1)
        for i, token in enumerate(ids):
            earlier = [j for j in range(i) if ids[j] == token]
            if earlier:
                logits[0, i, ids[earlier[-1] + 1]] = 1.0
        return SimpleNamespace(logits=logits)


def test_copy_accuracy_tells_a_copier_from_a_model_with_random_weights(tiny_model_dir: Path) -> None:
    # A span drawn with replacement rarely holds a token twice; only then does the rule misfire.
    assert copy_accuracy(InductionCopier(), SPANS) > 0.9
    random_weights = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert copy_accuracy(random_weights, SPANS) == 0.0


def test_pretraining_lowers_the_loss(tiny_model_dir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    losses: list[float] = []
    pretrain_copying(
        model,
        list(range(100, 150)) * 20,
        SPANS,
        steps=40,
        seed=0,
        log=lambda _, loss: losses.append(loss),
        log_every=1,
    )
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


def test_pretrained_build_is_reproducible_and_records_its_copy_accuracy(tmp_path: Path) -> None:
    spec = TinyModelSpec(template="compact", pretrain_steps=3)
    lines: list[str] = []
    first = build_tiny_model(tmp_path / "a", spec, log=lines.append)
    second = build_tiny_model(tmp_path / "b", spec)
    random_weights = build_tiny_model(tmp_path / "c", TinyModelSpec(template="compact"))
    weights = (first / "model.safetensors").read_bytes()
    assert weights == (second / "model.safetensors").read_bytes()
    assert weights != (random_weights / "model.safetensors").read_bytes()
    assert built_spec(first) == spec
    assert '"copy_accuracy": 0.0' in (first / MARKER_FILE).read_text(
        encoding="utf-8"
    )  # 3 steps teach nothing
    assert lines[0] == "tiny model pre-training: step 3/3, loss " + lines[0].rsplit(" ", 1)[1]
    assert lines[-1] == "tiny model pre-training: repeats 0% of unseen random spans exactly"


@pytest.mark.parametrize("steps", [-1, 1.5])
def test_spec_rejects_bad_pretrain_steps(steps: object) -> None:
    with pytest.raises(ValueError, match="pretrain_steps must be a non-negative integer"):
        TinyModelSpec(pretrain_steps=steps)  # type: ignore[arg-type]
