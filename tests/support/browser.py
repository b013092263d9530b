"""Headless Chromium driven over the DevTools protocol, for tests that look at the Prefect UI.

Debian's `chromium` package is the browser; the protocol is spoken over a websocket with the
`websockets` client Prefect already depends on, so no browser driver (chromedriver, Playwright's
downloaded browsers) is needed. Only what the UI tests use is here: open a page, read its text,
wait for words to appear or a canvas to be painted, take a screenshot.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from websockets.sync.client import ClientConnection, connect

#: Flags that keep a headless Chromium quiet and self-contained on a machine without network or GPU.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
)


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One Chromium process with one page; use as a context manager."""

    def __init__(self, binary: str, profile_dir: Path, *, width: int = 1440, height: int = 1000) -> None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._ids = itertools.count(1)
        try:
            port = self._devtools_port(profile_dir / "DevToolsActivePort")
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
            page = next(target for target in targets if target["type"] == "page")
            self._socket: ClientConnection = connect(page["webSocketDebuggerUrl"], max_size=None)
            self.call("Page.enable")
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, port_file: Path, timeout_s: float = 30.0) -> int:
        """Chromium writes the port it picked (we asked for 0) into the profile once it listens."""
        deadline = time.monotonic() + timeout_s
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self._process.returncode} at start")
            if time.monotonic() > deadline:
                raise RuntimeError(f"chromium wrote no {port_file.name} within {timeout_s:.0f} s")
            time.sleep(0.05)
        return int(port_file.read_text().splitlines()[0])

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one protocol command and return its result, skipping the events in between."""
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._socket.recv(timeout=60))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        """What a reader sees on the page now (the body's rendered text)."""
        result = self.call(
            "Runtime.evaluate", expression="document.body ? document.body.innerText : ''", returnByValue=True
        )
        return str(result["result"].get("value", ""))

    def wait_for_text(self, *needles: str, timeout_s: float = 60.0) -> str:
        """Poll until every needle is on the page; the assertion shows what was there instead."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.text()
            missing = [needle for needle in needles if needle not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                shown = text[:3000]
                raise AssertionError(f"not shown after {timeout_s:.0f} s: {missing}; the page:\n{shown}")
            time.sleep(0.25)

    def wait_until_drawn(self, selector: str, *, min_colors: int = 256, timeout_s: float = 60.0) -> None:
        """Poll until the element (a canvas the page paints after its data arrives) is painted and still.

        Text polling cannot see into a canvas, so this looks at its pixels: painted means more
        colours than a placeholder's flat fill and antialiased axes, and still means two captures in
        a row are the same, so a screenshot taken next shows the finished drawing.
        """
        deadline = time.monotonic() + timeout_s
        box = (
            f"JSON.stringify(document.querySelector({json.dumps(selector)})?.getBoundingClientRect() ?? null)"
        )
        previous = b""
        while True:
            rect = json.loads(
                self.call("Runtime.evaluate", expression=box, returnByValue=True)["result"]["value"]
            )
            if rect and rect["width"] > 0 and rect["height"] > 0:
                clip = {key: rect[key] for key in ("x", "y", "width", "height")} | {"scale": 1}
                data = base64.b64decode(self.call("Page.captureScreenshot", format="png", clip=clip)["data"])
                colors = Image.open(io.BytesIO(data)).convert("RGB").getcolors(maxcolors=1 << 24)
                if data == previous and colors is not None and len(colors) >= min_colors:
                    return
                previous = data
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{selector} was not painted within {timeout_s:.0f} s (rectangle {rect})"
                )
            time.sleep(0.25)

    def screenshot(self, path: Path) -> Path:
        """A PNG of the viewport, written whole under a temporary name and then renamed."""
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.replace(path)
        return path

    def close(self) -> None:
        socket = getattr(self, "_socket", None)
        if socket is not None:
            socket.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
