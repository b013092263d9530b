"""Stateful episodes (τ-bench): a database held inside one worker and changed by the tools it runs."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping

from ._launch import START_TIMEOUT_S
from ._process import WorkerLost, WorkerProcess, WorkerTimeout, encode_json
from ._replies import reply_frame_limit, reply_to_result, timeout_message
from ._types import Limits, SandboxError, SandboxTimeout, ToolResult, canonical_digest

_OPEN_REPLY_BYTES = 1 << 16
_OPEN_ID = 0  # the worker's own ids start at 1


class StatefulSession:
    """One episode's database, living in a worker of its own until ``close()``.

    ``call(name, arguments)`` runs ``name(data, **arguments)``; ``state()`` returns the database as it
    is now and ``digest()`` its ``canonical_digest``. If the worker crashes, times out or hits a limit,
    that call gets an error result and the session is broken: later calls return error results that
    say why, and ``state()``/``digest()`` raise SandboxError (the database can no longer be trusted).
    """

    def __init__(self, worker: WorkerProcess, limits: Limits) -> None:
        self._worker = worker
        self._limits = limits
        self._lock = threading.Lock()
        self._broken: str | None = None
        self._closed = False

    @property
    def broken(self) -> str | None:
        """Why the session is broken, or None while it works."""
        return self._broken

    def call(self, name: str, arguments: dict) -> ToolResult:
        with self._lock:
            self._check_open()
            if self._broken is not None:
                return ToolResult.failure(f"session is broken: {self._broken}")
            if not isinstance(name, str) or not isinstance(arguments, Mapping):
                return ToolResult.failure(
                    "invalid tool call: name must be a str and arguments a JSON object (dict), got "
                    f"{type(name).__name__} and {type(arguments).__name__}"
                )
            request_id = self._worker.new_id()
            message = {"op": "scall", "id": request_id, "name": name, "args": dict(arguments)}
            try:
                payload = encode_json(message)
            except (TypeError, ValueError) as exc:
                return ToolResult.failure(f"invalid tool call: arguments are not JSON-serializable: {exc}")
            deadline = time.monotonic() + self._limits.wall_time_s
            try:
                self._worker.send_raw(payload, deadline)
                frame = self._worker.receive(deadline, reply_frame_limit(self._limits), request_id)
                result = reply_to_result(frame)
            except WorkerTimeout:
                return self._break(timeout_message(self._limits))
            except WorkerLost as exc:
                return self._break(f"sandbox worker lost during the call: {exc}")
            if frame.get("recycle") or self._worker.has_leftover_bytes:
                why = result.error or "processes or bytes left behind"
                self._break(f"a call to {name!r} left the worker untrustworthy ({why})")
            return result

    def state(self) -> dict:
        """The database as it is now (a copy: changing it changes nothing in the session)."""
        with self._lock:
            self._check_open()
            if self._broken is not None:
                raise SandboxError(f"session is broken: {self._broken}")
            request_id = self._worker.new_id()
            deadline = time.monotonic() + START_TIMEOUT_S
            try:
                self._worker.send({"op": "state", "id": request_id}, deadline)
                frame = self._worker.receive(deadline, self._state_frame_limit(), request_id)
            except WorkerTimeout:
                self._break("the worker did not return the state in time")
                raise SandboxTimeout(f"session is broken: {self._broken}") from None
            except WorkerLost as exc:
                self._break(f"sandbox worker lost while returning the state: {exc}")
                raise SandboxError(f"session is broken: {self._broken}") from None
            if frame.get("ok") is not True or not isinstance(frame.get("state"), dict):
                why = frame.get("error", "not a JSON object")
                raise SandboxError(f"cannot read the session state: {why}")
            return frame["state"]

    def digest(self) -> str:
        """``canonical_digest(self.state())``, computed here: the worker is not trusted to hash."""
        return canonical_digest(self.state())

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._worker.kill()

    def __enter__(self) -> StatefulSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_worker"):
            self._worker.kill()

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("Cannot use the session, as it has been closed.")

    def _break(self, reason: str) -> ToolResult:
        self._broken = reason
        self._worker.kill()
        return ToolResult.failure(reason)

    def _state_frame_limit(self) -> int:
        # The worker cannot hold a database larger than its address space; JSON escaping at most x6.
        return 6 * (self._limits.memory_mb << 20)


def session_payload(codes: Mapping[str, str], data: dict) -> bytes:
    """The ``open`` request (id 1) for a session, checked: TypeError names what is wrong."""
    checked = _checked_codes(codes)
    if not isinstance(data, dict):
        raise TypeError(f"session data must be a dict (the domain database), got {type(data).__name__}")
    try:
        return encode_json({"op": "open", "id": _OPEN_ID, "codes": checked, "data": data})
    except (TypeError, ValueError) as exc:
        raise TypeError(f"session data is not JSON-serializable: {exc}") from None


def open_session(worker: WorkerProcess, limits: Limits, payload: bytes) -> StatefulSession:
    """Load a session (``session_payload``) into a freshly started ``worker``; kills it on failure."""
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            worker.send_raw(payload, deadline)
            frame = worker.receive(deadline, _OPEN_REPLY_BYTES, _OPEN_ID)
        except WorkerTimeout:
            raise SandboxTimeout("the sandbox worker did not load the session in time") from None
        except WorkerLost as exc:
            raise SandboxError(f"the sandbox worker failed while loading the session: {exc}") from None
        if frame.get("ok") is not True:
            raise SandboxError(f"the sandbox worker could not load the session: {frame.get('error')!r}")
    except BaseException:
        worker.kill()
        raise
    return StatefulSession(worker, limits)


def _checked_codes(codes: Mapping[str, str]) -> dict[str, list[str]]:
    """Tool name -> [sha256, source], after checking that every name and source is a string."""
    if not isinstance(codes, Mapping):
        raise TypeError(f"session codes must map tool names to Python source, got {type(codes).__name__}")
    checked = {}
    for name, code in codes.items():
        if not isinstance(name, str) or not isinstance(code, str):
            raise TypeError(
                f"session codes must map tool names to Python source; {name!r} maps to {type(code).__name__}"
            )
        checked[name] = [hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest(), code]
    return checked
