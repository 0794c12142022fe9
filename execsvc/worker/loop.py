"""The worker: wakes on file events in ``pending/``, runs jobs in FIFO order, records results.

Shaped like huey's consumer: :meth:`Worker.initialize`, then :meth:`Worker.loop`
(one step: wait for the next message or deadline, act, start what may start)
until it returns False, then :meth:`Worker.shutdown`; ``execsvc run``
(:func:`execsvc.cli.run`) is that life cycle.

The loop waits in one ``selectors`` call on three kinds of descriptor: the
inotify descriptor of watchdog's wrapper (read right there, see :mod:`execsvc.file_events`),
a pidfd per running job (readable when its main process exits), and the
:class:`~execsvc.inbox.Inbox` pipe that other threads post messages through. So a
job's exit frees its slot in the loop itself, and the file events already
waiting in the kernel are read before that slot is filled (FIFO holds with
no rescan). Threads: a job thread per job being recorded (:mod:`.recorder`: it
waits until the job's claim is on disk, then writes the record); one flusher thread makes
claims durable, many per fsync (:class:`~execsvc.protocol.flusher.GroupFlusher`); hook
threads (:mod:`.finish_hooks`); signal handlers only post a message. Where there are no pidfds
(macOS, Linux before 5.3) a job thread also waits for its job's exit and posts
it, and the loop then reads ``pending/`` itself before filling the slot
(:meth:`~.intake.Intake._catch_up`); where the inotify descriptor cannot be reached,
watchdog's thread reads it. Everything else happens in the thread that calls
:meth:`loop`, on the fields of :class:`~.state.LoopState`, so the queue state needs no locks. File events are a wake-up
call, not the truth: on each one the worker looks at the file, and a slow
rescan catches anything an event missed.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import select
import selectors
import signal
import threading
import time
from datetime import UTC, datetime
from typing import assert_never

import psutil

from ..daemonlog import open_event_log
from ..file_events import open_file_events
from ..inbox import MessageKind
from ..job_processes import queue_identity
from ..protocol import __version__
from ..protocol.defaults import QUEUE_ID_ENV
from ..protocol.durable import write_durable
from ..protocol.errors import WatchFailed
from ..protocol.flusher import GroupFlusher
from ..protocol.layout import READY_PREFIX
from ..protocol.leases import install_lease_guard
from ..protocol.models import JobStatus, WorkerInfo
from ..reaper import become_subreaper, reap_orphans
from ..recovery import settle_running
from ..retention import clean
from ..runner import ExitInfo, keep_descriptors_from_jobs
from .finish_hooks import FinishHooks
from .guard import _QUEUE_CHECK_S
from .messages import Messages
from .recorder import _LEFT_IN_RUNNING, Recorder
from .state import DeadlineAction, _ActiveJob, _AwaitedOrRunning

_TEMP_MAX_AGE_S = 60.0
_RETENTION_EVERY_S = 86_400.0


class Worker(Messages):
    """Serves one queue root until told to stop. See the module docstring for the shape."""

    def initialize(self) -> None:
        """Create and check the folders, take the lock, settle what a dead worker left, start watching.

        Raises :class:`~execsvc.protocol.errors.UnsafeQueue` for folders others can
        write to, :class:`~execsvc.protocol.errors.QueueLocked` (naming the holder's
        PID) when another worker serves this queue, and
        :class:`~execsvc.protocol.errors.WatchFailed` when ``pending/`` cannot be watched.
        """
        self.layout.ensure()
        self._open_log()
        previous = self.queue.worker_info()
        self._acquire_lock(previous)
        self._environ[QUEUE_ID_ENV] = self._queue_id or ""  # every job knows its queue by identity
        if self._subreaper:
            self._subreaper = become_subreaper()
        self._folder_ids = {
            folder: queue_identity(path)
            for folder, path in (("pending", self.layout.pending), ("running", self.layout.running))
        }
        self._build_helpers()
        self._write_worker_info()
        self._settle_previous(previous)
        if threading.current_thread() is threading.main_thread():
            install_lease_guard()
            self._install_signal_handlers()
        self._watch()
        self._schedules.start(self.log, self._inbox, datetime.now(UTC))  # its catch-up runs: seen by the rescan
        keep_descriptors_from_jobs()  # before the first job, after every watch: see JobProcess._spawn
        self._rescan()
        self._set_deadline(self.config.rescan_interval_s, DeadlineAction.RESCAN, "")
        self._set_deadline(_QUEUE_CHECK_S, DeadlineAction.QUEUE_CHECK, "")
        if self.config.retention_days is not None:
            self._set_deadline(0, DeadlineAction.RETENTION, "")
        self.log.info("watching", folder=str(self.layout.pending), pending=len(self._candidates))

    def _open_log(self) -> None:
        self._log = open_event_log(
            self.layout.daemon_log,
            max_bytes=self.config.log_max_bytes,
            backups=self.config.log_backups,
            stderr_level=self._stderr_level,
            in_queue=True,
        )
        self.queue.on_moved_aside = self._log_moved_aside

    def _build_helpers(self) -> None:
        """The objects of the other threads: the flusher, the finish hooks, the recorder."""
        self._claim_flusher = GroupFlusher(self.queue.claim_folders(), batch=self._record_batch)
        self._finish_hooks_of_jobs = FinishHooks(
            self.layout, self.config, self.log, self._inbox, self._webhook_rule, self._hook_stop
        )
        self._recorder_of_jobs = Recorder(
            self.queue,
            self.config,
            self.log,
            self._inbox,
            self._claim_flusher,
            self._finish_hooks_of_jobs,
            give_up=self._give_up,
            refusal=self._record_refusal,
            result_roots=self._result_roots,
            subreaper=self._subreaper,
        )
        self._open_remote()

    def _record_batch(self, exited: list[tuple[_ActiveJob, ExitInfo]], claim_error: str | None) -> None:
        """In the flusher's thread, after a flush of the claims: record the jobs that exited
        (:meth:`Recorder.record_batch`); an unexpected error is logged, never the thread's end."""
        try:
            self._recorder.record_batch(exited, claim_error)
        except Exception as exc:
            self.log.error("internal_error", step="record_batch", error=repr(exc))

    def _write_worker_info(self) -> None:
        """``worker.json`` (who serves the queue, with what settings) and the ``worker_started`` line."""
        started = datetime.fromtimestamp(psutil.Process().create_time(), UTC)
        info = WorkerInfo(
            pid=os.getpid(),
            slots=self.config.slots,
            started_at=started,
            queue_dir=str(self.layout.root),
            version=__version__,
            allowed_commands=list(self.config.allowed_commands) if self.config.allowed_commands is not None else None,
            allow_shell=self.config.allow_shell,
            allow_no_timeout=self.config.allow_no_timeout,
            sandbox=self.config.sandbox,
            sandbox_for=list(self.config.sandbox_for),
            config_file=self.config.config_file,
            default_timeout_s=self.config.default_timeout_s,
            max_timeout_s=self.config.max_timeout_s,
            kill_grace_s=self.config.kill_grace_s,
            groups=self.config.group_slots,
            total_slots=self.config.total_slots,
            unknown_groups=self.config.unknown_groups,
        )
        write_durable(self.layout.worker_file, info.model_dump_json().encode(), replace=True, sync=False)
        self.log.info(
            "worker_started", pid=os.getpid(), slots=self.config.slots, queue=str(self.layout.root), version=__version__
        )

    def _settle_previous(self, previous: WorkerInfo | None) -> None:
        """Settle what a dead worker left: ``running/``, stale temporary files, cancel requests."""
        settle_running(
            self.queue,
            self.log,
            keep=self._adopt_remote_jobs(),  # executor = "rq": still in flight on remote workers
            previous=previous,
            kill_grace_s=self.config.kill_grace_s,
            tail_bytes=self.config.output_tail_bytes,
        )
        self.queue.remove_stale_temp_files(_TEMP_MAX_AGE_S)
        for job_id in self.queue.cancel_requests():  # their jobs were settled above; none runs
            self.queue.drop_cancel_request(job_id)
        for entry in os.scandir(self.layout.running):  # ready marks of jobs that no longer run
            if entry.name.startswith(READY_PREFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)

    def _watch(self) -> None:
        """Watch ``pending/`` and ``running/``; the loop reads the events itself where it can."""
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

    def loop(self) -> bool:
        """One step: wait for a message or the next deadline, act on it, start ready jobs.

        Returns False once the worker has stopped (after a signal, with no
        job left running or being recorded, and no finish hook left: hooks
        may run on until the drain period ends, then are abandoned).
        """
        self._dispatch()  # work found by the start-up scan or left by the last step
        exited, events, woken = self._wait()
        if events or (exited and self._events_waiting()):  # before a freed slot is filled: see _catch_up
            self._guarded(self._read_events)
        for message in self._inbox.drain(woken=woken):
            self._guarded(self._handle, message)
        self._guarded(self._run_due_deadlines)
        self._guarded(self._run_schedules)
        self._scheduler.wake(time.time())
        self._dispatch()
        self._hand_over_exited()
        return not self._stopped()

    def _wait(self) -> tuple[bool, bool, bool]:
        """Wait in the selector for a pidfd, the file events or the inbox, or the next deadline.
        Exits are acted on at once (:meth:`_on_exit`); returns whether a job exited, whether
        file events are readable, and whether the inbox woke it."""
        self._recorder.records_awaited = self._awaits_records()  # then look at the inbox: see _post_recorded
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
        return exited, events, woken

    def _hand_over_exited(self) -> None:
        """Give the jobs that exited in this step to job threads, to be recorded (after the freed
        slots are filled: see :meth:`_on_exit`)."""
        self._flusher.submit(self._to_record)  # recorded many at a time: see Recorder.record_batch
        self._to_record.clear()

    def _stopped(self) -> bool:
        """Whether the worker has stopped: stopping, no job running or being recorded, no hook left."""
        return self._stopping and not self._active and self._recording == 0 and self._finish_hooks.idle()

    def shutdown(self) -> None:
        """Stop watching, wait for job threads, release the lock, say goodbye in the log.

        Jobs still running here (the loop ended on an unexpected error) are killed
        and recorded as ``interrupted``, so that this never waits forever.
        """
        if self._file_events is not None:
            self._file_events.stop()
        self._schedules.stop()
        if self._active:
            self._interrupt_all("the worker stopped on an internal error", signal.SIGKILL)
            for job in self._active.values():  # reaped and recorded by job threads, which block
                if job.process.pidfd is not None:
                    self._selector.unregister(job.process.pidfd)
                    self._waiters.submit(self._recorder.wait_for_exit, job)
        self._give_up.set()
        for follower in self._followers:  # remote jobs: each follower stops at the give-up
            follower.join()
        self._waiters.shutdown(wait=True)
        if self._finish_hooks_of_jobs is not None:  # hooks still queued or running (only after an internal
            self._finish_hooks_of_jobs.shutdown()  # error) are abandoned
        if self._claim_flusher is not None:  # records still submitted are written first
            self._claim_flusher.close()
        self._selector.close()
        self._inbox.close()
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
            self._groups.release(job.group, job.slot)
            self.log.error("reap_failed", job_id, error=repr(exc), note=_LEFT_IN_RUNNING)
            return
        if exit_info.leftovers_stopped:
            self._waiters.submit(self._recorder.stop_leftovers, job, exit_info)
            return
        self._slot_freed(job_id)  # the loop reads waiting file events before filling it
        # Recorded by a job thread once this loop step has started the next job: a record's
        # Python work would otherwise contend for the GIL with that start (its latency).
        self._to_record.append((job, exit_info))

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
                case DeadlineAction.READY:
                    job = self._job_of(deadline)
                    if job is not None and job.stop_status is None:
                        self._check_ready(job)
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
