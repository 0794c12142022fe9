"""Settling what a dead worker left in ``running/`` (docs/protocol.md, "Crashes and restarts").

Every job found there is finished exactly once: a claim cut short is undone
(the job had not started and stays pending), a finish cut short is
completed, and anything else is recorded ``interrupted``, after any process
still running for it is stopped. No job is ever run again, but a service (``restart``
on-failure or always, see :mod:`.restart`): once its leftover processes are stopped, its
``interrupted`` attempt is kept in ``logs/`` and it is put back into ``pending/`` as its next
attempt, so it starts once more (one copy: the old one is gone first).

Only a worker that holds the queue runs this (after
:meth:`~execsvc.worker.Worker._acquire_lock`: a lock on the root's inode, and
no live worker named by ``worker.json``), so no live worker serves this queue:
every job in ``running/`` is a dead worker's, and the processes stopped are
those of this queue's jobs by its identity (:func:`~execsvc.job_processes.find_job_processes`),
whatever path the dead worker reached it by.
"""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path

import psutil

from .daemonlog import EventLog
from .job_processes import find_job_processes, stop_processes
from .protocol import ClaimedJob, JobStore
from .protocol.defaults import MAX_JOB_FILE_BYTES
from .protocol.jobfile import spec_if_valid
from .protocol.layout import split_job_name
from .protocol.models import JobStatus, WorkerInfo
from .restart import service_options
from .results import build_result
from .retry import requeue_attempt
from .runner import now


def settle_running(
    queue: JobStore,
    log: EventLog,
    *,
    previous: WorkerInfo | None,
    kill_grace_s: float,
    tail_bytes: int,
    keep: Container[str] = (),
) -> None:
    """Settle every entry of ``running/`` but the jobs in ``keep`` (still running elsewhere: on
    remote workers, see :mod:`execsvc.distributed`). One that cannot be settled (say ``failed/``
    is not writable) is logged and left where it is, never started; this never raises for it, so
    a worker still starts and serves."""
    entries = [(job_id, path) for job_id, path in queue.running_jobs() if job_id not in keep]
    if not entries:
        return
    leftovers = find_job_processes(queue.root, {job_id for job_id, _ in entries})
    for job_id, path in entries:
        try:
            _settle(queue, log, job_id, path, leftovers.get(job_id, []), previous, kill_grace_s, tail_bytes)
        except Exception as exc:
            log.error("recovery_failed", job_id, error=repr(exc), note="left in running/, not run")


def _settle(
    queue: JobStore,
    log: EventLog,
    job_id: str,
    path: Path,
    procs: list[psutil.Process],
    previous: WorkerInfo | None,
    kill_grace_s: float,
    tail_bytes: int,
) -> None:
    if procs:
        log.warning("stopping_leftovers", job_id, processes=len(procs), pids=",".join(str(p.pid) for p in procs))
        stop_processes(procs, kill_grace_s)
    outcome = queue.settle_running(job_id, path)
    if outcome == "retried":
        log.info("retry_recovered", job_id, reason="its next attempt was already pending; the old copy was removed")
        return
    if outcome == "unclaimed":
        log.info("claim_undone", job_id, reason="the claim never completed; the job stays pending")
        return
    if outcome == "finished":
        log.info("recovered", job_id, reason="its record was already written")
        return
    kind = split_job_name(path.name)[2]
    claimed = ClaimedJob(job_id, kind, path, path.name, None)
    queue.unshare(claimed, path.name)  # other names (hard links) cannot change the file kept with its record
    who = f"worker PID {previous.pid}" if previous else "the previous worker"
    error = f"{who} stopped before this job finished (crash or kill); it was not run again"
    spec = spec_if_valid(path) if kind == "json" else None
    service = service_options(path, kind)
    if service is not None:
        error = f"{who} stopped while this service ran (crash or kill); it starts once more"
    result = build_result(queue.layout, claimed, JobStatus.INTERRUPTED, error, tail_bytes=tail_bytes, spec=spec)
    if service is not None:
        requeue_attempt(queue, claimed, result, service.attempt, now(), MAX_JOB_FILE_BYTES)
        log.warning("restarted", job_id, status="interrupted", attempt=service.attempt + 1, delay_s=0, reason=error)
        return
    queue.finish(claimed, result, spec)
    log.warning("interrupted", job_id, reason=error)
