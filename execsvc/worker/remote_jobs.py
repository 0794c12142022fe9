"""Jobs run by remote workers (``--executor rq``, docs/distributed.md): the seam between the loop
and :mod:`execsvc.distributed`.

With ``executor = "rq"`` a claimed, judged job gets a
:class:`~execsvc.distributed.dispatch.RemoteProcess` instead of a local one
(:meth:`RemoteJobs._job_process`); its ``start`` hands the job to RQ. A job thread follows it
(:meth:`RemoteJobs._follow_remote`): the output into ``logs/``, then its outcome onto the
attempt (as the loop's own stops would be), ``exited`` to the loop, and the record by the
:class:`~.recorder.Recorder` as for a local job, with the machine in ``host``. At start-up the
jobs of ``running/`` that Redis says are in flight are adopted and followed again
(:meth:`RemoteJobs._adopt_remote_jobs`), not settled ``interrupted``.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from ..distributed.dispatch import Outcome, RemoteProcess, RqDispatch
from ..distributed.keys import front_id
from ..inbox import MessageKind
from ..protocol import ClaimedJob
from ..protocol.defaults import DEFAULT_GROUP
from ..protocol.errors import ExecsvcError, InvalidJob
from ..protocol.layout import split_job_name
from ..protocol.models import JobStatus
from ..results import build_result, unstarted_result
from ..run_request import RunRequest
from ..runner import JobProcess
from .guard import QueueGuard
from .intake import Intake
from .recorder import Recorder
from .state import _ActiveJob


class RemoteJobs(Intake, QueueGuard):
    """The loop's side of remote jobs (loop thread), and following them (job threads)."""

    _remote: RqDispatch | None = None  # built by initialize() with executor = "rq"
    _recorder_of_jobs: Recorder | None = None

    def _open_remote(self) -> None:
        """With ``executor = "rq"``: connect to Redis (raises ``ExecsvcError`` if it cannot be reached)."""
        if self.config.executor != "rq":
            return
        assert self.config.redis_url is not None and self._queue_id is not None
        self._remote = RqDispatch(self.config.redis_url, front_id(str(self.layout.root), self._queue_id))
        self._remote.check()
        self.log.info("executor", executor="rq", redis=self._remote.where)  # the URL without its password

    def _job_process(self, claimed: ClaimedJob, request: RunRequest) -> JobProcess:
        """The process a claimed job starts as: local, or on a remote worker (``executor = "rq"``)."""
        job_id = claimed.job_id
        out, err = self.layout.stdout_log(job_id), self.layout.stderr_log(job_id)
        if self._remote is None:
            return JobProcess(request, out, err, kill_grace_s=self.config.kill_grace_s)
        return RemoteProcess(
            request, out, err, kill_grace_s=self.config.kill_grace_s, dispatch=self._remote, claimed=claimed
        )

    def _follow_in_thread(self, job: _ActiveJob) -> None:
        """A job without a pidfd, waited for in a thread: a remote job in a thread of its own for
        its whole life (however many groups run remote jobs), joined at shutdown; a local one in
        the job threads' pool."""
        if not isinstance(job.process, RemoteProcess):
            self._waiters.submit(self._wait_in_thread, job)
            return
        follower = threading.Thread(
            target=self._wait_in_thread, args=(job,), name=f"execsvc-remote-{job.claimed.job_id}", daemon=True
        )
        self._followers = [thread for thread in self._followers if thread.is_alive()] + [follower]
        follower.start()

    def _wait_in_thread(self, job: _ActiveJob) -> None:
        """In a job thread: a job without a pidfd, waited for here (a remote job is followed)."""
        assert self._recorder_of_jobs is not None
        if isinstance(job.process, RemoteProcess):
            self._follow_remote(job, job.process, self._recorder_of_jobs)
        else:
            self._recorder_of_jobs.wait_for_exit(job)

    def _follow_remote(self, job: _ActiveJob, process: RemoteProcess, recorder: Recorder) -> None:
        """In a job thread: follow the remote job to its end, then record it (or, when the worker
        stops first, leave it in ``running/`` and in Redis for the next start)."""
        job_id = job.claimed.job_id
        try:
            outcome = process.follow(self._give_up)
        except Exception as exc:  # the worker stopped first (TimeoutError), or never seen
            self.log.warning("remote_not_followed", job_id, error=repr(exc), note="adopted again at the next start")
            self._inbox.put((MessageKind.EXITED, job_id))
            self._inbox.put((MessageKind.RECORDED, job_id))
            return
        self._apply_outcome(job, outcome)
        self._inbox.put((MessageKind.EXITED, job_id))
        if outcome.exit_info is not None:
            recorder.record(job, outcome.exit_info)
        else:
            self._record_not_run(job, outcome, recorder)
        if not os.path.lexists(job.claimed.path) and process.rq_id is not None:
            try:
                process.dispatch.forget(job_id, process.rq_id)
            except Exception as exc:  # its keys expire in Redis; the record is written
                self.log.warning("remote_not_forgotten", job_id, error=repr(exc))

    def _apply_outcome(self, job: _ActiveJob, outcome: Outcome) -> None:
        """What the remote runner decided, onto the attempt; a stop the loop asked for (cancel,
        the drain's end) keeps its status and reason."""
        job.process.host, job.process.remote_logs = outcome.host, outcome.remote_logs
        if outcome.exit_info is not None:  # whether SIGKILL was needed: the remote runner knows
            job.sigkilled_after_s = outcome.sigkilled_after_s
        if job.stop_status is None and outcome.stop_status is not None:
            job.stop_status, job.stop_error = outcome.stop_status, outcome.error
            job.limit_exceeded = outcome.limit_exceeded
            if outcome.stop_signal is not None:
                job.stop_signal = signal.Signals[outcome.stop_signal]

    def _record_not_run(self, job: _ActiveJob, outcome: Outcome, recorder: Recorder) -> None:
        """The record of a remote job that never started there (refused, not startable) or was
        lost (``interrupted``, with the output shipped so far), written as a job thread does."""
        claimed, request = job.claimed, job.request
        status = outcome.unstarted or job.stop_status or JobStatus.INTERRUPTED
        if outcome.never_ran and job.stop_status is not None:  # the loop's stop: cancelled, interrupted
            status = job.stop_status
        error = outcome.error or job.stop_error or "the remote job ended without an outcome"
        if outcome.unstarted is not None:
            result = unstarted_result(claimed, status, error, request)
        else:
            result = build_result(
                self.layout, claimed, status, error, tail_bytes=self.config.output_tail_bytes, request=request
            )
        if outcome.host is not None:
            result.host = outcome.host
        event = "invalid" if status is JobStatus.INVALID else status.value
        if outcome.lost:  # started there, its machine gone: a service starts again, as after a crash
            recorder.record_lost(job, result, event, error)
        else:
            recorder.record_unstarted(claimed, result, request.spec, event, error)

    def _adopt_remote_jobs(self) -> set[str]:
        """At start-up, with ``executor = "rq"``: the jobs in ``running/`` that this queue
        dispatched and Redis still has in flight, followed again by job threads; their ids (kept
        from crash settling). Entries of jobs no longer in ``running/`` (recorded), or naming another
        attempt than the one there (a retry's claim cut short before its dispatch), are forgotten."""
        if self._remote is None:
            return set()
        try:
            inflight = self._remote.inflight()
        except Exception as exc:  # never settle them blindly: see RqDispatch.check
            raise ExecsvcError(f"cannot read the jobs in flight from Redis at {self._remote.where}: {exc}") from None
        running = dict(self.queue.running_jobs())
        adopted: set[str] = set()
        for job_id, (rq_id, attempt, slot_started) in inflight.items():
            path = running.get(job_id)
            if path is None:
                self._remote.forget(job_id, rq_id)
                continue
            claimed = ClaimedJob(job_id, split_job_name(path.name)[2], path, path.name, None)
            request = self._adopted_request(claimed)
            if request.options.attempt != attempt:  # a retry claimed, cut short before its dispatch
                self._remote.forget(job_id, rq_id)
                continue
            process = RemoteProcess(
                request,
                self.layout.stdout_log(job_id),
                self.layout.stderr_log(job_id),
                kill_grace_s=self.config.kill_grace_s,
                dispatch=self._remote,
                claimed=claimed,
                rq_id=rq_id,
            )
            group = request.options.group or DEFAULT_GROUP
            slot = self._groups.acquire(group, slot_started)  # its own slot; released when it ends
            job = _ActiveJob(claimed, process.request, process, self._flusher.request(), group=group, slot=slot)
            self._active[job_id] = job
            self._follow_in_thread(job)
            self.log.info("adopted", job_id, rq_job=rq_id, reason="dispatched by the previous worker; still in flight")
            adopted.add(job_id)
        return adopted

    def _adopted_request(self, claimed: ClaimedJob) -> RunRequest:
        """The request of an adopted job, read again from its file (for its record's fields)."""
        try:
            return self._read_request(claimed)
        except (InvalidJob, OSError):
            return RunRequest(argv=[], cwd=Path(self._home), env={}, timeout_s=self.config.default_timeout_s)
