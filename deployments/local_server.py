"""Start a Prefect server as a child process and know when it answers.

`ftrl ui` and the tests that need a real server share this. The server is configured through its
environment, not its command-line flags: `prefect server start --port` moves the API but not the
URL the UI is told to call (that still follows PREFECT_SERVER_API_PORT), so a UI started that way
on a second port talks to whatever listens on 4200.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

LOOPBACK = "127.0.0.1"
_WILDCARDS = ("0.0.0.0", "::", "")


class ServerStartError(ValueError):
    """The server process exited or never answered its health check (a one-line report, not a bug)."""


@dataclass(frozen=True)
class ServerAddress:
    host: str = LOOPBACK
    port: int = 4200

    @property
    def listens_everywhere(self) -> bool:
        return self.host in _WILDCARDS

    @property
    def url(self) -> str:
        """Where a browser finds the UI: a wildcard bind is reached by the machine's name."""
        host = socket.gethostname() if self.listens_everywhere else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def local_api_url(self) -> str:
        """The API as seen from this machine, which a wildcard bind also serves on loopback."""
        if self.listens_everywhere:
            return f"http://{LOOPBACK}:{self.port}/api"
        return self.api_url


def port_is_free(address: ServerAddress) -> bool:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address.host, address.port))
        except OSError:
            return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def server_environment(
    address: ServerAddress,
    *,
    auth_string: str | None = None,
    home: Path | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a server process: bound as asked, analytics off, optional basic auth."""
    env = dict(os.environ if base is None else base)
    # A client-side API URL in the caller's shell points at some server; this process is the server.
    env.pop("PREFECT_API_URL", None)
    env.update(
        PREFECT_SERVER_API_HOST=address.host,
        PREFECT_SERVER_API_PORT=str(address.port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    if not {"PREFECT_UI_API_URL", "PREFECT_SERVER_UI_API_URL"} & env.keys():  # a proxy's URL wins
        env["PREFECT_UI_API_URL"] = address.api_url
    if auth_string is not None:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    return env


def start_server(env: Mapping[str, str], *, output: IO[str] | None = None) -> subprocess.Popen[str]:
    """`prefect server start` in a child process, with this interpreter's Prefect."""
    return subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start"],
        env=dict(env),
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
        text=True,
    )


def wait_until_healthy(api_url: str, process: subprocess.Popen[str], *, timeout_s: float = 180.0) -> None:
    """Poll the health endpoint until it answers; fail at once if the process dies first."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = process.poll()
        if code is not None:
            raise ServerStartError(f"the Prefect server exited with status {code} before answering")
        try:
            if httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise ServerStartError(f"the Prefect server did not answer at {api_url} within {timeout_s:.0f} s")
        time.sleep(0.2)


def stop(process: subprocess.Popen[str], *, grace_s: float = 20.0) -> None:
    """Ask the process to stop, and kill it if it will not."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_server(
    address: ServerAddress,
    *,
    home: Path,
    log: Path,
    auth_string: str | None = None,
    timeout_s: float = 180.0,
) -> Iterator[subprocess.Popen[str]]:
    """A server that answers for the length of the block, its output in `log`."""
    with log.open("w", encoding="utf-8") as output:
        env = server_environment(address, auth_string=auth_string, home=home)
        process = start_server(env, output=output)
        try:
            wait_until_healthy(address.local_api_url, process, timeout_s=timeout_s)
            yield process
        finally:
            stop(process)
