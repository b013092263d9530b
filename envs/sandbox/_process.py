"""One worker process seen from the parent: start it, exchange frames under a deadline, kill it.

Everything read from a worker is untrusted (tool code shares its process): frames are length-checked
before they are buffered, parsed as JSON only, and checked for shape; anything else is a protocol
violation that costs the worker its life, never the parent anything.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence

from ._types import SandboxError, SandboxTimeout
from ._worker import HEADER

_READ_CHUNK = 1 << 20
_STDERR_TAIL = 2000


class WorkerLost(SandboxError):
    """The worker died, or broke the protocol, while the parent waited for it."""


class WorkerTimeout(SandboxTimeout):
    """The deadline passed before the worker answered."""


class WorkerProcess:
    """A started worker: its process, the two pipe ends, and what the parent knows of its state."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: str | None,
        scratch_to_remove: str | None,
        info_pipe: tuple[int, int] | None = None,
    ) -> None:
        """``info_pipe``: the two ends of a pipe whose write end is bubblewrap's ``--info-fd``."""
        self._stderr = tempfile.TemporaryFile()
        self._scratch_to_remove = scratch_to_remove
        self._info_fd = info_pipe[0] if info_pipe else None
        self.sandbox_init_pid: int | None = None
        try:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=env,
                cwd=cwd,
                start_new_session=True,  # one process group to kill, out of the parent's terminal
                pass_fds=info_pipe[1:] if info_pipe else (),
            )
        finally:
            if info_pipe:
                os.close(info_pipe[1])
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        os.set_blocking(self.wfd, False)
        os.set_blocking(self.rfd, False)
        self._buffer = bytearray()
        self._next_id = 0
        self.known: OrderedDict[str, None] = OrderedDict()  # code sha256s the worker has, oldest first
        self.alive = True
        self._owner_pid = os.getpid()

    # ---- start-up ----

    def wait_ready(self, deadline: float) -> dict:
        """The worker's first frame; a worker that dies first reports what it wrote to stderr."""
        try:
            frame = self.receive(deadline, max_bytes=1 << 16)
        except WorkerLost as exc:
            raise SandboxError(f"sandbox worker failed to start ({exc}): {self.stderr_tail()}") from None
        except WorkerTimeout:
            raise SandboxTimeout(f"sandbox worker did not start in time: {self.stderr_tail()}") from None
        if frame.get("ready") is not True:
            raise SandboxError(f"sandbox worker sent {frame!r} instead of its ready message")
        self._read_info()
        return frame

    def _read_info(self) -> None:
        """bubblewrap's ``{"child-pid": N}``: the sandbox's init, seen from here (written before the
        worker ran, so complete by now)."""
        if self._info_fd is None:
            return
        try:
            info = json.loads(os.read(self._info_fd, 1 << 16) or b"{}")
            pid = info.get("child-pid") if isinstance(info, dict) else None
            self.sandbox_init_pid = pid if isinstance(pid, int) and pid > 1 else None
        except (OSError, ValueError):
            self.sandbox_init_pid = None
        finally:
            os.close(self._info_fd)
            self._info_fd = None

    def stderr_tail(self) -> str:
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - _STDERR_TAIL))
        text = self._stderr.read().decode("utf-8", "replace").strip()
        return text or "(no output)"

    # ---- frames ----

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def send(self, message: dict, deadline: float) -> None:
        """Write one frame (TypeError or ValueError if ``message`` is not JSON: nothing is sent)."""
        self.send_raw(encode_json(message), deadline)

    def send_raw(self, payload: bytes, deadline: float) -> None:
        """Write one frame of encoded JSON. Raises WorkerLost when the worker is gone (the request
        never ran) and WorkerTimeout when it stops reading."""
        view = memoryview(HEADER.pack(len(payload)) + payload)
        while view:
            try:
                view = view[os.write(self.wfd, view) :]
            except BlockingIOError:
                self._wait(self.wfd, select.POLLOUT, deadline)
            except OSError:  # EPIPE: nobody reads any more
                raise WorkerLost(f"the worker {self.exit_description()}") from None

    def read_available(self, max_bytes: int) -> bool:
        """Move what the pipe holds into the buffer; False at end of file. Raises WorkerLost when a
        frame announces more than ``max_bytes``."""
        while True:
            try:
                chunk = os.read(self.rfd, _READ_CHUNK)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self._buffer += chunk
            if len(self._buffer) >= HEADER.size:
                (size,) = HEADER.unpack_from(self._buffer)
                if size > max_bytes:
                    raise WorkerLost(f"protocol violation: a frame of {size} bytes (at most {max_bytes})")

    def take_frame(self, expected_id: int | None) -> dict | None:
        """The next complete frame from the buffer, or None if it has not all arrived."""
        if len(self._buffer) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self._buffer)
        end = HEADER.size + size
        if len(self._buffer) < end:
            return None
        raw = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        try:
            frame = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WorkerLost(f"protocol violation: an unreadable frame ({exc})") from None
        if not isinstance(frame, dict):
            raise WorkerLost("protocol violation: a frame that is not a JSON object")
        if expected_id is not None and frame.get("id") != expected_id:
            raise WorkerLost(f"protocol violation: reply id {frame.get('id')!r}, expected {expected_id}")
        return frame

    @property
    def has_leftover_bytes(self) -> bool:
        """Bytes beyond the reply: someone besides the worker loop wrote to the protocol pipe."""
        if self._buffer:
            return True
        return bool(select.select([self.rfd], [], [], 0)[0])

    def receive(self, deadline: float, max_bytes: int, expected_id: int | None = None) -> dict:
        """Wait for one complete frame until ``deadline`` (time.monotonic())."""
        still_open = True
        while True:
            frame = self.take_frame(expected_id)
            if frame is not None:
                return frame
            if not still_open:
                raise WorkerLost(f"the worker {self.exit_description()}")
            self._wait(self.rfd, select.POLLIN, deadline)
            still_open = self.read_available(max_bytes)

    def _wait(self, fd: int, event: int, deadline: float) -> None:
        poller = select.poll()
        poller.register(fd, event)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerTimeout("deadline passed")
            if poller.poll(max(1, int(remaining * 1000))):
                return

    # ---- the end ----

    def exit_description(self) -> str:
        """How the worker ended, from its exit status (bubblewrap reports a signal as 128 + number)."""
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        sandboxed = self.sandbox_init_pid is not None
        signum = -code if code < 0 else code - 128 if sandboxed and code > 128 else 0
        if signum:
            try:
                return f"was killed by signal {signal.Signals(signum).name}"
            except ValueError:
                return f"was killed by signal {signum}"
        return f"exited with status {code}"

    def kill(self) -> None:
        """Kill the worker and everything it started, and reap what this process may reap.

        Inside bubblewrap, killing the sandbox's init (pid 1 of its pid namespace) makes the kernel
        kill every process in the namespace, and the outer bubblewrap, its parent, reaps it and exits;
        killing the outer one first would orphan the init to a pid 1 that, in containers, may never
        reap it. The whole process group is killed as well, for the plain launcher and as a backstop.
        """
        if not self.alive or os.getpid() != self._owner_pid:  # a forked copy must not kill the parent's
            return
        self.alive = False
        if self._info_fd is not None:
            self._read_info()
        if self.sandbox_init_pid is not None and self.proc.poll() is None:
            # While the outer bubblewrap lives, the init is its child (or zombie): the pid is not reused.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.sandbox_init_pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=1.0)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5.0)
        for stream in (self.proc.stdin, self.proc.stdout, self._stderr):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        if self._scratch_to_remove:
            shutil.rmtree(self._scratch_to_remove, ignore_errors=True)


def encode_json(obj: object) -> bytes:
    """Compact UTF-8 JSON; strings with lone surrogates (which UTF-8 cannot carry) go escaped."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def make_scratch() -> str:
    """A private scratch folder for a worker that has no tmpfs of its own (the plain launcher)."""
    path = tempfile.mkdtemp(prefix="ftrl-sandbox-")
    os.chmod(path, 0o700)
    return path
