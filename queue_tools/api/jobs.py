"""Listing the queue and reading one job: counts, the worker, pages of jobs, a job's detail.

Only the jobs on a page are read; the rest are known from their names and ``stat``.
"""

from __future__ import annotations

import heapq
import os
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from execsvc.protocol import FINISHED_STATES, JobEntry
from execsvc.protocol.defaults import DEFAULT_GROUP
from execsvc.protocol.errors import JobNotFound
from execsvc.protocol.models import JobInfo, JobState, JobStatus
from execsvc.protocol.queue import JobQueue

from .groups import GroupLoads, group_of, group_summaries, has_groups
from .models import (
    COMMAND_WIDTH,
    JobDetail,
    JobPage,
    JobSummary,
    QueueStatus,
    StateCounts,
    WorkerStatus,
    moment,
)
from .waits import Rules, waiting_of

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds; raises :class:`ValueError`."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 90m or 45s")
    try:
        return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any duration can be (at most 999,999,999 days)") from None


def counts(queue: JobQueue) -> StateCounts:
    """Jobs per state, from folder names and ``stat`` only."""
    return StateCounts(**{state.value: len(queue.entries(state)) for state in JobState})


def worker_status(queue: JobQueue) -> WorkerStatus:
    """The serving worker, or ``serving=False`` when none holds the queue."""
    info = queue.worker_info()
    if info is None:
        return WorkerStatus(serving=False)
    return WorkerStatus(
        serving=True,
        pid=info.pid,
        slots=info.slots,
        started_at=info.started_at,
        uptime_s=round(time.time() - info.started_at.timestamp(), 3),
        version=info.version,
        allowed_commands=info.allowed_commands,
        allow_shell=info.allow_shell,
        config_file=info.config_file,
    )


def queue_status(queue: JobQueue) -> QueueStatus:
    """Counts per state, the worker, and the queue root; the groups too when there are more than
    ``default`` (declared by the worker) or one is paused (reads each pending job's file then)."""
    status = QueueStatus(queue_dir=str(queue.root), counts=counts(queue), worker=worker_status(queue))
    if has_groups(queue, queue.worker_info()):
        status.groups = {group.name: QueueStatus.group_line(group) for group in group_summaries(queue)}
    return status


def list_jobs(
    queue: JobQueue,
    *,
    states: tuple[JobState, ...] = tuple(JobState),
    limit: int = 20,
    cursor: str | None = None,
    since: timedelta | None = None,
    waiting_only: bool = False,
) -> JobPage:
    """Jobs in ``states``, newest first (by file time), ``limit`` per page.

    Only the jobs on the page are read; the rest are known from their names
    and ``stat`` (fast over 100,000 records). ``cursor`` is a page's
    ``next_cursor``; ``since`` keeps jobs whose file changed within that time;
    ``waiting_only`` keeps pending jobs that wait for more than their turn
    (held, not yet due, or waiting for dependencies: each pending job is read).
    Raises :class:`ValueError` for a cursor this function did not make.
    """
    entries: list[JobEntry] = []
    per_state = StateCounts()
    for state in JobState:
        found = queue.entries(state)
        setattr(per_state, state.value, len(found))
        if state in states:
            entries.extend(found)
    if waiting_only:
        rules = Rules(queue)
        entries = [entry for entry in entries if entry.state is JobState.PENDING and rules.blocked(entry)]
    if since is not None:
        cutoff_ns = time.time_ns() - int(since.total_seconds() * 1e9)
        entries = [entry for entry in entries if entry.mtime_ns >= cutoff_ns]
    if cursor is not None:
        after = _parse_cursor(cursor)
        entries = [entry for entry in entries if _sort_key(entry) < after]
    # The newest few by a heap (a full sort of 100,000 entries was a seventh of a listing);
    # all of them, sorted, only if jobs vanished while being read and the page came out short.
    ordered = heapq.nlargest(limit + _SPARE_ROWS, entries, key=_sort_key)
    page, taken = _fill_page(queue, ordered, limit)
    if len(page) < limit and len(ordered) < len(entries):
        ordered = sorted(entries, key=_sort_key, reverse=True)
        page, taken = _fill_page(queue, ordered, limit)
    more = taken < len(entries)
    last = ordered[taken - 1] if taken else None
    next_cursor = f"{last.mtime_ns}/{last.job_id}" if more and last is not None else None
    return JobPage(jobs=page, counts=per_state, next_cursor=next_cursor)


def get_job(queue: JobQueue, job_id: str) -> JobDetail:
    """Where the job stands: its place in line, its running time, or its result."""
    info = queue.get(job_id)
    detail = JobDetail(
        job_id=info.job_id,
        state=info.state,
        status=info.status,
        finished=info.state in FINISHED_STATES,
        path=info.path,
        command=_command_of(info),
        spec=info.spec,
        result=info.result,
    )
    if info.result is not None:
        detail.group = info.result.group if info.result.group != DEFAULT_GROUP else None
    if info.state is JobState.PENDING:
        waiting = waiting_of(queue, info, count_ahead=True)
        detail.waiting, detail.group = waiting, waiting.group
        if waiting.jobs_ahead is not None:
            detail.position, detail.jobs_ahead = waiting.jobs_ahead + 1, waiting.jobs_ahead
        holders = slots_sentence(queue, waiting.group or DEFAULT_GROUP)
        detail.note = f"waiting: {_with_slot_holders(waiting.reason, holders)}"
    elif info.state is JobState.RUNNING:
        detail.elapsed_s = _running_for_s(Path(info.path))
        if info.ready:
            detail.ready, detail.note = True, "running and ready (its ready_when was met)"
        group = group_of(info.path, info.mtime.timestamp())
        detail.group = group if group != DEFAULT_GROUP else None
    if not detail.finished and queue.worker_info() is None:
        missing = (
            "no worker is serving this queue, so the job waits in pending/: start one with execsvc run"
            if info.state is JobState.PENDING
            else "no worker is serving this queue: the next one to start records this job interrupted"
        )
        detail.note = f"{detail.note}; {missing}" if detail.note else missing
    return detail


SLOT_HOLDERS_SHOWN = 3
"""Running jobs named at most when a pending job waits for a slot."""


def _with_slot_holders(reason: str, sentence: str) -> str:
    """``reason`` with who holds the slots: the sentence in place of its own count of busy
    slots (``1/1 slots of group build busy``) when the reason names it, else after it."""
    head = sentence.partition(":")[0]
    return reason.replace(head, sentence, 1) if head in reason else f"{reason}; {sentence}"


def slots_sentence(queue: JobQueue, group: str = DEFAULT_GROUP) -> str:
    """Who holds the slots of ``group``: ``1/1 slots busy: job X (`sleep 30`, running 12 s of
    300 s)`` (``... slots of group build busy ...`` for a group but ``default``), or ``N running``
    when a slot is free (or no worker says how many there are)."""
    running = queue.entries(JobState.RUNNING)
    worker = queue.worker_info()
    if worker is not None:  # the jobs of this group (a group's slots are its own)
        running = [entry for entry in running if group_of(entry.path, entry.mtime_ns / 1e9) == group]
    slots = GroupLoads(queue, worker).slots_of(group) if worker is not None else None
    of_group = f" of group {group}" if group != DEFAULT_GROUP else ""
    if slots is None or len(running) < slots:
        return f"{len(running)} running" + (f" of {slots} slots{of_group}" if slots is not None else "")
    held = []
    for entry in sorted(running, key=lambda entry: entry.ctime_ns)[:SLOT_HOLDERS_SHOWN]:
        try:
            info = queue.get(entry.job_id)
        except JobNotFound:
            continue  # it finished meanwhile
        command = (_command_of(info) or "?")[:60]
        elapsed = _running_for_s(Path(info.path))
        timeout = timeout_of(queue, info.spec)
        of = f" of {timeout:g} s" if timeout is not None else ""
        held.append(f"job {info.job_id} (`{command}`, running {elapsed or 0:.0f} s{of})")
    more = f" and {len(running) - len(held)} more" if len(running) > len(held) else ""
    return f"{len(running)}/{slots} slots{of_group} busy: {', '.join(held)}{more}"


def timeout_of(queue: JobQueue, spec: dict[str, Any] | None) -> float | None:
    """The timeout the serving worker applies to a job (seconds): its ``timeout_s`` or the
    worker's default, capped at the worker's maximum; ``None`` when no worker says."""
    worker = queue.worker_info()
    asked = (spec or {}).get("timeout_s")
    timeout = float(asked) if isinstance(asked, int | float) and not isinstance(asked, bool) else None
    if worker is None:
        return timeout
    timeout = timeout if timeout is not None else worker.default_timeout_s
    if timeout is not None and worker.max_timeout_s is not None:
        timeout = min(timeout, worker.max_timeout_s)
    return timeout


def _fill_page(queue: JobQueue, ordered: list[JobEntry], limit: int) -> tuple[list[JobSummary], int]:
    """Up to ``limit`` summaries from ``ordered``, and how many entries that took."""
    page: list[JobSummary] = []
    taken = 0
    for entry in ordered:
        if len(page) == limit:
            break
        taken += 1
        summary = _summary_of(queue, entry)
        if summary is not None:
            page.append(summary)
    return page, taken


_SPARE_ROWS = 16
"""Rows looked at beyond a page's ``limit`` before falling back to a full sort."""


def _sort_key(entry: JobEntry) -> tuple[int, str]:
    return (entry.mtime_ns, entry.job_id)


def _parse_cursor(cursor: str) -> tuple[int, str]:
    """A cursor is ``<mtime_ns>/<job id>`` of the last job on the previous page."""
    mtime, sep, job_id = cursor.partition("/")
    if not sep or not mtime.isdigit() or not job_id:
        raise ValueError(f"not a cursor from a previous page: {cursor!r}")
    return (int(mtime), job_id)


def _summary_of(queue: JobQueue, entry: JobEntry) -> JobSummary | None:
    """One job's line, or ``None`` if it left its folder meanwhile. Never raises for what a
    file holds: a job that cannot be read or shown gets a line saying so (its ``error``)."""
    try:
        return _read_summary(queue, entry)
    except Exception as exc:  # a damaged file costs its own line, never the listing
        if not os.path.lexists(entry.path):
            return None  # it moved on while being read (its next folder lists it)
        what = "record" if entry.state in FINISHED_STATES else "job file"
        return JobSummary(
            job_id=entry.job_id,
            state=entry.state,
            status=_STATE_STATUS[entry.state],
            error=f"its {what} cannot be read: {_reason(exc)}",
        )


_STATE_STATUS = {
    JobState.PENDING: JobStatus.PENDING,
    JobState.RUNNING: JobStatus.RUNNING,
    JobState.COMPLETED: JobStatus.COMPLETED,
    JobState.FAILED: JobStatus.FAILED,
}


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _read_summary(queue: JobQueue, entry: JobEntry) -> JobSummary | None:
    try:
        info = queue.get(entry.job_id)
    except JobNotFound:
        if os.path.lexists(entry.path):
            raise ValueError("it is not a record as a worker writes them") from None
        return None  # it vanished meanwhile
    result = info.result
    summary = JobSummary(
        job_id=info.job_id,
        state=info.state,
        status=info.status,
        command=_command_of(info),
        description=_description_of(info),
        queued_at=info.mtime if info.state is JobState.PENDING else None,
    )
    if info.state is JobState.PENDING:
        waiting = waiting_of(queue, info, slots=False)  # a busy group is its turn, not shown in a listing
        summary.priority = waiting.priority or None
        summary.waiting = waiting.reason if waiting.blocked or waiting.problem else None
        summary.attempt = waiting.attempt if waiting.attempt > 1 else None
        summary.group = waiting.group
    if result is not None:
        summary.attempt = result.attempt
        summary.exit_code = result.returncode
        summary.started_at = result.started_at
        summary.completed_at = result.completed_at
        summary.duration_s = result.duration_s
        summary.error = result.error
        summary.group = result.group if result.group != DEFAULT_GROUP else None
    elif info.state is JobState.RUNNING:
        group = group_of(entry.path, entry.mtime_ns / 1e9)
        summary.group = group if group != DEFAULT_GROUP else None
        summary.elapsed_s = _running_for_s(Path(info.path))
        summary.started_at = moment(entry.ctime_ns / 1e9)
    return summary


def _command_of(info: JobInfo) -> str | None:
    spec = info.spec or {}
    command = spec.get("command")
    if isinstance(command, str):
        args = spec.get("args")
        if isinstance(args, list):
            command = " ".join([command, *(str(arg) for arg in args)])
    elif info.result is not None and info.result.argv:
        command = " ".join(info.result.argv)
    elif info.kind == "text":
        command = f"(script {Path(info.path).name})"
    if isinstance(command, str) and len(command) > COMMAND_WIDTH:
        command = command[: COMMAND_WIDTH - 1] + "…"
    return command if isinstance(command, str) else None


def _description_of(info: JobInfo) -> str | None:
    spec = info.spec or {}
    for key in ("description", "purpose"):
        value = spec.get(key)
        if isinstance(value, str):
            return value
    return None


def _running_for_s(path: Path) -> float | None:
    """Seconds since the claim: the claim's move into ``running/`` (``renameat2`` with
    ``RENAME_NOREPLACE``, or ``link`` and ``unlink`` where that is missing; see
    :func:`~execsvc.protocol.durable.move_no_replace`) sets the file's change time."""
    try:
        return round(max(0.0, time.time() - path.lstat().st_ctime), 3)
    except FileNotFoundError:
        return None
