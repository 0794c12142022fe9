"""Services: whether a job that ended starts again, after what delay, within what limit
(docs/protocol.md, "Services").

A job with ``restart`` ``"always"`` or ``"on-failure"`` is a service. When it ends, it starts
again as a new attempt of the same job id (the mechanism of a retry:
:func:`~execsvc.retry.requeue_attempt`), after a delay: ``restart_delay_s`` (else the worker's
``default_restart_delay_s``) doubled for each of its ends within the last
``restart_limit_interval_s`` seconds, capped at ``max_restart_delay_s``. ``always`` restarts
after any end but a cancel (and an ``invalid`` job, which never started); ``on-failure``
after ``failed`` and ``timeout``. An attempt ``interrupted`` (the worker stopped, or died)
starts again at once when a worker serves the queue, and is not counted. A service that ends
more than ``restart_limit_burst`` times within the interval is recorded ``failed``, its
``error`` saying the limit was hit (systemd's ``StartLimitBurst`` / ``StartLimitIntervalSec``).

The ends are counted from the attempts' own records in ``logs/`` (``completed_at``), so the
count survives a restart of the worker and needs no field in the job file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from .config import WorkerConfig
from .protocol.defaults import MAX_JOB_FILE_BYTES
from .protocol.durable import read_regular_file
from .protocol.errors import InvalidJob
from .protocol.jobfile import spec_if_valid
from .protocol.layout import QueueLayout
from .protocol.models import JobKind, JobOptions, JobResult, JobStatus
from .protocol.scheduling import text_options

_RESTARTED_BY: dict[str, tuple[JobStatus, ...]] = {
    "always": (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMEOUT, JobStatus.INTERRUPTED),
    "on-failure": (JobStatus.FAILED, JobStatus.TIMEOUT, JobStatus.INTERRUPTED),
}
_RECORD_MAX_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Restart:
    """What becomes of a service that ended: started again after ``delay_s`` seconds, or, when
    ``limit_hit`` (a sentence for the record's ``error``), not at all."""

    delay_s: float
    recent_ends: int  # its ends within restart_limit_interval_s before this one
    limit_hit: str | None = None


def plan_restart(
    layout: QueueLayout, job_id: str, options: JobOptions, result: JobResult, config: WorkerConfig
) -> Restart | None:
    """Whether the attempt ``result`` ended is restarted, and when; ``None``: it is not a
    service, or its end is not one its ``restart`` restarts (then it is recorded as any job)."""
    if options.restart is None or result.status not in _RESTARTED_BY.get(options.restart, ()):
        return None
    if result.status is JobStatus.INTERRUPTED:
        return Restart(0.0, 0)
    recent = _recent_ends(layout, job_id, options.attempt, result.completed_at, config)
    first = options.restart_delay_s if options.restart_delay_s is not None else config.default_restart_delay_s
    delay = min(first * 2.0**recent, config.max_restart_delay_s)
    if recent + 1 > config.restart_limit_burst:
        hit = (
            f"the service ended {recent + 1} times within {config.restart_limit_interval_s:g} s, more than "
            f"restart_limit_burst = {config.restart_limit_burst} allows (restart_limit_interval_s); it was not "
            "restarted"
        )
        return Restart(delay, recent, hit)
    return Restart(delay, recent)


def _recent_ends(layout: QueueLayout, job_id: str, attempt: int, ended_at: datetime, config: WorkerConfig) -> int:
    """How many earlier attempts ended (not ``interrupted``) within ``restart_limit_interval_s``
    before ``ended_at``, from their records in ``logs/`` (newest first; a missing or unreadable
    record ends the count)."""
    since = ended_at - timedelta(seconds=config.restart_limit_interval_s)
    count = 0
    for earlier in range(attempt - 1, max(0, attempt - 1 - 4 * config.restart_limit_burst), -1):
        record = _attempt_result(layout.attempt_record(job_id, earlier))
        if record is None or record.completed_at < since:
            break
        if record.status is not JobStatus.INTERRUPTED:
            count += 1
            if count > config.restart_limit_burst:
                break
    return count


def _attempt_result(path: Path) -> JobResult | None:
    try:
        data = read_regular_file(path, _RECORD_MAX_BYTES)
        return None if data is None else JobResult.model_validate_json(data)
    except (OSError, ValueError):
        return None


def service_options(path: Path, kind: JobKind) -> JobOptions | None:
    """The options of the job file at ``path`` if it is a service (``restart`` on-failure or
    always), else ``None`` (not a service, or not a valid job)."""
    options: JobOptions | None
    if kind == "json":
        options = spec_if_valid(path)
    elif kind == "text":
        try:
            data = read_regular_file(path, MAX_JOB_FILE_BYTES)
            options = None if data is None else text_options(data)
        except (OSError, InvalidJob):
            options = None
    else:
        options = None
    return options if options is not None and options.is_service() else None
