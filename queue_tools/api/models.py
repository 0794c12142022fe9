"""The answers of the fronts' shared API (:mod:`queue_tools.api`): pydantic models shaped for
people and LLMs, which the MCP tools and ``queue-view --json`` return."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from execsvc.protocol.models import JobResult, JobState, JobStatus

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


class GroupSummary(BaseModel):
    """One group (docs/protocol.md, "Groups"): ``slots`` (``None``: no worker says), ``running``
    jobs holding one, ``pending`` jobs in its line (held ones too), ``paused``."""

    model_config = ConfigDict(defer_build=True)

    name: str
    slots: int | None = None
    running: int = 0
    pending: int = 0
    paused: bool = False


class QueueStatus(BaseModel):
    """The queue at a glance: its root, the counts per state and the worker."""

    model_config = ConfigDict(defer_build=True)

    queue_dir: str
    counts: StateCounts
    worker: WorkerStatus
    groups: dict[str, str] | None = None  # each group: "1/2 slots busy, 3 pending[, paused]"; only when
    # the queue has more groups than default, or a paused one

    @staticmethod
    def group_line(group: GroupSummary) -> str:
        """One group in a few words: ``1/2 slots busy, 3 pending`` (``, paused``)."""
        slots = f"{group.running}/{group.slots if group.slots is not None else '?'} slots busy"
        return f"{slots}, {group.pending} pending{', paused' if group.paused else ''}"


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
    group: str | None = None  # its group, unless "default" (docs/protocol.md, "Groups")
    group_paused: bool = False  # its group is paused: it is not claimed until the group is resumed
    group_wait: str | None = None  # why its group claims nothing now: "2/2 slots of group build busy"
    reason: str = ""

    @property
    def blocked(self) -> bool:
        """Whether something other than jobs ahead keeps it waiting (doomed, held, not due,
        dependencies, its group paused)."""
        return (
            self.doomed is not None
            or self.held
            or self.due_at is not None
            or bool(self.waiting_for)
            or self.group_paused
        )


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
    group: str | None = None  # its group, unless "default" (docs/protocol.md, "Groups")


class JobPage(BaseModel):
    """A page of jobs, newest first. Pass ``next_cursor`` back to get the next page (null at the end)."""

    model_config = ConfigDict(defer_build=True)

    jobs: list[JobSummary]
    counts: StateCounts
    next_cursor: str | None = None


class JobDetail(BaseModel):
    """Everything known about one job.

    ``position`` (1 = next to start) and ``jobs_ahead`` are set while it is
    pending; ``elapsed_s`` while it runs (``ready`` once its ``ready_when`` is met); ``result`` (the protocol's result
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
    group: str | None = None  # its group, unless "default" (docs/protocol.md, "Groups")
    elapsed_s: float | None = None
    command: str | None = None
    spec: dict[str, Any] | None = None
    result: JobResult | None = None
    note: str | None = None
    ready: bool = False  # running, and its ready_when met (a service that is up)


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


class OutputPage(BaseModel):
    """A page of one stream of a job's output (``logs/<id>.<stream>``), by lines or bytes.

    ``text`` is UTF-8 with invalid bytes replaced; ``first_line``/``last_line`` number
    its lines (from 1; null when the page starts inside a line); ``offset`` and
    ``next_offset`` are byte offsets; ``total_lines`` (null past 256 MiB) and
    ``total_bytes`` are the log's now (it grows while the job runs). ``cut`` says what
    is not shown and why, ``next`` the exact call that reads on. ``complete``: the job
    has finished and nothing is left after this page. ``problem``: why the log is not
    read (not a regular file).
    """

    model_config = ConfigDict(defer_build=True)

    job_id: str
    stream: Stream
    text: str
    first_line: int | None = None
    last_line: int | None = None
    total_lines: int | None = None
    total_bytes: int
    offset: int
    next_offset: int
    cut: str | None = None
    next: str | None = None
    job_finished: bool = False
    complete: bool = False
    problem: str | None = None


class StreamTail(BaseModel):
    """The end of one stream: ``text`` (its last lines), the log's ``lines`` and ``bytes``,
    and, when ``text`` is not all of it, ``more``: the calls that read the rest."""

    model_config = ConfigDict(defer_build=True)

    text: str
    lines: int | None = None
    bytes: int = 0
    more: str | None = None
    problem: str | None = None


class Match(BaseModel):
    """One matching line: its job, stream, line number (from 1) and text, with context lines."""

    model_config = ConfigDict(defer_build=True)

    job_id: str
    stream: Stream
    line: int
    text: str
    before: list[str] | None = None
    after: list[str] | None = None


class SearchAnswer(BaseModel):
    """The lines of jobs' output that match a pattern, in log order, job by job.

    ``cut`` says why the search stopped early (matches cap, time, size), ``next`` how to go on."""

    model_config = ConfigDict(defer_build=True)

    pattern: str
    matches: list[Match]
    jobs_searched: int = 0
    lines_searched: int = 0
    cut: str | None = None
    next: str | None = None


class RunningStats(BaseModel):
    """A running job's process group now (psutil): seconds of CPU used, resident memory (MiB),
    how many processes; ``problem`` when they cannot be looked at."""

    model_config = ConfigDict(defer_build=True)

    cpu_s: float | None = None
    rss_mb: float | None = None
    processes: int | None = None
    problem: str | None = None


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


def moment(seconds: float) -> datetime | None:
    """``seconds`` since the epoch as a local time, or ``None`` when no :class:`datetime` holds it
    (before year 1 or past 9999 here)."""
    try:
        return datetime.fromtimestamp(seconds, UTC).astimezone()
    except (OverflowError, ValueError, OSError):
        return None
