"""Retries: when a failed job gets another attempt, and what its file says then (docs/protocol.md, "Retries").

A job with ``retries`` left that ends ``failed`` or ``timeout`` is put back
into ``pending/`` under its own id (:meth:`~execsvc.protocol.store.JobStore.requeue`)
with ``attempt`` raised by one and ``retry_at`` set; the attempt's result is
kept in ``logs/<id>.attempt-<n>.result.json`` and its output in
``logs/<id>.attempt-<n>.stdout`` / ``.stderr``. A JSON job gets the two
fields; a text job gets a ``# execsvc: attempt=N retry_at=T`` header line.
Jobs ``cancelled``, ``interrupted`` or ``invalid`` are never retried.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

from .config import WorkerConfig
from .protocol.models import JobKind, JobStatus
from .run_request import RunRequest

RETRIED_STATUSES = (JobStatus.FAILED, JobStatus.TIMEOUT)
_OUR_HEADER = re.compile(rb"^# execsvc: attempt=\d+ retry_at=\S+\n", re.MULTILINE)


def should_retry(request: RunRequest, status: JobStatus) -> bool:
    """Whether a job that ended with ``status`` gets another attempt."""
    return status in RETRIED_STATUSES and request.options.attempt <= request.retries


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
