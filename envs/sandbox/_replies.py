"""How replies become results, shared by batches and sessions."""

from __future__ import annotations

from ._process import WorkerLost
from ._types import Limits, ToolResult


def reply_to_result(frame: dict) -> ToolResult:
    """A worker's reply as a ToolResult; a reply of the wrong shape is the worker's fault."""
    if frame.get("ok") is True and isinstance(frame.get("content"), str):
        return ToolResult(ok=True, content=frame["content"])
    if frame.get("ok") is False and isinstance(frame.get("error"), str):
        return ToolResult.failure(frame["error"])
    raise WorkerLost("protocol violation: a reply without ok/content/error")


def reply_frame_limit(limits: Limits) -> int:
    """Largest reply frame a call may produce: the output limit, JSON-escaped, plus room for errors."""
    return 6 * limits.output_bytes + (1 << 16)


def timeout_message(limits: Limits) -> str:
    return f"wall-time limit of {limits.wall_time_s:g} s exceeded (the worker was killed)"
