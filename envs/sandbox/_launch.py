"""How workers are started: inside bubblewrap when it works, else as plain processes, loudly.

The choice is made once per process (and again if ``FTRL_SANDBOX_BWRAP`` changes): bubblewrap is
tried by starting a real worker, and if that fails the plain launcher is used and ONE warning (through
``warnings`` and ``logging``) names every protection that is off and why.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ._process import WorkerProcess, make_scratch
from ._types import Limits, SandboxError, SandboxWarning

logger = logging.getLogger(__name__)

ENV_SWITCH = "FTRL_SANDBOX_BWRAP"
NOBODY = 65534
START_TIMEOUT_S = 30.0
_OPEN_FILES = 64
_WORKER_SCRIPT = Path(__file__).with_name("_worker.py")
_SANDBOX_SCRIPT = "/ftrl_sandbox_worker.py"
_SANDBOX_SCRATCH = "/tmp"
_WORKER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
# What the dynamic loader and the interpreter need besides the interpreter's own prefix.
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache", "/etc/localtime")
_PLAIN_OFF = (
    "filesystem isolation (tool code can read and write whatever this user can, the repository included)",
    "network isolation (tool code can open connections)",
    "process isolation (tool code can see and signal this user's processes, the pipeline included)",
)


@dataclass(frozen=True)
class Launcher:
    """A way to start workers, and the protections it leaves off (empty for bubblewrap)."""

    kind: Literal["bubblewrap", "plain"]
    off: tuple[str, ...]
    bwrap: str | None = None  # bubblewrap's absolute path (the workers' PATH is minimal)

    def spawn(self, limits: Limits) -> WorkerProcess:
        """Start one worker process; it is usable once ``ready`` has accepted its first message."""
        interpreter = os.path.realpath(sys.executable)
        config: dict[str, object] = {
            "memory_bytes": limits.memory_mb << 20,
            "cpu_time_s": limits.cpu_time_s,
            "output_bytes": limits.output_bytes,
            "max_processes": limits.max_processes,
            "open_files": _OPEN_FILES,
        }
        if self.kind == "bubblewrap":
            config |= {"scratch": _SANDBOX_SCRATCH, "own_user_namespace": True}
            if os.geteuid() == 0:
                config["drop_to_uid"] = NOBODY
            info_pipe = os.pipe()
            argv = _bwrap_argv(self.bwrap or "bwrap", interpreter, limits, info_pipe[1])
            argv += _worker_argv(interpreter, _SANDBOX_SCRIPT, config)
            env = {"PATH": _WORKER_ENV["PATH"]}  # bubblewrap's own environment is readable in /proc/1
            try:
                return WorkerProcess(argv, env=env, cwd=None, scratch_to_remove=None, info_pipe=info_pipe)
            except BaseException:
                os.close(info_pipe[0])
                raise
        scratch = make_scratch()
        config |= {"scratch": scratch, "parent_pid": os.getpid()}
        argv = _worker_argv(interpreter, str(_WORKER_SCRIPT), config)
        env = dict(_WORKER_ENV, HOME=scratch, TMPDIR=scratch)
        return WorkerProcess(argv, env=env, cwd=scratch, scratch_to_remove=scratch)

    @staticmethod
    def ready(worker: WorkerProcess, deadline: float) -> WorkerProcess:
        """Wait for a spawned worker's ready message (killing it if it never comes) and pass on the
        weaker protections it reports."""
        try:
            message = worker.wait_ready(deadline)
        except BaseException:
            worker.kill()
            raise
        for text in message.get("warnings", ()):
            if isinstance(text, str):
                warn_once(f"FTRL sandbox: a worker runs with a weaker protection: {text}.")
        return worker

    def start(self, limits: Limits) -> WorkerProcess:
        return self.ready(self.spawn(limits), time.monotonic() + START_TIMEOUT_S)


def _worker_argv(interpreter: str, script: str, config: dict) -> list[str]:
    # -I: ignore PYTHON* variables, the user site and the script's folder; -B: write no bytecode.
    return [interpreter, "-I", "-B", script, json.dumps(config)]


def _bwrap_argv(bwrap: str, interpreter: str, limits: Limits, info_fd: int) -> list[str]:
    """The bubblewrap command line: a read-only root of only what Python needs, a tmpfs scratch, and
    new namespaces for everything.

    Run by root, bubblewrap works privileged without a user namespace, because a user namespace made
    by root maps the sandbox onto root itself (RLIMIT_NPROC does not bind root, and root-owned files in
    /proc/sys become writable); the worker then drops to ``nobody`` before anything else and makes a
    user namespace of its own. Run by another user, bubblewrap makes the user namespace itself.

    ``--as-pid-1`` makes the worker the namespace's init, without bubblewrap's own init between: the
    outer bubblewrap then reaps the worker itself, where an orphaned init would stay a zombie under a
    container's pid 1 that does not reap.
    """
    argv = [bwrap]
    if os.geteuid() == 0:
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-all", "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    argv += ["--as-pid-1", "--die-with-parent", "--new-session", "--clearenv", "--info-fd", str(info_fd)]
    for key, value in _WORKER_ENV.items():
        argv += ["--setenv", key, value]
    for path in _SYSTEM_PATHS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            argv += ["--ro-bind", path, path]
    made: set[Path] = set()
    for prefix in sorted({Path(sys.base_prefix).resolve(), Path(interpreter).parent.parent}):
        if _under_system_path(prefix):
            continue
        for parent in reversed(prefix.parents):
            # bubblewrap gives the folders it creates for a mount point the modes of the originals
            # (/root is 0700), which would lock nobody out of the interpreter: make them first.
            if parent != Path("/") and parent not in made:
                made.add(parent)
                argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", str(prefix), str(prefix)]
    argv += ["--ro-bind", str(_WORKER_SCRIPT), _SANDBOX_SCRIPT]
    argv += ["--dev", "/dev", "--proc", "/proc"]
    argv += ["--perms", "1777", "--size", str(limits.memory_mb << 20), "--tmpfs", _SANDBOX_SCRATCH]
    argv += ["--chdir", _SANDBOX_SCRATCH, "--"]
    return argv


def _under_system_path(path: Path) -> bool:
    return any(path == Path(p) or Path(p) in path.parents for p in _SYSTEM_PATHS)


# ---- choosing, once -------------------------------------------------------------------------------

_choice_lock = threading.Lock()
_warn_lock = threading.Lock()
_chosen: dict[tuple[str, str | None], Launcher] = {}
_warned: set[str] = set()


def choose_launcher() -> Launcher:
    """Bubblewrap if it is installed, allowed (``FTRL_SANDBOX_BWRAP`` is not ``0``) and starts a
    worker here; otherwise the plain launcher, with one warning that says what is off and why."""
    switch = os.environ.get(ENV_SWITCH, "1").strip()
    bwrap = shutil.which("bwrap")
    key = (switch, bwrap)
    with _choice_lock:
        if key not in _chosen:
            _chosen[key] = _choose(switch, bwrap)
        launcher = _chosen[key]
    return launcher


def _choose(switch: str, bwrap: str | None) -> Launcher:
    if switch == "0":
        reason = f"{ENV_SWITCH}=0 turned bubblewrap off"
    elif bwrap is None:
        reason = "bubblewrap (bwrap) is not installed; install it with `apt-get install bubblewrap`"
    else:
        candidate = Launcher("bubblewrap", (), bwrap)
        try:
            worker = candidate.start(Limits())
        except SandboxError as exc:
            reason = f"bubblewrap failed on this machine: {exc}"
        else:
            worker.kill()
            return candidate
    off = _PLAIN_OFF
    if os.geteuid() == 0:
        off += (
            "unprivileged uid (tool code runs as root)",
            "process-count limit (RLIMIT_NPROC does not bind root)",
        )
    else:
        off += ("per-worker process-count limit (RLIMIT_NPROC counts every process of this user)",)
    warn_once(
        "FTRL sandbox: tool code runs WITHOUT bubblewrap because "
        + reason
        + ". Protections OFF: "
        + "; ".join(off)
        + ". Still on: wall-time, CPU-time, memory, file-size and open-file limits, a scrubbed environment, "
        "a private scratch folder as working directory."
    )
    return Launcher("plain", off)


def warn_once(message: str) -> None:
    """Warn through ``warnings`` and ``logging``, once per process for each distinct message."""
    with _warn_lock:
        if message in _warned:
            return
        _warned.add(message)
    logger.warning(message)
    warnings.warn(message, SandboxWarning, stacklevel=3)
