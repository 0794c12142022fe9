"""``daemon.log``: one timestamped line per worker event (docs/protocol.md, "daemon.log").

A line reads ``<ISO 8601 time> <LEVEL> <event> job=<id> key=value ...``, for
example::

    2026-11-21T10:14:00.123+00:00 INFO finished job=hello status=completed exit_code=0 duration_s=0.004

Values with spaces, quotes or characters that act on a terminal are JSON-quoted,
those characters as ``\\u`` escapes (:mod:`.protocol.logline`), so each event is one line that
``grep`` and ``cut`` can take apart and ``tail`` can show safely. The file rotates by size
(``daemon.log.1`` ... ``daemon.log.N``) so it never fills the disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .protocol.durable import open_regular
from .protocol.logline import format_event, iso_stamp


class DaemonLog:
    """``daemon.log`` itself: each line is one ``O_APPEND`` write; the file rotates by size.

    Once the file has reached ``max_bytes`` it becomes ``daemon.log.1`` (the
    older ones shift up to ``daemon.log.<backups>``, the oldest is dropped)
    and a new file starts, as ``logging``'s ``RotatingFileHandler`` does;
    with ``max_bytes`` or ``backups`` 0 it never rotates. Written here rather
    than through ``logging``: three lines per job are on the worker's hot
    path, and a handler costs 40 µs a line where one write costs 8.
    Safe from any thread. A line that cannot be written (full disk) is
    reported on stderr, once until writing works again; a rotation that
    fails is reported once, and the lines go on into ``daemon.log``.
    """

    def __init__(self, path: Path, *, max_bytes: int, backups: int, in_queue: bool = False) -> None:
        """``in_queue``: ``path`` is a queue's ``daemon.log``, opened only as a regular file
        (see :meth:`_open`); else it is opened as it is (a device such as ``/dev/full`` too)."""
        self.path = path
        self.in_queue = in_queue
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._failing = False
        self._rotation_failed = False

    def _open(self) -> int:
        """Open the log for appending; a queue's by :func:`~execsvc.protocol.durable.open_regular`, and what
        that moved aside (a FIFO, a link...) is the first line written to the new file."""
        if not self.in_queue:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fd, moved = open_regular(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        if moved is not None:
            event = format_event("moved_aside", file=str(moved.path), aside=moved.aside.name, reason=moved.describe())
            line = f"{iso_stamp(time.time())} WARNING {event}\n"
            with contextlib.suppress(OSError):
                os.write(fd, line.encode("utf-8", "backslashreplace"))
            print(f"execsvc: {moved.describe()}", file=sys.stderr, flush=True)
        return fd

    def write(self, line: bytes) -> None:
        """Append ``line`` (one whole line, newline included)."""
        with self._lock:
            try:
                if self._fd < 0:  # a rotation could not open the new file: try again
                    self._fd = self._open()
                    self._size = os.fstat(self._fd).st_size
                if self.max_bytes > 0 and self.backups > 0 and self._size >= self.max_bytes:
                    self._rotate_or_go_on()
                os.write(self._fd, line)
                self._size += len(line)
                self._failing = False
            except OSError as exc:
                if not self._failing:
                    print(f"execsvc: cannot write {self.path}: {exc}", file=sys.stderr, flush=True)
                self._failing = True

    def _rotate_or_go_on(self) -> None:
        """Rotate; if that fails, say so (once) and write on, trying again after ``max_bytes`` more."""
        try:
            self._rotate()
        except OSError as exc:
            self._size = 0
            if not self._rotation_failed:
                print(f"execsvc: cannot rotate {self.path}, writing on: {exc}", file=sys.stderr, flush=True)
            self._rotation_failed = True

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        try:
            for n in range(self.backups - 1, 0, -1):
                older = Path(f"{self.path}.{n}")
                if older.exists():
                    os.replace(older, f"{self.path}.{n + 1}")
            if self.path.exists():
                os.replace(self.path, f"{self.path}.1")
        finally:  # renamed or not, go on writing to daemon.log
            self._fd = self._open()
            self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class EventLog:
    """The worker's events: ``info``/``warning``/``error`` take an event name, a job id and fields.

    Each event is one line (see the module docstring) in ``daemon_log``
    (``None``: nowhere, for protocol code run without a worker), and on
    stderr too when its ``logging`` level is at least ``stderr_level``.
    """

    def __init__(self, daemon_log: DaemonLog | None, *, stderr_level: int | None = None) -> None:
        self._daemon_log = daemon_log
        self._stderr_level = stderr_level

    def info(self, event: str, job: str | None = None, **fields: Any) -> None:
        self._emit(logging.INFO, "INFO", format_event(event, job, **fields))

    def warning(self, event: str, job: str | None = None, **fields: Any) -> None:
        self._emit(logging.WARNING, "WARNING", format_event(event, job, **fields))

    def error(self, event: str, job: str | None = None, **fields: Any) -> None:
        self._emit(logging.ERROR, "ERROR", format_event(event, job, **fields))

    def _emit(self, level: int, level_name: str, message: str) -> None:
        line = f"{iso_stamp(time.time())} {level_name} {message}\n"
        if self._daemon_log is not None:
            self._daemon_log.write(line.encode("utf-8", "backslashreplace"))
        if self._stderr_level is not None and level >= self._stderr_level:
            with contextlib.suppress(OSError, ValueError):  # stderr closed or gone: daemon.log has it
                sys.stderr.write(line)
                sys.stderr.flush()

    def close(self) -> None:
        if self._daemon_log is not None:
            self._daemon_log.close()


def open_event_log(
    daemon_log: Path, *, max_bytes: int, backups: int, stderr_level: int | None = logging.INFO, in_queue: bool = False
) -> EventLog:
    """The worker's event log: every event to ``daemon_log`` (rotating, mode 0600), and the
    events at ``stderr_level`` and above (a ``logging`` level; ``None``: none) to stderr.
    ``in_queue``: as for :class:`DaemonLog`."""
    return EventLog(
        DaemonLog(daemon_log, max_bytes=max_bytes, backups=backups, in_queue=in_queue), stderr_level=stderr_level
    )
