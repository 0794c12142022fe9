"""A job's log files in ``logs/`` as the worker reads and cuts them: a bounded tail, a size cap.

The job writes ``logs/<id>.stdout`` and ``.stderr`` itself, through the kernel; the worker
reads back only the last bytes for the record (:func:`read_tail`) and cuts a log that passed
its ``output_bytes`` limit (:func:`cut_log`). Neither follows a link nor waits on a FIFO a
job put at its log's name.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OutputTail:
    """The last bytes of one output stream, decoded; ``size_bytes`` is the whole stream's size."""

    text: str
    truncated: bool
    size_bytes: int


def read_tail(path: Path, max_bytes: int) -> OutputTail:
    """The last ``max_bytes`` of a log file, as UTF-8 text with invalid bytes replaced.

    A cut that falls inside a multi-byte character skips that character's
    remaining bytes. A missing file reads as empty, and so does anything not a
    regular file (never followed if a link, never waited on if a FIFO).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, IsADirectoryError):
        return OutputTail("", False, 0)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.ENODEV):
            return OutputTail("", False, 0)
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return OutputTail("", False, 0)
        size = info.st_size
        start = max(0, size - max_bytes)
        data = os.pread(fd, size - start, start) if size else b""
    finally:
        os.close(fd)
    if start:
        skip = 0
        while skip < min(3, len(data)) and 0x80 <= data[skip] <= 0xBF:
            skip += 1
        data = data[skip:]
    return OutputTail(data.decode("utf-8", errors="replace"), start > 0, size)


def cut_log(path: Path, max_bytes: int) -> None:
    """Cut the log at ``path`` to at most ``max_bytes``; a missing log, or anything not a regular
    file there (never followed, never waited on), is left alone."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_size > max_bytes:
            os.ftruncate(fd, max_bytes)
    finally:
        os.close(fd)
