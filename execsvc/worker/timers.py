"""Deadlines and stopping, in the loop's thread: setting deadlines, the next one due, limit
checks, stopping a job's process group (SIGTERM, then SIGKILL after the grace).

A job's deadlines name the attempt that set them (:attr:`~.state._ActiveJob.attempt`): they
act only while that attempt runs, never on the next attempt of the same job.
"""

from __future__ import annotations

import heapq
import signal
import time
from typing import assert_never

from ..limits import describe
from ..protocol.durable import write_durable
from ..protocol.models import JobStatus
from ..ready import READY_CHECK_S, ReadyCheckTooSlow
from .state import DeadlineAction, LoopState, _ActiveJob, _Deadline


class Timers(LoopState):
    """Deadlines (:class:`~.state._Deadline`, each a job's attempt's or the worker's own), limit
    checks and stopping a job's process group, in the loop's thread."""

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
            case DeadlineAction.TIMEOUT | DeadlineAction.KILL | DeadlineAction.LIMITS | DeadlineAction.READY:
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
        for due_at in (self._scheduler.next_due_at(), None if self._stopping else self._schedules.next_due_at()):
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

    def _stop_services(self) -> None:
        """At a stop: stop the running services at once, as they never end by themselves (the
        other jobs get the drain period). Each is recorded ``interrupted`` and put back into
        ``pending/`` for the next start (see :mod:`execsvc.restart`)."""
        for job in self._active.values():
            if job.request.options.is_service() and job.stop_status is None:
                job.stop_status = JobStatus.INTERRUPTED
                job.stop_error = (
                    "the worker was stopping; a service is stopped at once and starts again at the next start"
                )
                self.log.warning("interrupting", job.claimed.job_id, signal="SIGTERM", reason="service")
                self._stop_job(job, signal.SIGTERM)

    def _check_ready(self, job: _ActiveJob) -> None:
        """A job with ``ready_when``, every ``READY_CHECK_S`` until it is ready: then
        ``running/.ready.<id>`` is written and a ``ready`` line logged (see :mod:`execsvc.ready`)."""
        watch = job.ready_watch
        if watch is None:
            return
        job_id = job.claimed.job_id
        try:
            ready = watch.ready()
        except ReadyCheckTooSlow as exc:  # the job goes on, never marked ready
            job.ready_watch = None
            self.log.warning("ready_check_abandoned", job_id, reason=str(exc), line=watch.ready_when.line)
            return
        if not ready:
            self._set_deadline(READY_CHECK_S, DeadlineAction.READY, job_id, job)
            return
        job.ready_watch = None
        try:
            write_durable(self.layout.ready_mark(job_id), b"{}", replace=True, sync=False)
        except OSError as exc:
            self.log.error("ready_not_marked", job_id, error=str(exc))
            return
        self.log.info("ready", job_id, line=watch.ready_when.line, port=watch.ready_when.port)
