"""``daemon.log``: one timestamped line per worker event (PROTOCOL.md, "daemon.log").

A line reads ``<ISO 8601 time> <LEVEL> <event> job=<id> key=value ...``, for
example::

    2026-11-21T10:14:00.123+00:00 INFO finished job=hello status=completed exit_code=0 duration_s=0.004

Values with spaces or quotes are JSON-quoted, so each event is one line that
``grep`` and ``cut`` can take apart. The file rotates by size
(``daemon.log.1`` ... ``daemon.log.N``) so it never fills the disk.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from .layout import readable_name

LOGGER_NAME = "execsvc.worker"
_PLAIN = re.compile(r"[^\s\"'=\\]+")  # a value needs no quotes: no white space, quote, '=' or backslash


class _IsoFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{iso_stamp(record.created)} {record.levelname} {record.getMessage()}"


class _RotatingLog(logging.handlers.RotatingFileHandler):
    """A ``RotatingFileHandler`` whose size check is one ``fstat``.

    The standard check formats every line twice and calls ``stat`` twice; on
    the worker's hot path (three lines per job) that was most of a line's
    cost. The file rolls over once it has reached ``maxBytes``.
    """

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.stream is None:
            self.stream = self._open()
        return self.maxBytes > 0 and os.fstat(self.stream.fileno()).st_size >= self.maxBytes


def iso_stamp(seconds: float) -> str:
    """ISO 8601 local time with milliseconds and offset, e.g. ``2026-11-21T10:14:00.123+01:00``."""
    local = time.localtime(seconds)
    offset = local.tm_gmtoff // 60
    sign = "+" if offset >= 0 else "-"
    millis = int(seconds % 1 * 1000)
    return (
        f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{millis:03d}{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    )


def configure(
    daemon_log: Path, *, max_bytes: int, backups: int, stderr_level: int | None = logging.INFO
) -> logging.Logger:
    """Set up the worker's logger: every event to ``daemon_log`` (rotating, mode 0600), and
    the events at ``stderr_level`` and above (a ``logging`` level; ``None``: none) to stderr."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fd = os.open(daemon_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.close(fd)
    handlers: list[logging.Handler] = [
        _RotatingLog(daemon_log, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    ]
    if stderr_level is not None:
        to_stderr = logging.StreamHandler(sys.stderr)
        to_stderr.setLevel(stderr_level)
        handlers.append(to_stderr)
    for handler in handlers:
        handler.setFormatter(_IsoFormatter())
        logger.addHandler(handler)
    return logger


def append_event(daemon_log: Path, level: str, event: str, job: str | None = None, **fields: Any) -> None:
    """Append one line to ``daemon_log`` from a process that is not the worker (a client's cancel).

    One ``O_APPEND`` write of a short line, so it never interleaves with the
    worker's lines; around a rotation it may land in ``daemon.log.1``.
    Raises :class:`OSError` if the log cannot be written.
    """
    line = f"{iso_stamp(time.time())} {level} {format_event(event, job, **fields)}\n".encode()
    fd = os.open(daemon_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def format_event(event: str, job: str | None = None, **fields: Any) -> str:
    """``event job=<id> k=v ...`` with values quoted where needed; ``None`` values are left out."""
    parts = [event]
    if job is not None:
        parts.append(f"job={_quote(job)}")
    parts.extend(f"{key}={_quote(value)}" for key, value in fields.items() if value is not None)
    return " ".join(parts)


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if _PLAIN.fullmatch(text) and text.isprintable():
        return text
    return json.dumps(readable_name(text), ensure_ascii=False)


class EventLog:
    """Writes events to the worker's logger; ``info``/``warning``/``error`` take an event name and fields."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def info(self, event: str, job: str | None = None, **fields: Any) -> None:
        self._emit(logging.INFO, format_event(event, job, **fields))

    def warning(self, event: str, job: str | None = None, **fields: Any) -> None:
        self._emit(logging.WARNING, format_event(event, job, **fields))

    def error(self, event: str, job: str | None = None, **fields: Any) -> None:
        self._emit(logging.ERROR, format_event(event, job, **fields))

    def _emit(self, level: int, message: str) -> None:
        # A record made directly: Logger.info would also walk the stack to find the caller.
        if self._logger.isEnabledFor(level):
            self._logger.handle(logging.LogRecord(self._logger.name, level, "", 0, message, None, None))

    def close(self) -> None:
        for handler in self._logger.handlers:
            handler.flush()
            handler.close()
        self._logger.handlers.clear()
