"""Everything after a job's exit: the result, a retry, the durable record, many per commit.

:class:`Recorder` runs in the flusher's thread (``execsvc-flush``: :meth:`Recorder.record_batch`,
after each flush of the claims) and in job threads (``execsvc-job-*``: leftovers, exits without
a pidfd, records of jobs that never started), and touches only what it is handed: the attempts
(:class:`~.state._ActiveJob`, which the loop no longer changes once it handed them over), the
store, the flusher, and the inbox it tells the loop through (``recorded``, ``record_failing``,
``record_written``, ``exited``). It reads one field the loop writes,
:attr:`Recorder.records_awaited` (see :meth:`Recorder._post_recorded`); all other queue state is
the loop's (:mod:`.state`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from ..config import WorkerConfig
from ..daemonlog import EventLog
from ..inbox import Inbox, MessageKind
from ..job_logs import cut_log
from ..job_processes import find_job_processes
from ..limits import describe, diagnose, is_empty
from ..protocol import ClaimedJob, JobStore
from ..protocol.flusher import GroupFlusher
from ..protocol.jobfile import ClaimedFile
from ..protocol.models import JobResult, JobSpec, JobStatus
from ..protocol.record_batch import RecordBatch
from ..reaper import orphans_of
from ..restart import Restart, plan_restart
from ..results import build_result, command_not_found, copy_result_file, status_of_exit
from ..retry import delay_s, requeue_attempt, should_retry
from ..runner import ExitInfo, now
from .finish_hooks import FinishHooks
from .state import _ActiveJob

_LEFT_IN_RUNNING = "the job stays in running/ and is settled at the next start"
_OWN_FILE_RETRIES = 5
"""Records tried at once, each after putting the job file back, while a job's leftovers keep changing it."""


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


def _job_file_is(claimed: ClaimedJob, kept: ClaimedFile) -> bool:
    """Whether the job's file in ``running/`` is still ``kept`` (same inode, size, modification time)."""
    try:
        return kept.describes(os.lstat(claimed.path))
    except FileNotFoundError:
        return False


class Recorder:
    """Records attempts that ended (see the module); built by the loop once the queue is locked.

    ``refusal``: why no record may be written now (the queue root is no longer the one
    served), ``None`` while records may be written; safe from any thread.
    ``give_up``: set when record retries must end (forced stop, drain end, shutdown).
    """

    def __init__(
        self,
        store: JobStore,
        config: WorkerConfig,
        log: EventLog,
        inbox: Inbox,
        flusher: GroupFlusher[tuple[_ActiveJob, ExitInfo]],
        hooks: FinishHooks,
        *,
        give_up: threading.Event,
        refusal: Callable[[], str | None],
        result_roots: tuple[Path, ...],
        subreaper: bool,
    ) -> None:
        self.queue, self.layout, self.config, self.log = store, store.layout, config, log
        self._inbox, self._flusher, self._hooks = inbox, flusher, hooks
        self._give_up, self._refusal = give_up, refusal
        self._result_roots, self._subreaper = result_roots, subreaper
        self.records_awaited = True
        """Whether a record must wake the loop: written by the loop, read here (see _post_recorded)."""

    def record_unstarted(
        self, claimed: ClaimedJob, result: JobResult, spec: JobSpec | None, event: str, why: str
    ) -> None:
        """In a job thread: the record of a job that never started, once it can be written."""
        try:
            self._write_record(claimed, result, spec)
            self.log.warning(event, claimed.job_id, status=result.status.value, reason=why)
        except Exception as exc:
            self.log.error("record_failed", claimed.job_id, error=repr(exc), note=_LEFT_IN_RUNNING)
        finally:
            self._post_recorded(claimed.job_id)

    def record_lost(self, job: _ActiveJob, result: JobResult, event: str, why: str) -> None:
        """In a job thread: a job that started but whose end was lost with its machine (a remote
        worker gone, no exit to build a result from): a service is restarted (:meth:`_restart`),
        as after a crash; any other job, or a service not restarted, is recorded as
        :meth:`record_unstarted` does."""
        try:
            restarted = self._restart(job, result)
        except Exception as exc:
            self.log.error("restart_failed", job.claimed.job_id, error=repr(exc))
            restarted = False
        if restarted:
            self._post_recorded(job.claimed.job_id)
            return
        self.record_unstarted(job.claimed, result, job.request.spec, event, why)

    def _write_record(
        self,
        claimed: ClaimedJob,
        result: JobResult,
        spec: JobSpec | None,
        kept: ClaimedFile | None = None,
        batch: RecordBatch | None = None,
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
                record = self.queue.finish(claimed, result, spec, batch)
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

    def _post_recorded(self, job_id: str) -> None:
        """The job is recorded (or put back for a retry). Woken only when the loop said it waits
        for records, else the message waits for the loop's next wake-up. No wake-up is lost: the
        loop sets :attr:`records_awaited`, then looks at the inbox; this posts, then reads the flag."""
        self._inbox.put((MessageKind.RECORDED, job_id), wake=False)
        if self.records_awaited:
            self._inbox.wake()

    def stop_leftovers(self, job: _ActiveJob, exit_info: ExitInfo) -> None:
        """In a job thread: stop what the job left in its process group, free its slot, have it recorded."""
        try:
            job.process.stop_leftovers(exit_info)
        finally:
            self._inbox.put((MessageKind.EXITED, job.claimed.job_id))
        self._flusher.submit([(job, exit_info)])

    def wait_for_exit(self, job: _ActiveJob) -> None:
        """In a job thread, where jobs have no pidfd: wait for the exit, free the slot, have it recorded."""
        try:
            exit_info = job.process.wait()
        finally:
            self._inbox.put((MessageKind.EXITED, job.claimed.job_id))
        self._flusher.submit([(job, exit_info)])

    def record(self, job: _ActiveJob, exit_info: ExitInfo) -> None:
        """Once the job has exited, in any thread: :meth:`record_batch` of it alone."""
        self.record_batch([(job, exit_info)], self._flusher.wait(job.claim_flush))

    def record_batch(self, exited: list[tuple[_ActiveJob, ExitInfo]], claim_error: str | None) -> None:
        """In the flusher's thread (:meth:`GroupFlusher.submit`), after the flush of the claims: write
        the records of jobs that exited (or put them back for a retry), then make them durable
        together (:class:`RecordBatch`: one ``fsync`` per folder) before the jobs leave
        ``running/``; then their ``finished`` lines, their finish hooks and the ``recorded``
        messages. ``claim_error``: the claims' flush failed (logged per job; records go on)."""
        batch = RecordBatch()
        written: list[tuple[_ActiveJob, ExitInfo, JobResult, Path]] = []
        try:
            for job, exit_info in exited:
                if claim_error is not None:
                    self.log.error("claim_not_flushed", job.claimed.job_id, error=claim_error)
                entry = self._record_one(job, exit_info, batch)
                if entry is not None:
                    written.append((job, exit_info, *entry))
            if written:
                self._commit(batch)
        except Exception as exc:
            for job, *_ in written:
                self.log.error("record_failed", job.claimed.job_id, error=repr(exc), note=_LEFT_IN_RUNNING)
            written = []
        try:
            for job, exit_info, result, record in written:
                self._log_finished(job, exit_info, result)
                self._hooks.after_record(job.claimed.job_id, job.request, record, result.status)
        finally:
            for job, _exit_info in exited:
                self._inbox.put((MessageKind.RECORDED, job.claimed.job_id), wake=False)
            if self.records_awaited:  # one wake-up for the batch: see _post_recorded
                self._inbox.wake()

    def _log_finished(self, job: _ActiveJob, exit_info: ExitInfo, result: JobResult) -> None:
        self.log.info(
            "finished",
            job.claimed.job_id,
            status=result.status.value,
            exit_code=result.returncode,
            signal=result.signal,
            duration_s=result.duration_s,
            leftovers_stopped="yes" if exit_info.leftovers_stopped else None,
            limit_exceeded=result.limit_exceeded,
            attempt=result.attempt,
        )

    def _record_one(self, job: _ActiveJob, exit_info: ExitInfo, batch: RecordBatch) -> tuple[JobResult, Path] | None:
        """One job of :meth:`record_batch`: its result and its record in ``batch`` (or its retry);
        the result and the record's path, or ``None`` when nothing waits for the commit (retried,
        refused, or failed: logged)."""
        job_id = job.claimed.job_id
        if job.request.options.ready_when is not None:  # it has exited: no longer ready
            with contextlib.suppress(OSError):
                os.unlink(self.layout.ready_mark(job_id))
        refusal = self._refusal()
        if refusal is not None:  # a record now would land in another queue: see QueueGuard._check_queue
            self.log.error("not_recorded", job_id, reason=refusal)
            self._inbox.put((MessageKind.WATCH_LOST, "root"))
            return None
        try:
            result = self._result(job, exit_info)
            if job.file_note is not None:  # (a field left unset stays out of a JSON job's record)
                result.note = job.file_note
            kept = job.kept or job.request.claimed
            if kept is not None:
                with contextlib.suppress(OSError):  # before a retry reads it; else done in _write_record
                    kept = self._restore_job_file(job.claimed, kept, result)
            if self._restart(job, result):
                return None
            if should_retry(job.request, result.status) and not self._give_up.is_set() and self._retry(job, result):
                return None
            return result, self._write_record(job.claimed, result, job.request.spec, kept, batch)
        except Exception as exc:
            self.log.error("record_failed", job_id, error=repr(exc), note=_LEFT_IN_RUNNING)
            return None

    def _commit(self, batch: RecordBatch) -> None:
        """``batch.commit()``, retried while the file system refuses it, as :meth:`_write_record`
        retries a record (``record_failing`` / ``record_written``); raises the last error once the
        worker gives up (the jobs stay in ``running/``, settled from their records at the next start)."""
        delay_s, failed = 0.5, False
        while True:
            try:
                moved, not_removed = batch.commit()
            except OSError as exc:
                failed = True
                self._inbox.put((MessageKind.RECORD_FAILING, f"records cannot be made durable: {exc}"))
                if self._give_up.wait(delay_s):
                    raise
                delay_s = min(delay_s * 2, 30.0)
                continue
            if failed:
                self._inbox.put((MessageKind.RECORD_WRITTEN, ""))
            for aside in moved:
                if self.queue.on_moved_aside is not None:
                    self.queue.on_moved_aside(aside)
            for path, error in not_removed:
                self.log.error("record_failed", path.name, error=repr(error), note=_LEFT_IN_RUNNING)
            return

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
        if job.process.host is not None:  # run by a remote worker (execsvc.distributed)
            result.host = job.process.host
            if job.process.remote_logs:
                result.remote_logs = job.process.remote_logs
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

    def _requeue(self, job: _ActiveJob, result: JobResult, wait_s: float, verb: str, event: str) -> datetime | None:
        """In the job's thread: put the job back into ``pending/`` for its next attempt, due in
        ``wait_s`` seconds (:func:`~execsvc.retry.requeue_attempt`); the due time, or ``None``
        when the disk refused it (``result.error`` then says it was not ``verb``, and ``event``
        is logged)."""
        due = now() + timedelta(seconds=wait_s)
        try:
            requeue_attempt(
                self.queue, job.claimed, result, job.request.options.attempt, due, self.config.max_job_file_bytes
            )
        except OSError as exc:
            said = f"it was not {verb}: {exc}"
            result.error = f"{result.error}; {said}" if result.error else said
            self.log.error(event, job.claimed.job_id, error=str(exc))
            return None
        return due

    def _retry(self, job: _ActiveJob, result: JobResult) -> bool:
        """In the job's thread: keep this attempt's result and output, and put the job back into
        ``pending/`` for its next attempt (see :mod:`.retry`). False if it cannot be re-enqueued
        (the caller then records the job as finished)."""
        claimed, request = job.claimed, job.request
        attempt = request.options.attempt
        wait_s = delay_s(request, self.config)
        due = self._requeue(job, result, wait_s, "retried", "retry_failed")
        if due is None:
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

    def _restart(self, job: _ActiveJob, result: JobResult) -> bool:
        """In the job's thread: put a service back into ``pending/`` for its restart (see
        :mod:`execsvc.restart`); False when it is not restarted (not a service, an end its
        ``restart`` does not restart, the start limit hit: ``result`` is then ``failed``
        with the reason, or the job file could not be put back)."""
        claimed, options = job.claimed, job.request.options
        plan: Restart | None = plan_restart(self.layout, claimed.job_id, options, result, self.config)
        if plan is None:
            return False
        if plan.limit_hit is not None:
            result.status = JobStatus.FAILED
            result.error = f"{result.error}; {plan.limit_hit}" if result.error else plan.limit_hit
            self.log.warning("restart_limit", claimed.job_id, ends=plan.recent_ends + 1, reason=plan.limit_hit)
            return False
        due = self._requeue(job, result, plan.delay_s, "restarted", "restart_failed")
        if due is None:
            return False
        self.log.warning(
            "restarted",
            claimed.job_id,
            status=result.status.value,
            exit_code=result.returncode,
            signal=result.signal,
            attempt=options.attempt + 1,
            delay_s=round(plan.delay_s, 3),
            restart_at=due.isoformat(timespec="milliseconds"),
        )
        return True

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
