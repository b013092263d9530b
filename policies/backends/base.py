"""The one interface every generation backend keeps: conversations and sampling settings in, parsed
assistant turns with token counts out.

A backend is a transport in the httpx sense: the episode loop codes against ``GenerationBackend``
and never learns whether turns came from local weights, a vLLM engine or an HTTP endpoint.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

from policies.types import ParsedTurn

__all__ = [
    "BackendError",
    "Conversation",
    "FinishReason",
    "Generation",
    "GenerationBackend",
    "SamplingParams",
    "failed",
    "row_seeds",
]

FinishReason = Literal["stop", "length", "error"]


class BackendError(RuntimeError):
    """A backend cannot be set up: a bad model folder, a tokenizer without a chat template, a missing
    API key variable. The message is one line naming the path or variable and the reason, fit to
    print to a user as is."""


@dataclass(frozen=True)
class SamplingParams:
    """How one batch is sampled.

    Attributes:
        temperature: 0 means greedy decoding; the paper samples at 1.0.
        top_p: nucleus mass in (0, 1]; 1 turns it off.
        max_new_tokens: the longest turn, in tokens; a turn cut here finishes with ``"length"``.
        seed: the batch's seed. Conversation ``i`` without a seed of its own samples from
            ``row_seeds``' seed for ``(seed, i)``, so identical conversations in one batch (n samples
            per prompt) still differ. ``None`` gives non-reproducible samples.
        enable_thinking: reasoning mode for chat templates that read it (Qwen3); ``None`` leaves the
            template's default. The thinking text ends up in ``ParsedTurn.reasoning``, never in content.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    seed: int | None = 0
    enable_thinking: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)):
            raise ValueError(f"SamplingParams.temperature must be a number >= 0, got {self.temperature!r}")
        if not self.temperature >= 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature!r}")
        if (
            isinstance(self.top_p, bool)
            or not isinstance(self.top_p, (int, float))
            or not 0 < self.top_p <= 1
        ):
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise ValueError(
                f"SamplingParams.max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        _check_seed("SamplingParams.seed", self.seed)
        if self.enable_thinking is not None and not isinstance(self.enable_thinking, bool):
            raise ValueError(
                f"SamplingParams.enable_thinking must be true, false or null, got {self.enable_thinking!r}"
            )


@dataclass(frozen=True)
class Conversation:
    """One conversation to continue with an assistant turn.

    Attributes:
        messages: the chat so far, OpenAI-style (``rendering.normalize_messages`` says what is accepted).
        tools: OpenAI function schemas, decoded; ``None`` for none.
        turn: the number of the assistant turn being generated; tool-call ids are derived from it.
        seed: this conversation's own seed, overriding the batch's: its sample then does not depend on
            where it sits in the batch.
    """

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    turn: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_seed("Conversation.seed", self.seed)


@dataclass(frozen=True)
class Generation:
    """One generated turn.

    Attributes:
        turn: the parsed turn (content, tool calls, reasoning, raw text).
        prompt_tokens: tokens in the rendered prompt.
        completion_tokens: generated tokens, the end token included.
        finish_reason: ``"stop"`` (an end token), ``"length"`` (``max_new_tokens`` reached) or ``"error"``.
        error: for ``"error"``, one line saying what failed; else ``None``.
    """

    turn: ParsedTurn
    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    error: str | None = None


def failed(error: str, prompt_tokens: int = 0) -> Generation:
    """The result for a conversation that got no turn: empty content, ``finish_reason="error"``."""
    return Generation(
        turn=ParsedTurn(content=""),
        prompt_tokens=prompt_tokens,
        completion_tokens=0,
        finish_reason="error",
        error=error,
    )


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from any JSON-able parts, stable across processes, machines and Python versions."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


def row_seeds(conversations: Sequence[Conversation], params: SamplingParams) -> list[int | None]:
    """The seed each conversation samples with: its own, else one derived from the batch seed and its
    position (``None`` where neither is set).

    Deriving rather than repeating ``params.seed`` matters because a batch often holds the same prompt
    n times (GRPO groups): one shared seed would give n identical samples. The derived seeds are
    31-bit, which every backend (torch, vLLM, OpenAI's ``seed``) accepts.
    """
    seeds: list[int | None] = []
    for index, conversation in enumerate(conversations):
        if conversation.seed is not None:
            seeds.append(conversation.seed)
        elif params.seed is None:
            seeds.append(None)
        else:
            seeds.append(derive_seed(params.seed, index))
    return seeds


def _check_seed(field: str, seed: Any) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"{field} must be a non-negative integer or None, got {seed!r}")


class GenerationBackend(ABC):
    """Generates the next assistant turn for a batch of conversations.

    Subclasses set ``name`` and implement ``generate``; ``close`` frees what the backend holds
    (weights, an engine, HTTP connections) and is safe to call twice. Use it as a context manager.
    """

    name: str

    @abstractmethod
    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Generation]:
        """One turn per conversation, in the same order.

        A conversation that fails (a prompt its template cannot render, a request that kept failing)
        gets a ``Generation`` with ``finish_reason="error"`` and ``error`` set; the others go on. A
        backend raises only for a misuse of the whole call.
        """

    def close(self) -> None:  # noqa: B027 (a documented no-op to override, like gymnasium's Env.close)
        """Release the backend's resources. The default holds none."""

    def __enter__(self) -> GenerationBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
