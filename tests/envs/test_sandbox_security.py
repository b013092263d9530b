"""Security tests: each forbidden action fails inside the sandbox, the limits hold, and neither the
pipeline process nor the other calls of the same batch notice anything.

Every hostile call runs in a batch between ordinary calls (on a pool of two workers, so they run
side by side), and the pool must serve an ordinary call afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from envs.sandbox import Limits, SandboxPool, ToolCallRequest, ToolResult

REPO = Path(__file__).resolve().parents[2]
SECRET = "FTRL_TEST_SECRET"
SECRET_VALUE = "s3cret-value-that-must-not-leak"
WALL = 1.0
MARGIN = 2.0  # killing a worker and answering takes milliseconds; this is a generous upper bound
NEIGHBOUR = "def neighbour(i):\n    return {'i': i, 'square': i * i}\n"


@pytest.fixture(scope="module")
def pool():
    os.environ[SECRET] = SECRET_VALUE  # set in the parent before any worker starts
    try:
        limits = Limits(wall_time_s=WALL, cpu_time_s=5, memory_mb=256, output_bytes=10_000)
        with SandboxPool(workers=2, limits=limits) as p:
            if p.protections_off:
                pytest.skip(
                    "bubblewrap is not usable here (apt-get install bubblewrap): "
                    + "; ".join(p.protections_off)
                )
            yield p
    finally:
        del os.environ[SECRET]


@pytest.fixture(scope="module")
def roomy_pool(pool):
    """For limits other than wall time: generous wall time, so that a loaded machine cannot turn a
    memory or file-size error into a timeout."""
    with SandboxPool(workers=2, limits=Limits(wall_time_s=30, cpu_time_s=30, memory_mb=256)) as p:
        yield p


def contained(pool: SandboxPool, code: str, arguments: dict | None = None) -> ToolResult:
    """Run ``code``'s ``f`` amid ordinary calls; check those and a later call, return f's result."""
    before = [ToolCallRequest(NEIGHBOUR, "neighbour", {"i": i}) for i in range(3)]
    after = [ToolCallRequest(NEIGHBOUR, "neighbour", {"i": i}) for i in range(3, 6)]
    results = pool.run_batch([*before, ToolCallRequest(code, "f", arguments or {}), *after])
    neighbours = results[:3] + results[4:]
    assert neighbours == [ToolResult(True, json.dumps({"i": i, "square": i * i})) for i in range(6)]
    assert pool.run(NEIGHBOUR, "neighbour", {"i": 9}) == ToolResult(True, '{"i": 9, "square": 81}')
    return results[3]


# ---- network ---------------------------------------------------------------------------------------


def test_no_network_connection_to_the_outside(pool):
    code = (
        "import socket\n"
        "def f():\n"
        "    socket.create_connection(('1.1.1.1', 80), timeout=2)\n"
        "    return 'connected'\n"
    )
    assert contained(pool, code) == ToolResult.failure("OSError: [Errno 101] Network is unreachable")


def test_no_connection_to_a_server_of_the_pipeline_on_loopback(pool):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (
            "import socket\n"
            "def f(port):\n"
            "    socket.create_connection(('127.0.0.1', port), timeout=2)\n"
            "    return 'connected'\n"
        )
        result = contained(pool, code, {"port": port})
        server.settimeout(0)
        with pytest.raises(BlockingIOError):
            server.accept()
    assert not result.ok and result.error.startswith(("ConnectionRefusedError", "OSError"))


# ---- files -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", [str(REPO / "sandbox-escape.txt"), "/sandbox-escape.txt", "/usr/escape.txt"]
)
def test_writing_outside_the_scratch_folder_fails(pool, target):
    code = "def f(path):\n    open(path, 'w').write('x')\n    return 'written'\n"
    result = contained(pool, code, {"path": target})
    assert not result.ok and result.error.startswith(("FileNotFoundError", "PermissionError", "OSError"))
    assert not Path(target).exists()


def test_writing_in_the_scratch_folder_works(pool):
    code = (
        "import os, tempfile\n"
        "def f():\n"
        "    with open('notes.txt', 'w') as fh:\n"
        "        fh.write('hello')\n"
        "    with tempfile.NamedTemporaryFile('w', delete=False) as fh:\n"
        "        fh.write('tmp')\n"
        "    return [os.getcwd(), open(os.path.abspath('notes.txt')).read(), open(fh.name).read()]\n"
    )
    assert contained(pool, code) == ToolResult(True, '["/tmp", "hello", "tmp"]')


def test_the_repository_is_not_readable(pool):
    target = REPO / "pyproject.toml"
    assert target.exists()
    code = "def f(path):\n    return open(path).read()\n"
    assert contained(pool, code, {"path": str(target)}) == ToolResult.failure(
        f"FileNotFoundError: [Errno 2] No such file or directory: '{target}'"
    )
    listing = contained(pool, "import os\ndef f():\n    return sorted(os.listdir('/'))\n")
    assert set(json.loads(listing.content)) <= {
        "bin",
        "dev",
        "etc",
        "ftrl_sandbox_worker.py",
        "lib",
        "lib32",
        "lib64",
        "proc",
        "root",
        "sbin",
        "tmp",
        "usr",
    }


def test_a_huge_file_in_scratch_is_stopped(roomy_pool):
    code = (
        "def f():\n"
        "    with open('big', 'wb') as fh:\n"
        "        while True:\n"
        "            fh.write(b'x' * 1_000_000)\n"
    )
    result = contained(roomy_pool, code)
    assert result.error in (
        "OSError: [Errno 27] File too large",
        "OSError: [Errno 28] No space left on device",
    )


# ---- environment and identity ----------------------------------------------------------------------


def test_the_pipeline_environment_is_not_visible(pool):
    assert os.environ[SECRET] == SECRET_VALUE
    environment = json.loads(contained(pool, "import os\ndef f():\n    return dict(os.environ)\n").content)
    assert SECRET not in environment and SECRET_VALUE not in json.dumps(environment)
    assert set(environment) <= {"PATH", "HOME", "TMPDIR", "LANG", "PWD"}
    code = (
        "def f():\n"
        "    found = []\n"
        "    for pid in ('1', 'self'):\n"
        "        try:\n"
        "            found.append(open(f'/proc/{pid}/environ', 'rb').read().decode('latin-1'))\n"
        "        except OSError as exc:\n"
        "            found.append(type(exc).__name__)\n"
        "    return found\n"
    )
    assert SECRET_VALUE not in contained(pool, code).content


def test_tool_code_runs_as_nobody_without_capabilities(pool):
    code = (
        "import os\n"
        "def f():\n"
        "    status = dict(line.split(':', 1) for line in open('/proc/self/status'))\n"
        "    caps, no_new_privileges = status['CapEff'].strip(), status['NoNewPrivs'].strip()\n"
        "    return [os.getuid(), os.geteuid(), os.getgid(), caps, no_new_privileges]\n"
    )
    assert contained(pool, code) == ToolResult(True, '[65534, 65534, 65534, "0000000000000000", "1"]')


# ---- signals ---------------------------------------------------------------------------------------


@pytest.fixture
def bystander():
    """A process of the pipeline's that tool code tries to kill by its real pid."""
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize(
    "attack",
    [
        "os.kill(parent, signal.SIGKILL)",
        "os.kill(bystander, signal.SIGKILL)",
        "os.killpg(os.getpgid(parent), signal.SIGKILL)",
        "os.killpg(bystander, signal.SIGKILL)",
    ],
)
def test_the_pipelines_processes_cannot_be_found_to_signal(pool, bystander, attack):
    code = f"import os, signal\ndef f(parent, bystander):\n    {attack}\n    return 'sent'\n"
    result = contained(pool, code, {"parent": os.getpid(), "bystander": bystander.pid})
    assert result == ToolResult.failure("ProcessLookupError: [Errno 3] No such process")
    assert bystander.poll() is None


@pytest.mark.parametrize(
    "attack",
    [
        "os.kill(os.getppid(), signal.SIGKILL)",
        "os.kill(1, signal.SIGKILL)",
        "os.kill(1, signal.SIGTERM)",
        "os.kill(-1, signal.SIGKILL)",
        "os.killpg(0, signal.SIGKILL)",
        "os.kill(os.getpid(), signal.SIGKILL)",
    ],
)
def test_signals_inside_the_sandbox_cost_at_most_that_call(pool, bystander, attack):
    """The worker is pid 1 of its namespace: signals it sends itself are dropped or kill only it."""
    result = contained(pool, f"import os, signal\ndef f():\n    {attack}\n    return 'sent'\n")
    assert result in (
        ToolResult(True, "sent"),
        ToolResult.failure("ProcessLookupError: [Errno 3] No such process"),
    )
    assert bystander.poll() is None


# ---- crashes, hangs and limits ---------------------------------------------------------------------


def test_an_infinite_loop_ends_within_the_wall_time_limit(pool):
    started = time.monotonic()
    result = contained(pool, "def f():\n    while True:\n        pass\n")
    assert result == ToolResult.failure(f"wall-time limit of {WALL:g} s exceeded (the worker was killed)")
    assert time.monotonic() - started < WALL + MARGIN


def test_sleeping_past_the_limit_is_a_timeout_too(pool):
    started = time.monotonic()
    result = contained(pool, "import time\ndef f():\n    time.sleep(60)\n")
    assert "wall-time limit of 1 s exceeded" in result.error
    assert time.monotonic() - started < WALL + MARGIN


def test_cpu_time_limit():
    """Stopped by RLIMIT_CPU (whole seconds, so within 2 s of CPU), well before the wall-time limit."""
    with SandboxPool(workers=1, limits=Limits(wall_time_s=30, cpu_time_s=1)) as cpu_pool:
        result = cpu_pool.run("def f():\n    while True:\n        pass\n", "f", {})
        assert result == ToolResult.failure("CPU-time limit of 1 s exceeded")
        assert cpu_pool.run(NEIGHBOUR, "neighbour", {"i": 2}).ok


def test_os_exit_is_an_error_result(pool):
    result = contained(pool, "import os\ndef f():\n    os._exit(3)\n")
    assert result == ToolResult.failure(
        "sandbox worker lost during the call: the worker exited with status 3"
    )


def test_a_segfault_is_an_error_result(pool):
    result = contained(pool, "import ctypes\ndef f():\n    return ctypes.string_at(0)\n")
    assert result == ToolResult.failure(
        "sandbox worker lost during the call: the worker was killed by signal SIGSEGV"
    )


def _task_count() -> int:
    return sum(1 for pid in os.listdir("/proc") if pid.isdigit())


@pytest.mark.parametrize(
    "code",
    [
        "import os\ndef f():\n    while True:\n        os.fork()\n",
        "import subprocess\ndef f():\n    return subprocess.run(['true']).returncode\n",
        "import threading\ndef f():\n    threading.Thread(target=print).start()\n",
    ],
)
def test_fork_bombs_and_new_processes_fail_and_the_machine_is_fine(pool, code):
    tasks_before = _task_count()
    result = contained(pool, code)
    assert result.error in (
        "BlockingIOError: [Errno 11] Resource temporarily unavailable",
        "RuntimeError: can't start new thread",
    )
    assert _task_count() < tasks_before + 10


def test_max_processes_allows_that_many_and_replaces_a_worker_with_leftovers():
    threads = (
        "import threading\n"
        "def f():\n"
        "    pair = [threading.Thread(target=sum, args=([1],)) for _ in range(2)]\n"
        "    for thread in pair:\n"
        "        thread.start()\n"
        "    for thread in pair:\n"
        "        thread.join()\n"
        "    return len(pair)\n"
    )
    bomb = (
        "import os, time\ndef f():\n    while True:\n        if os.fork() == 0:\n            time.sleep(60)\n"
    )
    tasks_before = _task_count()
    with SandboxPool(workers=1, limits=Limits(wall_time_s=WALL, max_processes=2)) as small:
        assert small.run(threads, "f", {}) == ToolResult(True, "2")
        assert small.run(bomb, "f", {}) == ToolResult.failure(
            "BlockingIOError: [Errno 11] Resource temporarily unavailable"
        )
        # The two sleepers made the worker untrustworthy: it was replaced, and they died with it.
        assert small.run(threads, "f", {}) == ToolResult(True, "2")
        assert _task_count() < tasks_before + 5


@pytest.mark.parametrize(
    "code",
    [
        "def f():\n    return len(bytearray(10**10))\n",
        "def f():\n    blocks = []\n    while True:\n        blocks.append(bytearray(10**6))\n",
        "def f():\n    return len('x' * 10**10)\n",
    ],
)
def test_memory_blow_ups_are_stopped(roomy_pool, code):
    assert contained(roomy_pool, code) == ToolResult.failure("MemoryError: memory limit of 256 MB exceeded")


def test_huge_output_is_refused(pool):
    assert contained(pool, "def f():\n    return 'x' * 10**6\n") == ToolResult.failure(
        "output of 1000000 bytes is over the limit of 10000"
    )
    printed = "def f():\n    for _ in range(20000):\n        print('x' * 100)\n    return 'printed'\n"
    assert contained(pool, printed) == ToolResult(True, "printed")  # stdout goes nowhere


@pytest.mark.parametrize(
    "code",
    [
        # garbage, and a frame that claims to be 4 GiB, on every descriptor the protocol might use
        "import os\ndef f():\n    for fd in range(3, 12):\n        try:\n"
        "            os.write(fd, b'\\xff\\xff\\xff\\xffgarbage')\n"
        "        except OSError:\n            pass\n",
        # a forged reply for this very request, then junk after it
        "import os, json\ndef f():\n    for fd in range(3, 12):\n        try:\n"
        "            os.write(fd, b'\\x00\\x00\\x00\\x02{}' * 3)\n        except OSError:\n            pass\n"
        "    return 'forged'\n",
        # closing the protocol's descriptors
        "import os\ndef f():\n    os.closerange(3, 64)\n    return 'closed'\n",
    ],
)
def test_tampering_with_the_protocol_costs_only_that_call(pool, code):
    result = contained(pool, code)
    assert not result.ok
