"""The one API the fronts share: the MCP server, ``queue-view`` and ``execsvc``'s job commands.

Each function takes a :class:`~execsvc.JobQueue` and returns a pydantic model
shaped for people and LLMs (the MCP tools return these as their structured
output), each built at its first use (``defer_build``), so a command builds only the answers it
gives. Everything here is built on the protocol's public API: it reads the
queue folders, enqueues and cancels; it never runs a job.

Errors: :class:`~execsvc.protocol.errors.JobNotFound` for an unknown id,
:class:`~execsvc.protocol.errors.InvalidJobId` for an id the protocol refuses,
:class:`ValueError` for a bad cursor or stream name, :class:`OSError` when
the queue cannot be read or written.

Every file of the queue is read as a regular file only (:func:`open_for_reading`,
:func:`~execsvc.protocol.durable.read_regular_file`): a symbolic link there is never
followed, a FIFO never waited on, and nothing is moved (a client only reads).
A job's log that is not a regular file is named in the chunk's ``problem``;
a ``daemon.log`` that is not raises :class:`~execsvc.protocol.durable.NotRegularFile`.
"""

from __future__ import annotations

import heapq
import os
import re
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict

from execsvc.protocol import FINISHED_STATES, JobEntry
from execsvc.protocol.durable import NotRegularFile, open_regular, read_regular_file
from execsvc.protocol.errors import InvalidJobId, JobIdTaken, JobNotFound
from execsvc.protocol.layout import split_job_name
from execsvc.protocol.models import JobInfo, JobResult, JobState, JobStatus, SidecarRecord
from execsvc.protocol.queue import JobQueue
from execsvc.protocol.readiness import OrderKey, count_ahead, order_key, wait_reason
from execsvc.protocol.scheduling import PLAIN, SchedulingFields, peek

Stream = Literal["stdout", "stderr"]
COMMAND_WIDTH = 120
"""Longest command shown in a summary (characters); the record holds the whole one."""
CANCEL_WAIT_S = 10.0
"""How long :func:`cancel_job` waits for a running job to be stopped and recorded (seconds)."""
CANCEL_PROGRESS_EVERY_S = 2.0
"""Seconds between calls of :func:`cancel_job`'s ``progress`` while it waits."""


class StateCounts(BaseModel):
    """How many jobs are in each queue folder."""

    model_config = ConfigDict(defer_build=True)

    pending: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0


class WorkerStatus(BaseModel):
    """Whether a worker serves the queue (from ``worker.json``, checked against the live PID)."""

    model_config = ConfigDict(defer_build=True)

    serving: bool
    pid: int | None = None
    slots: int | None = None
    started_at: datetime | None = None
    uptime_s: float | None = None
    version: str | None = None
    allowed_commands: list[str] | None = None  # the worker's command policy; null: any command
    allow_shell: bool | None = None
    config_file: str | None = None


class QueueStatus(BaseModel):
    """The queue at a glance: its root, the counts per state and the worker."""

    model_config = ConfigDict(defer_build=True)

    queue_dir: str
    counts: StateCounts
    worker: WorkerStatus


class Waiting(BaseModel):
    """Why a pending job has not started (docs/protocol.md, "Scheduling fields").

    ``held`` (``execsvc release`` lets it go), ``due_at`` (``not_before``,
    ``delay_s`` or its next retry), ``waiting_for`` (ids in ``after`` that have
    not finished), ``jobs_ahead`` (ready jobs that start before it: higher
    ``priority``, or the same and older), ``problem`` (its fields are not valid,
    so a worker refuses it), ``doomed`` (it can never run: ``will be recorded
    <status>: <why>``, as the worker will record it). All of it is decided by the
    worker's own rules (:func:`execsvc.protocol.readiness.wait_reason`). ``reason`` says it
    in one sentence.
    """

    model_config = ConfigDict(defer_build=True)

    priority: int = 0
    held: bool = False
    due_at: datetime | None = None
    waiting_for: list[str] = []
    after_mode: str | None = None
    attempt: int = 1
    retries: int | None = None
    jobs_ahead: int | None = None
    problem: str | None = None  # why its scheduling fields are not valid: a worker refuses it when it claims it
    doomed: str | None = None  # it never runs: "will be recorded <status>: <why>"
    reason: str = ""

    @property
    def blocked(self) -> bool:
        """Whether something other than jobs ahead keeps it waiting (doomed, held, not due, dependencies)."""
        return self.doomed is not None or self.held or self.due_at is not None or bool(self.waiting_for)


class JobSummary(BaseModel):
    """One line about a job. Times are ISO 8601; ``exit_code`` is null until it exits
    (and for jobs that never ran); ``elapsed_s`` is set while it runs."""

    model_config = ConfigDict(defer_build=True)

    job_id: str
    state: JobState
    status: JobStatus
    command: str | None = None
    description: str | None = None
    exit_code: int | None = None
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_s: float | None = None
    elapsed_s: float | None = None
    error: str | None = None
    priority: int | None = None
    waiting: str | None = None  # why a pending job waits, when not just for its turn
    attempt: int | None = None


class JobPage(BaseModel):
    """A page of jobs, newest first. Pass ``next_cursor`` back to get the next page (null at the end)."""

    model_config = ConfigDict(defer_build=True)

    jobs: list[JobSummary]
    counts: StateCounts
    next_cursor: str | None = None


class JobDetail(BaseModel):
    """Everything known about one job.

    ``position`` (1 = next to start) and ``jobs_ahead`` are set while it is
    pending; ``elapsed_s`` while it runs; ``result`` (the protocol's result
    record) once it has finished. ``spec`` is the JSON job as written (null for
    text jobs); ``path`` the job file or record.
    """

    model_config = ConfigDict(defer_build=True)

    job_id: str
    state: JobState
    status: JobStatus
    finished: bool
    path: str
    position: int | None = None
    jobs_ahead: int | None = None
    waiting: Waiting | None = None
    elapsed_s: float | None = None
    command: str | None = None
    spec: dict[str, Any] | None = None
    result: JobResult | None = None
    note: str | None = None


class OutputChunk(BaseModel):
    """A piece of one stream of a job's full output (``logs/<id>.<stream>``).

    ``text`` is UTF-8 with invalid bytes replaced. ``offset`` and
    ``next_offset`` are byte offsets into the log; ``size_bytes`` is the log's
    size now (it grows while the job runs). ``complete`` is true once the job
    has finished and ``next_offset`` reached the end: there is nothing more.
    ``problem`` says why the log is not read (it is a FIFO, a symbolic link ...,
    not a regular file); ``text`` is empty then.
    """

    model_config = ConfigDict(defer_build=True)

    job_id: str
    stream: Stream
    offset: int
    next_offset: int
    size_bytes: int
    text: str
    job_finished: bool
    complete: bool
    problem: str | None = None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or plain seconds; raises :class:`ValueError`."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 90m or 45s")
    return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


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
    """Counts per state, the worker, and the queue root."""
    return QueueStatus(queue_dir=str(queue.root), counts=counts(queue), worker=worker_status(queue))


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
        rules = _Rules(queue)
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
    if info.state is JobState.PENDING:
        waiting = waiting_of(queue, info, count_ahead=True)
        detail.waiting = waiting
        if waiting.jobs_ahead is not None:
            detail.position, detail.jobs_ahead = waiting.jobs_ahead + 1, waiting.jobs_ahead
        running = len(queue.entries(JobState.RUNNING))
        detail.note = f"waiting: {waiting.reason}; {running} running"
    elif info.state is JobState.RUNNING:
        detail.elapsed_s = _running_for_s(Path(info.path))
    if not detail.finished and queue.worker_info() is None:
        missing = (
            "no worker is serving this queue, so the job waits in pending/: start one with `execsvc run`"
            if info.state is JobState.PENDING
            else "no worker is serving this queue: the next one to start records this job interrupted"
        )
        detail.note = f"{detail.note}; {missing}" if detail.note else missing
    return detail


def waiting_of(queue: JobQueue, info: JobInfo, *, count_ahead: bool = False) -> Waiting:
    """Why the pending job ``info`` waits (see :class:`Waiting`), from the files alone, by the
    worker's rules (:func:`execsvc.protocol.readiness.wait_reason`).

    ``count_ahead`` also counts the ready jobs that start before it (reads
    every pending job's scheduling fields).
    """
    return _Rules(queue).waiting(info, count_ahead=count_ahead)


class _Rules:
    """The scheduler's rules applied to the queue's files, read once per call of the API."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.now = time.time()
        self._pending: dict[str, tuple[JobEntry, SchedulingFields]] | None = None
        self._infos: dict[str, JobInfo | None] = {}

    def pending(self) -> dict[str, tuple[JobEntry, SchedulingFields]]:
        """Every pending job (held ones too) by id, with its scheduling fields (read once)."""
        if self._pending is None:
            self._pending = {
                entry.job_id: (entry, _entry_schedule(entry)) for entry in self.queue.entries(JobState.PENDING)
            }
        return self._pending

    def info(self, job_id: str) -> JobInfo | None:
        """The job with this id (``None``: in no folder), looked up once per call of the API."""
        if job_id not in self._infos:
            try:
                self._infos[job_id] = self.queue.get(job_id)
            except (JobNotFound, InvalidJobId):
                self._infos[job_id] = None
        return self._infos[job_id]

    def lookup(self, job_id: str) -> tuple[JobState, JobStatus] | None:
        info = self.info(job_id)
        return None if info is None else (info.state, info.status)

    def after_of(self, job_id: str) -> tuple[str, ...] | None:
        """A pending job's ``after`` list, as the worker's scheduler knows it (a held job is not offered)."""
        info = self.info(job_id)
        if info is None or info.state is not JobState.PENDING or info.held:
            return None
        return _schedule_of(info.path, info.mtime.timestamp()).after

    def held(self, entry: JobEntry) -> bool:
        return os.path.dirname(entry.path) == str(self.queue.layout.held)

    def blocked(self, entry: JobEntry, schedule: SchedulingFields | None = None) -> bool:
        """Whether a pending job waits for more than its turn (doomed, held, not yet due, a dependency)."""
        schedule = _entry_schedule(entry) if schedule is None else schedule
        held = self.held(entry)
        after_of = self.after_of if schedule.after else None
        reason = wait_reason(schedule, self.lookup, self.now, held=held, job_id=entry.job_id, after_of=after_of)
        return reason.blocked

    def waiting(self, info: JobInfo, *, count_ahead: bool) -> Waiting:
        schedule = _schedule_of(info.path, info.mtime.timestamp())
        after_of = self.after_of if schedule.after else None
        why = wait_reason(schedule, self.lookup, self.now, held=info.held, job_id=info.job_id, after_of=after_of)
        waiting = Waiting(
            priority=schedule.priority,
            held=why.held,
            attempt=schedule.attempt,
            retries=schedule.retries,
            after_mode=schedule.after_mode if schedule.after else None,
            waiting_for=list(why.waiting_for),
            doomed=why.doomed_sentence,
            problem=schedule.problem,
        )
        if why.due_at is not None:
            waiting.due_at = moment(why.due_at)
            if waiting.due_at is None:
                waiting.problem = f"its due time ({why.due_at:g} s after 1970) is past the year 9999"
        if count_ahead and not waiting.blocked:
            waiting.jobs_ahead = self.jobs_ahead(info.job_id)
        waiting.reason = _waiting_reason(waiting)
        return waiting

    def jobs_ahead(self, job_id: str) -> int | None:
        """How many ready pending jobs start before ``job_id`` (the worker's order: :func:`order_key`)."""
        keys: dict[str, OrderKey] = {}
        for other, (entry, schedule) in self.pending().items():
            if other == job_id or not self.blocked(entry, schedule):
                keys[other] = order_key(schedule, entry.mtime_ns, os.path.basename(entry.path))
        mine = keys.get(job_id)
        return None if mine is None else count_ahead(mine, keys.values())


def _entry_schedule(entry: JobEntry) -> SchedulingFields:
    return _schedule_of(entry.path, entry.mtime_ns / 1e9)


def _waiting_reason(waiting: Waiting) -> str:
    parts = []
    if waiting.problem:
        parts.append(f"not valid, a worker refuses it: {waiting.problem}")
    if waiting.doomed:
        parts.append(waiting.doomed)
    if waiting.held:
        parts.append("held: it does not start until released (execsvc release)")
    if waiting.due_at is not None:
        when = waiting.due_at.isoformat(timespec="seconds")
        if waiting.attempt > 1 and waiting.retries is not None:
            parts.append(f"retry {waiting.attempt - 1} of {waiting.retries} at {when}")
        else:
            parts.append(f"due at {when}")
    if waiting.waiting_for:
        parts.append(f"waiting for job(s) {', '.join(waiting.waiting_for)} to finish")
    if not parts:
        ahead = waiting.jobs_ahead
        parts.append(f"behind {ahead} job(s)" if ahead is not None else "ready, waiting for its turn")
    return "; ".join(parts)


def _schedule_of(path: str, written_at: float) -> SchedulingFields:
    try:
        return peek(path, split_job_name(os.path.basename(path))[2], written_at)
    except OSError:
        return PLAIN


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


def wait_for_job(queue: JobQueue, job_id: str, timeout_s: float) -> JobDetail:
    """Block until the job finishes or ``timeout_s`` seconds pass; return its detail either way.

    Woken by file events (:meth:`JobQueue.wait`). Raises :class:`~execsvc.protocol.errors.JobNotFound`
    for a job in no folder.
    """
    queue.wait(job_id, max(0.0, timeout_s))
    return get_job(queue, job_id)


def retry_job(queue: JobQueue, job_id: str) -> str:
    """Enqueue a finished job again under a new id, ``<id>-r1`` (``-r2`` ... if taken); return it.

    A JSON job is resubmitted with its own fields and ``retry_of: <id>`` (kept in
    its record); a text job with its script. Raises :class:`ValueError` for a
    job that has not finished or that was invalid (there is nothing to run).
    """
    info = queue.get(job_id)
    if info.state not in FINISHED_STATES:
        raise ValueError(f"job {job_id!r} is still {info.state.value}; only a finished job can be retried")
    if info.status is JobStatus.INVALID or (info.kind == "json" and info.spec is None) or info.kind == "other":
        raise ValueError(
            f"job {job_id!r} was not a valid job, so there is nothing to run again; fix it and submit anew"
        )
    base = info.job_id
    for attempt in range(1, 1000):
        new_id = f"{base}-r{attempt}"
        if queue.layout.id_in_use(new_id):
            continue
        try:
            if info.kind == "json":
                assert info.spec is not None
                return queue.submit({**info.spec, "retry_of": info.job_id}, job_id=new_id)
            record = Path(info.path)  # a text job's script sits beside its record, under the name it gives
            sidecar = _read_queue_file(record, _RETRIED_MAX_BYTES)
            if sidecar is None:
                raise ValueError(f"the record of job {job_id!r} is no longer a regular file; nothing was retried")
            name = SidecarRecord.model_validate_json(sidecar).job_file
            if "/" in name or split_job_name(name)[1] not in (".sh", ".txt"):
                raise ValueError(f"the script of job {job_id!r} is no longer beside its record")
            script = _read_queue_file(record.parent / name, _RETRIED_MAX_BYTES)
            if script is None:
                raise ValueError(
                    f"the script of job {job_id!r} is no longer beside its record as a regular file "
                    f"(of at most {_RETRIED_MAX_BYTES // 2**20} MiB); nothing was retried"
                )
            return queue.submit_script(script, job_id=new_id, suffix=split_job_name(name)[1])
        except JobIdTaken:
            continue
    raise ValueError(f"job {job_id!r} has been retried too many times")


class CancelOutcome(str, Enum):
    """What :func:`cancel_job` did to a job."""

    CANCELLED = "cancelled"
    """It was pending: it is now in ``failed/`` with status ``cancelled`` and never ran."""
    STOPPED = "stopped"
    """It was running: the worker stopped its process group and recorded it ``cancelled``."""
    REQUESTED = "requested"
    """It is running and a cancel request is in ``running/``: no worker serves the queue (the next
    one to start acts on it), or the job was still stopping when the wait ended."""
    ALREADY_FINISHED = "already_finished"
    """It had finished, or finished with another status before the request took effect."""


class Cancelled(BaseModel):
    """The result of :func:`cancel_job`: the ``outcome``, the ``job`` as it stands after,
    whether a worker serves the queue (``serving``: ``None`` when it was not looked at, the job
    not being running) and how long it waited for a running job (``waited_s``, seconds)."""

    model_config = ConfigDict(defer_build=True)

    outcome: CancelOutcome
    job: JobDetail
    serving: bool | None = None
    waited_s: float = 0.0


def cancel_job(
    queue: JobQueue,
    job_id: str,
    *,
    requested_by: str,
    wait_s: float = CANCEL_WAIT_S,
    progress: Callable[[float, JobDetail], None] | None = None,
) -> Cancelled:
    """Cancel a job, the one way every front does (``execsvc cancel``, the MCP ``cancel_job``).

    A pending job is finished at once, never run (:meth:`JobQueue.cancel`): ``cancelled``.
    For a running job a cancel request is written; when a worker serves the queue this waits,
    woken by file events, up to ``wait_s`` seconds for the job to be recorded: ``stopped`` if
    it is recorded ``cancelled``, ``already_finished`` if it ended otherwise first, else
    ``requested`` (also at once when no worker serves the queue). A finished job is left as it
    is: ``already_finished``. ``progress(waited_s, job)`` is called every
    :data:`CANCEL_PROGRESS_EVERY_S` seconds of the wait while the job runs on.

    Raises :class:`~execsvc.protocol.errors.JobNotFound` for an unknown id (or a job removed while it
    waits), :class:`~execsvc.protocol.errors.InvalidJobId` for an id the protocol refuses and
    :class:`OSError` when the queue cannot be written.
    """
    done = queue.cancel(job_id, requested_by=requested_by)
    if done.outcome == "cancelled":
        return Cancelled(outcome=CancelOutcome.CANCELLED, job=get_job(queue, done.info.job_id))
    if done.outcome == "finished":
        return Cancelled(outcome=CancelOutcome.ALREADY_FINISHED, job=get_job(queue, done.info.job_id))
    job_id = done.info.job_id
    serving = queue.worker_info() is not None
    started = time.monotonic()
    waited = 0.0
    while serving:
        step = min(CANCEL_PROGRESS_EVERY_S, max(0.0, wait_s - waited))
        info = queue.wait(job_id, step)
        waited = time.monotonic() - started
        if info.state in FINISHED_STATES or waited >= wait_s:
            break
        if progress is not None:
            progress(waited, get_job(queue, job_id))
    detail = get_job(queue, job_id)
    if not detail.finished:
        outcome = CancelOutcome.REQUESTED
    elif detail.status is JobStatus.CANCELLED:
        outcome = CancelOutcome.STOPPED
    else:
        outcome = CancelOutcome.ALREADY_FINISHED
    return Cancelled(outcome=outcome, job=detail, serving=serving, waited_s=round(waited, 3))


# ----- helpers ----------------------------------------------------------------------


_RETRIED_MAX_BYTES = 64 * 1024 * 1024
"""The most a record or script read by :func:`retry_job` may hold (a worker refuses job files
above its ``max_job_file_bytes``, 16 MiB unless configured)."""


def _read_queue_file(path: Path, max_bytes: int) -> bytes | None:
    """``path``'s bytes if it is a regular file of at most ``max_bytes``; ``None`` if it is gone,
    is anything else (never followed, never waited on) or is bigger."""
    try:
        return read_regular_file(path, max_bytes)
    except FileNotFoundError:
        return None


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


def moment(seconds: float) -> datetime | None:
    """``seconds`` since the epoch as a local time, or ``None`` when no :class:`datetime` holds it
    (before year 1 or past 9999 here)."""
    try:
        return datetime.fromtimestamp(seconds, UTC).astimezone()
    except (OverflowError, ValueError, OSError):
        return None


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
        waiting = waiting_of(queue, info)
        summary.priority = waiting.priority or None
        summary.waiting = waiting.reason if waiting.blocked or waiting.problem else None
        summary.attempt = waiting.attempt if waiting.attempt > 1 else None
    if result is not None:
        summary.attempt = result.attempt
        summary.exit_code = result.returncode
        summary.started_at = result.started_at
        summary.completed_at = result.completed_at
        summary.duration_s = result.duration_s
        summary.error = result.error
    elif info.state is JobState.RUNNING:
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
