"""The finish-time index of ``completed/`` and ``failed/``: ``<folder>/.index``.

A listing of finished jobs sorts them by when they finished, which is the
modification time of each record: one ``stat`` per record, the most of a
listing over 100,000 of them. Every record written through
:meth:`~execsvc.protocol.store.JobStore.finish` also appends one line here::

    <record mtime, ns since the epoch> <record inode> <job id>\\n

The index is a cache, never the truth: a listing uses a line only while the
record of that job id is the same inode (``scandir`` tells the inode without
a ``stat``), and falls back to ``stat`` for any record without a matching
line (a line lost in a crash, records from older versions, an id reused after
``execsvc clean``). The name starts with ``.``, so every listing of the folder
already ignores it; ``execsvc clean`` rewrites it without the removed jobs.
Appends are single ``O_APPEND`` writes and are not fsync'd.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

from .durable import MovedAside, append_line, read_regular_file, write_durable

INDEX_NAME = ".index"
_LINE = re.compile(r"^([0-9]+) ([0-9]+) ([^\n]+)$", re.MULTILINE)


_MAX_BYTES = 1 << 30
"""A bigger index is not read (a listing then ``stat``s every record)."""


def append(folder: Path, job_id: str, record: os.stat_result) -> MovedAside | None:
    """Note that ``job_id``'s record in ``folder`` is the file ``record`` (its ``stat``).

    Returns what was found at the index's name instead of a regular file and
    moved aside (see :func:`~execsvc.protocol.durable.open_regular`), else ``None``.
    Never raises: an index that cannot be written only makes listings ``stat`` that record.
    """
    return append_many(folder, [(job_id, record)])


def append_many(folder: Path, records: Iterable[tuple[str, os.stat_result]]) -> MovedAside | None:
    """:func:`append` of many records (job id, record ``stat``) in one write; never raises."""
    lines = "".join(f"{record.st_mtime_ns} {record.st_ino} {job_id}\n" for job_id, record in records)
    with contextlib.suppress(OSError):
        return append_line(folder / INDEX_NAME, lines.encode("utf-8", "surrogateescape"))
    return None


def read(folder: Path) -> dict[str, tuple[int, int]]:
    """``{job id: (record mtime in ns, record inode)}`` from ``folder``'s index; the last line
    for an id wins; lines that do not parse are skipped; no index, or one that is not a regular
    file (never followed, never waited on), reads as empty."""
    try:
        data = read_regular_file(folder / INDEX_NAME, _MAX_BYTES)
    except OSError:
        return {}
    if data is None:
        return {}
    text = data.decode("utf-8", "surrogateescape")  # once: 100,000 lines are read at every listing
    return {job_id: (int(mtime_ns), int(inode)) for mtime_ns, inode, job_id in _LINE.findall(text)}


def rewrite(folder: Path, entries: Iterable[tuple[str, int, int]]) -> None:
    """Replace ``folder``'s index with ``entries`` (job id, record mtime in ns, record inode),
    atomically (a temporary file renamed over it)."""
    lines = "".join(f"{mtime_ns} {inode} {job_id}\n" for job_id, mtime_ns, inode in entries)
    write_durable(folder / INDEX_NAME, lines.encode("utf-8", "surrogateescape"), replace=True, sync=False)
