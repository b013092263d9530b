"""Copy pre-training for the tiny model: the in-context copying every real base model brings along.

A tool call copies names out of the question (``{"film": "Carnival and Canyon"}``), and the held-out
test split only has names the model never saw. Copying a span of unseen tokens needs *induction
heads* (attend to the token after the earlier occurrence of the current token, and emit it), and a
model with random weights does not form them from tool-use SFT within a CPU budget: in our
measurements a 1.2M-parameter model copied 0 of 64 held-out arguments after 1,250 SFT steps, however
the data was arranged. Pre-trained hub models have these heads from pre-training, so the tiny model
gets a short pre-training of its own.

Each training row is ordinary generated text (tool-use chats in the model's own template, sentences,
JSON) with a span of random tokens planted in it three times. The loss covers the text and the
repeats of the span (after their first token, which nothing predicts), never its first copy: the
only way to lower it is to copy. The text keeps the model's notion of the format; the span teaches
copying any token at all, not only the words of the corpus. :func:`copy_accuracy` measures the
result on spans no row contained.

What made copying appear fast enough for a CPU (batch 32, LR 2e-3, one thread, seed 0): on bare
spans planted twice, the loss stays near chance for ~2,000 steps and then falls within ~200 (the
induction-head phase change); planted three times, the change comes at ~2,100 steps; planted three
times *in text*, the model already repeats 20% of unseen spans exactly at step 1,000 (and 52% after
the CPU demo's 1,800 steps on 2 threads).

Plain PyTorch rather than a trainer: this is part of *building* the model (like its random
initialisation), seeded and deterministic on a fixed thread count, with no checkpoints to resume.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

BATCH_SIZE = 32
LEARNING_RATE = 2e-3
WARMUP_STEPS = 100
SPAN_LENGTH = (4, 16)
SPAN_REPEATS = 2
TEXT_BEFORE = (0, 8)
TEXT_BETWEEN = (1, 8)
IGNORE = -100

Row = tuple[list[int], list[int]]


def pretrain_copying(
    model: Any,
    text_ids: Sequence[int],
    span_ids: Sequence[int],
    *,
    steps: int,
    seed: int,
    log: Callable[[int, float], None] | None = None,
    log_every: int = 250,
) -> None:
    """Train ``model`` in place for ``steps`` steps on planted-span rows (see the module docstring).

    ``text_ids`` is the token stream of generated text the rows are cut from; ``span_ids`` the token
    ids a planted span is drawn from (all BPE tokens, none of the added ones: the chat tags keep
    their meaning). ``log(step, loss)`` is called every ``log_every`` steps and at the last one.
    """
    import torch

    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / WARMUP_STEPS))
    model.train()
    for step in range(1, steps + 1):
        input_ids, labels, attention = _collate([_row(rng, text_ids, span_ids) for _ in range(BATCH_SIZE)])
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if log is not None and (step % log_every == 0 or step == steps):
            log(step, float(loss.detach()))
    model.eval()


def copy_accuracy(model: Any, span_ids: Sequence[int], *, rows: int = 64, seed: int = 1) -> float:
    """Share of ``rows`` random spans (no text around them) that the model repeats exactly, token by
    token under teacher forcing, after seeing them once: the skill :func:`pretrain_copying` teaches."""
    import torch

    rng = random.Random(seed)
    correct = 0
    model.eval()
    with torch.no_grad():
        for _ in range(rows):
            ids, labels = _row(rng, (), span_ids, repeats=1)
            predicted = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).tolist()
            correct += all(predicted[i - 1] == t for i, t in enumerate(labels) if t != IGNORE)
    return correct / rows


def _row(
    rng: random.Random, text_ids: Sequence[int], span_ids: Sequence[int], repeats: int = SPAN_REPEATS
) -> Row:
    """Text, a random span, then ``repeats`` times more text and the span again; loss on all but the
    span's first copy and the first token of each repeat (nothing predicts those)."""
    span = [rng.choice(span_ids) for _ in range(rng.randint(*SPAN_LENGTH))]
    ids = _window(rng, text_ids, rng.randint(*TEXT_BEFORE)) + span
    # Labels are the inputs (transformers shifts them), ignored where nothing can predict them.
    labels = ids[: len(ids) - len(span)] + [IGNORE] * len(span)
    for _ in range(repeats):
        between = _window(rng, text_ids, rng.randint(*TEXT_BETWEEN))
        ids += between + span
        labels += between + [IGNORE] + span[1:]
    return ids, labels


def _window(rng: random.Random, text_ids: Sequence[int], length: int) -> list[int]:
    """``length`` consecutive tokens of the text stream (none when there is no text)."""
    if not text_ids:
        return []
    start = rng.randrange(max(1, len(text_ids) - length))
    return list(text_ids[start : start + length])


def _collate(rows: list[Row]) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in rows])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    return input_ids, labels, attention
