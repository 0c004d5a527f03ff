"""Headless Chromium for the project's page checks: Debian's Chromium with the flags the tests
use, driven over the DevTools protocol on a pipe (no port, no websocket), and a check that a
screenshot drew something (pipeline/devtools/screens.py walks MLflow's UI with it)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any


class BrowserError(RuntimeError):
    """No Chromium, or Chromium did not answer or refused a command; the message says which."""


def chromium() -> str:
    """Debian's Chromium (or another Chromium-based browser on PATH)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError("no Chromium on PATH (Debian: apt-get install chromium)")


# Headless, nothing fetched in the background (this machine's network refuses it); the tests'
# Chromium command lines (tests/helpers.py) use the same flags.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)


def headless(profile: Path, *args: str) -> list[str]:
    """Chromium headless with a fresh ``profile``, then ``args``."""
    return [chromium(), *HEADLESS_FLAGS, f"--user-data-dir={profile}", *args]


def _above_4(fd: int) -> int:
    """``fd`` moved to a number above 4 (not inherited)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return moved


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    it reads commands on fd 3 and writes replies and events on fd 4, each a JSON text ended by
    NUL), so no port and no websocket."""

    def __init__(self, profile: Path):
        # all four above 4, so that dup2 in the child moves each onto 3 or 4
        to_child_r, self._to_child = map(_above_4, os.pipe())
        self._from_child, from_child_w = map(_above_4, os.pipe())

        def fds() -> None:  # in the child, before exec: its fds 3 and 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            headless(profile, "--hide-scrollbars", "--remote-debugging-pipe", "about:blank"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=fds,
            close_fds=False,  # subprocess would close fds 3 and 4 after preexec_fn
            start_new_session=True,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = bytearray()
        self._next = 0

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited ({self.proc.poll()})")
                self._buf += chunk
        end = self._buf.index(b"\0")
        text = bytes(self._buf[:end])
        del self._buf[: end + 1]
        return json.loads(text)

    def send(self, method: str, session: str | None = None, timeout: float = 60, **params: Any):
        """Send a command (to ``session``: a page's); its result."""
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next:  # events have no id
                if "error" in reply:
                    raise BrowserError(f"Chromium: {method}: {reply['error'].get('message')}")
                return reply.get("result", {})

    def page(self, url: str, width: int, height: int) -> str:
        """A new tab of ``width`` x ``height`` on ``url``; its session."""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", session, url=url)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, session: str, expression: str, timeout: float) -> bool:
        """Whether ``expression`` became true within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(BrowserError):  # e.g. the page is between documents
                if self.evaluate(session, expression):
                    return True
            time.sleep(0.25)
        return False

    def screenshot(self, session: str, png: Path) -> None:
        data = self.send("Page.captureScreenshot", session, format="png")["data"]
        png.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the browser this module started
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)


def blank(png: Path) -> bool:
    """A page that drew nothing to speak of (a few flat colours)."""
    from PIL import Image

    with Image.open(png) as img:
        colours = img.convert("RGB").getcolors(maxcolors=64)
    return colours is not None and len(colours) < 16
