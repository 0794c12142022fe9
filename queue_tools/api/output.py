"""Reading a job's full output (``logs/<id>.<stream>``) and ``daemon.log``.

Every file of the queue is read as a regular file only (:func:`open_for_reading`):
a symbolic link there is never followed, a FIFO never waited on, and nothing is
moved. A job's log that is not a regular file is named in the answer's ``problem``.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

from execsvc.protocol import FINISHED_STATES
from execsvc.protocol.durable import NotRegularFile, open_regular
from execsvc.protocol.queue import JobQueue

from .models import OutputChunk, Stream


def read_output(
    queue: JobQueue,
    job_id: str,
    stream: Stream = "stdout",
    *,
    offset: int = 0,
    max_bytes: int = 64 * 1024,
    tail_lines: int | None = None,
) -> OutputChunk:
    """Up to ``max_bytes`` of a job's full output from byte ``offset``, or its last ``tail_lines``.

    Works while the job runs (the log grows) and after it ended. A chunk never
    ends inside a UTF-8 character unless the job has finished. A log that is not
    a regular file is not read: the chunk is empty and its ``problem`` says what
    is there. Raises :class:`ValueError` for a negative offset or an unknown stream.
    """
    if stream not in ("stdout", "stderr"):
        raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
    if offset < 0 or max_bytes < 1:
        raise ValueError("offset must be >= 0 and max_bytes >= 1")
    info = queue.get(job_id)
    finished = info.state in FINISHED_STATES
    log = queue.layout.stdout_log(info.job_id) if stream == "stdout" else queue.layout.stderr_log(info.job_id)
    problem = None
    try:
        with open_for_reading(log) as handle:
            size = os.fstat(handle.fileno()).st_size
            if tail_lines is not None:
                offset = _tail_offset(handle, size, tail_lines, max_bytes)
            handle.seek(min(offset, size))
            data = handle.read(min(max_bytes, max(0, size - offset)))
    except FileNotFoundError:
        size, data = 0, b""  # not started yet, or it never ran
    except NotRegularFile as exc:
        size, data = 0, b""
        problem = f"the {stream} log {log} is {exc.what}, not a regular file; it is not read"
    if not finished:
        data = data[: _whole_utf8_length(data)]
    next_offset = min(offset, size) + len(data)
    return OutputChunk(
        job_id=info.job_id,
        stream=stream,
        offset=min(offset, size),
        next_offset=next_offset,
        size_bytes=size,
        text=data.decode("utf-8", errors="replace"),
        job_finished=finished,
        complete=finished and next_offset >= size,
        problem=problem,
    )


def open_for_reading(path: Path) -> BinaryIO:
    """The file of the queue at ``path``, opened read-only as a regular file (by
    :func:`~execsvc.protocol.durable.open_regular`): a symbolic link is never followed, a FIFO never
    waited on, and nothing is moved aside. Raises :class:`FileNotFoundError`,
    :class:`~execsvc.protocol.durable.NotRegularFile` (saying what is there), :class:`OSError`."""
    fd, _moved = open_regular(path, os.O_RDONLY, move_aside=False)
    return open(fd, "rb")


def daemon_log_tail(queue: JobQueue, lines: int = 50) -> list[str]:
    """The last ``lines`` lines of ``daemon.log`` (empty if there is none yet). Raises
    :class:`~execsvc.protocol.durable.NotRegularFile` when it is not a regular file (it is not read)."""
    try:
        with open_for_reading(queue.layout.daemon_log) as handle:
            tail = deque(handle, maxlen=lines)
    except FileNotFoundError:
        return []
    return [line.decode("utf-8", errors="replace").rstrip("\n") for line in tail]


def _tail_offset(handle: Any, size: int, lines: int, max_bytes: int) -> int:
    """Offset where the last ``lines`` lines start, looking back at most ``max_bytes``."""
    start = max(0, size - max_bytes)
    handle.seek(start)
    data = handle.read(size - start)
    cut = len(data)
    if data.endswith(b"\n"):
        cut -= 1
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return start
    return start + cut + 1


def _whole_utf8_length(data: bytes) -> int:
    """Length of ``data`` without a UTF-8 character cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:  # a lead byte: is its character complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)
