"""Generation backends: a batch of conversations in, parsed assistant turns with token counts out.

- ``transformers``: local weights, batched and left-padded, CPU or GPU; the embedded default.
- ``vllm``: vLLM's offline engine on GPU workers (the ``gpu`` extra; imported only when chosen).
- ``openai``: any OpenAI-compatible chat-completions endpoint over httpx, with retries.

Pick one by name with ``load_backend``; each backend module is imported only when it is chosen, so
a CPU install never touches vLLM.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any, Literal

from policies.backends.base import (
    BackendError,
    Conversation,
    FinishReason,
    Generation,
    GenerationBackend,
    SamplingParams,
)

__all__ = [
    "BACKENDS",
    "BackendError",
    "BackendName",
    "Conversation",
    "FinishReason",
    "Generation",
    "GenerationBackend",
    "SamplingParams",
    "load_backend",
]

BackendName = Literal["transformers", "vllm", "openai"]


def _transformers(model: str, options: dict[str, Any]) -> GenerationBackend:
    from policies.backends.transformers_backend import TransformersBackend

    keys = ("parser", "batch_size", "device", "dtype")
    return TransformersBackend(model, **{key: options[key] for key in keys})


def _vllm(model: str, options: dict[str, Any]) -> GenerationBackend:
    from policies.backends.vllm_backend import VLLMBackend

    return VLLMBackend(model, parser=options["parser"], dtype=options["dtype"])


def _openai(model: str, options: dict[str, Any]) -> GenerationBackend:
    from policies.backends.openai_backend import OpenAIBackend

    keys = ("parser", "api_key_env", "max_concurrency", "timeout_s", "max_retries")
    return OpenAIBackend(options["base_url"], model, **{key: options[key] for key in keys})


#: Backend name -> builder taking the model (a folder, or the served name for ``openai``) and the
#: options ``load_backend`` was given; each builder picks the options its backend reads.
BACKENDS: dict[str, Callable[[str, dict[str, Any]], GenerationBackend]] = {
    "transformers": _transformers,
    "vllm": _vllm,
    "openai": _openai,
}


def load_backend(
    name: BackendName,
    model: str,
    *,
    parser: str = "qwen2.5",
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    batch_size: int = 64,
    max_concurrency: int = 8,
    timeout_s: float = 120,
    max_retries: int = 4,
    device: str | None = None,
    dtype: str = "auto",
) -> GenerationBackend:
    """Build the backend called ``name``.

    ``model`` is a local model folder for ``transformers`` and ``vllm``, and the served model's name
    for ``openai``. Options a backend does not use are ignored: ``batch_size``, ``device`` (transformers),
    ``dtype`` (transformers, vllm), ``base_url``, ``api_key_env``, ``max_concurrency``, ``timeout_s``,
    ``max_retries`` (openai). Setup problems raise ``BackendError`` with a one-line reason.
    """
    builder = BACKENDS.get(name)
    if builder is None:
        close = difflib.get_close_matches(str(name), BACKENDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise BackendError(f"Unknown backend {name!r}; known backends: {', '.join(BACKENDS)}.{hint}")
    options = {
        "parser": parser,
        "base_url": base_url,
        "api_key_env": api_key_env,
        "batch_size": batch_size,
        "max_concurrency": max_concurrency,
        "timeout_s": timeout_s,
        "max_retries": max_retries,
        "device": device,
        "dtype": dtype,
    }
    return builder(model, options)
