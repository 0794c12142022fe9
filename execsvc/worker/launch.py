"""Starting jobs, in the loop's thread: the claim, reading the job file, the policy, the spawn."""

from __future__ import annotations

import errno
import os
import selectors
import stat
import time
from dataclasses import replace

from ..policy import judge
from ..protocol import ClaimedJob
from ..protocol.defaults import DEFAULT_GROUP, GROUP_ENV, SLOT_ENV
from ..protocol.errors import InvalidJob
from ..protocol.jobfile import submitted_by
from ..protocol.leases import Snapshot, read_unwritten
from ..protocol.models import JobStatus
from ..protocol.readiness import Doomed
from ..ready import READY_CHECK_S, ReadyWatch
from ..results import unstarted_result
from ..run_request import RunRequest
from ..runner import JobProcess, SpawnError, StartDeferred
from .finish_hooks import FinishHooks
from .recorder import Recorder
from .remote_jobs import RemoteJobs
from .state import _START_RETRY_FIRST_S, _START_RETRY_MAX_S, _UNSEEN, DeadlineAction, _ActiveJob, _Candidate, _identity

_READ_SHORTAGES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""Errors opening or reading a claimed job file that are the worker's want (descriptors, memory),
not the job's: the claim is undone (:meth:`Worker._defer`), never recorded ``invalid``."""


class Launch(RemoteJobs):
    """Starting jobs, in the loop's thread. Hands what ran to the :class:`~.recorder.Recorder`
    and what never ran is recorded here (or by a job thread when the disk refuses it)."""

    _recorder_of_jobs: Recorder | None = None  # built by initialize(), once the queue is locked
    _finish_hooks_of_jobs: FinishHooks | None = None

    @property
    def _recorder(self) -> Recorder:
        assert self._recorder_of_jobs is not None, "initialize() first"
        return self._recorder_of_jobs

    @property
    def _finish_hooks(self) -> FinishHooks:
        assert self._finish_hooks_of_jobs is not None, "initialize() first"
        return self._finish_hooks_of_jobs

    def _dispatch(self) -> None:
        if self._claims_held() or not self._scheduler.has_ready():
            return
        while (doomed := self._scheduler.take_doomed()) is not None:  # recorded at once: no slot needed
            candidate = self._candidates.pop(doomed.name, None)
            if candidate is not None:
                self._guarded(self._start, doomed.name, candidate, doomed, file=doomed.name)
        while self._recording < self._max_recording:
            if self._starts_paused is not None:  # the last start in this loop was deferred
                return
            name = self._scheduler.take_ready(self._groups.may_start)  # a group's own slots (execsvc.groups)
            if name is None:
                return
            candidate = self._candidates.pop(name, None)
            if candidate is None or not candidate.ready:
                continue
            self._guarded(self._start, name, candidate, None, file=name)  # the worker never dies of a job

    def _claims_held(self) -> bool:
        """Whether no job may be claimed now: stopping, or paused (records, or starts, failing)."""
        return self._stopping or self._paused is not None or self._starts_paused is not None

    def _slot_freed(self, job_id: str) -> None:
        job = self._active.pop(job_id, None)
        if job is not None:
            self._groups.release(job.group, job.slot)
        self._recording += 1

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
        (the job's own thread waits for it before the record, see :meth:`.recorder.Recorder.record`),
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
        kept, data, info = self._check_claim(name, seen, claimed)
        if not kept:
            return
        request = self._judged_request(claimed, data, info, doomed)
        if request is not None:
            self._spawn(name, claimed, request)

    def _judged_request(
        self, claimed: ClaimedJob, data: bytes | None, info: os.stat_result | None, doomed: Doomed | None
    ) -> RunRequest | None:
        """The claimed job's :class:`RunRequest` as the policy lets it run, or ``None`` once it has
        been recorded unstarted (invalid, refused, its ``result_file`` folder missing, doomed)."""
        try:
            request = self._read_request(claimed, data, info)
        except InvalidJob as exc:
            self._finish_unstarted(claimed, JobStatus.INVALID, exc.reason, None)
            return None
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
            return None
        refusal = self._groups.refusal(request.options.group or DEFAULT_GROUP)
        if refusal is not None:
            where = f" (set in {self.config.config_file})" if self.config.config_file else ""
            self._finish_unstarted(claimed, JobStatus.INVALID, refusal + where, request, refused=True)
            return None
        if request.result_file is not None and not request.result_file.parent.is_dir():
            self._finish_unstarted(
                claimed,
                JobStatus.FAILED,
                f"the folder of result_file {request.result_file} does not exist; the job was not started",
                request,
            )
            return None
        if doomed is not None:
            self._finish_unstarted(claimed, doomed.status, doomed.reason, request)
            return None
        if verdict.executable is not None:
            request = replace(request, executable=verdict.executable)
        return request

    def _spawn(self, name: str, claimed: ClaimedJob, request: RunRequest) -> None:
        """Start the claimed job's process group in a slot of its group (``EXECSVC_GROUP``,
        ``EXECSVC_SLOT``), register its exit and deadlines, log its start."""
        job_id = claimed.job_id
        group = request.options.group or DEFAULT_GROUP
        slot = self._groups.acquire(group)
        request = replace(request, env={**request.env, GROUP_ENV: group, SLOT_ENV: str(slot)})
        process = self._job_process(claimed, request)  # local, or dispatched to RQ (executor = "rq")
        try:
            process.start()
        except SpawnError as exc:
            self._groups.release(group, slot)
            self._not_started(name, claimed, request, process, exc)
            return
        job = _ActiveJob(claimed, request, process, self._flusher.request(), group=group, slot=slot)
        self._active[job_id] = job
        if process.pidfd is not None:
            try:
                self._selector.register(process.pidfd, selectors.EVENT_READ, job_id)
            except (OSError, ValueError) as exc:  # never seen; else its exit would go unnoticed
                self.log.warning("exit_waited_by_thread", job_id, reason=f"the loop cannot wait on its pidfd: {exc!r}")
                os.close(process.pidfd)
                process.pidfd = None
        if process.pidfd is None:
            self._follow_in_thread(job)
        # None: a job without a timeout (a service); a remote runner applies the timeout and limits itself
        if request.timeout_s is not None and self._remote is None:
            self._set_deadline(request.timeout_s, DeadlineAction.TIMEOUT, job_id, job)
        if request.polls_limits and self._remote is None:
            self._set_deadline(self.config.limit_check_interval_s, DeadlineAction.LIMITS, job_id, job)
        if request.options.ready_when is not None:
            job.ready_watch = ReadyWatch(request.options.ready_when, (process.stdout_path, process.stderr_path))
            self._set_deadline(READY_CHECK_S, DeadlineAction.READY, job_id, job)
        self._log_claimed(claimed, request)
        self._starts_work(job_id, process)
        capped = (
            request.requested_timeout_s is not None
            and request.timeout_s is not None
            and request.requested_timeout_s > request.timeout_s
        )
        self.log.info(
            "started",
            job_id,
            pid=process.pid,
            timeout_s=request.timeout_s if request.timeout_s is not None else "none",
            timeout_capped="yes" if capped else None,
            attempt=request.options.attempt if request.options.attempt > 1 else None,
            sandbox=request.sandbox.record.profile if request.sandbox else None,
            restart=request.options.restart if request.options.is_service() else None,
            group=group if group != DEFAULT_GROUP else None,
            slot=slot,
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
        it is above ``max_job_file_bytes`` (never copied: :func:`~execsvc.run_request.read_job`
        refuses it unread, and it is kept as it is). Not
        read (another ending) or not opened (a link, a socket): True,
        ``None``, ``None``, and :func:`~execsvc.run_request.read_job` says why. Raises
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
            self._waiters.submit(self._recorder.record_unstarted, claimed, result, spec, event, error)
            return
        self.log.warning(event, claimed.job_id, status=status.value, reason=error)
        self._scheduler.settled(claimed.job_id, time.time())
        if request is not None and not refused:
            self._finish_hooks.after_record(claimed.job_id, request, record, status)
