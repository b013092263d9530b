"""Run the tool calls of many turns through the sandbox pool as one batch.

Shared by the reward (scoring generated turns) and the episode loop (stepping environments), so a
call is executed, and an unknown tool reported, the same way in training and in sampling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envs.sandbox import SandboxPool, ToolCallRequest, ToolResult
from policies.types import ToolCall


def unknown_tool(name: str) -> ToolResult:
    return ToolResult(ok=False, content="", error=f"unknown tool '{name}'")


def run_tool_calls(
    pool: SandboxPool, turns: Sequence[tuple[Mapping[str, str], Sequence[ToolCall]]]
) -> list[list[ToolResult]]:
    """Results per turn, in call order; each turn names its environment's codes and its calls."""
    requests = [
        ToolCallRequest(code=codes[call.name], name=call.name, arguments=call.arguments)
        for codes, calls in turns
        for call in calls
        if call.name in codes
    ]
    executed = iter(pool.run_batch(requests) if requests else [])
    return [
        [next(executed) if call.name in codes else unknown_tool(call.name) for call in calls]
        for codes, calls in turns
    ]
