"""A service for the tests of long-lived jobs (tests/e2e/test_services.py, tests/faults/test_service_crash.py).

The service takes an exclusive ``flock`` on a file under the test's ``tmp_path`` before it
does anything: a second copy running at the same time cannot get it, writes ``CONFLICT`` to
the conflicts file and exits 3. Each start appends ``start <pid>`` to the starts file once it
holds the lock, then the service runs until it is stopped (or exits with ``exit_code`` at once).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from conftest import wait_until

SERVICE = """\
import fcntl, os, sys, time
lock_path, starts_path, conflicts_path, exit_code = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
lock = open(lock_path, "a")
try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    with open(conflicts_path, "a") as out:
        out.write(f"CONFLICT {os.getpid()}\\n")
    sys.exit(3)
with open(starts_path, "a") as out:
    out.write(f"start {os.getpid()}\\n")
if exit_code != "forever":
    sys.exit(int(exit_code))
while True:
    time.sleep(3600)
"""


@dataclass(frozen=True)
class Service:
    """The files of one test's service: its lock, its starts, its conflicts."""

    folder: Path

    @property
    def starts_file(self) -> Path:
        return self.folder / "starts"

    @property
    def conflicts_file(self) -> Path:
        return self.folder / "conflicts"

    def job(self, *, exit_code: str = "forever", **fields: Any) -> dict[str, Any]:
        """A JSON job running the service (no shell), with ``fields`` added."""
        script = self.folder / "service.py"
        script.write_text(SERVICE)
        args = [str(script), str(self.folder / "lock"), str(self.starts_file), str(self.conflicts_file), exit_code]
        return {"command": sys.executable, "args": args, **fields}

    def starts(self) -> list[int]:
        """The pids of the service's starts so far, in order."""
        if not self.starts_file.exists():
            return []
        return [int(line.split()[1]) for line in self.starts_file.read_text().splitlines() if line.startswith("start")]

    def conflicts(self) -> str:
        return self.conflicts_file.read_text() if self.conflicts_file.exists() else ""

    def wait_starts(self, count: int, timeout_s: float = 20.0) -> int:
        """Wait until the service has started ``count`` times; the pid of the last start."""
        wait_until(lambda: len(self.starts()) >= count, timeout_s, f"start number {count} of the service")
        return self.starts()[-1]


def make_service(tmp_path: Path) -> Service:
    folder = tmp_path / "service"
    folder.mkdir()
    return Service(folder)


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_9(pid: int) -> None:
    os.kill(pid, 9)
