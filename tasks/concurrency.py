"""Stages that load a model take turns within one process; processes and machines run them at once.

transformers builds a model through module-level state, and two threads loading at once corrupt each
other: two shards loading the tiny model together in Prefect's default thread-pool task runner
failed with "Cannot copy out of meta tensor". So every stage that loads a model runs inside
`model_stage()`, one at a time per process, while the light stages (shards, joins, conversion) run
beside it. A process-pool task runner, or one worker per shard, gives each its own process and lock.

The lock is reached through this module's function, not a module-level name in the task modules:
a process-pool runner pickles task functions by value, with the globals they name, and a lock
cannot be pickled; a function of an importable module is pickled by reference.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["model_stage"]

_MODEL_LOCK = threading.Lock()


@contextmanager
def model_stage() -> Iterator[None]:
    """Hold this process's model lock for the block."""
    with _MODEL_LOCK:
        yield
