"""What the fronts do to jobs: wait for one, retry, cancel (the one way every front does)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from execsvc.protocol import FINISHED_STATES
from execsvc.protocol.durable import read_regular_file
from execsvc.protocol.errors import InvalidJobId, JobIdTaken, JobNotFound
from execsvc.protocol.layout import split_job_name
from execsvc.protocol.models import CancelSignal, JobSpec, JobStatus, SidecarRecord
from execsvc.protocol.queue import JobQueue

from .jobs import get_job
from .models import CANCEL_PROGRESS_EVERY_S, CANCEL_WAIT_S, Cancelled, CancelOutcome, JobDetail


def wait_for_job(queue: JobQueue, job_id: str, timeout_s: float) -> JobDetail:
    """Block until the job finishes, or is running and ready (its ``ready_when`` met), or
    ``timeout_s`` seconds pass; return its detail either way.

    Woken by file events (:meth:`JobQueue.wait`). Raises :class:`~execsvc.protocol.errors.JobNotFound`
    for a job in no folder.
    """
    queue.wait(job_id, max(0.0, timeout_s), until_ready=True)
    return get_job(queue, job_id)


def retry_job(queue: JobQueue, job_id: str) -> str:
    """Enqueue a finished job again under a new id, ``<id>-r1`` (``-r2`` ... if taken); return it.

    A JSON job is resubmitted with its own fields and ``retry_of: <id>`` (kept in
    its record); a text job with its script. Raises :class:`ValueError` for a
    job that has not finished or that was invalid (there is nothing to run).
    """
    info = queue.get(job_id)
    if info.state not in FINISHED_STATES:
        raise ValueError(f"job {job_id!r} is still {info.state.value}; only a finished job can be retried")
    if info.status is JobStatus.INVALID or (info.kind == "json" and info.spec is None) or info.kind == "other":
        raise ValueError(
            f"job {job_id!r} was not a valid job, so there is nothing to run again; fix it and submit anew"
        )
    base = info.job_id
    for attempt in range(1, 1000):
        new_id = f"{base}-r{attempt}"
        if queue.layout.id_in_use(new_id):
            continue
        try:
            if info.kind == "json":
                assert info.spec is not None
                return queue.submit({**info.spec, "retry_of": info.job_id}, job_id=new_id)
            record = Path(info.path)  # a text job's script sits beside its record, under the name it gives
            sidecar = _read_queue_file(record, _RETRIED_MAX_BYTES)
            if sidecar is None:
                raise ValueError(f"the record of job {job_id!r} is no longer a regular file; nothing was retried")
            name = SidecarRecord.model_validate_json(sidecar).job_file
            if "/" in name or split_job_name(name)[1] not in (".sh", ".txt"):
                raise ValueError(f"the script of job {job_id!r} is no longer beside its record")
            script = _read_queue_file(record.parent / name, _RETRIED_MAX_BYTES)
            if script is None:
                raise ValueError(
                    f"the script of job {job_id!r} is no longer beside its record as a regular file "
                    f"(of at most {_RETRIED_MAX_BYTES // 2**20} MiB); nothing was retried"
                )
            return queue.submit_script(script, job_id=new_id, suffix=split_job_name(name)[1])
        except JobIdTaken:
            continue
    raise ValueError(f"job {job_id!r} has been retried too many times")


def cancel_job(
    queue: JobQueue,
    job_id: str,
    *,
    requested_by: str,
    signal: CancelSignal = "SIGTERM",
    force: bool = False,
    wait_s: float = CANCEL_WAIT_S,
    progress: Callable[[float, JobDetail], None] | None = None,
) -> Cancelled:
    """Cancel a job, the one way every front does (``execsvc cancel``, the MCP ``cancel_job``).

    A pending job is finished at once, never run (:meth:`JobQueue.cancel`): ``cancelled``.
    For a running job a cancel request is written; when a worker serves the queue this waits,
    woken by file events, up to ``wait_s`` seconds for the job to be recorded: ``stopped`` if
    it is recorded ``cancelled``, ``already_finished`` if it ended otherwise first, else
    ``requested`` (also at once when no worker serves the queue). A finished job is left as it
    is: ``already_finished``. ``signal`` is what a running job's process group gets first
    (SIGKILL at once with ``force``), then SIGKILL after the worker's kill grace.
    ``progress(waited_s, job)`` is called every :data:`CANCEL_PROGRESS_EVERY_S` seconds of
    the wait while the job runs on.

    Raises :class:`~execsvc.protocol.errors.JobNotFound` for an unknown id (or a job removed while it
    waits), :class:`~execsvc.protocol.errors.InvalidJobId` for an id the protocol refuses and
    :class:`OSError` when the queue cannot be written.
    """
    done = queue.cancel(job_id, requested_by=requested_by, signal=signal, force=force)
    if done.outcome == "cancelled":
        return Cancelled(outcome=CancelOutcome.CANCELLED, job=get_job(queue, done.info.job_id))
    if done.outcome == "finished":
        return Cancelled(outcome=CancelOutcome.ALREADY_FINISHED, job=get_job(queue, done.info.job_id))
    job_id = done.info.job_id
    serving = queue.worker_info() is not None
    started = time.monotonic()
    waited = 0.0
    while serving:
        step = min(CANCEL_PROGRESS_EVERY_S, max(0.0, wait_s - waited))
        info = queue.wait(job_id, step)
        waited = time.monotonic() - started
        if info.state in FINISHED_STATES or waited >= wait_s:
            break
        if progress is not None:
            progress(waited, get_job(queue, job_id))
    detail = get_job(queue, job_id)
    if not detail.finished:
        outcome = CancelOutcome.REQUESTED
    elif detail.status is JobStatus.CANCELLED:
        outcome = CancelOutcome.STOPPED
    else:
        outcome = CancelOutcome.ALREADY_FINISHED
    return Cancelled(outcome=outcome, job=detail, serving=serving, waited_s=round(waited, 3))


# ----- helpers ----------------------------------------------------------------------


_RETRIED_MAX_BYTES = 64 * 1024 * 1024
"""The most a record or script read by :func:`retry_job` may hold (a worker refuses job files
above its ``max_job_file_bytes``, 16 MiB unless configured)."""


def _read_queue_file(path: Path, max_bytes: int) -> bytes | None:
    """``path``'s bytes if it is a regular file of at most ``max_bytes``; ``None`` if it is gone,
    is anything else (never followed, never waited on) or is bigger."""
    try:
        return read_regular_file(path, max_bytes)
    except FileNotFoundError:
        return None


def hold_job(queue: JobQueue, job_id: str) -> JobDetail:
    """Hold a pending job (:meth:`JobQueue.hold`): it stays pending and does not start until
    released. Raises :class:`~execsvc.protocol.errors.JobNotPending` (a :class:`ValueError`)
    for a job that has started or finished."""
    queue.hold(job_id)
    return get_job(queue, job_id)


def release_job(queue: JobQueue, job_id: str) -> JobDetail:
    """Let a held job start again (:meth:`JobQueue.release`); a job that is not held is
    left as it is. Raises :class:`ValueError` for a job that has started or finished."""
    queue.release(job_id)
    return get_job(queue, job_id)


def check_after(queue: JobQueue, after: list[str] | None) -> None:
    """Raise :class:`ValueError` naming every id in ``after`` that is in no folder of the queue
    (a worker would record the job ``invalid`` at once)."""
    unknown = [job_id for job_id in after or [] if not _known(queue, job_id)]
    if unknown:
        names = ", ".join(repr(job_id) for job_id in unknown)
        raise ValueError(
            f"after names {names}, which is no job of this queue; enqueue that job first and pass "
            "the id it gets, or leave it out of after"
        )


def check_policy(queue: JobQueue, spec: JobSpec) -> None:
    """Raise :class:`ValueError` for what the serving worker's policy refuses at once and a
    client can know from ``worker.json``: a shell job or an ``on_finish`` line under
    ``allow_shell = false`` (the sentences are the worker's), a job without a timeout under
    ``allow_no_timeout = false``. What depends on the worker's
    own view (``allowed_commands`` against its ``PATH``, webhooks, result files) is left to it."""
    worker = queue.worker_info()
    if worker is not None and worker.allow_no_timeout is False and spec.asks_no_timeout():
        raise ValueError(
            "refused by the worker's policy (allow_no_timeout = false in [policy]): the job asks for no timeout "
            "(timeout_s: null); give it a timeout_s"
        )
    if worker is None or worker.allow_shell:
        return
    if spec.runs_in_shell():
        raise ValueError(
            "refused by the worker's policy (allow_shell = false): this job is a shell command line "
            "(no 'args', or \"shell\": true); give 'command' and 'args' to run a program directly"
        )
    if spec.on_finish is not None:
        raise ValueError(
            "refused by the worker's policy (allow_shell = false): the job's on_finish is a shell command line"
        )


def _known(queue: JobQueue, job_id: str) -> bool:
    try:
        queue.get(job_id)
    except (JobNotFound, InvalidJobId):
        return False
    return True
