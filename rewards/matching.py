"""Answer matching: when does a tool's output count as having found a sub-answer?

The paper's rule, kept exactly so rewards are comparable with its numbers: split the expected answer
on ", " into pieces; the output matches when every piece occurs in it, case-insensitively, after
commas are removed from both sides (so "1,000" in an output matches "1000", and a list answer
"Paris, Rome" matches an output that names both in any order). Dicts and lists are compared as the
JSON text the sandbox renders them to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def _normalise(text: str) -> str:
    return text.replace(",", "").lower()


def answer_pieces(expected: str) -> list[str]:
    """The pieces an output must contain; `"a, b"` → `["a", "b"]`."""
    return [_normalise(piece) for piece in expected.split(", ")]


def matches(output: str, expected: str) -> bool:
    """True when every piece of `expected` occurs in `output` (the paper's matching rule)."""
    haystack = _normalise(output)
    return all(piece in haystack for piece in answer_pieces(expected))


def contains_answer(text: str, answer: str | None) -> bool:
    """Whether a final text states the answer; an empty or missing answer is never contained."""
    return bool(answer) and matches(text, answer)


@dataclass(frozen=True)
class CallOutput:
    """What one tool call produced: the tool it named and its output, or None when it failed."""

    tool: str
    output: str | None


@dataclass(frozen=True)
class MatchResult:
    """Which calls solved a sub-answer, and the sub-answers still unsolved afterwards."""

    matched: tuple[bool, ...]
    remaining: dict[str, list[str]]

    @property
    def solved(self) -> int:
        return sum(self.matched)


def match_calls(calls: Sequence[CallOutput], unsolved: Mapping[str, Sequence[str]]) -> MatchResult:
    """Credit each call with at most one still-unsolved sub-answer of the tool it called.

    Calls are credited in order and a sub-answer is used up once found, so calling the same tool
    twice with the same arguments solves it once. A failed call (output None) never matches.
    """
    remaining = {tool: list(answers) for tool, answers in unsolved.items()}
    matched: list[bool] = []
    for call in calls:
        candidates = remaining.get(call.tool, [])
        hit = (
            None
            if call.output is None
            else next(
                (index for index, expected in enumerate(candidates) if matches(call.output, expected)), None
            )
        )
        if hit is not None:
            del candidates[hit]
        matched.append(hit is not None)
    return MatchResult(matched=tuple(matched), remaining=remaining)


def count_unsolved(unsolved: Mapping[str, Sequence[str]]) -> int:
    return sum(len(answers) for answers in unsolved.values())
