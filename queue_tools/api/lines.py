"""A job's output by lines: pages (head, tail, a range of lines), the tail of each stream, search.

The logs are ``logs/<id>.stdout`` and ``logs/<id>.stderr`` (docs/protocol.md,
"Finishing"), read as regular files only (:func:`~.output.open_for_reading`) while
the job runs and after. Lines are numbered from 1; a last line without a newline
counts. Every answer says the totals (lines, bytes), what was cut and why, and
the exact next call. Costs are bounded: a page reads at most ``max_bytes`` after
finding where it starts, lines are counted in the first :data:`COUNT_MAX_BYTES`
of a log only. Search: :mod:`.search`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import BinaryIO

from execsvc.protocol import FINISHED_STATES
from execsvc.protocol.durable import NotRegularFile
from execsvc.protocol.models import JobInfo
from execsvc.protocol.queue import JobQueue

from .models import OutputPage, Stream, StreamTail
from .output import open_for_reading

BLOCK_BYTES = 1024 * 1024
"""Bytes read at a time when counting or searching."""
COUNT_MAX_BYTES = 256 * 1024 * 1024
"""Lines are counted in this many bytes of a log at most; beyond, the total is not given."""


def call(tool: str, **arguments: object) -> str:
    """A tool call as a model writes it: ``get_job_output {"job_id": "x", "tail": 200}``."""
    given = {key: value for key, value in arguments.items() if value is not None}
    return f"{tool} {json.dumps(given, separators=(', ', ': '))}"


def log_path(queue: JobQueue, job_id: str, stream: Stream) -> Path:
    if stream not in ("stdout", "stderr"):
        raise ValueError(f"stream must be 'stdout' or 'stderr', not {stream!r}")
    return queue.layout.stdout_log(job_id) if stream == "stdout" else queue.layout.stderr_log(job_id)


def count_lines(handle: BinaryIO, size: int) -> int | None:
    """Lines in the first ``size`` bytes (a last line without newline counts); ``None`` beyond
    :data:`COUNT_MAX_BYTES`."""
    if size > COUNT_MAX_BYTES:
        return None
    newlines, last = _newlines(handle, 0, size)
    return newlines + (0 if last == b"\n" or size == 0 else 1)


def _newlines(handle: BinaryIO, start: int, end: int) -> tuple[int, bytes]:
    """The newlines in bytes ``start`` to ``end`` of ``handle``, and the last byte read (``b"\\n"``
    when none was)."""
    handle.seek(start)
    newlines, last = 0, b"\n"
    left = end - start
    while left > 0:
        block = handle.read(min(BLOCK_BYTES, left))
        if not block:
            break
        newlines += block.count(b"\n")
        last = block[-1:]
        left -= len(block)
    return newlines, last


def _line_start(handle: BinaryIO, size: int, line: int) -> int:
    """Byte offset where ``line`` (1-based) starts; ``size`` when the log has fewer lines."""
    if line <= 1:
        return 0
    handle.seek(0)
    seen, offset = 0, 0
    while offset < size:
        block = handle.read(min(BLOCK_BYTES, size - offset))
        if not block:
            break
        at = -1
        while seen < line - 1:
            at = block.find(b"\n", at + 1)
            if at < 0:
                break
            seen += 1
        if seen == line - 1:
            return offset + at + 1
        offset += len(block)
    return size


def _tail_start(handle: BinaryIO, size: int, lines: int) -> int:
    """Byte offset where the last ``lines`` lines start (a trailing newline ends the last line)."""
    end = size
    handle.seek(max(0, size - 1))
    if size and handle.read(1) == b"\n":
        end -= 1
    found, pos = 0, end
    while pos > 0:
        start = max(0, pos - BLOCK_BYTES)
        handle.seek(start)
        block = handle.read(pos - start)
        cut = len(block)
        while True:
            cut = block.rfind(b"\n", 0, cut)
            if cut < 0:
                break
            found += 1
            if found == lines:
                return start + cut + 1
        pos = start
    return 0


def read_page(
    queue: JobQueue,
    job_id: str,
    stream: Stream = "stdout",
    *,
    head: int | None = None,
    tail: int | None = None,
    from_line: int | None = None,
    lines: int | None = None,
    offset: int | None = None,
    max_bytes: int = 16 * 1024,
) -> OutputPage:
    """A page of one stream of a job's output, addressed by lines or by bytes.

    ``head`` (the first N lines), ``tail`` (the last N), ``from_line`` (1-based) with
    ``lines`` (default: as many as fit), or ``offset`` (bytes, from a page's
    ``next_offset``); with none of them, the tail that fits. At most ``max_bytes`` of
    text, cut after a whole line unless one line alone is longer. Raises
    :class:`ValueError` when more than one address is given or a number is below 1.
    """
    addresses = {"head": head, "tail": tail, "from_line": from_line, "offset": offset}
    given = [name for name, value in addresses.items() if value is not None]
    if len(given) > 1:
        raise ValueError(f"give one of head, tail, from_line or offset, not {' and '.join(given)}")
    if any(value is not None and value < 1 for value in (head, tail, from_line, lines)) or max_bytes < 1:
        raise ValueError("head, tail, from_line, lines and max_bytes are at least 1")
    if offset is not None and offset < 0:
        raise ValueError("offset is at least 0")
    info = queue.get(job_id)
    finished = info.state in FINISHED_STATES
    page = OutputPage(job_id=info.job_id, stream=stream, text="", offset=0, next_offset=0, total_bytes=0)
    page.job_finished = finished
    try:
        with open_for_reading(log_path(queue, info.job_id, stream)) as handle:
            size = os.fstat(handle.fileno()).st_size
            total = count_lines(handle, size)
            _fill_page(page, handle, size, total, head, tail, from_line, lines, offset, max_bytes)
    except FileNotFoundError:
        page.total_lines = 0  # not started yet, or it never ran
    except NotRegularFile as exc:
        page.problem = f"the {stream} log is {exc.what}, not a regular file; it is not read"
    page.complete = finished and page.next_offset >= page.total_bytes
    return page


def _fill_page(
    page: OutputPage,
    handle: BinaryIO,
    size: int,
    total: int | None,
    head: int | None,
    tail: int | None,
    from_line: int | None,
    lines: int | None,
    offset: int | None,
    max_bytes: int,
) -> None:
    """Read the page's text and say where it sits, what was cut and the next call."""
    page.total_bytes, page.total_lines = size, total
    first: int | None
    if offset is not None:
        start, first, want = min(offset, size), None, None
    elif from_line is not None or head is not None:
        first = from_line or 1
        start, want = _line_start(handle, size, first), head or lines
    else:
        want = tail
        start = _tail_start(handle, size, tail) if tail is not None else max(0, size - max_bytes)
        if tail is None and start > 0:  # the default page: begin at a whole line
            handle.seek(start)
            skip = handle.read(min(max_bytes, size - start)).find(b"\n")
            start = start + skip + 1 if skip >= 0 else start
        first = None
    handle.seek(start)
    data = handle.read(min(max_bytes, size - start))
    reasons = []
    shown = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    if want is not None and shown > want:
        cut = _nth_newline(data, want)
        data, shown = data[:cut], want
    elif start + len(data) < size and not data.endswith(b"\n") and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]  # a whole last line, unless one line is over max_bytes
        shown = data.count(b"\n")
        reasons.append(f"stopped before {max_bytes} bytes (max_bytes)")
    elif start + len(data) < size and (want is None or shown < want):
        reasons.append(f"stopped at {max_bytes} bytes (max_bytes)")
    if not page.job_finished and start + len(data) == size:
        data = data[: _whole_utf8(data)]
    page.offset, page.next_offset = start, start + len(data)
    page.text = data.decode("utf-8", errors="replace")
    if first is None and total is not None and page.offset != size:
        first = _first_line_of(handle, start, total, size)
    if first is not None and shown:
        page.first_line, page.last_line = first, first + shown - 1
    page.cut = _cut_sentence(page, reasons)
    page.next = _next_call(page, max_bytes)


def _first_line_of(handle: BinaryIO, start: int, total: int, size: int) -> int:
    """The number of the line that starts at ``start``: counted from the end (it is near it)."""
    newlines_after, last = _newlines(handle, start, size)
    lines_after = newlines_after + (0 if last == b"\n" else 1)
    return total - lines_after + 1


def _nth_newline(data: bytes, n: int) -> int:
    at = -1
    for _ in range(n):
        at = data.find(b"\n", at + 1)
    return at + 1


def _whole_utf8(data: bytes) -> int:
    """Length of ``data`` without a UTF-8 character cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if back >= need else len(data) - back
    return len(data)


def _cut_sentence(page: OutputPage, reasons: list[str]) -> str | None:
    if page.offset == 0 and page.next_offset >= page.total_bytes:
        return None  # the whole log
    where = (
        f"lines {page.first_line}-{page.last_line}"
        if page.first_line is not None
        else f"bytes {page.offset}-{page.next_offset}"
    )
    of = f" of {page.total_lines} lines" if page.total_lines is not None else ""
    why = f"; {reasons[0]}" if reasons else ""
    return f"shows {where}{of} ({page.total_bytes} bytes){why}"


def _next_call(page: OutputPage, max_bytes: int) -> str | None:
    if page.next_offset < page.total_bytes:
        if page.last_line is not None:
            return call(
                "get_job_output", job_id=page.job_id, stream=not_stdout(page.stream), from_line=page.last_line + 1
            )
        return call("get_job_output", job_id=page.job_id, stream=not_stdout(page.stream), offset=page.next_offset)
    if not page.job_finished:
        return call("get_job_output", job_id=page.job_id, stream=not_stdout(page.stream), offset=page.next_offset)
    if page.offset > 0 and page.first_line is not None and page.first_line > 1:
        before = max(1, page.first_line - 200)
        return call("get_job_output", job_id=page.job_id, stream=not_stdout(page.stream), from_line=before, lines=200)
    return None


def not_stdout(stream: Stream) -> str | None:
    return None if stream == "stdout" else stream


def stream_tail(
    queue: JobQueue, info: JobInfo, stream: Stream, *, lines: int = 40, max_bytes: int = 4096
) -> StreamTail:
    """The last ``lines`` lines (at most ``max_bytes``) of one stream, its totals and the call
    that reads more; from the log, or from the record's tail when the log is gone."""
    page = read_page(queue, info.job_id, stream, tail=lines, max_bytes=max_bytes)
    result = info.result
    recorded = 0 if result is None else result.stdout_bytes if stream == "stdout" else result.stderr_bytes
    if page.total_bytes == 0 and page.problem is None and result is not None and recorded > 0:
        text = result.stdout if stream == "stdout" else result.stderr
        kept = "\n".join(text.splitlines()[-lines:])
        more = "its log is gone; the record keeps only this tail" if recorded > len(text.encode()) else None
        return StreamTail(text=kept + ("\n" if text.endswith("\n") and kept else ""), bytes=recorded, more=more)
    tail = StreamTail(text=page.text, bytes=page.total_bytes, lines=page.total_lines, problem=page.problem)
    if page.offset > 0:
        job = info.job_id
        tail.more = f"{call('get_job_output', job_id=job, stream=not_stdout(stream), head=100)}; " + call(
            "search_output", job_id=job, stream=not_stdout(stream), pattern="error"
        )
    return tail
