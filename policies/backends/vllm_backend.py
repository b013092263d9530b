"""vLLM's offline engine, for GPU workers.

vLLM is installed only with the ``gpu`` extra (it is a CUDA build and moves transformers off verl's
pins), so it is imported when a backend is built, never when this module is. Prompts are rendered by
``rendering.render_prompt_ids`` and handed to the engine as token ids, exactly as the transformers
backend and the trainer see them; vLLM's own chat handling is not used.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policies.backends.base import (
    BackendError,
    Conversation,
    FinishReason,
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

__all__ = ["VLLMBackend"]

INSTALL_HINT = "install the gpu extra on a CUDA machine: pip install -e '.[gpu]'"


class VLLMBackend(GenerationBackend):
    """Generates with ``vllm.LLM`` over a local model folder.

    Args:
        model_dir: a Hugging Face model folder (config, weights, tokenizer with a chat template).
        parser: the tool-call format the model writes (``parsing.PARSERS``).
        dtype: passed to vLLM (``"auto"``, ``"bfloat16"``, ``"float16"``, ``"float32"``).
        **engine_kwargs: further ``vllm.LLM`` arguments (``tensor_parallel_size``,
            ``gpu_memory_utilization``, ``max_model_len``, ``enforce_eager``...).

    vLLM schedules the whole batch itself, so there is no ``batch_size``. As with the transformers
    backend, only ``SamplingParams`` shape the sampling, and each conversation gets its own seed.
    """

    name = "vllm"

    def __init__(
        self, model_dir: str | Path, *, parser: str = "qwen2.5", dtype: str = "auto", **engine_kwargs: Any
    ) -> None:
        self.path = check_model_dir(model_dir)
        self.parser = load_parser(parser)
        self.tokenizer = load_tokenizer(self.path)
        self.end = end_tokens(self.path, self.tokenizer)
        try:
            import vllm
        except ImportError as error:
            raise BackendError(
                f"the vllm backend needs vLLM, which is not importable ({error}); {INSTALL_HINT}"
            ) from None
        self._vllm = vllm
        try:
            self.llm = vllm.LLM(model=str(self.path), tokenizer=str(self.path), dtype=dtype, **engine_kwargs)
        except Exception as error:  # vLLM reports bad folders, dtypes and memory shortfalls many ways
            raise BackendError(f"{self.path}: vLLM cannot load the model ({first_line(error)})") from error

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        if self.llm is None:
            raise RuntimeError("this VLLMBackend is closed; build a new one to generate")
        results: dict[int, Generation] = {}
        requests: list[tuple[int, list[int], int | None]] = []
        for index, (conversation, seed) in enumerate(
            zip(conversations, row_seeds(conversations, params), strict=True)
        ):
            try:
                requests.append(
                    (index, prompt_ids(self.tokenizer, conversation, params.enable_thinking), seed)
                )
            except ValueError as error:
                results[index] = failed(f"cannot render the prompt: {first_line(error)}")
        if requests:
            outputs = self.llm.generate(
                [{"prompt_token_ids": ids} for _, ids, _ in requests],
                [self._sampling(params, seed) for _, _, seed in requests],
                use_tqdm=False,
            )
            for (index, ids, _), output in zip(requests, outputs, strict=True):
                results[index] = self._generation(ids, output.outputs[0], conversations[index].turn)
        return [results[index] for index in range(len(conversations))]

    def _sampling(self, params: SamplingParams, seed: int | None) -> Any:
        return self._vllm.SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=seed,
            stop_token_ids=sorted(self.end.stop_ids),
            skip_special_tokens=False,
        )

    def _generation(self, prompt: list[int], completion: Any, turn: int) -> Generation:
        if completion.finish_reason not in ("stop", "length"):
            return failed(f"vLLM finished the request with {completion.finish_reason!r}", len(prompt))
        finish: FinishReason = completion.finish_reason
        generated = list(completion.token_ids)
        text = self.tokenizer.decode(generated, skip_special_tokens=False)
        return Generation(
            turn=self.parser.parse(text, turn),
            prompt_tokens=len(prompt),
            completion_tokens=len(generated),
            finish_reason=finish,
        )

    def close(self) -> None:
        """Shut the engine down so its GPU memory is free for the next stage (training)."""
        import torch

        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
