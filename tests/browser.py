"""Open a page in headless Chromium over the DevTools protocol (a pipe, no network port):
measure its layout, collect console errors and take a full-page screenshot.

Test-only: the report's browser test uses it where Debian's chromium is installed.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")


@dataclass
class PageVisit:
    scroll_width: int
    viewport_width: int
    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""


class _Pipe:
    """The DevTools protocol on --remote-debugging-pipe: JSON messages ended by NUL, commands
    on the browser's fd 3, answers and events on its fd 4."""

    def __init__(self, send_fd: int, receive_fd: int):
        self.send_fd, self.receive_fd = send_fd, receive_fd
        self.buffer, self.next_id, self.events = b"", 0, []

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.receive_fd], [], [], remaining)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.receive_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self.send_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, event: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for seen in self.events:
            if seen.get("method") == event:
                return seen
        while True:
            message = self._message(deadline)
            self.events.append(message)
            if message.get("method") == event:
                return message


def _errors(events: list[dict]) -> list[str]:
    found = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.exceptionThrown":
            found.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            found.append(params["entry"].get("text", "error"))
    return found


def _above_four(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def visit(page: Path, width: int = 1280, height: int = 900) -> PageVisit:
    """Load ``page`` in a fresh headless Chromium at ``width`` x ``height`` CSS pixels."""
    to_browser_read, to_browser_write = os.pipe()
    from_browser_read, from_browser_write = os.pipe()
    # The browser's ends above fd 4, so that putting them on 3 and 4 cannot overwrite one with the other.
    to_browser_read, from_browser_write = (_above_four(fd) for fd in (to_browser_read, from_browser_write))
    with tempfile.TemporaryDirectory() as profile:
        command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                   "--remote-debugging-pipe", "about:blank"]
        # The browser expects the pipe on its fds 3 and 4: bash (whose redirections take any fd number) puts it there, then becomes the browser.
        wrapper = ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser_read} 4>&{from_browser_write}', *command]
        browser = subprocess.Popen(wrapper, pass_fds=(to_browser_read, from_browser_write),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_read)
        os.close(from_browser_write)
        pipe = _Pipe(to_browser_write, from_browser_read)
        try:
            target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            pipe.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                      deviceScaleFactor=1, mobile=False)
            for domain in ("Page", "Runtime", "Log"):
                pipe.call(f"{domain}.enable", session)
            pipe.call("Page.navigate", session, url=page.resolve().as_uri())
            pipe.wait_for("Page.loadEventFired")
            sizes = pipe.call("Runtime.evaluate", session, returnByValue=True,
                              expression="[document.documentElement.scrollWidth, window.innerWidth, "
                                         "document.documentElement.scrollHeight]")["result"]["value"]
            clip = {"x": 0, "y": 0, "width": width, "height": sizes[2], "scale": 1}
            shot = pipe.call("Page.captureScreenshot", session, format="png", clip=clip, captureBeyondViewport=True)
            result = PageVisit(sizes[0], sizes[1], _errors(pipe.events), base64.b64decode(shot["data"]))
            pipe.call("Browser.close")
        finally:
            os.close(to_browser_write)
            os.close(from_browser_read)
            try:
                browser.wait(timeout=20)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()
    return result
