"""The embedded default: batched, left-padded ``generate`` with transformers, on CPU or GPU.

Sampling is seeded per conversation, not per batch: each row draws from its own ``torch.Generator``
(seeded by ``row_seeds``), so a conversation's sample depends on its seed and prompt, not on which
other conversations share its batch or how the batch was split. transformers' ``generate`` has one
global random stream, so the draw happens in a logits processor that leaves a single finite logit
per row, and ``generate`` runs greedily over it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from policies.backends.base import (
    BackendError,
    Conversation,
    Generation,
    GenerationBackend,
    SamplingParams,
    failed,
    row_seeds,
)
from policies.backends.local import (
    check_model_dir,
    end_tokens,
    first_line,
    load_parser,
    load_tokenizer,
    prompt_ids,
)

__all__ = ["TransformersBackend"]

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "bfloat16", "float16")


class _Row(NamedTuple):
    """One conversation on its way through ``generate``: where its result goes, and what it needs."""

    index: int
    prompt: list[int]
    seed: int | None
    turn: int


class TransformersBackend(GenerationBackend):
    """Generates with a local model folder through transformers.

    Args:
        model_dir: a Hugging Face model folder (config, weights, tokenizer with a chat template).
        parser: the tool-call format the model writes (``parsing.PARSERS``).
        batch_size: conversations per ``generate`` call. A batch is sorted by prompt length before it
            is split, so each sub-batch pads little; results come back in the caller's order.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None`` picks CUDA when available.
        dtype: weights' dtype, one of ``DTYPES``; ``"auto"`` keeps the checkpoint's.

    Only ``SamplingParams`` shape the sampling: the model's ``generation_config.json`` contributes
    its end tokens, never its defaults (``top_k``, ``repetition_penalty``...), so every backend samples
    the same distribution for the same settings.
    """

    name = "transformers"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        parser: str = "qwen2.5",
        batch_size: int = 64,
        device: str | None = None,
        dtype: str = "auto",
    ) -> None:
        import torch

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise BackendError(f"batch_size must be a positive integer, got {batch_size!r}")
        if dtype not in DTYPES:
            raise BackendError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.path = check_model_dir(model_dir)
        self.parser = load_parser(parser)
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(self.path)
        self.end = end_tokens(self.path, self.tokenizer)
        try:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError as error:
            raise BackendError(f"device {device!r}: {first_line(error)}") from None
        self.model = _load_model(self.path, self.device, dtype)
        self.context_length: int | None = getattr(self.model.config, "max_position_embeddings", None)

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        if self.model is None:
            raise RuntimeError("this TransformersBackend is closed; build a new one to generate")
        results: dict[int, Generation] = {}
        rows: list[_Row] = []
        seeds = row_seeds(conversations, params)
        for index, (conversation, seed) in enumerate(zip(conversations, seeds, strict=True)):
            try:
                ids = prompt_ids(self.tokenizer, conversation, params.enable_thinking)
            except ValueError as error:
                results[index] = failed(f"cannot render the prompt: {first_line(error)}")
                continue
            if self.context_length is not None and len(ids) >= self.context_length:
                results[index] = failed(
                    f"prompt has {len(ids)} tokens; the model's context is {self.context_length}", len(ids)
                )
                continue
            rows.append(_Row(index, ids, seed, conversation.turn))
        rows.sort(key=lambda row: len(row.prompt), reverse=True)
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            for row, generation in zip(chunk, self._generate_chunk(chunk, params), strict=True):
                results[row.index] = generation
        return [results[index] for index in range(len(conversations))]

    def _generate_chunk(self, rows: list[_Row], params: SamplingParams) -> list[Generation]:
        try:
            completions = self._run(rows, params)
        except Exception as error:  # one bad sub-batch (e.g. out of memory) must not end the run
            logger.exception("generation failed for a sub-batch of %d conversations", len(rows))
            if self.device.type == "cuda":
                import torch

                torch.cuda.empty_cache()
            reason = f"generation failed: {type(error).__name__}: {first_line(error)}"
            return [failed(reason, len(row.prompt)) for row in rows]
        return [self._generation(row, completion) for row, completion in zip(rows, completions, strict=True)]

    def _run(self, rows: list[_Row], params: SamplingParams) -> list[list[int]]:
        """Generate for the rows' prompts, left-padded; return each row's generated ids, padding included."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        prompts = [row.prompt for row in rows]
        width = max(len(ids) for ids in prompts)
        pad = self.end.pad_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts], device=self.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts], device=self.device
        )
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(self.end.stop_ids),
            pad_token_id=pad,
        )
        processors = LogitsProcessorList()
        if params.temperature > 0:
            generators = [_generator(self.device, row.seed) for row in rows]
            processors.append(SeededSampler(params.temperature, params.top_p, generators))
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=config,
                logits_processor=processors,
            )
        return output[:, width:].tolist()

    def _generation(self, row: _Row, generated: list[int]) -> Generation:
        length = self.end.completion_length(generated)
        if length is None:
            length, finish = len(generated), "length"
        else:
            finish = "stop"
        text = self.tokenizer.decode(generated[:length], skip_special_tokens=False)
        return Generation(
            turn=self.parser.parse(text, row.turn),
            prompt_tokens=len(row.prompt),
            completion_tokens=length,
            finish_reason=finish,
        )

    def close(self) -> None:
        """Drop the weights (and free GPU memory) now rather than when the backend is collected."""
        if getattr(self, "model", None) is None:
            return
        self.model = None
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()


def _load_model(path: Path, device: Any, dtype: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
        model.to(device)
    except Exception as error:  # corrupt weights, unknown architecture, a device that is not there
        raise BackendError(f"{path}: cannot load the model ({first_line(error)})") from error
    model.eval()
    return model


def _generator(device: Any, seed: int | None) -> Any:
    import torch

    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class SeededSampler:
    """A logits processor that samples each row with its own generator and leaves only the drawn
    token's logit finite, so greedy decoding emits exactly the sampled token.

    Temperature and top-p are applied here, in float32; ``generate``'s own warpers are off.
    """

    def __init__(self, temperature: float, top_p: float, generators: list[Any]) -> None:
        self.temperature = temperature
        self.top_p = top_p
        self.generators = generators

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            # Keep a token while the mass before it is below top_p; the most likely one always stays.
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= self.top_p
            probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
        drawn = torch.stack(
            [
                torch.multinomial(row, 1, generator=generator)
                for row, generator in zip(probs, self.generators, strict=True)
            ]
        )
        return torch.full_like(scores, float("-inf"), dtype=torch.float32).scatter_(-1, drawn, 0.0)
