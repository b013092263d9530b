"""What the backends that load weights themselves (transformers, vLLM) share: checking the model
folder, loading its tokenizer, rendering prompts and knowing the end tokens.

Prompts are rendered here, by ``rendering.render_prompt_ids``, for both backends: the sampler, the
trainer and evaluation must see token-for-token the same prompt, whatever engine generates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policies.backends.base import BackendError, Conversation
from policies.parsing import ToolCallParser, get_parser
from policies.rendering import render_prompt_ids

__all__ = ["EndTokens", "check_model_dir", "end_tokens", "load_parser", "load_tokenizer", "prompt_ids"]


def check_model_dir(model_dir: str | Path) -> Path:
    """``model_dir`` as a ``Path`` if it looks like a Hugging Face model folder, else ``BackendError``."""
    path = Path(model_dir).expanduser()
    if not path.exists():
        raise BackendError(f"{path}: model folder does not exist")
    if not path.is_dir():
        raise BackendError(
            f"{path}: not a folder (a model is a folder with config.json, weights and a tokenizer)"
        )
    if not (path / "config.json").is_file():
        raise BackendError(f"{path / 'config.json'}: missing, so {path} is not a Hugging Face model folder")
    return path


def load_tokenizer(path: Path) -> Any:
    """The folder's tokenizer, which must carry a chat template: prompts are rendered with the model's
    own template, never a guessed one."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as error:  # transformers raises many types here; the user needs the reason, once
        raise BackendError(f"{path}: cannot load the tokenizer ({first_line(error)})") from error
    if not getattr(tokenizer, "chat_template", None):
        raise BackendError(
            f"{path}: the tokenizer has no chat template (neither chat_template.jinja nor a "
            "'chat_template' entry in tokenizer_config.json)"
        )
    return tokenizer


def load_parser(name: str) -> ToolCallParser:
    """``parsing.get_parser`` with its error as a setup error."""
    try:
        return get_parser(name)
    except ValueError as error:
        raise BackendError(str(error)) from None


def first_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


class EndTokens:
    """The ids generation stops on, and the id that pads a batch.

    Stop ids are the union of ``generation_config.json``'s ``eos_token_id`` (Qwen2.5 lists both
    ``<|im_end|>`` and ``<|endoftext|>``) and the tokenizer's eos: a model that ends a turn either way
    must not run on to ``max_new_tokens``.
    """

    def __init__(self, stop_ids: frozenset[int], pad_id: int) -> None:
        self.stop_ids = stop_ids
        self.pad_id = pad_id

    def completion_length(self, ids: list[int]) -> int | None:
        """Tokens up to and including the first stop token; ``None`` if there is none."""
        for position, token in enumerate(ids):
            if token in self.stop_ids:
                return position + 1
        return None


def end_tokens(path: Path, tokenizer: Any) -> EndTokens:
    from transformers import GenerationConfig

    stop: list[int] = []
    pad: int | None = None
    if (path / "generation_config.json").is_file():
        try:
            config = GenerationConfig.from_pretrained(path, local_files_only=True)
        except Exception as error:
            raise BackendError(
                f"{path / 'generation_config.json'}: cannot be read ({first_line(error)})"
            ) from error
        stop.extend(_ids(config.eos_token_id))
        pad = config.pad_token_id
    stop.extend(_ids(tokenizer.eos_token_id))
    if not stop:
        raise BackendError(
            f"{path}: no end-of-turn token (no eos_token_id in generation_config.json and no eos_token in "
            "the tokenizer), so generation could never stop"
        )
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop[0]
    return EndTokens(frozenset(stop), int(pad))


def _ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [int(value)] if isinstance(value, int) else [int(v) for v in value]


def prompt_ids(tokenizer: Any, conversation: Conversation, enable_thinking: bool | None) -> list[int]:
    """The conversation's prompt tokens; ``ValueError`` for messages or tools that cannot render."""
    variables = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    return render_prompt_ids(tokenizer, conversation.messages, conversation.tools, **variables)
