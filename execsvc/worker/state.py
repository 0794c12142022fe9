"""The state the loop's thread owns, and its shapes: candidates, attempts, deadlines.

:class:`LoopState` holds every field the worker's loop reads and changes (the scheduler, the
running attempts and their slots, the deadlines, the pauses); its parts (:mod:`.intake`,
:mod:`.launch`, :mod:`.timers`, :mod:`.messages`, :mod:`.loop`) are its methods and run in
that thread only, so none of it needs a lock.
"""

from __future__ import annotations

import itertools
import logging
import os
import select
import selectors
import signal
import threading
from collections.abc import Callable, Container
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum, unique
from pathlib import Path

from filelock import FileLock

from ..config import WorkerConfig
from ..daemonlog import EventLog
from ..file_events import FileEvents
from ..groups import GroupSlots
from ..hooks import HookStop
from ..inbox import Inbox
from ..policy import result_roots
from ..protocol import ClaimedJob, JobStore
from ..protocol.defaults import DEFAULT_GROUP
from ..protocol.errors import InvalidJobId, JobNotFound
from ..protocol.flusher import GroupFlusher
from ..protocol.jobfile import ClaimedFile
from ..protocol.models import JobState, JobStatus
from ..ready import ReadyWatch
from ..run_request import RunRequest, read_job
from ..runner import ExitInfo, JobProcess
from ..scheduler import Scheduler
from ..webhook_policy import WebhookRule
from .schedules import Schedules

_START_RETRY_FIRST_S = 0.5  # after a start deferred (see Worker._defer); doubled up to the next
_START_RETRY_MAX_S = 30.0


@dataclass
class _Candidate:
    """A file seen in ``pending/``; ``ready`` once it is complete. ``seen``: which file, as
    (inode, modification time in ns, size), so that the claim can tell it took that file."""

    ready: bool
    seen: tuple[int, int, int]


def _identity(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_ino, info.st_mtime_ns, info.st_size


_UNSEEN = (0, 0, -1)


@dataclass
class _ActiveJob:
    claimed: ClaimedJob
    request: RunRequest
    process: JobProcess
    claim_flush: int
    stop_status: JobStatus | None = None
    stop_error: str | None = None  # why it was stopped: "...; its process group got SIGTERM" (how it ended is added)
    stop_signal: signal.Signals | None = None  # the first signal its group got when stopped
    sigkilled_after_s: float | None = None  # set when the group still ran at the kill grace and got SIGKILL
    limit_exceeded: str | None = None
    kept: ClaimedFile | None = None  # its job file as last put back in running/, if the job removed it
    file_note: str | None = None  # what the job did to its own file, for the record's note
    put_back: int = 0  # times its file was put back while it ran
    ready_watch: ReadyWatch | None = None  # a job with ready_when, until it is ready
    attempt: int = field(default_factory=itertools.count(1).__next__)  # unique per start: see _Deadline
    group: str = DEFAULT_GROUP  # the group whose slot it holds (execsvc.groups)
    slot: int = 0  # that slot's index within the group: EXECSVC_SLOT


class _AwaitedOrRunning:
    """The ids whose leaving ``running/`` the watch posts (``left_running``): jobs that others
    wait for, and jobs still running (a running job's file leaves only if the job removed it)."""

    def __init__(self, awaited: Container[str], running: Container[str]) -> None:
        self._awaited, self._running = awaited, running

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._running or job_id in self._awaited


@unique
class DeadlineAction(Enum):
    """What a deadline does when due (:meth:`Worker._run_due_deadlines`), and what its ``key`` names."""

    TIMEOUT = "timeout"
    """A job ran past its timeout: stop its process group (key: the job id)."""
    KILL = "kill"
    """A stopped job's kill grace ended: SIGKILL its process group (key: the job id)."""
    LIMITS = "limits"
    """Look at a job's ``processes`` and ``output_bytes`` (key: the job id)."""
    RECHECK = "recheck"
    """Look at a file in ``pending/`` again (key: its name)."""
    RESUME_STARTS = "resume_starts"
    """Try starting jobs again after a start was deferred (no key)."""
    RESCAN = "rescan"
    """Read the queue's folders, for anything a file event missed (no key)."""
    QUEUE_CHECK = "queue_check"
    """Check that the queue root and its folders are still the ones served (no key)."""
    RETENTION = "retention"
    """Remove finished jobs older than ``retention_days`` (no key)."""
    DRAIN = "drain"
    """The drain period of a stop ended: interrupt the jobs still running (no key)."""
    READY = "ready"
    """Look whether a job with ``ready_when`` is ready (key: the job id)."""


@dataclass(order=True)
class _Deadline:
    """``action`` due at ``at`` (monotonic seconds). A job's deadlines (timeout, kill, limits) name
    the start they belong to (``attempt``, :attr:`_ActiveJob.attempt`), so a deadline set for one
    attempt of a job never acts on the next; it holds no reference to the job, so a deadline
    outliving its job keeps nothing of it in memory."""

    at: float
    seq: int
    action: DeadlineAction = field(compare=False)
    key: str = field(compare=False)
    attempt: int = field(default=0, compare=False)  # 0: not a job's deadline


class LoopState:
    """What the loop's thread owns: every field here is read and changed by the thread that calls
    :meth:`~.loop.Worker.loop` (and by :meth:`~.loop.Worker.initialize` and ``shutdown`` in that
    thread), and by nothing else, so none needs a lock. Other threads get what they need handed
    to them (an attempt, the store, the flusher) and answer through the inbox.

    The exceptions are few and named: ``_give_up`` and ``_hook_stop`` are events the loop sets
    and other threads wait on; ``_root_lost`` and ``_queue_id`` are written once and then read by
    job threads (:meth:`~.guard.QueueGuard._record_refusal`); ``_child_posted`` is set by the
    SIGCHLD handler, which runs in this thread.
    """

    def __init__(
        self,
        queue_dir: Path,
        config: WorkerConfig | None = None,
        *,
        stderr_level: int | None = logging.INFO,
        subreaper: bool = False,
    ) -> None:
        """``stderr_level``: the least ``logging`` level also written to stderr (``None``: nothing);
        ``daemon.log`` always gets every event. ``subreaper``: become the reaper of what jobs
        leave behind (see :func:`~execsvc.reaper.become_subreaper`); only for a process that
        owns all its children, as ``execsvc run`` does (every child it did not start is reaped)."""
        self.config = config or WorkerConfig()
        self.queue = JobStore(queue_dir, create=False)
        self.layout = self.queue.layout
        self._pending_dir, self._running_dir = str(self.layout.pending), str(self.layout.running)
        self._stderr_level = stderr_level
        self._inbox = Inbox()
        self._selector = selectors.DefaultSelector()  # the inbox, and the pidfd of each running job
        self._selector.register(self._inbox, selectors.EVENT_READ, None)
        self._candidates: dict[str, _Candidate] = {}
        self._scheduler = Scheduler(self._lookup)
        self._groups = GroupSlots(self.config, self._group_created)  # each group's slots, the paused groups
        self._schedules = Schedules(self.queue)  # recurring jobs: started in initialize()
        self._active: dict[str, _ActiveJob] = {}
        self._to_record: list[tuple[_ActiveJob, ExitInfo]] = []  # exited in this loop step
        self._recording = 0
        self._deadlines: list[_Deadline] = []
        self._seq = itertools.count()
        self._stopping = False
        self._forced = False
        self._paused: str | None = None  # why claiming is paused: a record could not be written
        self._starts_paused: str | None = None  # why claiming is paused: a job could not be started (see _defer)
        self._starts_failing = False  # claims_paused was logged for starts; claims_resumed not yet
        self._start_retry_s = _START_RETRY_FIRST_S
        self._give_up = threading.Event()  # set when record retries must end (forced stop, shutdown)
        self._lock: FileLock | None = None
        self._root_fd: int | None = None  # the queue root, flock'ed: see _acquire_lock
        self._queue_id: str | None = None  # the root's identity (job_processes.queue_identity) once locked
        self._folder_ids: dict[str, str] = {}  # pending/ and running/ as watched: their identities
        self._root_lost: str | None = None  # why the root is no longer the one served (records stop)
        self._folder_lost = False
        self.exit_code = 0  # of `execsvc run`: 0, or QUEUE_LOST_EXIT
        self._subreaper = subreaper  # asked for; then whether it holds (become_subreaper)
        self._child_posted = False  # a SIGCHLD waits in the inbox (they are coalesced)
        # Flushes the claims, then writes the records in its thread: see Recorder.record_batch.
        self._claim_flusher: GroupFlusher[tuple[_ActiveJob, ExitInfo]] | None = None
        self._file_events: FileEvents | None = None
        self._events_poll: select.poll | None = None  # the watch's descriptor, when the loop reads it
        self._log: EventLog | None = None
        self._environ = dict(os.environ)  # jobs inherit the worker's environment as it was at start
        self._home = Path.home()
        self._result_roots = result_roots(self.layout.root, self.config.result_file_folders)
        self._webhook_rule = WebhookRule(self.config.webhook_hosts)
        # Records are written by the flusher's thread, many per commit (Recorder.record_batch); threads
        # here wait for jobs where there are no pidfds, stop leftovers and retry unstarted records, at
        # most `capacity` (the declared groups' slots) running plus `_max_recording` recording.
        self._max_recording = 2 * self.config.capacity  # records in flight before claiming waits (see _dispatch)
        self._followers: list[threading.Thread] = []  # a thread per remote job followed (remote_jobs)
        self._waiters = ThreadPoolExecutor(max_workers=3 * self.config.capacity, thread_name_prefix="execsvc-job")
        self._hook_stop = HookStop()  # set at the end of the drain period or on a second signal: see FinishHooks

    @property
    def busy(self) -> bool:
        """Whether a job is running or its record and log line are still being written.

        Read it from the thread that calls :meth:`loop`; it changes there.
        """
        return bool(self._active) or self._recording > 0

    @property
    def _flusher(self) -> GroupFlusher[tuple[_ActiveJob, ExitInfo]]:
        assert self._claim_flusher is not None, "initialize() first"
        return self._claim_flusher

    @property
    def log(self) -> EventLog:
        assert self._log is not None, "initialize() first"
        return self._log

    def _guarded(self, step: Callable[..., None], *args: object, **context: str) -> None:
        """Run one step of the loop; an unexpected error is logged (with ``context``), never fatal."""
        try:
            step(*args)
        except Exception as exc:
            self.log.error("internal_error", step=step.__name__, error=repr(exc), **context)

    def _group_created(self, group: str, slots: int) -> None:
        reason = "a job names it; it has the default group's slots"
        self.log.info("group_created", group=group, slots=slots, reason=reason)

    def _read_request(
        self, claimed: ClaimedJob, data: bytes | None = None, info: os.stat_result | None = None
    ) -> RunRequest:
        """:func:`~execsvc.run_request.read_job` of a claimed job with this worker's config,
        environment and home; raises :class:`~execsvc.protocol.errors.InvalidJob` and :class:`OSError`."""
        return read_job(
            claimed.path,
            claimed.kind,
            job_id=claimed.job_id,
            queue_root=self.layout.root,
            config=self.config,
            environ=self._environ,
            home=self._home,
            data=data,
            info=info,
        )

    def _lookup(self, job_id: str) -> tuple[JobState, JobStatus] | None:
        """Where a dependency is and its status, from the folders (for the scheduler, which looks
        again later before it takes a job for missing: this never pauses the loop)."""
        try:
            info = self.queue.get(job_id, patient=False)
        except (JobNotFound, InvalidJobId):
            return None
        return info.state, info.status
