"""`execsvc web` as a real process for the dashboard's tests, and headless Chromium from Debian.

Imported by tests/e2e/test_web*.py and bench/web.py. Chromium is Debian's (`apt-get install
chromium`, as .ci/run does): Playwright's own browser download is not reachable from CI.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT_S = 20.0
_URL = re.compile(r"at (http://\S+/\?token=(\S+))")


def free_port() -> int:
    """A TCP port on 127.0.0.1 free a moment ago (the server binds it right after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class WebServer:
    """``execsvc web`` on ``queue_root`` and a free loopback port; ``url`` carries the token."""

    def __init__(self, queue_root: Path, *args: str) -> None:
        self.port = free_port()
        execsvc = Path(sys.executable).parent / "execsvc"
        self.proc = subprocess.Popen(
            [str(execsvc), "web", "--queue-dir", str(queue_root), "--port", str(self.port), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._seen = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._seen.wait(START_TIMEOUT_S) or not hasattr(self, "url"):
            self.stop()
            raise RuntimeError("execsvc web printed no URL; its output:\n" + "\n".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            found = _URL.search(line)
            if found and not self._seen.is_set():
                self.url, self.token = found.group(1), found.group(2)
                self._seen.set()
        self._seen.set()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: str | None = None
    ) -> tuple[int, dict[str, str], str]:
        """One HTTP request as a script sends it (``Host`` is 127.0.0.1:<port> unless given)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            sent = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            if body is not None:
                sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
                sent["Content-Length"] = str(len(body.encode()))
            for name, value in sent.items():
                connection.putheader(name, value)
            connection.endheaders(body.encode() if body is not None else None)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
        finally:
            connection.close()

    def stop(self) -> int:
        """SIGTERM, then the exit code (SIGKILL if it does not stop within 10 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._reader.join(5)
        return code


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or ``None``."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None
