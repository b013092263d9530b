"""Value types of the sandbox's public surface: limits, requests, results, errors and the state digest."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass


class SandboxError(Exception):
    """The sandbox itself failed (a worker would not start, a session is broken, the pool is closed).

    A tool that fails is not a SandboxError: it is a ``ToolResult`` with ``ok=False``.
    """


class SandboxTimeout(SandboxError):
    """A control operation (worker start-up, opening a session, fetching its state) ran out of time."""


class SandboxWarning(UserWarning):
    """Tool code runs with some protections off; the message names them."""


@dataclass(frozen=True)
class Limits:
    """What one tool call may use. Defaults follow the paper's 10-second tool timeout.

    wall_time_s: seconds of real time per call, enforced by the parent (it kills the worker).
    cpu_time_s: CPU seconds per call (RLIMIT_CPU, whole seconds, rounded up).
    memory_mb: address space per worker (RLIMIT_AS); also bounds each scratch file and the scratch folder.
    output_bytes: largest tool output (UTF-8 bytes of ``content``).
    max_processes: extra processes or threads a call may start (RLIMIT_NPROC above the worker itself);
        0 forbids fork, subprocess and threads. With more than 0, a worker that leaves any behind is replaced.
    """

    wall_time_s: float = 10.0
    cpu_time_s: float = 10.0
    memory_mb: int = 1024
    output_bytes: int = 1_000_000
    max_processes: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in ("wall_time_s", "cpu_time_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f"{name} must be a finite number of seconds, got {value!r}")
            elif value <= 0:
                problems.append(f"{name} must be > 0, got {value!r}")
        for name, lowest in (("memory_mb", 64), ("output_bytes", 1), ("max_processes", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{name} must be an int, got {value!r}")
            elif value < lowest:
                problems.append(f"{name} must be >= {lowest}, got {value!r}")
        if problems:
            raise ValueError("invalid sandbox Limits: " + "; ".join(problems))


@dataclass(frozen=True)
class ToolCallRequest:
    """One call: the tool's module source, the function to call in it, and its keyword arguments."""

    code: str
    name: str
    arguments: dict


@dataclass(frozen=True)
class ToolResult:
    """What a call produced. ``content`` is the tool's return value as text ("" when ``ok`` is False);
    ``error`` says why a call failed: ``unknown tool 'x'``, ``ExcType: message``, or a limit's name."""

    ok: bool
    content: str
    error: str | None = None

    @classmethod
    def failure(cls, error: str) -> ToolResult:
        return cls(ok=False, content="", error=error)


def canonical_digest(obj: object) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no spaces, non-ASCII kept): equal states
    give equal digests whatever their key order, which is how τ-bench compares final databases.

    >>> canonical_digest({"b": 1, "a": [1, "é"]}) == canonical_digest({"a": [1, "é"], "b": 1})
    True
    """
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
