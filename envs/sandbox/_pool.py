"""A pool of warm workers that serves single calls, batches and stateful sessions, from any thread."""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import select
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ._launch import START_TIMEOUT_S, choose_launcher
from ._process import WorkerLost, WorkerProcess, WorkerTimeout, encode_json
from ._replies import reply_frame_limit, reply_to_result, timeout_message
from ._session import StatefulSession, open_session, session_payload
from ._types import Limits, SandboxError, ToolCallRequest, ToolResult

logger = logging.getLogger(__name__)

_CODE_CACHE = 256  # compiled tool modules a worker keeps, least recently used dropped first
_SEND_ATTEMPTS = 3  # a request whose worker turns out dead before it ran is sent again this often
_IDLE_CHECK_S = 0.05  # while calls wait, look this often for workers freed elsewhere
_RETRY_START_S = 1.0  # after a worker failed to start, wait this long before trying again


@dataclass(frozen=True)
class _Prepared:
    """A request checked and JSON-encoded once, whichever worker ends up running it."""

    sha: str
    code_json: bytes
    name_json: bytes
    args_json: bytes


@dataclass
class _Flight:
    worker: WorkerProcess
    index: int
    request_id: int
    deadline: float


class SandboxPool:
    """Warm sandbox workers for running untrusted tool code.

    >>> with SandboxPool(workers=1) as pool:  # doctest: +SKIP
    ...     pool.run("def add(a, b):\\n    return a + b", "add", {"a": 1, "b": 2})
    ToolResult(ok=True, content='3', error=None)

    Calls are spread over ``workers`` processes (default: one per usable CPU), each started once and reused;
    a worker that crashes, times out or hits a limit is killed and replaced in the background, and
    only its own call gets an error result. Every method is thread-safe.
    """

    def __init__(self, workers: int | None = None, limits: Limits | None = None) -> None:
        size = _usable_cpus() if workers is None else workers
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"SandboxPool needs workers >= 1, got {workers!r}")
        if limits is not None and not isinstance(limits, Limits):
            raise TypeError(f"limits must be an envs.sandbox.Limits, got {type(limits).__name__}")
        self.limits = limits or Limits()
        self.size = size
        self._launcher = choose_launcher()
        self._cond = threading.Condition()
        self._idle: list[WorkerProcess] = []
        self._alive: set[WorkerProcess] = set()
        self._starting = 0
        self._start_error: SandboxError | None = None
        self._start_failed_at = -math.inf
        self._closed = False
        self._owner_pid = os.getpid()
        self._sessions: weakref.WeakSet[StatefulSession] = weakref.WeakSet()
        # Workers die with the thread that started them (bubblewrap's --die-with-parent is
        # PR_SET_PDEATHSIG, which follows the thread), so one long-lived thread starts them all.
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ftrl-sandbox-spawn")
        try:
            started = self._spawner.submit(self._start_initial).result()
        except BaseException:
            self._spawner.shutdown(wait=False)
            raise
        self._alive.update(started)
        self._idle.extend(started)

    @property
    def protections_off(self) -> tuple[str, ...]:
        """The protections this pool's workers run without (empty inside bubblewrap)."""
        return self._launcher.off

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- public API ----

    def run(self, code: str, name: str, arguments: dict) -> ToolResult:
        """Run ``name(**arguments)`` from the module ``code``."""
        return self.run_batch([ToolCallRequest(code, name, arguments)])[0]

    def run_batch(self, requests: Sequence[ToolCallRequest]) -> list[ToolResult]:
        """Run many calls across the workers at once; results come back in the order of ``requests``."""
        calls = [_prepare(request) for request in requests]
        results: list[ToolResult | None] = [c if isinstance(c, ToolResult) else None for c in calls]
        batch = _Batch(self, calls, results)
        batch.run()
        return [r if r is not None else ToolResult.failure("internal error: no result") for r in results]

    def session(self, codes: Mapping[str, str], data: dict) -> StatefulSession:
        """A stateful episode in a worker of its own: ``data`` is copied into it, and each call runs
        ``tool(data, **arguments)`` there, changing it in place (the caller's ``data`` never changes)."""
        self._check_open()
        payload = session_payload(codes, data)  # bad input fails here, before a worker is started
        worker = self._spawner.submit(self._launcher.start, self.limits).result()
        session = open_session(worker, self.limits, payload)
        with self._cond:
            if self._closed:
                session.close()
                self._check_open()
            self._sessions.add(session)
        return session

    def close(self) -> None:
        """Kill every worker, sessions' included. Calls in flight on other threads get error results."""
        self._close(wait=True)

    def _close(self, wait: bool) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            if os.getpid() != self._owner_pid:  # a forked copy: the workers belong to the parent
                return
            workers = list(self._alive)
            sessions = list(self._sessions)
            self._idle.clear()
            self._cond.notify_all()
        for worker in workers:
            worker.kill()
        for session in sessions:
            session.close()
        self._spawner.shutdown(wait=wait)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._close(wait=False)  # the collector may run in the spawner thread, which cannot join itself

    # ---- workers ----

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("Cannot run tool code, as the sandbox pool has been closed.")
        if os.getpid() != self._owner_pid:
            raise SandboxError(
                f"This SandboxPool belongs to process {self._owner_pid}; a forked child must create its own."
            )

    def _start_initial(self) -> list[WorkerProcess]:
        """Start all workers at once (they boot in parallel) and wait for each to be ready."""
        deadline = time.monotonic() + START_TIMEOUT_S
        spawned: list[WorkerProcess] = []
        try:
            for _ in range(self.size):
                spawned.append(self._launcher.spawn(self.limits))
            return [self._launcher.ready(worker, deadline) for worker in spawned]
        except BaseException:
            for worker in spawned:
                worker.kill()
            raise

    def _start_replacement(self) -> None:
        try:
            worker = self._launcher.start(self.limits)
        except SandboxError as exc:
            logger.error("a sandbox worker failed to start: %s", exc)
            with self._cond:
                self._starting -= 1
                self._start_error = exc
                self._start_failed_at = time.monotonic()
                self._cond.notify_all()
            return
        with self._cond:
            self._starting -= 1
            self._start_error = None
            if self._closed:
                worker.kill()
                return
            self._alive.add(worker)
            self._idle.append(worker)
            self._cond.notify()

    def _top_up(self) -> None:
        """Start replacements for missing workers (with the lock held), pausing after a failed start."""
        if self._closed or time.monotonic() - self._start_failed_at < _RETRY_START_S:
            return
        for _ in range(self.size - len(self._alive) - self._starting):
            self._starting += 1
            self._spawner.submit(self._start_replacement)

    def acquire(self, most: int, block: bool) -> list[WorkerProcess]:
        """Up to ``most`` idle workers; if ``block``, wait for at least one."""
        with self._cond:
            while True:
                self._check_open()
                if self._idle:
                    taken = self._idle[-most:]  # most recently used first: their caches are warm
                    del self._idle[-most:]
                    return taken
                if not block:
                    return []
                if not self._alive and not self._starting and self._start_error is not None:
                    error, self._start_error = self._start_error, None
                    raise SandboxError(f"no sandbox worker is running, and starting one failed: {error}")
                self._top_up()
                self._cond.wait(timeout=_RETRY_START_S)

    def release(self, worker: WorkerProcess) -> None:
        with self._cond:
            if self._closed:
                worker.kill()
                return
            self._idle.append(worker)
            self._cond.notify()

    def replace(self, worker: WorkerProcess) -> None:
        """Kill a worker that failed or can no longer be trusted, and start another in the background."""
        worker.kill()
        with self._cond:
            self._alive.discard(worker)
            self._top_up()


class _Batch:
    """One run_batch call: an event loop over the workers it holds, one request in flight on each."""

    def __init__(self, pool: SandboxPool, calls: list, results: list[ToolResult | None]) -> None:
        self.pool = pool
        self.calls = calls
        self.results = results
        self.todo = deque(i for i, c in enumerate(calls) if isinstance(c, _Prepared))
        self.flights: dict[int, _Flight] = {}
        self.poller = select.poll()
        self.attempts: Counter[int] = Counter()
        self.frame_limit = reply_frame_limit(pool.limits)

    def run(self) -> None:
        try:
            while self.todo or self.flights:
                if self.todo:
                    for worker in self.pool.acquire(len(self.todo), block=not self.flights):
                        self.dispatch(worker)
                if not self.flights:
                    continue
                wait = min(f.deadline for f in self.flights.values()) - time.monotonic()
                if self.todo:
                    wait = min(wait, _IDLE_CHECK_S)
                for fd, _ in self.poller.poll(max(0, math.ceil(wait * 1000))):
                    self.collect(self.flights[fd], final=False)
                now = time.monotonic()
                for flight in [f for f in self.flights.values() if f.deadline <= now]:
                    self.collect(flight, final=True)
        finally:
            for flight in list(self.flights.values()):  # only on an exception from inside the loop
                self.pool.replace(flight.worker)

    def dispatch(self, worker: WorkerProcess) -> None:
        """Send the next waiting call to ``worker``, or give the worker back when none waits."""
        if not self.todo:
            self.pool.release(worker)
            return
        index = self.todo.popleft()
        request_id = worker.new_id()
        payload = _payload(worker, self.calls[index], request_id)
        deadline = time.monotonic() + self.pool.limits.wall_time_s
        try:
            worker.send_raw(payload, deadline)
        except WorkerTimeout:  # it stopped reading: as good as a call that hangs
            self.pool.replace(worker)
            self.results[index] = ToolResult.failure(timeout_message(self.pool.limits))
            return
        except WorkerLost as exc:  # dead before the request reached it: the call never ran
            self.pool.replace(worker)
            self.attempts[index] += 1
            if self.attempts[index] >= _SEND_ATTEMPTS:
                self.results[index] = ToolResult.failure(f"sandbox worker unavailable: {exc}")
            else:
                self.todo.appendleft(index)
            return
        self.flights[worker.rfd] = _Flight(worker, index, request_id, deadline)
        self.poller.register(worker.rfd, select.POLLIN)

    def collect(self, flight: _Flight, final: bool) -> None:
        """Take ``flight``'s reply if it is complete; at its deadline, kill the worker instead."""
        worker = flight.worker
        try:
            still_open = worker.read_available(self.frame_limit)
            frame = worker.take_frame(flight.request_id)
            if frame is None:
                if not still_open:
                    raise WorkerLost(f"the worker {worker.exit_description()}")
                if final:
                    self.finish(flight, ToolResult.failure(timeout_message(self.pool.limits)), healthy=False)
                return
            result = reply_to_result(frame)
        except WorkerLost as exc:
            failure = ToolResult.failure(f"sandbox worker lost during the call: {exc}")
            self.finish(flight, failure, healthy=False)
            return
        healthy = still_open and not frame.get("recycle") and not worker.has_leftover_bytes
        self.finish(flight, result, healthy)

    def finish(self, flight: _Flight, result: ToolResult, healthy: bool) -> None:
        self.poller.unregister(flight.worker.rfd)
        del self.flights[flight.worker.rfd]
        self.results[flight.index] = result
        if healthy:
            self.dispatch(flight.worker)
        else:
            self.pool.replace(flight.worker)


def _prepare(request: object) -> _Prepared | ToolResult:
    """Check one request and encode it once; a bad request becomes that call's error result."""
    if not isinstance(request, ToolCallRequest):
        kind = type(request).__name__
        return ToolResult.failure(f"invalid tool call: expected a ToolCallRequest, got {kind}")
    problems = []
    if not isinstance(request.code, str):
        problems.append(f"code must be a str, got {type(request.code).__name__}")
    if not isinstance(request.name, str):
        problems.append(f"name must be a str, got {type(request.name).__name__}")
    if not isinstance(request.arguments, Mapping):
        problems.append(f"arguments must be a JSON object (dict), got {type(request.arguments).__name__}")
    if problems:
        return ToolResult.failure("invalid tool call: " + "; ".join(problems))
    try:
        args_json = encode_json(dict(request.arguments))
    except (TypeError, ValueError) as exc:
        return ToolResult.failure(f"invalid tool call: arguments are not JSON-serializable: {exc}")
    sha, code_json = _encode_code(request.code)
    return _Prepared(sha=sha, code_json=code_json, name_json=encode_json(request.name), args_json=args_json)


@functools.lru_cache(maxsize=1024)
def _encode_code(code: str) -> tuple[str, bytes]:
    """sha256 and JSON of a tool module, once per distinct module (rewards call the same tools often)."""
    return hashlib.sha256(code.encode("utf-8", "surrogatepass")).hexdigest(), encode_json(code)


def _usable_cpus() -> int:
    """The CPUs this process may run on (a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _payload(worker: WorkerProcess, call: _Prepared, request_id: int) -> bytes:
    """The call's request for ``worker``: the code goes along only if the worker lacks it, and the
    least recently used modules are dropped to keep the worker's cache bounded."""
    parts = [
        b'{"op":"call","id":%d,"sha":"%s","name":%s,"args":%s'
        % (request_id, call.sha.encode(), call.name_json, call.args_json)
    ]
    if call.sha in worker.known:
        worker.known.move_to_end(call.sha)
    else:
        parts.append(b',"code":' + call.code_json)
        worker.known[call.sha] = None
        dropped = []
        while len(worker.known) > _CODE_CACHE:
            dropped.append(worker.known.popitem(last=False)[0])
        if dropped:
            parts.append(b',"drop":' + encode_json(dropped))
    parts.append(b"}")
    return b"".join(parts)
