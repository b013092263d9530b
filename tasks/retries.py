"""Which failures a stage retries, how long it waits, and the fault-injection hook that proves it.

Transient failures (an endpoint's 5xx after the backend's own retries, a crashed sandbox worker or
trainer process, a lost GPU node, a full disk that gets cleaned) are retried with exponential
backoff and jitter. Bad input is not: a schema error, an invalid profile, a missing file, a
folder holding another run's work fail at once, because a retry would fail the same way and only
hide the message. Everything this project raises for bad input is a `ValueError`
(`ProfileError`, `RowError`, `MergeError`, `VerlConfigError`, `ResumeMismatch`, pydantic's
`ValidationError`), a missing or misplaced file (`FileNotFoundError`, `FileExistsError`...) or a
`BackendError` (a model folder or API key that cannot work); `PERMANENT_ERRORS` lists them.

Fault injection: `FTRL_FAIL_ONCE=train,sample-1/shard-0` makes the named stages (a stage name
matches all its runs, a task run name only that run) raise `InjectedFault`, a transient error,
the first time they run in a run directory. A marker file `<run>/.faults/<name>` records that the
fault fired, so a retry or a later flow run proceeds. Tests use it to show that a failed stage is
rerun alone while the stages before it stay cached; operators can use it to rehearse recovery.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect.tasks import exponential_backoff

from policies.backends.base import BackendError

__all__ = [
    "FAULT_ENV",
    "PERMANENT_ERRORS",
    "InjectedFault",
    "backoff_delays",
    "inject_fault",
    "is_transient",
    "retry_transient",
]

FAULT_ENV = "FTRL_FAIL_ONCE"
FAULTS_FOLDER = ".faults"

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    BackendError,
)


class InjectedFault(RuntimeError):
    """A transient failure raised on purpose by `inject_fault`."""


def is_transient(error: BaseException) -> bool:
    """Whether running the stage again could succeed: anything but bad input."""
    return not isinstance(error, PERMANENT_ERRORS)


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a failed stage only when its exception is transient.

    A plain function, as Prefect requires (it checks `inspect.isfunction`).
    """
    error = state.result(raise_on_failure=False)
    return isinstance(error, BaseException) and is_transient(error)


def backoff_delays(base_delay_s: float) -> Any:
    """Prefect `retry_delay_seconds`: base, 2·base, 4·base... seconds."""
    return exponential_backoff(backoff_factor=base_delay_s)


def inject_fault(stage: str, label: str, run_dir: Path) -> None:
    """Raise `InjectedFault` once per run directory when `FTRL_FAIL_ONCE` names `stage` or `label`."""
    wanted = {name.strip() for name in os.environ.get(FAULT_ENV, "").split(",") if name.strip()}
    if not wanted & {stage, label}:
        return
    marker = Path(run_dir) / FAULTS_FOLDER / label.replace("/", "__")
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        marker.open("x").close()  # created atomically: the fault fires exactly once
    except FileExistsError:
        return
    raise InjectedFault(f"{label}: transient fault injected by {FAULT_ENV} (fires once per run directory)")
