"""Killing a real process part way through its work, for resume tests."""

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_when(process: subprocess.Popen, marker: Path, timeout_s: float = 600) -> None:
    """SIGKILL `process` once `marker` exists: the condition is its progress on disk, not elapsed time."""
    deadline = time.monotonic() + timeout_s
    while not marker.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{marker} did not appear within {timeout_s} s"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
