"""What the dashboard shows, read from the queue's files: rows of jobs, pages of them filtered
by state and text, the overview's counts and charts, and a job's output made safe to show.

Everything here is read through the protocol package (:class:`~execsvc.protocol.queue.JobQueue`,
its listings and the finish-time index: docs/protocol.md, "Layout", "Finishing") and the fronts'
behaviour layer (:mod:`queue_tools.api`); nothing here writes. Text from a job is returned as
text: the templates escape it (Jinja2 autoescaping), the page's script inserts output as text.
"""

from __future__ import annotations

import heapq
import os
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from execsvc.protocol import FINISHED_STATES, JobEntry
from execsvc.protocol.errors import InvalidJobId, JobNotFound
from execsvc.protocol.finish_index import INDEX_NAME
from execsvc.protocol.models import JobInfo, JobState, JobStatus
from execsvc.protocol.queue import JobQueue
from execsvc.protocol.visible import visible
from queue_tools.api import GroupSummary, WorkerStatus, group_summaries, worker_status
from queue_tools.api.groups import has_groups

PAGE_ROWS = 50
"""Jobs on one page of the table."""
SEARCH_SCAN_MAX = 2000
"""Most jobs read for one page of a text search; past that the page ends with a cursor to search on."""
COMMAND_WIDTH = 200
"""Longest command shown in a row (characters); the detail view shows all of it."""
CHART_MINUTES = 60
"""The chart of finished jobs covers this many minutes, one bar each."""
DURATION_SAMPLE = 500
"""The duration chart shows the newest this many finished jobs."""
DURATION_BUCKETS: tuple[tuple[str, float], ...] = (
    ("< 0.1 s", 0.1),
    ("< 1 s", 1.0),
    ("< 10 s", 10.0),
    ("< 1 min", 60.0),
    ("< 10 min", 600.0),
    ("≥ 10 min", float("inf")),
)
"""The duration chart's bars: a label and the upper bound (seconds, exclusive) of each."""

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
"""Terminal escape sequences: CSI (colours, cursor moves), OSC (titles, hyperlinks), the two-byte ones."""


@dataclass(frozen=True)
class Row:
    """One job as a table row. ``when`` is when it was queued (pending), claimed (running) or
    finished; ``duration_s`` in seconds once it ran; ``text`` is what a text filter looks in."""

    job_id: str
    state: JobState
    status: JobStatus
    held: bool = False
    command: str = ""
    description: str = ""
    exit_code: int | None = None
    when: datetime | None = None
    duration_s: float | None = None
    error: str = ""

    @property
    def text(self) -> str:
        """The id, command and description in lower case, for a text filter."""
        return f"{self.job_id}\n{self.command}\n{self.description}".lower()


@dataclass(frozen=True)
class Page:
    """A page of rows, newest first; ``next_cursor`` gets the next (``None`` at the end);
    ``scanned`` is how many jobs a text search read for it."""

    rows: list[Row]
    next_cursor: str | None
    counts: dict[str, int]
    scanned: int = 0


def command_of(spec: dict[str, object] | None, argv: list[str] | None, path: str, *, width: int | None) -> str:
    """The command a job runs as one line: its ``command`` and ``args``, the argv it ran with,
    or ``(script <name>)`` for a text job; cut to ``width`` characters (``None``: all of it)."""
    command = spec.get("command") if spec else None
    if isinstance(command, str):
        args = spec.get("args") if spec else None
        if isinstance(args, list):
            command = " ".join([command, *(str(arg) for arg in args)])
    elif argv:
        command = " ".join(argv)
    else:
        command = f"(script {Path(path).name})"
    if width is not None and len(command) > width:
        command = command[: width - 1] + "…"
    return command


def row_of(info: JobInfo) -> Row:
    """The row of a job as :meth:`JobQueue.get` found it."""
    spec = info.spec or {}
    description = spec.get("description") or spec.get("purpose") or ""
    result = info.result
    when = result.completed_at if result is not None else info.mtime
    return Row(
        job_id=info.job_id,
        state=info.state,
        status=info.status,
        held=info.held,
        command=command_of(info.spec, result.argv if result else None, info.path, width=COMMAND_WIDTH),
        description=description if isinstance(description, str) else "",
        exit_code=result.returncode if result is not None else None,
        when=when,
        duration_s=result.duration_s if result is not None else None,
        error=(result.error or "") if result is not None else "",
    )


def read_row(queue: JobQueue, job_id: str) -> Row | None:
    """The row of ``job_id`` now, or ``None`` when the queue holds no such job."""
    try:
        return row_of(queue.get(job_id))
    except (JobNotFound, InvalidJobId):
        return None


def _sort_key(entry: JobEntry) -> tuple[int, str]:
    return (entry.mtime_ns, entry.job_id)


def parse_cursor(cursor: str) -> tuple[int, str]:
    """A cursor is ``<mtime_ns>/<job id>`` of the last job looked at. Raises :class:`ValueError`."""
    mtime, sep, job_id = cursor.partition("/")
    if not sep or not mtime.isdigit() or not job_id:
        raise ValueError(f"not a cursor from a previous page: {cursor!r}")
    return (int(mtime), job_id)


class Listings:
    """The folder entries of each state (:meth:`QueueReader.entries`), shared by every page.

    A listing of ``completed/`` or ``failed/`` (100,000 records and more) is kept while the
    folder's modification time and the size of its finish-time index (``.index``) are those
    it was made under: a record that arrives or leaves changes the folder and appends to or
    rewrites the index (docs/protocol.md, "Finishing"), so two changes within one tick of the
    folder's clock still change the key. ``pending/`` and ``running/`` are listed each time.
    """

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self._lock = threading.Lock()
        self._kept: dict[JobState, tuple[tuple[int, int, int], list[JobEntry]]] = {}

    def entries(self, state: JobState) -> list[JobEntry]:
        """Every job in ``state``, in no order (a list the caller must not change)."""
        if state not in FINISHED_STATES:
            return self.queue.entries(state)
        folder = self.queue.layout.folder(state)
        key = _listing_key(folder)
        with self._lock:
            kept = self._kept.get(state)
            if kept is not None and key is not None and kept[0] == key:
                return kept[1]
        found = self.queue.entries(state)
        if key is not None:
            with self._lock:
                self._kept[state] = (key, found)
        return found


def _listing_key(folder: Path) -> tuple[int, int, int] | None:
    """(folder mtime ns, folder inode, index size) before a listing, or ``None`` if unknown."""
    try:
        info = os.stat(folder)
        index_size = os.lstat(folder / INDEX_NAME).st_size
    except FileNotFoundError:
        index_size = -1
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_ino, index_size)


def page_of(
    queue: JobQueue,
    listings: Listings,
    *,
    state: JobState | None = None,
    text: str = "",
    cursor: str | None = None,
    limit: int = PAGE_ROWS,
) -> Page:
    """Jobs in ``state`` (``None``: all) whose id, command or description holds ``text``
    (case-insensitive), newest first by file time, ``limit`` per page, after ``cursor``.

    Without ``text`` only the jobs on the page are read (the rest are known from folder
    entries and the finish-time index); with it, jobs are read newest first until the page is
    full or :data:`SEARCH_SCAN_MAX` were read. Raises :class:`ValueError` for a bad cursor.
    """
    entries: list[JobEntry] = []
    counts: dict[str, int] = {}
    for each in JobState:
        found = listings.entries(each)
        counts[each.value] = len(found)
        if state is None or each is state:
            entries.extend(found)
    if cursor:
        after = parse_cursor(cursor)
        entries = [entry for entry in entries if _sort_key(entry) < after]
    needle = text.strip().lower()
    if needle:
        ordered = sorted(entries, key=_sort_key, reverse=True)
    else:
        ordered = heapq.nlargest(limit + 16, entries, key=_sort_key)
        if len(ordered) < len(entries) and len(ordered) < limit:
            ordered = sorted(entries, key=_sort_key, reverse=True)
    rows: list[Row] = []
    looked = 0
    last: JobEntry | None = None
    for entry in ordered:
        if len(rows) == limit or (needle and looked >= SEARCH_SCAN_MAX):
            break
        looked += 1
        last = entry
        row = read_row(queue, entry.job_id)
        # a job that moved on since the listing is shown as it is now, unless that leaves the state asked for
        if row is None or (state is not None and row.state is not state) or (needle and needle not in row.text):
            continue
        rows.append(row)
    more = looked < len(entries) and last is not None
    next_cursor = f"{last.mtime_ns}/{last.job_id}" if more and last is not None else None
    return Page(rows=rows, next_cursor=next_cursor, counts=counts, scanned=looked if needle else 0)


@dataclass
class Overview:
    """The overview: the worker, counts per state, finished jobs per minute over the last
    :data:`CHART_MINUTES` minutes (oldest first; completed and failed per minute), and how many
    of the newest :data:`DURATION_SAMPLE` finished jobs fall in each of :data:`DURATION_BUCKETS`."""

    worker: WorkerStatus
    counts: dict[str, int]
    per_minute: list[tuple[int, int]]
    durations: list[int]
    sampled: int
    groups: list[GroupSummary] = field(default_factory=list)  # only when there is more than default, or a pause
    made_at: float = field(default_factory=time.time)

    @property
    def busiest_minute(self) -> int:
        """The most jobs finished in one minute of the chart (at least 1, for scaling)."""
        return max([1, *(done + failed for done, failed in self.per_minute)])

    @property
    def biggest_bucket(self) -> int:
        """The fullest duration bar (at least 1, for scaling)."""
        return max([1, *self.durations])


class OverviewReader:
    """Builds :class:`Overview` s; remembers the duration of each record it read (a record does
    not change while it keeps its name and time), so the next overview reads only new ones."""

    def __init__(self, queue: JobQueue, listings: Listings) -> None:
        self.queue = queue
        self.listings = listings
        self._durations: dict[str, tuple[int, float | None]] = {}

    def read(self) -> Overview:
        """The overview now."""
        counts: dict[str, int] = {}
        finished: list[JobEntry] = []
        for state in JobState:
            found = self.listings.entries(state)
            counts[state.value] = len(found)
            if state in FINISHED_STATES:
                finished.extend(found)
        now_ns = time.time_ns()
        per_minute = [[0, 0] for _ in range(CHART_MINUTES)]
        for entry in finished:
            ago = (now_ns - entry.mtime_ns) // 60_000_000_000
            if 0 <= ago < CHART_MINUTES:
                per_minute[CHART_MINUTES - 1 - ago][0 if entry.state is JobState.COMPLETED else 1] += 1
        newest = heapq.nlargest(DURATION_SAMPLE, finished, key=_sort_key)
        durations = [0] * len(DURATION_BUCKETS)
        seen: dict[str, tuple[int, float | None]] = {}
        for entry in newest:
            known = self._durations.get(entry.job_id)
            if known is None or known[0] != entry.mtime_ns:
                known = (entry.mtime_ns, self._duration_of(entry.job_id))
            seen[entry.job_id] = known
            if known[1] is not None:
                durations[next(i for i, (_, bound) in enumerate(DURATION_BUCKETS) if known[1] < bound)] += 1
        self._durations = seen
        return Overview(
            worker=worker_status(self.queue),
            counts=counts,
            per_minute=[(done, failed) for done, failed in per_minute],
            durations=durations,
            sampled=len(newest),
            groups=group_summaries(self.queue) if has_groups(self.queue, self.queue.worker_info()) else [],
        )

    def _duration_of(self, job_id: str) -> float | None:
        try:
            result = self.queue.get(job_id).result
        except (JobNotFound, InvalidJobId):
            return None
        return result.duration_s if result is not None else None


def shown_output(text: str) -> str:
    """A job's output as text to show: terminal escape sequences removed, every other control
    or format character written as an escape (``\\x07``), newlines and tabs kept."""
    return visible(_ANSI.sub("", text), keep="\n\t")
