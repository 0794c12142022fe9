"""The one API the fronts share: the MCP server, ``queue-view`` and ``execsvc``'s job commands.

Each function takes a :class:`~execsvc.JobQueue` and returns a pydantic model
shaped for people and LLMs (the MCP tools build their answers from these).
Everything here is built on the protocol's public API: it reads the queue
folders, enqueues, holds, releases and cancels; it never runs a job.

Errors: :class:`~execsvc.protocol.errors.JobNotFound` for an unknown id,
:class:`~execsvc.protocol.errors.InvalidJobId` for an id the protocol refuses,
:class:`ValueError` for a bad cursor, stream name or pattern, :class:`OSError`
when the queue cannot be read or written.

Every file of the queue is read as a regular file only (:func:`open_for_reading`,
:func:`~execsvc.protocol.durable.read_regular_file`): a symbolic link there is never
followed, a FIFO never waited on, and nothing is moved (a client only reads).
A job's log that is not a regular file is named in the chunk's ``problem``;
a ``daemon.log`` that is not raises :class:`~execsvc.protocol.durable.NotRegularFile`.

The modules: :mod:`.models` (the answers), :mod:`.jobs` (listing, one job),
:mod:`.waits` (why a job waits), :mod:`.groups` (groups, their slots and pauses), :mod:`.output` (logs), :mod:`.actions`
(wait, retry, cancel, hold, release), :mod:`.lines` (output by lines),
:mod:`.search` (lines matching a pattern), :mod:`.stats` (a running job's processes),
:mod:`.schedules` (recurring jobs: list, add, remove schedule files).
"""

from .actions import cancel_job, check_after, check_policy, hold_job, release_job, retry_job, wait_for_job
from .groups import GroupLoads, group_summaries
from .jobs import counts, get_job, list_jobs, parse_duration, queue_status, slots_sentence, timeout_of, worker_status
from .models import (
    CANCEL_PROGRESS_EVERY_S,
    CANCEL_WAIT_S,
    COMMAND_WIDTH,
    Cancelled,
    CancelOutcome,
    GroupSummary,
    JobDetail,
    JobPage,
    JobSummary,
    Match,
    OutputChunk,
    OutputPage,
    QueueStatus,
    RunningStats,
    SearchAnswer,
    StateCounts,
    Stream,
    StreamTail,
    Waiting,
    WorkerStatus,
    moment,
)
from .output import daemon_log_tail, open_for_reading, read_output
from .schedules import ScheduleSummary, add_schedule, get_schedule, list_schedules, remove_schedule
from .waits import waiting_of

__all__ = [
    "CANCEL_PROGRESS_EVERY_S",
    "CANCEL_WAIT_S",
    "COMMAND_WIDTH",
    "CancelOutcome",
    "Cancelled",
    "GroupLoads",
    "GroupSummary",
    "JobDetail",
    "JobPage",
    "JobSummary",
    "Match",
    "OutputChunk",
    "OutputPage",
    "QueueStatus",
    "RunningStats",
    "ScheduleSummary",
    "SearchAnswer",
    "StateCounts",
    "Stream",
    "StreamTail",
    "Waiting",
    "WorkerStatus",
    "add_schedule",
    "cancel_job",
    "check_after",
    "check_policy",
    "counts",
    "daemon_log_tail",
    "get_job",
    "get_schedule",
    "group_summaries",
    "hold_job",
    "list_jobs",
    "list_schedules",
    "moment",
    "open_for_reading",
    "parse_duration",
    "queue_status",
    "read_output",
    "release_job",
    "remove_schedule",
    "retry_job",
    "slots_sentence",
    "timeout_of",
    "wait_for_job",
    "waiting_of",
    "worker_status",
]
