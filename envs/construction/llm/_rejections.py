"""How a stage's answer is refused: a short, stable reason to count, and the full text the model reads.

Reasons are what a build report aggregates, so they name the check, never the data ("decompose:
invalid JSON", "deploy: code does not define tool"); the detail that goes back to the model names
the field, the tool and the value, so that its next attempt can fix exactly that.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from pydantic import ValidationError

from envs.schema import format_validation_error

__all__ = ["Reject", "RejectionCounter", "StageRejected", "rejection_from"]

#: What the contract's model-level checks (`stages.py`, no field location) say, as short reasons.
_MODEL_CHECKS: tuple[tuple[str, str], ...] = (
    ("contains its own answer", "question contains its answer"),
    ("do not have the shape of", "wrong scenario shape"),
    ("sub-question ids repeat", "sub-question ids repeat"),
    ("which are not earlier sub-questions", "unknown dependency"),
    ("tool names repeat", "tool names repeat"),
    ("golden calls answer", "calls do not match sub-questions"),
    ("golden calls name unknown tools", "call names unknown tool"),
    ("no code for tools", "code missing for a tool"),
)


class Reject(Exception):
    """One attempt's answer is refused: ``reason`` is counted, ``detail`` is shown to the model."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StageRejected(ValueError):
    """A stage got no acceptable answer in ``attempts`` tries; ``reason`` is the last try's.

    A ``ValueError``, so a builder that skips environments it could not generate skips this one too.
    """

    def __init__(self, stage: str, reason: str, detail: str = "", attempts: int = 0) -> None:
        tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
        super().__init__(f"{stage}: rejected{tries}: {reason}" + (f" ({detail})" if detail else ""))
        self.stage = stage
        self.reason = reason
        self.detail = detail
        self.attempts = attempts


class RejectionCounter(Counter[str]):
    """Reason -> count, over every refused attempt (``"<stage>: <reason>"``) and every stage that
    gave up (``"<stage>: rejected"``). ``record`` is safe from several threads at once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()

    def record(self, reason: str) -> None:
        with self._lock:
            self[reason] += 1


def rejection_from(error: ValidationError) -> Reject:
    """A pydantic error as a rejection: the first problem's field path (list positions dropped, so
    reasons aggregate) or, for a model-level check, its short name; every problem in the detail."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if not isinstance(part, int))
    if where:
        reason = f"schema: {where}"
    else:
        message = str((first.get("ctx") or {}).get("error", first["msg"]))
        reason = next((short for needle, short in _MODEL_CHECKS if needle in message), "schema: model check")
    return Reject(reason, format_validation_error(error))
