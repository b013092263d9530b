"""Process-wide pools for callers that do not manage one: created on first use, closed at exit."""

from __future__ import annotations

import atexit
import os
import threading

from ._pool import SandboxPool
from ._types import Limits, ToolCallRequest, ToolResult

_lock = threading.Lock()
_pools: dict[Limits, SandboxPool] = {}


def default_pool(limits: Limits | None = None) -> SandboxPool:
    """The shared pool for ``limits`` (default ``Limits()``), one worker per CPU. Worker rlimits are
    fixed when a worker starts, so each distinct ``Limits`` gets a pool of its own."""
    limits = limits or Limits()
    with _lock:
        pool = _pools.get(limits)
        if pool is None or pool.closed:
            pool = _pools[limits] = SandboxPool(limits=limits)
        return pool


def run_tool(code: str, name: str, arguments: dict, *, limits: Limits | None = None) -> ToolResult:
    """Run ``name(**arguments)`` from the module ``code`` on the shared pool for ``limits``."""
    return default_pool(limits).run_batch([ToolCallRequest(code, name, arguments)])[0]


@atexit.register
def _close_all() -> None:
    with _lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def _forget_in_child() -> None:
    """A forked child must not share the parent's workers (their pipes would interleave)."""
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    _pools.clear()


os.register_at_fork(after_in_child=_forget_in_child)
