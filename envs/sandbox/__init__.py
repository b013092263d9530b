"""The sandbox: runs untrusted tool code in pooled, isolated worker processes.

Threat model. Tool code is written by an LLM (the environment builder), so it is buggy far more
often than hostile, but nothing it does may harm the pipeline: it must not read the pipeline's files
or environment (API keys), write outside a scratch folder, reach the network, signal or kill the
pipeline, or turn a crash, a hang, ``os._exit``, a fork bomb or a memory blow-up into anything worse
than an error result for that one call. Calls served by the same worker share one interpreter: a tool
that deliberately patches modules or builtins could disturb later calls in that worker (never another
worker, nor the pipeline); each call does get a fresh module namespace, a fresh builtins dict, and an
emptied scratch folder.

What each protection does:

- bubblewrap (``bwrap``): a new mount namespace whose root holds only read-only binds of the
  interpreter's prefix, /usr and the loader's files, plus the worker script itself; the repository,
  the virtual environment and home folders do not exist inside. /tmp is a private, size-capped
  tmpfs and the working directory: the only writable place.
- new network, pid, ipc and uts namespaces: no network interface but a dead loopback; the pipeline's
  processes are invisible, so they cannot be signalled. The worker is pid 1 of its namespace
  (``--as-pid-1``): signals it sends itself are dropped, and when it dies, everything it started dies.
- ``--clearenv`` plus a minimal environment (and bubblewrap itself started with a scrubbed one): the
  pipeline's variables never reach tool code.
- uid 65534 (nobody) in a user namespace of the worker's own, all capabilities dropped, no new
  privileges; ``--die-with-parent`` and ``--new-session``.
- rlimits set before any tool code: RLIMIT_AS (memory), RLIMIT_CPU (per call), RLIMIT_NPROC (fork
  bombs: by default no extra process or thread at all), RLIMIT_FSIZE, RLIMIT_NOFILE, no core dumps.
- the parent enforces wall time: at the deadline it kills the worker's process group (the pid
  namespace dies with it) and starts a replacement; output size is checked in the worker and again
  on the frame the parent reads; replies are JSON, never pickle, and checked before use.

Without bubblewrap (not installed, not permitted, or ``FTRL_SANDBOX_BWRAP=0``) workers are plain
processes with the rlimits, a scrubbed environment and a private scratch working directory, and ONE
warning (``SandboxWarning`` and a log record) names every protection that is off.

Entry points: ``run_tool`` (one call on the shared pool), ``SandboxPool`` (``run``, ``run_batch``,
``session``), ``StatefulSession`` and ``canonical_digest`` for τ-bench-style stateful domains.
"""

from ._default import default_pool, run_tool
from ._pool import SandboxPool
from ._session import StatefulSession
from ._types import (
    Limits,
    SandboxError,
    SandboxTimeout,
    SandboxWarning,
    ToolCallRequest,
    ToolResult,
    canonical_digest,
)

__all__ = [
    "Limits",
    "SandboxError",
    "SandboxPool",
    "SandboxTimeout",
    "SandboxWarning",
    "StatefulSession",
    "ToolCallRequest",
    "ToolResult",
    "canonical_digest",
    "default_pool",
    "run_tool",
]
