"""Retries: when a failed job gets another attempt, and what its file says then (docs/protocol.md, "Retries").

A job with ``retries`` left that ends ``failed`` or ``timeout`` is put back
into ``pending/`` under its own id (:meth:`~execsvc.protocol.store.JobStore.requeue`)
with ``attempt`` raised by one and ``retry_at`` set; the attempt's result is
kept in ``logs/<id>.attempt-<n>.result.json`` and its output in
``logs/<id>.attempt-<n>.stdout`` / ``.stderr``. A JSON job gets the two
fields; a text job gets a ``# execsvc: attempt=N retry_at=T`` header line.
Jobs ``cancelled``, ``interrupted`` or ``invalid`` are never retried, nor is a service
(``restart``: its restarts are :mod:`execsvc.restart`'s, through :func:`requeue_attempt`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from datetime import datetime

from .config import WorkerConfig
from .protocol import ClaimedJob, JobStore
from .protocol.durable import read_regular_file, write_durable
from .protocol.models import JobKind, JobResult, JobStatus
from .run_request import RunRequest

RETRIED_STATUSES = (JobStatus.FAILED, JobStatus.TIMEOUT)
_OUR_HEADER = re.compile(rb"^# execsvc: attempt=\d+ retry_at=\S+\n", re.MULTILINE)


def should_retry(request: RunRequest, status: JobStatus) -> bool:
    """Whether a job that ended with ``status`` gets another attempt."""
    return (
        status in RETRIED_STATUSES and request.options.attempt <= request.retries and not request.options.is_service()
    )


def delay_s(request: RunRequest, config: WorkerConfig) -> float:
    """Seconds before the next attempt: ``retry_delay_s`` doubled per attempt so far, capped."""
    first = request.options.retry_delay_s
    first = config.default_retry_delay_s if first is None else first
    return float(min(first * 2 ** (request.options.attempt - 1), config.max_retry_delay_s))


def next_attempt(data: bytes, kind: JobKind, attempt: int, retry_at: datetime) -> bytes:
    """The job file's bytes for attempt ``attempt``, due at ``retry_at`` (JSON fields or a header line)."""
    stamp = retry_at.isoformat(timespec="milliseconds")
    if kind == "json":
        raw = json.loads(data)
        raw.update(attempt=attempt, retry_at=stamp)
        return json.dumps(raw, indent=2).encode("utf-8")
    body = _OUR_HEADER.sub(b"", data)
    line = f"# execsvc: attempt={attempt} retry_at={stamp}\n".encode()
    if body.startswith(b"#!"):
        first, _sep, rest = body.partition(b"\n")
        return first + b"\n" + line + rest
    return line + body


def requeue_attempt(
    store: JobStore, claimed: ClaimedJob, result: JobResult, attempt: int, due: datetime, max_job_file_bytes: int
) -> None:
    """Keep attempt ``attempt``'s result and output in ``logs/`` and put the job back into ``pending/``
    as attempt ``attempt + 1``, due at ``due`` (docs/protocol.md, "Retries").

    The output moves to ``logs/<id>.attempt-<n>.stdout`` / ``.stderr`` (``result``'s ``*_log``
    then name them), the result is written durably to ``logs/<id>.attempt-<n>.result.json``,
    and the job file, rewritten by :func:`next_attempt`, goes into ``pending/`` before the job
    leaves ``running/`` (:meth:`~execsvc.protocol.store.JobStore.requeue`). Raises
    :class:`OSError` when any of it cannot be written (the job then stays in ``running/``).
    """
    layout = store.layout
    for stream in ("stdout", "stderr"):
        aside = layout.attempt_log(claimed.job_id, attempt, stream)
        with contextlib.suppress(FileNotFoundError):
            os.replace(layout.stream_log(claimed.job_id, stream), aside)
        setattr(result, f"{stream}_log", str(aside.relative_to(layout.root)))
    write_durable(
        layout.attempt_record(claimed.job_id, attempt), result.model_dump_json(indent=2).encode("utf-8"), replace=True
    )
    job_file = read_regular_file(claimed.path, max_job_file_bytes)
    if job_file is None:
        raise OSError(f"{claimed.path} is no longer the regular job file it was")
    store.requeue(claimed, next_attempt(job_file, claimed.kind, attempt + 1, due))
