"""The sandbox worker: a long-lived process that runs tool calls for ``envs.sandbox`` one at a time.

This file is executed as a script by the base interpreter (``python -I -B _worker.py CONFIG``), inside
bubblewrap where available, and must stay stdlib-only: the sandbox binds the interpreter's prefix and
this one file, never the pipeline's virtual environment. The parent imports it only for ``HEADER``, so
that both ends of the pipe share one definition of the wire format.

Wire format: frames of a 4-byte big-endian length and a UTF-8 JSON object, requests on the worker's
stdin, replies on its stdout (moved to private descriptors before any tool code runs). JSON, not
pickle, in both directions: the parent must never unpickle bytes that tool code could have written.

Start-up order matters: drop root (when bubblewrap ran privileged), enter a user namespace of our own
(so RLIMIT_NPROC counts this worker's tasks only), import common modules, set the rlimits, and only
then say ``ready``. Everything after ``ready`` may run hostile code, so the worker keeps private
references to what it needs and the parent treats every reply as untrusted input.
"""

from __future__ import annotations

import builtins
import ctypes
import io
import json
import math
import os
import resource
import shutil
import signal
import struct
import sys
import time

HEADER = struct.Struct(">I")

# Modules that LLM-written tools import most often: importing them once at start-up keeps calls fast
# and keeps them importable after RLIMIT_AS is set.
_PRELOAD = (
    "base64",
    "bisect",
    "calendar",
    "collections",
    "copy",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "itertools",
    "operator",
    "random",
    "re",
    "statistics",
    "string",
    "textwrap",
    "typing",
    "unicodedata",
)
_ERROR_CHARS = 4000
_CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Private references: tool code that rebinds json.dumps or os.write must not break the protocol.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_dumps_ascii = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
_loads = json.loads
_tool_dumps = json.JSONEncoder(ensure_ascii=False).encode
_write = os.write
_getrusage = resource.getrusage
_setrlimit = resource.setrlimit


class _CpuTimeExceeded(BaseException):
    """Raised from the SIGXCPU handler; a BaseException so that ``except Exception`` in tools lets it pass."""


def _on_sigxcpu(signum: int, frame: object) -> None:
    raise _CpuTimeExceeded


# ---- start-up -----------------------------------------------------------------------------------


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _drop_root(uid: int) -> None:
    """Become ``uid`` for good: bubblewrap ran privileged only because the interpreter lives under a
    directory that the unprivileged uid cannot traverse. Changing uid clears every capability."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    # A uid change makes the process non-dumpable, which would make /proc/self/uid_map root's file.
    _check(_libc().prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def _enter_own_user_namespace() -> None:
    """A user namespace of our own, mapping only our uid: RLIMIT_NPROC then counts this worker's tasks
    alone (not every process of the uid on the machine), and the capabilities that come with a new
    namespace are dropped at once."""
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(_CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(libc.capset(header, data), "capset")


def _die_with_parent(parent_pid: int) -> None:
    """Without bubblewrap's --die-with-parent, ask the kernel directly; exit if the parent is already gone."""
    _check(_libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent_pid:
        os._exit(0)


def _count_own_tasks() -> int:
    """Tasks of our uid visible in /proc: what RLIMIT_NPROC counts when there is no namespace of our own."""
    uid = str(os.getuid())
    count = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if fields["Uid"].split()[0] == uid:
                count += int(fields.get("Threads", "1"))
        except (OSError, KeyError, ValueError):
            continue
    return count


def _set_limits(config: dict, own_namespace: bool) -> None:
    memory = config["memory_bytes"]
    base = 1 if own_namespace else _count_own_tasks()
    _setrlimit(resource.RLIMIT_AS, (memory, memory))
    _setrlimit(resource.RLIMIT_FSIZE, (memory, memory))
    _setrlimit(resource.RLIMIT_NOFILE, (config["open_files"], config["open_files"]))
    _setrlimit(resource.RLIMIT_NPROC, (base + config["max_processes"],) * 2)
    _setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write then fails with EFBIG instead


def _private_pipes() -> tuple[io.BufferedReader, int]:
    """Move the protocol off descriptors 0 and 1, so that print() and input() in tools cannot touch it."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    _to_devnull(0, 1)
    return open(in_fd, "rb", buffering=1 << 16), out_fd


def _to_devnull(*fds: int) -> None:
    """sys.stdin/stdout/stderr keep their descriptors, which now lead nowhere."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in fds:
        os.dup2(null, fd)
    os.close(null)


# ---- protocol -----------------------------------------------------------------------------------


def _send(out_fd: int, message: dict) -> None:
    try:
        payload = _dumps(message).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from tool output: escape them
        payload = _dumps_ascii(message).encode("ascii")
    view = memoryview(HEADER.pack(len(payload)) + payload)
    while view:
        view = view[_write(out_fd, view) :]


def _receive(reader: io.BufferedReader) -> dict | None:
    head = reader.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    return _loads(reader.read(size))


# ---- running tools ------------------------------------------------------------------------------


class _Worker:
    """The state of one worker: its limits, compiled code by sha256, and a session's database."""

    def __init__(self, config: dict) -> None:
        self.cpu_time_s: float = config["cpu_time_s"]
        self.output_bytes: int = config["output_bytes"]
        self.memory_mb: int = config["memory_bytes"] >> 20
        self.check_leftovers: bool = config["max_processes"] > 0
        self.scratch: str = config["scratch"]
        self.builtins = dict(builtins.__dict__)
        self.compiled: dict[str, object] = {}  # sha256 -> code object, or source not yet compiled
        self.session_tools: dict[str, str] = {}  # tool name -> sha256
        self.session_data: object = None

    def handle(self, request: dict) -> dict:
        op = request["op"]
        for sha in request.get("drop", ()):
            self.compiled.pop(sha, None)
        if op == "call":
            if "code" in request:
                self.compiled[request["sha"]] = request["code"]
            reply = self.call(request["sha"], request["name"], request["args"], ())
        elif op == "scall":
            sha = self.session_tools.get(request["name"])
            if sha is None:
                reply = {"ok": False, "error": f"unknown tool {request['name']!r}"}
            else:
                reply = self.call(sha, request["name"], request["args"], (self.session_data,))
        elif op == "open":
            self.session_tools = {name: sha for name, (sha, _) in request["codes"].items()}
            self.compiled.update(request["codes"].values())
            self.session_data = request["data"]
            reply = {"ok": True}
        elif op == "state":
            reply = {"ok": True, "state": self.session_data}
        else:
            reply = {"ok": False, "error": f"unknown operation {op!r}"}
        reply["id"] = request["id"]
        return reply

    def call(self, sha: str, name: str, args: dict, leading: tuple) -> dict:
        """Run one tool in a fresh module namespace; the reply says ``recycle`` when this worker can no
        longer be trusted to serve further calls (limits hit, leftovers it could not clean up)."""
        reply = self._run(sha, name, args, leading)
        if self._tidy() or reply.pop("tainted", False):
            reply["recycle"] = True
        return reply

    def _run(self, sha: str, name: str, args: dict, leading: tuple) -> dict:
        try:
            compiled = self.compiled[sha]
            if isinstance(compiled, str):
                compiled = self.compiled[sha] = compile(compiled, "<tool>", "exec", dont_inherit=True)
            namespace = {"__name__": "__tool__", "__builtins__": dict(self.builtins)}
            self._cpu_limit(on=True)
            try:
                exec(compiled, namespace)
                function = namespace.get(name)
                if not callable(function):
                    return {"ok": False, "error": f"unknown tool {name!r}"}
                content = _as_text(function(*leading, **args))
            finally:
                self._cpu_limit(on=False)
        except _CpuTimeExceeded:
            error = f"CPU-time limit of {self.cpu_time_s:g} s exceeded"
            return {"ok": False, "error": error, "tainted": True}
        except MemoryError as exc:
            error = _describe(exc, f"memory limit of {self.memory_mb} MB exceeded")
            return {"ok": False, "error": error, "tainted": True}
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: still only this tool's failure
            return {"ok": False, "error": _describe(exc)}
        size = len(content) if content.isascii() else len(content.encode("utf-8", "surrogatepass"))
        if size > self.output_bytes:
            return {"ok": False, "error": f"output of {size} bytes is over the limit of {self.output_bytes}"}
        return {"ok": True, "content": content}

    def _cpu_limit(self, on: bool) -> None:
        """RLIMIT_CPU counts the whole life of the process, so each call gets "used so far + budget".
        The hard limit stays unlimited so that the next call can move the soft one; a tool that lifts
        its own soft limit still meets the parent's wall-time kill."""
        if on:
            usage = _getrusage(resource.RUSAGE_SELF)
            soft = math.ceil(usage.ru_utime + usage.ru_stime + self.cpu_time_s)
        else:
            soft = resource.RLIM_INFINITY
        _setrlimit(resource.RLIMIT_CPU, (soft, resource.RLIM_INFINITY))

    def _tidy(self) -> bool:
        """Undo what a call may have left behind; True when the worker should be replaced instead."""
        sys.stdin, sys.stdout, sys.stderr = sys.__stdin__, sys.__stdout__, sys.__stderr__
        try:
            os.chdir(self.scratch)
            for entry in os.scandir(self.scratch):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        except OSError:
            return True
        if self.check_leftovers:
            return len(os.listdir("/proc/self/task")) > 1 or _has_children()
        return False


def _has_children() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return False
    return True


def _as_text(value: object) -> str:
    """The paper's rule: dicts and lists as JSON (non-ASCII kept), everything else through str()."""
    if isinstance(value, (dict, list)):
        try:
            return _tool_dumps(value)
        except (TypeError, ValueError):  # sets inside, circular references: fall back to str()
            pass
    return str(value)


def _describe(exc: BaseException, default: str = "") -> str:
    """``ExcType: message``, the form the reward code expects; never raises, never grows unbounded."""
    try:
        message = str(exc) or default
    except BaseException:  # a tool's exception whose __str__ fails
        message = "<unprintable message>"
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    if len(text) > _ERROR_CHARS:
        text = text[:_ERROR_CHARS] + f"... ({len(text) - _ERROR_CHARS} more characters)"
    return text


# ---- main -------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    config = _loads(argv[1])
    started = time.monotonic()
    if config.get("parent_pid"):
        _die_with_parent(config["parent_pid"])
    if config.get("drop_to_uid") is not None:
        _drop_root(config["drop_to_uid"])
    own_namespace = False
    warnings: list[str] = []
    if config.get("own_user_namespace"):
        try:
            _enter_own_user_namespace()
            own_namespace = True
        except OSError as exc:
            warnings.append(f"no user namespace of its own ({exc}): the process-count limit is per uid")
    for name in _PRELOAD:
        __import__(name)
    os.chdir(config["scratch"])
    reader, out_fd = _private_pipes()
    _set_limits(config, own_namespace)
    worker = _Worker(config)
    pid = os.getpid()
    _send(out_fd, {"ready": True, "warnings": warnings, "startup_s": time.monotonic() - started})
    _to_devnull(2)  # start-up errors went to the parent; tool noise does not
    while True:
        request = _receive(reader)
        if request is None:
            return 0
        reply = worker.handle(request)
        if os.getpid() != pid:  # a child the tool forked came back here: it must not answer
            os._exit(0)
        try:
            _send(out_fd, reply)
        except (TypeError, ValueError) as exc:  # a session database that JSON cannot hold
            _send(out_fd, {"id": request["id"], "ok": False, "error": f"not JSON-serializable: {exc}"})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
