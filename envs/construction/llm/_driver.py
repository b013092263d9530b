"""One request-and-check loop shared by the five stages: ask, read the JSON, check it, and on a
refusal show the model its own answer and the reason, up to ``max_attempts`` tries in all."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from envs.construction.llm._prompts import StageName, render_prompt
from envs.construction.llm._rejections import Reject, RejectionCounter, StageRejected, rejection_from
from envs.construction.llm._replies import extract_json
from policies.backends import Conversation, GenerationBackend, SamplingParams
from policies.backends.base import derive_seed

__all__ = ["Driver"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Driver:
    """Talks to the backend for every stage of one generator and counts what it refuses."""

    def __init__(
        self,
        backend: GenerationBackend,
        params: SamplingParams,
        max_attempts: int,
        seed: int,
        rejections: RejectionCounter,
    ) -> None:
        self.backend = backend
        self.params = params
        self.max_attempts = max_attempts
        self.seed = seed
        self.rejections = rejections

    def ask(self, stage: StageName, prompt: str, read: Callable[[dict[str, Any]], T]) -> T:
        """``read(payload)`` of the first acceptable answer to ``prompt``.

        ``read`` raises ``Reject`` or ``ValidationError`` to refuse an answer. Each try samples with a
        seed derived from the generator's seed, the prompt and the try number, so a rerun against a
        deterministic endpoint asks the same questions and gets the same answers.
        """
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        last: Reject
        for attempt in range(1, self.max_attempts + 1):
            conversation = Conversation(
                messages=list(messages), seed=derive_seed("llm", self.seed, digest, attempt)
            )
            generation = self.backend.generate([conversation], self.params)[0]
            reply = generation.turn.content
            try:
                if generation.finish_reason == "error":
                    raise Reject("backend error", generation.error or "the backend returned no turn")
                try:
                    payload = extract_json(reply)
                except Reject as refused:
                    if generation.finish_reason == "length":
                        raise Reject(
                            "reply cut at max_new_tokens",
                            f"the reply stopped at the token limit ({self.params.max_new_tokens}) before the "
                            f"JSON ended ({refused.detail}); answer more briefly",
                        ) from None
                    raise
                return read(payload)
            except ValidationError as error:
                last = rejection_from(error)
            except Reject as refused:
                last = refused
            self.rejections.record(f"{stage}: {last.reason}")
            logger.info("%s: attempt %d of %d refused: %s", stage, attempt, self.max_attempts, last)
            if generation.finish_reason != "error":
                messages += [
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": render_prompt("retry", error=last.detail)},
                ]
        self.rejections.record(f"{stage}: rejected")
        logger.warning("%s: rejected after %d attempts: %s", stage, self.max_attempts, last)
        raise StageRejected(stage, last.reason, last.detail, self.max_attempts)
