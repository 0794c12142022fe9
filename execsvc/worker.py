"""The worker: wakes on file events in ``pending/``, runs jobs in FIFO order, records results.

Shaped like huey's consumer: :meth:`Worker.initialize`, then :meth:`Worker.loop`
(one step: wait for the next message or deadline, act, start what may start)
until it returns False, then :meth:`Worker.shutdown`; ``execsvc run``
(:func:`execsvc.cli.run`) is that life cycle.

The loop waits in one ``selectors`` call on three kinds of descriptor: the
inotify descriptor of watchdog's wrapper (read right there, see :mod:`.file_events`),
a pidfd per running job (readable when its main process exits), and the
:class:`~.inbox.Inbox` pipe that other threads post messages through. So a
job's exit frees its slot in the loop itself, and the file events already
waiting in the kernel are read before that slot is filled (FIFO holds with
no rescan). Threads: a job thread per job being recorded (it waits until the
job's claim is on disk, then writes the record); one flusher thread makes
claims durable, many per fsync (:class:`~.protocol.flusher.GroupFlusher`); hook
threads; signal handlers only post a message. Where there are no pidfds
(macOS, Linux before 5.3) a job thread also waits for its job's exit and posts
it, and the loop then reads ``pending/`` itself before filling the slot
(:meth:`Worker._catch_up`); where the inotify descriptor cannot be reached,
watchdog's thread reads it. Everything else happens in the thread that calls
:meth:`loop`, so the queue state needs no locks. File events are a wake-up
call, not the truth: on each one the worker looks at the file, and a slow
rescan catches anything an event missed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import itertools
import logging
import os
import select
import selectors
import signal
import stat
import threading
import time
from collections.abc import Callable, Container
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import Enum, unique
from pathlib import Path
from types import FrameType
from typing import assert_never

import psutil
from filelock import FileLock, Timeout

from .config import WorkerConfig
from .daemonlog import EventLog, open_event_log
from .file_events import FileEvents, open_file_events
from .hooks import HookStop, post_webhook, run_on_finish
from .inbox import Inbox, Message, MessageKind
from .job_logs import cut_log
from .job_processes import find_job_processes, queue_identity
from .limits import describe, diagnose, is_empty
from .policy import judge, result_roots
from .protocol import ClaimedJob, JobStore, __version__
from .protocol.defaults import QUEUE_ID_ENV
from .protocol.durable import MovedAside, open_regular, read_regular_file, write_durable
from .protocol.errors import InvalidJob, InvalidJobId, JobNotFound, QueueLocked, WatchFailed
from .protocol.flusher import GroupFlusher
from .protocol.jobfile import ClaimedFile, parse_json_job, submitted_by
from .protocol.layout import is_ignored_name, split_job_name
from .protocol.leases import Snapshot, install_lease_guard, look_at_file, read_unwritten
from .protocol.models import CancelRequest, JobResult, JobSpec, JobState, JobStatus, WorkerInfo
from .protocol.readiness import Doomed
from .protocol.scheduling import fields_from_head, peek_bytes
from .reaper import become_subreaper, orphans_of, reap_orphans
from .recovery import settle_running
from .results import build_result, command_not_found, copy_result_file, status_of_exit, unstarted_result
from .retention import clean
from .retry import delay_s, next_attempt, should_retry
from .run_request import RunRequest, read_job
from .runner import ExitInfo, JobProcess, SpawnError, StartDeferred, keep_descriptors_from_jobs, now
from .scheduler import Scheduler
from .webhook_policy import WebhookRule

_TEMP_MAX_AGE_S = 60.0
_CATCH_UP_MAX_FILES = 256
_RETENTION_EVERY_S = 86_400.0
_LEFT_IN_RUNNING = "the job stays in running/ and is settled at the next start"
_OWN_FILE_RETRIES = 5
_PUT_BACK_WHILE_RUNNING = 3
"""Times a running job's removed file is put back at once (a job removing it in a loop gets it back at its end)."""
"""Records tried at once, each after putting the job file back, while a job's leftovers keep changing it."""


def _job_file_is(claimed: ClaimedJob, kept: ClaimedFile) -> bool:
    """Whether the job's file in ``running/`` is still ``kept`` (same inode, size, modification time)."""
    try:
        return kept.describes(os.lstat(claimed.path))
    except FileNotFoundError:
        return False


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
"""Signals that stop the worker the normal way: no more claims, running jobs drain for
``drain_timeout_s``, then are stopped as ``interrupted``; exit code 0. A second one stops the jobs
at once. (SIGHUP: the terminal closed, or an operator asks for a restart; the service manager
starts the worker again, which reads the config file anew.)"""

STATUS_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
"""Signals that only write a ``status`` line to ``daemon.log`` (jobs running, recording, pending)."""

_KEEP_IGNORED = (signal.SIGHUP, signal.SIGQUIT)

QUEUE_LOST_EXIT = 75
"""The worker's exit code (EX_TEMPFAIL) when it stopped serving because its queue root, or
``pending/`` or ``running/``, was removed, moved or replaced: its service manager starts it
again, on whatever the queue path names now."""

_QUEUE_CHECK_S = 1.0  # how often the root, pending/ and running/ are checked to be the ones served

_READ_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""Errors opening or reading a claimed job file that are the worker's want (descriptors, memory),
not the job's: the claim is undone (:meth:`Worker._defer`), never recorded ``invalid``."""
_START_RETRY_FIRST_S = 0.5  # after a start deferred (see Worker._defer); doubled up to the next
_START_RETRY_MAX_S = 30.0
_RECORD_MAX_BYTES = 64 * 1024 * 1024  # as execsvc.protocol reads records


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
    attempt: int = field(default_factory=itertools.count(1).__next__)  # unique per start: see _Deadline


def _how_it_stopped(job: _ActiveJob, exit_info: ExitInfo) -> str:
    """The end of a stopped job's error: whether its first signal sufficed or SIGKILL was needed."""
    first = job.stop_signal
    if first is None or first is signal.SIGKILL:
        return ""
    if job.sigkilled_after_s is not None:
        return f", then SIGKILL after {job.sigkilled_after_s:g} s as it was still running"
    if exit_info.returncode == -first:
        return ", which ended it"
    return f"; it then exited with code {exit_info.returncode}" if exit_info.returncode >= 0 else ""


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


class Worker:
    """Serves one queue root until told to stop. See the module docstring for the shape."""

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
        self._active: dict[str, _ActiveJob] = {}
        self._to_record: list[tuple[_ActiveJob, ExitInfo]] = []  # exited in this loop step
        self._recording = 0
        self._records_awaited = True  # whether a finished record must wake the loop: see _post_recorded
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
        self._claim_flusher: GroupFlusher | None = None
        self._file_events: FileEvents | None = None
        self._events_poll: select.poll | None = None  # the watch's descriptor, when the loop reads it
        self._log: EventLog | None = None
        self._environ = dict(os.environ)  # jobs inherit the worker's environment as it was at start
        self._home = Path.home()
        self._result_roots = result_roots(self.layout.root, self.config.result_file_folders)
        self._webhook_rule = WebhookRule(self.config.webhook_hosts)
        # Threads that record jobs (and wait for them where there are no pidfds), reused: at most
        # `slots` running plus `_max_recording` recording, and no thread start on the hot path.
        self._max_recording = 2 * self.config.slots  # records in flight before claiming waits (see _dispatch)
        self._waiters = ThreadPoolExecutor(
            max_workers=self.config.slots + self._max_recording, thread_name_prefix="execsvc-job"
        )
        self._hooks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="execsvc-hook")  # on_finish, webhook
        self._hook_stop = HookStop()  # set at the end of the drain period or on a second signal
        self._hooks_lock = threading.Lock()
        self._hooks_in_flight = 0  # jobs whose hooks are queued or running (see _hooks_idle)

    # ----- life cycle -------------------------------------------------------------

    def initialize(self) -> None:
        """Create and check the folders, take the lock, settle what a dead worker left, start watching.

        Raises :class:`~execsvc.protocol.errors.UnsafeQueue` for folders others can
        write to, :class:`~execsvc.protocol.errors.QueueLocked` (naming the holder's
        PID) when another worker serves this queue, and
        :class:`~execsvc.protocol.errors.WatchFailed` when ``pending/`` cannot be watched.
        """
        self.layout.ensure()
        self._log = open_event_log(
            self.layout.daemon_log,
            max_bytes=self.config.log_max_bytes,
            backups=self.config.log_backups,
            stderr_level=self._stderr_level,
            in_queue=True,
        )
        self.queue.on_moved_aside = self._log_moved_aside
        previous = self.queue.worker_info()
        self._acquire_lock(previous)
        self._environ[QUEUE_ID_ENV] = self._queue_id or ""  # every job knows its queue by identity
        if self._subreaper:
            self._subreaper = become_subreaper()
        self._folder_ids = {
            folder: queue_identity(path)
            for folder, path in (("pending", self.layout.pending), ("running", self.layout.running))
        }
        self._claim_flusher = GroupFlusher(self.queue.claim_folders())
        started = datetime.fromtimestamp(psutil.Process().create_time(), UTC)
        info = WorkerInfo(
            pid=os.getpid(),
            slots=self.config.slots,
            started_at=started,
            queue_dir=str(self.layout.root),
            version=__version__,
            allowed_commands=list(self.config.allowed_commands) if self.config.allowed_commands is not None else None,
            allow_shell=self.config.allow_shell,
            sandbox=self.config.sandbox,
            sandbox_for=list(self.config.sandbox_for),
            config_file=self.config.config_file,
            default_timeout_s=self.config.default_timeout_s,
            max_timeout_s=self.config.max_timeout_s,
            kill_grace_s=self.config.kill_grace_s,
        )
        write_durable(self.layout.worker_file, info.model_dump_json().encode(), replace=True, sync=False)
        self.log.info(
            "worker_started", pid=os.getpid(), slots=self.config.slots, queue=str(self.layout.root), version=__version__
        )
        settle_running(
            self.queue,
            self.log,
            previous=previous,
            kill_grace_s=self.config.kill_grace_s,
            tail_bytes=self.config.output_tail_bytes,
        )
        self.queue.remove_stale_temp_files(_TEMP_MAX_AGE_S)
        for job_id in self.queue.cancel_requests():  # their jobs were settled above; none runs
            self.queue.drop_cancel_request(job_id)
        if threading.current_thread() is threading.main_thread():
            install_lease_guard()
            self._install_signal_handlers()
        try:
            self._file_events = open_file_events(
                str(self.layout.pending),
                str(self.layout.running),
                self._inbox,
                _AwaitedOrRunning(self._scheduler.depended_on_ids, self._active.keys()),
                root=str(self.layout.root),
            )
            self._file_events.start(own_thread=False)
        except OSError as exc:
            self._file_events = None
            self.log.error("cannot_watch", folder=str(self.layout.root), error=str(exc))
            raise WatchFailed(
                f"cannot watch {self.layout.pending} and {self.layout.running}: {exc}. On Linux, raise the inotify "
                "limits (sysctl fs.inotify.max_user_instances / fs.inotify.max_user_watches)"
            ) from exc
        events_fd = self._file_events.fileno()
        if events_fd is not None:
            self._selector.register(events_fd, selectors.EVENT_READ, self._file_events)
            self._events_poll = select.poll()  # asked without waiting when a slot frees: _events_waiting
            self._events_poll.register(events_fd, select.POLLIN)
        keep_descriptors_from_jobs()  # before the first job: see JobProcess._spawn
        self._rescan()
        self._set_deadline(self.config.rescan_interval_s, DeadlineAction.RESCAN, "")
        self._set_deadline(_QUEUE_CHECK_S, DeadlineAction.QUEUE_CHECK, "")
        if self.config.retention_days is not None:
            self._set_deadline(0, DeadlineAction.RETENTION, "")
        self.log.info("watching", folder=str(self.layout.pending), pending=len(self._candidates))

    def loop(self) -> bool:
        """One step: wait for a message or the next deadline, act on it, start ready jobs.

        Returns False once the worker has stopped (after a signal, with no
        job left running or being recorded, and no finish hook left: hooks
        may run on until the drain period ends, then are abandoned).
        """
        self._dispatch()  # work found by the start-up scan or left by the last step
        self._records_awaited = self._awaits_records()  # then look at the inbox: see _post_recorded
        timeout = 0 if self._inbox.waiting() else self._time_to_next_deadline()
        exited = events = woken = False
        for key, _events in self._selector.select(timeout):
            if isinstance(key.data, str):  # a job's pidfd: its main process exited
                self._guarded(self._on_exit, key.data, job=key.data)
                exited = True
            elif key.data is not None:  # the file events, read here (see open_file_events)
                events = True
            else:  # the inbox
                woken = True
        if events or (exited and self._events_waiting()):  # before a freed slot is filled: see _catch_up
            self._guarded(self._read_events)
        for message in self._inbox.drain(woken=woken):
            self._guarded(self._handle, message)
        self._guarded(self._run_due_deadlines)
        self._scheduler.wake(time.time())
        self._dispatch()
        for exited_job in self._to_record:  # after the freed slots are filled: see _on_exit
            self._waiters.submit(self._record, *exited_job)
        self._to_record.clear()
        return not (self._stopping and not self._active and self._recording == 0 and self._hooks_idle())

    def shutdown(self) -> None:
        """Stop watching, wait for job threads, release the lock, say goodbye in the log.

        Jobs still running here (the loop ended on an unexpected error) are killed
        and recorded as ``interrupted``, so that this never waits forever.
        """
        if self._file_events is not None:
            self._file_events.stop()
        if self._active:
            self._interrupt_all("the worker stopped on an internal error", signal.SIGKILL)
            for job in self._active.values():  # reaped and recorded by job threads, which block
                if job.process.pidfd is not None:
                    self._selector.unregister(job.process.pidfd)
                    self._waiters.submit(self._wait_for_exit, job)
        self._give_up.set()
        self._waiters.shutdown(wait=True)
        self._hook_stop.set()  # hooks still queued or running (only after an internal error) are abandoned
        self._hooks.shutdown(wait=True)
        self._selector.close()
        self._inbox.close()
        if self._claim_flusher is not None:
            self._claim_flusher.close()
        if self._lock is not None:
            if self._serves_root():  # never another worker's worker.json, in a root that replaced ours
                with contextlib.suppress(FileNotFoundError):
                    self.layout.worker_file.unlink()
            self._lock.release()
        if self._root_fd is not None:
            os.close(self._root_fd)  # releases the flock
            self._root_fd = None
        if self._log is not None:
            self.log.info("worker_stopped", pid=os.getpid())
            self._log.close()

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask the worker to stop, as SIGTERM does (safe from any thread or a signal handler)."""
        self._inbox.put((MessageKind.SIGNAL, str(signum)), wake=True)

    @property
    def busy(self) -> bool:
        """Whether a job is running or its record and log line are still being written.

        Read it from the thread that calls :meth:`loop`; it changes there.
        """
        return bool(self._active) or self._recording > 0

    @property
    def _flusher(self) -> GroupFlusher:
        assert self._claim_flusher is not None, "initialize() first"
        return self._claim_flusher

    @property
    def log(self) -> EventLog:
        assert self._log is not None, "initialize() first"
        return self._log

    # ----- messages -----------------------------------------------------------------

    def _guarded(self, step: Callable[..., None], *args: object, **context: str) -> None:
        """Run one step of the loop; an unexpected error is logged (with ``context``), never fatal."""
        try:
            step(*args)
        except Exception as exc:
            self.log.error("internal_error", step=step.__name__, error=repr(exc), **context)

    def _install_signal_handlers(self) -> None:
        """Handle every signal a terminal or an operator commonly sends, so none ends the worker
        without the normal stop (see :data:`STOP_SIGNALS` and :data:`STATUS_SIGNALS`).

        SIGHUP and SIGQUIT are left ignored when the worker was started with them ignored
        (``nohup``, a service manager): that is how the one who started it asked it to outlive
        the terminal.
        """
        for signum in (*STOP_SIGNALS, *STATUS_SIGNALS):
            if signum in _KEEP_IGNORED and signal.getsignal(signum) == signal.SIG_IGN:
                continue
            signal.signal(signum, self._on_signal)
        if self._subreaper:  # an orphan re-parented here exited: reap it (see _handle)
            signal.signal(signal.SIGCHLD, self._on_child)

    def _on_child(self, _signum: int, _frame: FrameType | None) -> None:
        """SIGCHLD: reap orphans at the loop's next step, without waking it for that: nearly every
        SIGCHLD is a job's own exit, whose pidfd wakes the loop anyway, and an orphan's zombie costs
        nothing until then (a job thread waiting for its group to empty reaps the group's zombies
        itself, and the rescan reaps at the latest)."""
        if not self._child_posted:
            self._child_posted = True
            self._inbox.put((MessageKind.CHILD, ""), wake=False)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._inbox.put((MessageKind.SIGNAL, str(signum)), wake=True)  # SimpleQueue.put is reentrant: safe here

    def _handle(self, message: Message) -> None:
        kind, value = message
        match kind:
            case MessageKind.EVENT:
                self._consider(value)
            case MessageKind.EXITED:
                self._slot_freed(value)
                self._catch_up()
            case MessageKind.RECORDED:
                self._recording -= 1
                self._scheduler.settled(value, time.time())
            case MessageKind.LEFT_RUNNING:
                job = self._active.get(value)
                if job is not None:  # still running: the job removed or moved its own file
                    self._put_back_while_running(job)
                else:  # a job another program recorded (execsvc cancel): its dependents may go on
                    self._scheduler.settled(value, time.time())
            case MessageKind.RECORD_FAILING:
                if self._paused is None:
                    self.log.error(
                        "claims_paused",
                        reason=value,
                        note="no job is claimed until records can be written again (free disk space, or fix the "
                        "permissions of completed/ and failed/); the worker retries by itself",
                    )
                self._paused = value
            case MessageKind.RECORD_WRITTEN:
                if self._paused is not None:
                    self._paused = None
                    self.log.info("claims_resumed", reason="records can be written again")
            case MessageKind.CHILD:
                self._child_posted = False
                reap_orphans()
            case MessageKind.SIGNAL:
                if int(value) in STATUS_SIGNALS:
                    self._log_status(int(value))
                else:
                    self._on_stop_request(int(value))
            case MessageKind.CANCEL:
                self._on_cancel_request(value)
            case MessageKind.RESCAN:
                self.log.warning("events_lost", reason="the kernel's event queue overflowed; reading the folders")
                self._rescan_all()
            case MessageKind.WATCH_LOST:
                self._check_queue()
            case MessageKind.HOOKS_DONE:
                pass  # a wake-up only: loop() looks at _hooks_idle() after this step
            case _:
                assert_never(kind)

    def _put_back_while_running(self, job: _ActiveJob) -> None:
        """A running job removed or moved its own file: put it back in ``running/`` at once (at most
        ``_PUT_BACK_WHILE_RUNNING`` times), so that the job is still found there while it runs (by
        :meth:`JobStore.get`, cancel, its dependents) and settled after a crash; the record says so."""
        kept = job.kept or job.request.claimed
        if kept is None or job.put_back >= _PUT_BACK_WHILE_RUNNING:
            return
        job.put_back += 1
        try:
            job.kept, note = self.queue.restore_job_file(job.claimed, kept)
        except OSError as exc:  # put back before the record instead
            self.log.warning("job_file_changed", job.claimed.job_id, error=str(exc))
            return
        if note is not None:
            job.file_note = note
            self.log.warning("job_file_changed", job.claimed.job_id, reason=note, note="put back while it runs")

    def _on_cancel_request(self, job_id: str) -> None:
        """A client asked to cancel ``job_id``: stop its process group; it is recorded ``cancelled``."""
        request = self._read_cancel_request(job_id)
        if not self.queue.drop_cancel_request(job_id):
            return  # already consumed: the event of that removal, or a rescan that found it first
        job = self._active.get(job_id)
        if job is None:
            self.log.info("cancel_ignored", job_id, reason="the job is not running (it ended, or never started here)")
        elif job.stop_status is None:
            sig = signal.Signals[request.signal]
            job.stop_status = JobStatus.CANCELLED
            forced = " (forced)" if request.force else ""
            job.stop_error = f"the job was cancelled on request{forced} while running; its process group got {sig.name}"
            self.log.warning("cancelling", job_id, signal=sig.name, kill_grace_s=self.config.kill_grace_s)
            self._stop_job(job, sig)

    def _read_cancel_request(self, job_id: str) -> CancelRequest:
        """What ``running/.cancel.<id>`` asks (docs/protocol.md); one that cannot be read asks for SIGTERM."""
        try:
            body = read_regular_file(self.layout.cancel_request(job_id), 4096)
            return CancelRequest() if body is None else CancelRequest.model_validate_json(body)
        except (OSError, ValueError):
            return CancelRequest()

    def _log_status(self, signum: int) -> None:
        """SIGUSR1 or SIGUSR2: one ``status`` line in ``daemon.log``; the worker serves on."""
        self.log.info(
            "status",
            signal=signal.Signals(signum).name,
            running=len(self._active),
            recording=self._recording,
            pending=len(self._candidates),
            stopping="yes" if self._stopping else None,
            claims_paused=self._paused,
        )

    def _on_stop_request(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self._stopping:
            self._stopping = True
            self.log.info(
                "worker_stopping", signal=name, running=len(self._active), drain_timeout_s=self.config.drain_timeout_s
            )
            self._set_deadline(self.config.drain_timeout_s, DeadlineAction.DRAIN, "")
        elif not self._forced:
            self._forced = True
            self._give_up.set()
            self._hook_stop.set()
            self.log.warning("worker_stopping_now", signal=name, running=len(self._active))
            self._interrupt_all(
                f"the worker got a second stop signal ({name}) and stopped the job at once", signal.SIGKILL
            )

    # ----- pending files ------------------------------------------------------------

    def _consider(self, name: str) -> None:
        """Look at ``pending/<name>`` after an event or in a scan; mark it ready when complete.

        On the path of every job (and of every file at start-up): plain string
        paths, and one open of the file both to ask whether it is still being
        written and to read what its scheduling fields need. The candidate keeps which
        file that was (``seen``); a second event for a ready file is skipped
        unless the name now holds another file or the file changed.
        """
        if is_ignored_name(name):
            return
        path = f"{self._pending_dir}/{name}"
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            self._forget(name)
            return
        known = self._candidates.get(name)
        seen = _identity(info)
        if known is not None and known.ready and known.seen == seen:
            return  # a second event for the same file (a changed one is looked at again)
        stem, _suffix, kind = split_job_name(name)
        head = None
        if kind != "other" and stat.S_ISREG(info.st_mode):
            try:
                writing, head, opened = look_at_file(path, peek_bytes(kind))
            except FileNotFoundError:
                self._forget(name)
                return
            except OSError:  # unreadable: refused with the reason when claimed
                writing, opened = False, None
            if opened is not None:  # the file whose head was read, for the claim to compare with
                info, seen = opened, _identity(opened)
            if not self._complete(name, kind, info, writing, head):
                self._candidates[name] = _Candidate(False, seen)
                return
        if info.st_nlink > 1 and self.queue.settle_release(name, info):
            self.log.info("release_settled", file=name, reason="a release cut short left it held too; now only pending")
        # A retry whose last attempt is still leaving running/ (only a job thread recording a job
        # writes one, so the look is skipped when none is, as for every file at start-up).
        if self._recording and os.path.lexists(f"{self._running_dir}/{name}"):
            self._candidates[name] = _Candidate(False, seen)
            self._set_deadline(0.005, DeadlineAction.RECHECK, name)
            return
        self._candidates[name] = _Candidate(True, seen)
        fields = fields_from_head(head, kind, info.st_mtime)
        self._scheduler.offer(name, stem, fields, info.st_mtime_ns, time.time())

    def _forget(self, name: str) -> None:
        """``pending/<name>`` is gone (claimed, held, cancelled or removed)."""
        self._candidates.pop(name, None)
        self._scheduler.forget(name)

    def _complete(self, name: str, kind: str, info: os.stat_result, writing: bool | None, head: bytes | None) -> bool:
        """Whether a job file is whole: nobody has it open for writing (``writing``, from the lease
        check), or, where that cannot be asked, JSON that parses (``head``: the bytes already read),
        or a script unchanged for ``settle_s``."""
        if writing is not None:
            return not writing
        quiet_for = time.time() - info.st_mtime
        if quiet_for >= self.config.settle_s:
            return True
        if kind == "json" and head is not None:
            try:
                parse_json_job(head)
                return True
            except InvalidJob:
                pass
        self._set_deadline(self.config.settle_s - quiet_for + 0.01, DeadlineAction.RECHECK, name)
        return False

    def _catch_up(self) -> None:
        """A slot was freed by a job thread: read pending/ itself before choosing the next job.

        File events read by a thread lag behind the files under load, so a job
        dropped before this moment might not have been seen yet; looking now
        gives it its FIFO place. Skipped for a backlog of more than
        ``_CATCH_UP_MAX_FILES`` known files, where one look costs more than
        the order it could fix. (A slot freed in the loop, by a pidfd, needs
        none of this where the loop reads the events itself: it reads those
        already waiting in the kernel first, see :meth:`loop`.)
        """
        if len(self._candidates) <= _CATCH_UP_MAX_FILES:
            self._rescan()

    def _events_waiting(self) -> bool:
        """Whether file events wait to be read by the loop (never blocks)."""
        return self._events_poll is not None and bool(self._events_poll.poll(0))

    def _read_events(self) -> None:
        assert self._file_events is not None
        self._file_events.read()

    def _rescan_all(self) -> None:
        """Read pending/, the cancel requests and the dependencies, in case a file event was lost."""
        self._rescan()
        self._scheduler.recheck(time.time())
        for job_id in self.queue.cancel_requests():
            self._on_cancel_request(job_id)

    def _rescan(self) -> None:
        with os.scandir(self.layout.pending) as entries:
            names = [entry.name for entry in entries]
        present = set(names)
        for gone in [name for name in self._candidates if name not in present]:
            del self._candidates[gone]
            self._scheduler.forget(gone)
        for name in names:
            candidate = self._candidates.get(name)
            if candidate is None or not candidate.ready:
                self._consider(name)

    # ----- starting jobs ------------------------------------------------------------

    def _dispatch(self) -> None:
        if self._claims_held() or not self._scheduler.has_ready():
            return
        while (doomed := self._scheduler.take_doomed()) is not None:  # recorded at once: no slot needed
            candidate = self._candidates.pop(doomed.name, None)
            if candidate is not None:
                self._guarded(self._start, doomed.name, candidate, doomed, file=doomed.name)
        while len(self._active) < self.config.slots and self._recording < self._max_recording:
            if self._starts_paused is not None:  # the last start in this loop was deferred
                return
            name = self._scheduler.take_ready()
            if name is None:
                return
            candidate = self._candidates.pop(name, None)
            if candidate is None or not candidate.ready:
                continue
            self._guarded(self._start, name, candidate, None, file=name)  # the worker never dies of a job

    def _claims_held(self) -> bool:
        """Whether no job may be claimed now: stopping, or paused (records, or starts, failing)."""
        return self._stopping or self._paused is not None or self._starts_paused is not None

    def _lookup(self, job_id: str) -> tuple[JobState, JobStatus] | None:
        """Where a dependency is and its status, from the folders (for the scheduler, which looks
        again later before it takes a job for missing: this never pauses the loop)."""
        try:
            info = self.queue.get(job_id, patient=False)
        except (JobNotFound, InvalidJobId):
            return None
        return info.state, info.status

    def _start(self, name: str, seen: _Candidate, doomed: Doomed | None) -> None:
        """Claim ``pending/<name>``, read it and start its process; on the latency path.

        A ``doomed`` job (see :mod:`.scheduler`) is claimed and recorded
        with its status and reason instead (after its file is read and the
        policy has judged it, so a job that is not valid or that the policy
        refuses is still recorded ``invalid`` for that). Nothing of a job the
        policy refuses runs: not its program, not its finish hooks.

        What is claimed is checked in the one open that reads it
        (:meth:`_check_claim`): a file that is being written, or that is
        not the file ``seen`` when its scheduling fields were read (rewritten in place,
        replaced by a rename), goes back to ``pending/`` unstarted and is
        looked at again; a file with other names (hard links) runs from a
        private copy (:meth:`JobStore.unshare`).

        The claim is made durable by the flusher thread while the job starts
        (the job's own thread waits for it before the record, see :meth:`_wait_for_exit`),
        and the ``claimed``/``started`` lines are written after the spawn, so
        neither an fsync nor a log write delays the job.
        """
        try:
            claimed = self.queue.claim(name, flush=False)
        except FileNotFoundError:
            if os.path.lexists(self.layout.held / name):
                self.log.info("held", file=name, reason="the job was put on hold; it stays pending until released")
            else:
                self.log.info("vanished", file=name, reason="the file left pending/ before it could be claimed")
            return
        job_id = claimed.job_id
        kept, data, info = self._check_claim(name, seen, claimed)
        if not kept:
            return
        try:
            request = read_job(
                claimed.path,
                claimed.kind,
                job_id=job_id,
                queue_root=self.layout.root,
                config=self.config,
                environ=self._environ,
                home=self._home,
                data=data,
                info=info,
            )
        except InvalidJob as exc:
            self._finish_unstarted(claimed, JobStatus.INVALID, exc.reason, None)
            return
        # The policy first: nothing of a job it refuses runs, not even its finish hooks.
        verdict = judge(
            request,
            claimed.kind,
            allowed_commands=self.config.allowed_commands,
            allow_shell=self.config.allow_shell,
            refused_env=self.config.refused_env,
            result_roots=self._result_roots,
            webhooks=self._webhook_rule,
        )
        if verdict.problem is not None:
            where = f" (set in {self.config.config_file})" if self.config.config_file else ""
            self._finish_unstarted(claimed, JobStatus.INVALID, verdict.problem + where, request, refused=True)
            return
        if request.result_file is not None and not request.result_file.parent.is_dir():
            self._finish_unstarted(
                claimed,
                JobStatus.FAILED,
                f"the folder of result_file {request.result_file} does not exist; the job was not started",
                request,
            )
            return
        if doomed is not None:
            self._finish_unstarted(claimed, doomed.status, doomed.reason, request)
            return
        if verdict.executable is not None:
            request = replace(request, executable=verdict.executable)
        process = JobProcess(
            request,
            self.layout.stdout_log(job_id),
            self.layout.stderr_log(job_id),
            kill_grace_s=self.config.kill_grace_s,
        )
        try:
            process.start()
        except SpawnError as exc:
            self._not_started(name, claimed, request, process, exc)
            return
        job = _ActiveJob(claimed, request, process, self._flusher.request())
        self._active[job_id] = job
        if process.pidfd is not None:
            try:
                self._selector.register(process.pidfd, selectors.EVENT_READ, job_id)
            except (OSError, ValueError) as exc:  # never seen; else its exit would go unnoticed
                self.log.warning("exit_waited_by_thread", job_id, reason=f"the loop cannot wait on its pidfd: {exc!r}")
                os.close(process.pidfd)
                process.pidfd = None
        if process.pidfd is None:
            self._waiters.submit(self._wait_for_exit, job)
        self._set_deadline(request.timeout_s, DeadlineAction.TIMEOUT, job_id, job)
        if request.polls_limits:
            self._set_deadline(self.config.limit_check_interval_s, DeadlineAction.LIMITS, job_id, job)
        self._log_claimed(claimed, request)
        self._starts_work(job_id, process)
        capped = request.requested_timeout_s is not None and request.requested_timeout_s > request.timeout_s
        self.log.info(
            "started",
            job_id,
            pid=process.pid,
            timeout_s=request.timeout_s,
            timeout_capped="yes" if capped else None,
            attempt=request.options.attempt if request.options.attempt > 1 else None,
            sandbox=request.sandbox.record.profile if request.sandbox else None,
            argv=" ".join(request.argv)[:300],
        )

    def _check_claim(
        self, name: str, seen: _Candidate, claimed: ClaimedJob
    ) -> tuple[bool, bytes | None, os.stat_result | None]:
        """Whether the claim of ``pending/<name>`` stands, and the job file's bytes and ``fstat`` if
        they were read (the ``fstat`` only while it is still the file in ``running/``: not after a
        private copy).

        One open of the claimed file (:func:`~execsvc.protocol.leases.read_unwritten`):
        its bytes, its ``fstat`` and whether a process has it open for
        writing. Being written, or not the file ``seen``: given back
        (:meth:`_give_back`), False. Other names: a private copy first (if
        it cannot be written, the job is recorded ``failed``, False), unless
        it is above ``max_job_file_bytes`` (never copied: :func:`read_job`
        refuses it unread, and it is kept as it is). Not
        read (another ending) or not opened (a link, a socket): True,
        ``None``, ``None``, and :func:`read_job` says why. Raises
        :class:`FileNotFoundError` if the file left ``running/``.
        """
        if claimed.kind == "other":
            return True, None, None
        try:
            snapshot = read_unwritten(claimed.path, self.config.max_job_file_bytes)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno in _READ_SHORTAGES:  # the worker's own want, not the job's: it never ran
                self._defer(name, claimed, None, f"its job file cannot be read: {exc.strerror or exc}")
                return False, None, None
            return True, None, None
        regular = stat.S_ISREG(snapshot.info.st_mode)  # anything else is refused, whatever it holds
        if snapshot.writing or (regular and _identity(snapshot.info) != seen.seen):
            self._give_back(name, claimed, snapshot)
            return False, None, None
        if regular and snapshot.info.st_nlink > 1 and snapshot.data is not None:  # None: too big, refused unread
            try:
                self.queue.unshare(claimed, name, snapshot.data, snapshot.info)
            except OSError as exc:  # the disk is full, say: it does not run from a file others can change
                reason = f"the job file has other names (hard links) and its private copy could not be written: {exc}"
                self._finish_unstarted(claimed, JobStatus.FAILED, f"{reason}; it was not run", None)
                return False, None, None
            return True, snapshot.data, None  # a new inode: read_job looks it up
        return True, snapshot.data, snapshot.info

    def _give_back(self, name: str, claimed: ClaimedJob, snapshot: Snapshot) -> None:
        """The claimed file is being written, or is not the file whose scheduling fields were read: undo the
        claim (it has not started) and look at ``pending/<name>`` again, as a new file.

        A file being written is looked at again when its writer closes it (the
        event), one that changed at once (a deadline of 0: in the next loop
        step, so a file rewritten without end cannot hold the loop).
        """
        reason = (
            "a process has it open for writing"
            if snapshot.writing
            else "it is not the file that was seen (rewritten in place or replaced since)"
        )
        try:
            self.queue.unclaim(claimed, name)
        except FileExistsError:  # a new file took its name meanwhile: keep this one, with the reason
            self._finish_unstarted(
                claimed,
                JobStatus.INVALID,
                f"when it was claimed, {reason}, and a new file took its name in pending/ before it could be put "
                "back; it was not run",
                None,
            )
            return
        self._flusher.request()  # flushed like a claim; nothing waits for it (the job never ran)
        self.log.info("claim_returned", file=name, reason=f"{reason}; it stays pending and is looked at again")
        self._candidates[name] = _Candidate(False, _UNSEEN)
        if not snapshot.writing:
            self._set_deadline(0, DeadlineAction.RECHECK, name)

    def _defer(self, name: str, claimed: ClaimedJob, request: RunRequest | None, reason: str) -> None:
        """A claimed job could not be started for a reason of the worker's (:class:`StartDeferred`,
        or its file could not be read for want of descriptors or memory): nothing of it ran.

        The claim is undone (:meth:`JobStore.unclaim`: back to ``pending/<name>``, never
        replacing) and claims pause with ``reason``; a ``resume_starts`` deadline lifts the pause
        after 0.5 s, doubling up to 30 s while starts keep failing, and the next start that works
        logs ``claims_resumed``. If the job cannot be put back (a new ``pending/<name>`` took its
        place), it is recorded ``failed`` with the reason instead."""
        job_id = claimed.job_id
        try:
            self.queue.unclaim(claimed, name)
        except OSError as exc:
            self._finish_unstarted(
                claimed,
                JobStatus.FAILED,
                f"{reason}; the job was not started, and could not be put back into pending/: {exc}",
                request,
            )
        else:
            self.log.warning("unclaimed", job_id, file=name, reason=reason, note="it never ran; it is back in pending/")
        if not self._starts_failing:
            self._starts_failing = True
            self.log.error(
                "claims_paused",
                reason=reason,
                note="no job is claimed until jobs can be started again (free file descriptors, disk space or "
                "inodes, or fix logs/); the worker retries by itself",
            )
        self._starts_paused = reason
        self._set_deadline(self._start_retry_s, DeadlineAction.RESUME_STARTS, "")
        self._start_retry_s = min(self._start_retry_s * 2, _START_RETRY_MAX_S)

    def _not_started(
        self, name: str, claimed: ClaimedJob, request: RunRequest, process: JobProcess, exc: SpawnError
    ) -> None:
        """The job's process could not be started: the claim is undone if the worker is the cause
        (:meth:`_defer`), else the job is recorded ``failed`` with the reason."""
        self._log_moved_aside_logs(claimed.job_id, process)
        if isinstance(exc, StartDeferred):
            self._defer(name, claimed, request, str(exc))
        else:
            self._finish_unstarted(claimed, JobStatus.FAILED, str(exc), request)

    def _starts_work(self, job_id: str, process: JobProcess) -> None:
        """A job started: say what its logs' opening moved aside; if starts were failing, they
        work again (``claims_resumed``)."""
        self._log_moved_aside_logs(job_id, process)
        if self._starts_failing:
            self._starts_failing, self._start_retry_s = False, _START_RETRY_FIRST_S
            self.log.info("claims_resumed", reason="jobs can be started again")

    def _log_moved_aside_logs(self, job_id: str, process: JobProcess) -> None:
        for moved in process.moved_aside:
            self._log_moved_aside(moved, job_id)

    def _log_moved_aside(self, moved: MovedAside, job_id: str | None = None) -> None:
        """Something not a regular file was where the worker writes one (safe from any thread)."""
        self.log.warning("moved_aside", job_id, file=str(moved.path), aside=moved.aside.name, reason=moved.describe())

    def _log_claimed(self, claimed: ClaimedJob, request: RunRequest | None) -> None:
        if claimed.renamed_from is not None:
            self.log.warning(
                "renamed",
                claimed.job_id,
                file=claimed.job_file,
                reason=f"the id {claimed.renamed_from!r} is already used in this queue or is not a valid id",
            )
        who = submitted_by(request.spec if request else None)
        self.log.info("claimed", claimed.job_id, file=claimed.job_file, submitted_by=who)

    def _finish_unstarted(
        self, claimed: ClaimedJob, status: JobStatus, error: str, request: RunRequest | None, *, refused: bool = False
    ) -> None:
        """Record a job that never started. ``request`` (if the file could be read) gives the record
        its fields and runs the job's finish hooks, unless the policy ``refused`` the job: then
        nothing of it runs."""
        self._log_claimed(claimed, request)
        self._flusher.wait(self._flusher.request())  # the claim on disk before the record
        result = unstarted_result(claimed, status, error, request)
        spec = request.spec if request else None
        event = "invalid" if status is JobStatus.INVALID else "finished"
        try:
            record = self.queue.finish(claimed, result, spec)
        except OSError:  # the disk is full or the folder unwritable: a job thread retries it
            self._recording += 1
            self._waiters.submit(self._record_later, claimed, result, spec, event, error)
            return
        self.log.warning(event, claimed.job_id, status=status.value, reason=error)
        self._scheduler.settled(claimed.job_id, time.time())
        if request is not None and not refused:
            self._after_record(claimed.job_id, request, record, status)

    def _record_later(self, claimed: ClaimedJob, result: JobResult, spec: JobSpec | None, event: str, why: str) -> None:
        """In a job thread: the record of a job that never started, once it can be written."""
        try:
            self._write_record(claimed, result, spec)
            self.log.warning(event, claimed.job_id, status=result.status.value, reason=why)
        except Exception as exc:
            self.log.error("record_failed", claimed.job_id, error=repr(exc), note=_LEFT_IN_RUNNING)
        finally:
            self._post_recorded(claimed.job_id)

    def _write_record(
        self, claimed: ClaimedJob, result: JobResult, spec: JobSpec | None, kept: ClaimedFile | None = None
    ) -> Path:
        """``queue.finish``, retried while the file system refuses it (full disk, unwritable folder).

        For a job that ran, ``kept`` is its job file as claimed (or as last
        put back); the file is first put back as it was claimed if the job
        removed or changed it (see :meth:`_restore_job_file`). A failure of
        the record while the job file is no longer that one (a process the
        job left changed it again) is the job's, not the disk's: the file is
        put back and the record tried again at once, up to
        ``_OWN_FILE_RETRIES`` times, then the last error is raised (the job
        stays in ``running/`` and is settled at the next start; claims go
        on). Any other failure (putting the file back included) is the
        storage's: it posts ``record_failing``, which pauses claiming;
        success after it posts ``record_written``, which resumes it. Those
        retries back off from 0.5 s to 30 s and end when the worker gives up
        (a second stop signal, the end of the drain period, or shutdown),
        raising the last error.
        """
        delay_s = 0.5
        failed = False
        own_file_retries = 0
        while True:
            restored = False
            try:
                if kept is not None:
                    kept = self._restore_job_file(claimed, kept, result)
                restored = True
                record = self.queue.finish(claimed, result, spec)
            except FileExistsError:  # not the disk: a record is already there (settled at the next start)
                raise
            except OSError as exc:
                if restored and kept is not None and not _job_file_is(claimed, kept):
                    own_file_retries += 1
                    if own_file_retries > _OWN_FILE_RETRIES:
                        raise
                    continue
                failed = True
                reason = f"the record of job {claimed.job_id} cannot be written: {exc}"
                self._inbox.put((MessageKind.RECORD_FAILING, reason))
                if self._give_up.wait(delay_s):
                    raise
                delay_s = min(delay_s * 2, 30.0)
                continue
            if failed:
                self._inbox.put((MessageKind.RECORD_WRITTEN, claimed.job_id))
            return record

    def _restore_job_file(self, claimed: ClaimedJob, kept: ClaimedFile, result: JobResult) -> ClaimedFile:
        """If the job removed, moved, replaced or changed its own file in ``running/``, put it back
        as it was claimed (:meth:`JobStore.restore_job_file`) and say so in the record's ``note``
        and in ``daemon.log``; return the file now there. Raises :class:`OSError` when ``running/``
        cannot be written."""
        kept, note = self.queue.restore_job_file(claimed, kept)
        if note is not None:
            result.note = note
            self.log.warning("job_file_changed", claimed.job_id, reason=note)
        return kept

    # ----- a running job's thread ---------------------------------------------------

    def _on_exit(self, job_id: str) -> None:
        """In the loop: a job's main process exited (its pidfd is readable). Reap it and free its
        slot at once, unless processes of its group remain (a job thread stops those first,
        then frees the slot); a job thread writes the record."""
        job = self._active[job_id]
        assert job.process.pidfd is not None
        self._selector.unregister(job.process.pidfd)
        try:
            exit_info = job.process.reap()
        except Exception as exc:  # never seen; without this the slot would stay taken for good
            self._active.pop(job_id, None)
            self.log.error("reap_failed", job_id, error=repr(exc), note=_LEFT_IN_RUNNING)
            return
        if exit_info.leftovers_stopped:
            self._waiters.submit(self._stop_leftovers, job, exit_info)
            return
        self._slot_freed(job_id)  # the loop reads waiting file events before filling it
        # Recorded by a job thread once this loop step has started the next job: a record's
        # Python work would otherwise contend for the GIL with that start (its latency).
        self._to_record.append((job, exit_info))

    def _slot_freed(self, job_id: str) -> None:
        self._active.pop(job_id, None)
        self._recording += 1

    def _awaits_records(self) -> bool:
        """Whether the loop, about to wait, needs to hear of each record written at once: when no
        job runs (nothing else would wake it; ``busy`` turns False), to stop, to start a job the
        recording cap holds back, to resume claims, or for waiting dependents."""
        return (
            not self._active
            or self._stopping
            or self._paused is not None
            or self._recording >= self._max_recording
            or bool(self._scheduler.depended_on_ids)
        )

    def _post_recorded(self, job_id: str) -> None:
        """From a job thread: the job is recorded (or put back for a retry).

        Woken only when the loop said it waits for records; otherwise the
        message waits for the loop's next wake-up (a job's exit, a file, a
        deadline), one wake-up less per job. No wake-up is lost: the loop sets
        ``_records_awaited`` and then looks at the inbox; this posts and then
        reads the flag, so one of the two sees the other.
        """
        self._inbox.put((MessageKind.RECORDED, job_id), wake=False)
        if self._records_awaited:
            self._inbox.wake()

    def _stop_leftovers(self, job: _ActiveJob, exit_info: ExitInfo) -> None:
        """In a job thread: stop what the job left in its process group, free its slot, record it."""
        try:
            job.process.stop_leftovers(exit_info)
        finally:
            self._inbox.put((MessageKind.EXITED, job.claimed.job_id))
        self._record(job, exit_info)

    def _wait_for_exit(self, job: _ActiveJob) -> None:
        """In a job thread, where jobs have no pidfd: wait for the exit, free the slot, record it."""
        try:
            exit_info = job.process.wait()
        finally:
            self._inbox.put((MessageKind.EXITED, job.claimed.job_id))
        self._record(job, exit_info)

    def _record(self, job: _ActiveJob, exit_info: ExitInfo) -> None:
        """In a job thread, once the job has exited: write its record (or put it back for a retry)."""
        job_id = job.claimed.job_id
        claim_error = self._flusher.wait(job.claim_flush)  # the claim is on disk before the record
        if claim_error is not None:
            self.log.error("claim_not_flushed", job_id, error=claim_error)
        if not self._serves_root():  # a record now would land in another queue: see _check_queue
            self.log.error("not_recorded", job_id, reason=self._root_lost or "the queue root was replaced")
            self._inbox.put((MessageKind.WATCH_LOST, "root"))
            self._post_recorded(job_id)
            return
        try:
            result = self._result(job, exit_info)
            if job.file_note is not None:  # (a field left unset stays out of a JSON job's record)
                result.note = job.file_note
            kept = job.kept or job.request.claimed
            if kept is not None:
                with contextlib.suppress(OSError):  # before a retry reads it; else done in _write_record
                    kept = self._restore_job_file(job.claimed, kept, result)
            if should_retry(job.request, result.status) and not self._give_up.is_set() and self._retry(job, result):
                return
            record = self._write_record(job.claimed, result, job.request.spec, kept)
            self.log.info(
                "finished",
                job_id,
                status=result.status.value,
                exit_code=result.returncode,
                signal=result.signal,
                duration_s=result.duration_s,
                leftovers_stopped="yes" if exit_info.leftovers_stopped else None,
                limit_exceeded=result.limit_exceeded,
                attempt=result.attempt,
            )
            self._after_record(job_id, job.request, record, result.status)
        except Exception as exc:
            self.log.error("record_failed", job_id, error=repr(exc), note=_LEFT_IN_RUNNING)
        finally:
            self._post_recorded(job_id)

    def _result(self, job: _ActiveJob, exit_info: ExitInfo) -> JobResult:
        status, error = job.stop_status, job.stop_error
        if error is not None and status in (JobStatus.TIMEOUT, JobStatus.CANCELLED):
            error += _how_it_stopped(job, exit_info)
        limits = job.request.limits
        if job.limit_exceeded == "output_bytes":
            self._cut_output(job)
        if status is None:
            status, error = status_of_exit(exit_info.returncode)
            if error is not None and job.request.failure_hint is not None:
                error = f"{error}; {job.request.failure_hint}"
        error = self._report_escaped(job, error)
        status, error = copy_result_file(self.layout, job.claimed, job.request, status, error, self._result_roots)
        result = build_result(
            self.layout,
            job.claimed,
            status,
            error,
            tail_bytes=self.config.output_tail_bytes,
            request=job.request,
            exit_info=exit_info,
            pid=job.process.pid,
        )
        exceeded = job.limit_exceeded
        missing = command_not_found(exit_info.returncode, result.stderr[-4096:]) if job.stop_status is None else None
        if missing is not None:
            hint = job.request.failure_hint
            result.error = f"command not found: {missing} (exit code 127)" + (f"; {hint}" if hint else "")
        if exceeded is None and status is JobStatus.FAILED and job.stop_status is None:
            exceeded = diagnose(limits, exit_info.returncode, result.stderr[-4096:])
            if exceeded is not None:
                result.error = f"{error}; the job went beyond {describe(exceeded, limits)}"
        attempt = job.request.options.attempt
        result.limit_exceeded = exceeded
        result.limits = None if is_empty(limits) else limits
        if attempt > 1 or job.request.retries:
            result.attempt = attempt
            result.attempt_records = [
                str(self.layout.attempt_record(job.claimed.job_id, n).relative_to(self.layout.root))
                for n in range(1, attempt)
            ]
        return result

    def _cut_output(self, job: _ActiveJob) -> None:
        """Cut each log of a job stopped for ``output_bytes`` at that many bytes."""
        limit = job.request.limits.output_bytes
        assert limit is not None
        for path in (job.process.stdout_path, job.process.stderr_path):
            cut_log(path, limit)

    def _retry(self, job: _ActiveJob, result: JobResult) -> bool:
        """In the job's thread: keep this attempt's result and output, and put the job back into
        ``pending/`` for its next attempt (see :mod:`.retry`). False if it cannot be re-enqueued
        (the caller then records the job as finished)."""
        claimed, request = job.claimed, job.request
        attempt = request.options.attempt
        wait_s = delay_s(request, self.config)
        due = now() + timedelta(seconds=wait_s)
        try:
            for stream in ("stdout", "stderr"):
                aside = self.layout.attempt_log(claimed.job_id, attempt, stream)
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.layout.stream_log(claimed.job_id, stream), aside)
                setattr(result, f"{stream}_log", str(aside.relative_to(self.layout.root)))
            write_durable(
                self.layout.attempt_record(claimed.job_id, attempt),
                result.model_dump_json(indent=2).encode("utf-8"),
                replace=True,
            )
            job_file = read_regular_file(claimed.path, self.config.max_job_file_bytes)
            if job_file is None:
                raise OSError(f"{claimed.path} is no longer the regular job file it was")
            data = next_attempt(job_file, claimed.kind, attempt + 1, due)
            self.queue.requeue(claimed, data)
        except OSError as exc:
            result.error = f"{result.error}; it was not retried: {exc}"
            self.log.error("retry_failed", claimed.job_id, error=str(exc))
            return False
        self.log.warning(
            "retrying",
            claimed.job_id,
            status=result.status.value,
            exit_code=result.returncode,
            attempt=attempt + 1,
            of=request.retries + 1,
            delay_s=round(wait_s, 3),
            retry_at=due.isoformat(timespec="milliseconds"),
        )
        return True  # the caller's thread posts "recorded", as for a record

    def _after_record(self, job_id: str, request: RunRequest, record: Path, status: JobStatus) -> None:
        """Start the job's finish hooks, if it has any, in the hook threads (never waited for here)."""
        if request.options.on_finish is not None or request.options.webhook is not None:
            with self._hooks_lock:
                self._hooks_in_flight += 1
            self._hooks.submit(self._run_hooks, job_id, request, record, status)

    def _hooks_idle(self) -> bool:
        """Whether no finish hook is queued or running (read by the loop before it stops)."""
        with self._hooks_lock:
            return self._hooks_in_flight == 0

    def _run_hooks(self, job_id: str, request: RunRequest, record: Path, status: JobStatus) -> None:
        """In a hook thread: the job's ``on_finish``, then its ``webhook``; each outcome is a line.

        Bounded by the stop: once :attr:`_hook_stop` is set (the drain period
        ended, or a second stop signal), a hook in flight is cut short and the
        rest are not started; each is logged ``on_finish_abandoned`` /
        ``webhook_abandoned``. When done, wakes the loop, which may be waiting
        for the last hook to stop.
        """
        abandoned = "the worker was stopping; the hook is not run again"
        try:
            if request.options.on_finish is not None and not self.config.allow_shell:  # judge refuses such jobs
                self.log.error("on_finish_refused", job_id, reason="allow_shell = false; the hook was not run")
            elif request.options.on_finish is not None:
                logs = (self.layout.hook_log(job_id, "stdout"), self.layout.hook_log(job_id, "stderr"))
                if self._hook_stop.is_set():
                    self.log.warning("on_finish_abandoned", job_id, reason=abandoned)
                else:
                    outcome = run_on_finish(
                        request,
                        request.options.on_finish,
                        record,
                        status.value,
                        logs,
                        timeout_s=self.config.hook_timeout_s,
                        stop=self._hook_stop,
                    )
                    if not outcome.ok and self._hook_stop.is_set():
                        self.log.warning("on_finish_abandoned", job_id, reason=abandoned, outcome=outcome.detail)
                    else:
                        event = "on_finish_done" if outcome.ok else "on_finish_failed"
                        (self.log.info if outcome.ok else self.log.warning)(event, job_id, outcome=outcome.detail)
            if request.options.webhook is not None:
                url = request.options.webhook
                if self._hook_stop.is_set():
                    self.log.warning("webhook_abandoned", job_id, url=url, reason=abandoned)
                else:
                    body = read_regular_file(record, _RECORD_MAX_BYTES)  # the record just written: never a FIFO
                    if body is None:
                        raise OSError(f"{record} is no longer a regular file of at most {_RECORD_MAX_BYTES} bytes")
                    outcome = post_webhook(
                        url,
                        body,
                        timeout_s=self.config.webhook_timeout_s,
                        attempts=self.config.webhook_attempts,
                        rule=self._webhook_rule,
                        stop=self._hook_stop,
                    )
                    if not outcome.ok and self._hook_stop.is_set():
                        self.log.warning("webhook_abandoned", job_id, url=url, reason=abandoned, outcome=outcome.detail)
                    else:
                        event = "webhook_sent" if outcome.ok else "webhook_failed"
                        (self.log.info if outcome.ok else self.log.warning)(
                            event, job_id, url=url, outcome=outcome.detail
                        )
        except Exception as exc:
            self.log.error("hook_error", job_id, error=repr(exc))
        finally:
            with self._hooks_lock:
                self._hooks_in_flight -= 1
            self._inbox.put((MessageKind.HOOKS_DONE, job_id))  # the inbox outlives the hook threads: see shutdown

    def _report_escaped(self, job: _ActiveJob, error: str | None) -> str | None:
        """After every end of a job (exit, timeout, cancel, interrupt, limit): name the job's
        processes that left its process group.

        A process that moved to a group of its own (``setpgid``) or started a
        session of its own (``setsid``, a double fork) is out of reach of the
        group's signals. It is reported in the record and the log, and left
        running, since leaving the group is how a job keeps a process on
        purpose (see :mod:`.runner`). Where the worker is a subreaper, such
        processes were re-parented to it, so it looks only at its own
        children (:func:`~execsvc.reaper.orphans_of`); elsewhere it reads
        every process's environment for the job id.
        """
        job_id = job.claimed.job_id
        if self._subreaper:
            escaped = orphans_of(job_id)
        else:
            escaped = find_job_processes(self.layout.root, {job_id}).get(job_id, [])
        if not escaped:
            return error
        pids = ",".join(str(proc.pid) for proc in escaped)
        self.log.warning(
            "escaped", job_id, pids=pids, reason="processes of the job left its process group (setpgid or setsid)"
        )
        note = (
            f"{len(escaped)} process(es) of the job left its process group (setsid or a double fork) and "
            f"still run, unstopped: PID {pids}"
        )
        return f"{error}; {note}" if error else note

    # ----- deadlines ------------------------------------------------------------------

    def _set_deadline(self, delay_s: float, action: DeadlineAction, key: str, job: _ActiveJob | None = None) -> None:
        """Do ``action`` for ``key`` in ``delay_s`` seconds; a job's deadline names its attempt (``job``)."""
        attempt = job.attempt if job is not None else 0
        heapq.heappush(self._deadlines, _Deadline(time.monotonic() + delay_s, next(self._seq), action, key, attempt))
        if len(self._deadlines) > 4 * (len(self._active) + len(self._candidates) + 64):
            self._deadlines = [d for d in self._deadlines if self._deadline_live(d)]
            heapq.heapify(self._deadlines)

    def _deadline_live(self, deadline: _Deadline) -> bool:
        """Whether a deadline still has something to do: a job's, only while that attempt runs."""
        match deadline.action:
            case DeadlineAction.TIMEOUT | DeadlineAction.KILL | DeadlineAction.LIMITS:
                return self._job_of(deadline) is not None
            case (
                DeadlineAction.RECHECK
                | DeadlineAction.RESUME_STARTS
                | DeadlineAction.RESCAN
                | DeadlineAction.QUEUE_CHECK
                | DeadlineAction.RETENTION
                | DeadlineAction.DRAIN
            ):
                return True
            case _:
                assert_never(deadline.action)

    def _job_of(self, deadline: _Deadline) -> _ActiveJob | None:
        """The running job a job's deadline was set for, or ``None`` once that attempt has ended."""
        job = self._active.get(deadline.key)
        return job if job is not None and job.attempt == deadline.attempt else None

    def _time_to_next_deadline(self) -> float | None:
        """Seconds until the next deadline or the next timed job is due (``None``: none)."""
        while self._deadlines and not self._deadline_live(self._deadlines[0]):
            heapq.heappop(self._deadlines)
        waits = [self._deadlines[0].at - time.monotonic()] if self._deadlines else []
        due_at = self._scheduler.next_due_at()
        if due_at is not None:
            waits.append(due_at - time.time())
        return max(0.0, min(waits)) if waits else None

    def _check_limits(self, job: _ActiveJob) -> None:
        """A job's ``processes`` and ``output_bytes``, every ``limit_check_interval_s`` (see :mod:`.limits`)."""
        limits = job.request.limits
        exceeded = None
        if limits.processes is not None and job.process.group_size() > limits.processes:
            exceeded = "processes"
        elif limits.output_bytes is not None and max(job.process.output_sizes()) > limits.output_bytes:
            exceeded = "output_bytes"
        if exceeded is None:
            self._set_deadline(self.config.limit_check_interval_s, DeadlineAction.LIMITS, job.claimed.job_id, job)
            return
        job.stop_status, job.limit_exceeded = JobStatus.FAILED, exceeded
        job.stop_error = f"the job went beyond {describe(exceeded, limits)}; its process group got SIGKILL"
        if exceeded == "output_bytes":
            job.stop_error += f"; its output was cut at {limits.output_bytes:,} bytes per stream"
        self.log.warning("limit_exceeded", job.claimed.job_id, limit=exceeded, signal="SIGKILL")
        self._stop_job(job, signal.SIGKILL)

    def _run_due_deadlines(self) -> None:
        current = time.monotonic()
        while self._deadlines and self._deadlines[0].at <= current:
            deadline = heapq.heappop(self._deadlines)
            match deadline.action:
                case DeadlineAction.TIMEOUT:
                    job = self._job_of(deadline)
                    if job is not None and job.stop_status is None:
                        job.stop_status = JobStatus.TIMEOUT
                        job.stop_error = (
                            f"the job ran past its timeout of {job.request.timeout_s:g} s; its process group "
                            "got SIGTERM"
                        )
                        self._stop_job(job, signal.SIGTERM)
                case DeadlineAction.KILL:
                    job = self._job_of(deadline)
                    if job is not None and job.process.signal_group(signal.SIGKILL):
                        job.sigkilled_after_s = self.config.kill_grace_s
                case DeadlineAction.LIMITS:
                    job = self._job_of(deadline)
                    if job is not None and job.stop_status is None:
                        self._check_limits(job)
                case DeadlineAction.RECHECK:
                    self._consider(deadline.key)
                case DeadlineAction.RESUME_STARTS:
                    self._starts_paused = None  # the next start tries again (see _defer)
                case DeadlineAction.RESCAN:
                    if self._subreaper:
                        reap_orphans()
                    self._rescan_all()
                    self._set_deadline(self.config.rescan_interval_s, DeadlineAction.RESCAN, "")
                case DeadlineAction.QUEUE_CHECK:
                    self._check_queue()
                    if self._root_lost is None:
                        self._set_deadline(_QUEUE_CHECK_S, DeadlineAction.QUEUE_CHECK, "")
                case DeadlineAction.RETENTION:
                    self._set_deadline(_RETENTION_EVERY_S, DeadlineAction.RETENTION, "")
                    self._apply_retention()
                case DeadlineAction.DRAIN:
                    self._give_up.set()  # a record still being retried is left for the next start
                    self._hook_stop.set()  # hooks still queued or running are abandoned
                    self._interrupt_all(
                        f"the worker was stopping and the job did not finish within the "
                        f"{self.config.drain_timeout_s:g} s drain period",
                        signal.SIGTERM,
                    )
                case _:
                    assert_never(deadline.action)

    def _apply_retention(self) -> None:
        """Remove finished jobs older than ``retention_days`` (once a day, in the loop thread)."""
        assert self.config.retention_days is not None
        report = clean(self.queue, older_than_s=self.config.retention_days * 86_400)
        if report.count:
            self.log.info(
                "retention",
                removed=report.count,
                bytes_freed=report.bytes_freed,
                older_than_days=self.config.retention_days,
            )

    def _stop_job(self, job: _ActiveJob, sig: signal.Signals) -> None:
        if job.stop_signal is None:
            job.stop_signal = sig
        job.process.signal_group(sig)
        if sig != signal.SIGKILL:
            self._set_deadline(self.config.kill_grace_s, DeadlineAction.KILL, job.claimed.job_id, job)

    def _interrupt_all(self, reason: str, sig: signal.Signals) -> None:
        for job in self._active.values():
            if job.stop_status in (None, JobStatus.TIMEOUT):
                job.stop_status, job.stop_error = JobStatus.INTERRUPTED, reason
            self.log.warning("interrupting", job.claimed.job_id, signal=sig.name)
            self._stop_job(job, sig)

    # ----- start-up -------------------------------------------------------------------

    def _acquire_lock(self, previous: WorkerInfo | None) -> None:
        """Take the queue for this worker alone, or raise :class:`~execsvc.protocol.errors.QueueLocked`.

        The lock is an exclusive ``flock`` on the queue root directory itself,
        through a descriptor held until :meth:`shutdown`. A lock on a path's
        file (``worker.lock`` alone) is defeated by deleting that file (a temp
        cleaner, ``rm -rf``): the next worker creates and locks a new file of
        the same name. The root's inode cannot be swapped under an open
        descriptor, and every path to it (a bind mount, a symbolic link) meets
        the same lock. After locking, the root's path must still name the locked
        directory (else it was replaced meanwhile). ``worker.lock`` is taken
        too, for workers of older versions that lock only it, and a live worker
        named by ``worker.json`` (``previous``) that is not this one is refused
        as well, lock or no lock. From then on :meth:`_check_queue` stops the
        worker as soon as the root path names another directory. Where the file
        system cannot ``flock`` a directory (NFS), ``worker.lock`` alone is
        taken, with a ``lock_degraded`` warning.
        """
        root = self.layout.root
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        lock = FileLock(str(self.layout.lock_file), timeout=0, mode=0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._locked() from None
            except OSError as exc:  # a file system that cannot flock a directory (NFS): worker.lock alone
                self.log.warning(
                    "lock_degraded",
                    reason=f"the queue root cannot be locked ({exc.strerror or exc}); only worker.lock is, "
                    "which deleting it defeats",
                )
            info = os.fstat(fd)
            identity = f"{info.st_dev}:{info.st_ino}"
            if queue_identity(root) != identity:
                raise QueueLocked(f"the queue root {root} was replaced while this worker started; start it again", None)
            # filelock opens worker.lock with O_TRUNC and follows a link: a link or FIFO put there
            # would have another file emptied or the start blocked. Only a regular file is left there.
            lock_fd, moved = open_regular(self.layout.lock_file, os.O_RDWR | os.O_CREAT)
            os.close(lock_fd)
            if moved is not None:
                self._log_moved_aside(moved)
            try:
                lock.acquire()
            except Timeout:
                raise self._locked() from None
            if previous is not None and previous.pid != os.getpid():
                lock.release()
                raise self._locked(previous)
        except BaseException:
            os.close(fd)
            raise
        self._root_fd, self._queue_id, self._lock = fd, identity, lock

    def _locked(self, holder: WorkerInfo | None = None) -> QueueLocked:
        holder = holder or self.queue.worker_info()
        who = (
            f"worker PID {holder.pid} (started {holder.started_at.isoformat(timespec='seconds')})"
            if holder
            else "another worker"
        )
        return QueueLocked(
            f"{who} is already serving the queue at {self.layout.root}; only one worker may serve a queue",
            holder.pid if holder else None,
        )

    # ----- the queue's folders ------------------------------------------------------

    def _serves_root(self) -> bool:
        """Whether the root's path still names the directory this worker locked (one ``stat``;
        safe from any thread)."""
        if self._root_lost is not None or self._queue_id is None:
            return False
        try:
            return queue_identity(self.layout.root) == self._queue_id
        except OSError:
            return False

    def _queue_problem(self) -> tuple[str, bool] | None:
        """Why this worker can no longer serve its queue, and whether the root itself is gone
        (``True``) or only ``pending/`` or ``running/`` (``False``); ``None`` while all is well."""
        root = self.layout.root
        try:
            if queue_identity(root) != self._queue_id:
                return f"the queue root {root} was replaced by another directory", True
        except FileNotFoundError:
            return f"the queue root {root} was removed (or moved away)", True
        except OSError as exc:
            return f"the queue root {root} cannot be looked at: {exc.strerror or exc}", True
        for folder, known in self._folder_ids.items():
            try:
                if queue_identity(root / folder) == known:
                    continue
            except OSError:
                pass
            return f"{root / folder} was removed, moved or replaced", False
        return None

    def _check_queue(self) -> None:
        """After a lost watch, and every second: stop serving a queue whose folders changed.

        The root removed, moved or replaced: this worker serves nothing any
        more. It claims nothing, stops its running jobs (SIGTERM, then SIGKILL)
        and records none of them (a record would land in whatever directory
        now has the root's name: another queue), abandons its hooks, and exits
        with :data:`QUEUE_LOST_EXIT`. The jobs' files stay in the old root's
        ``running/``, if it still exists, and are settled by the next worker
        that serves it. Only ``pending/`` or ``running/`` replaced (the root
        is the same): the worker stops the normal way (drain, records
        written) and exits with :data:`QUEUE_LOST_EXIT`, so that it is started
        again and watches the new folder.
        """
        if self._root_lost is not None:
            return
        problem = self._queue_problem()
        if problem is None:
            return
        reason, root_gone = problem
        self.exit_code = QUEUE_LOST_EXIT
        if root_gone:
            self._root_lost = reason
            self._give_up.set()
            self._hook_stop.set()
            self._stopping = True
            self.log.error(
                "queue_lost",
                reason=reason,
                running=len(self._active),
                exit_code=QUEUE_LOST_EXIT,
                note="the worker stops serving at once: its running jobs are stopped and not recorded (they stay "
                "in the old root's running/, if it still exists); the service manager starts it again",
            )
            self._interrupt_all(f"the worker stopped serving: {reason}", signal.SIGTERM)
        elif not self._folder_lost:
            self._folder_lost = True
            self.log.error(
                "watch_lost",
                reason=reason,
                exit_code=QUEUE_LOST_EXIT,
                note="the worker stops (running jobs drain and are recorded) so that it is started again "
                "and watches the new folder",
            )
            if not self._stopping:
                self._stopping = True
                self._set_deadline(self.config.drain_timeout_s, DeadlineAction.DRAIN, "")
