"""Starting the queue's worker when none serves it, for ``execsvc mcp`` (on unless turned off).

Through the installed user service first, when one is installed for this very
queue (the unit or agent file ``execsvc service install`` writes, byte for byte:
:mod:`queue_tools.service`): ``systemctl --user start`` or ``launchctl kickstart``.
Else ``execsvc run --queue-dir <queue>`` detached in a session of its own, stdin
``/dev/null``, its stdout and stderr appended to ``server.log`` and
``server.error.log`` in the queue root, with this process's environment (so the
same configuration file and variables are in force). The worker's single-instance
lock decides races: of two servers starting workers at once, one worker serves and
the other exits at once, refused.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from execsvc.protocol.queue import JobQueue

from .. import service

logger = logging.getLogger("execsvc.mcp")

START_WAIT_S = 10.0
"""How long :func:`ensure_worker` waits for a started worker to serve the queue (seconds)."""
POLL_S = 0.05
"""Seconds between looks at ``worker.json`` while a started worker comes up."""


@dataclass(frozen=True)
class Started:
    """A worker this process caused to start: how (``service`` or ``detached``), its pid once it
    serves the queue (``None``: not yet serving after the wait), and what went wrong, if anything."""

    how: str
    pid: int | None
    problem: str | None = None


def ensure_worker(queue: JobQueue, *, wait_s: float = START_WAIT_S) -> Started | None:
    """Start a worker for ``queue`` if none serves it; ``None`` when one already does.

    Waits up to ``wait_s`` seconds for it to write ``worker.json``. Never raises:
    a start that fails is reported in :attr:`Started.problem`.
    """
    if queue.worker_info() is not None:
        return None
    how, problem = _start(queue.root)
    if problem is not None:
        logger.warning("could not start a worker for %s: %s", queue.root, problem)
        return Started(how, None, problem)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        info = queue.worker_info()
        if info is not None:
            logger.info("started a worker for %s (%s, pid %s)", queue.root, how, info.pid)
            return Started(how, info.pid)
        time.sleep(POLL_S)
    return Started(how, None, f"the worker started {how} did not serve the queue within {wait_s:g} s")


def _start(root: Path) -> tuple[str, str | None]:
    """Start the worker by the service when it is installed for ``root``, else detached."""
    unit = _installed_service(root)
    if unit is not None:
        result = subprocess.run(unit, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if result.returncode == 0:
            return "by its user service", None
        logger.warning("%s failed (%s); starting the worker directly", " ".join(unit), result.stderr.strip())
    return "detached", _start_detached(root)


def _installed_service(root: Path) -> list[str] | None:
    """The command that starts the installed service when its file is the one for ``root``."""
    try:
        wanted = service.service_files(root)
        if wanted.path.read_bytes() != wanted.content:
            return None
    except (OSError, ValueError):
        return None
    if service.current_platform() == "launchd":
        return ["launchctl", "kickstart", f"gui/{os.getuid()}/{service.LAUNCHD_LABEL}"]
    return ["systemctl", "--user", "start", service.SYSTEMD_UNIT]


def _start_detached(root: Path) -> str | None:
    """``execsvc run`` in its own session, output to ``server.log`` / ``server.error.log``."""
    try:
        program = service.execsvc_program()
        root.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
        out = os.open(root / "server.log", flags, 0o600)
        try:
            err = os.open(root / "server.error.log", flags, 0o600)
            try:
                subprocess.Popen(
                    [str(program), "run", "--queue-dir", str(root)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                    cwd=os.path.expanduser("~"),
                )
            finally:
                os.close(err)
        finally:
            os.close(out)
    except OSError as exc:
        return f"execsvc run could not be started ({exc.strerror or exc})"
    return None
