"""The MCP tools' answers: one slim job shape, built from :mod:`queue_tools.api`.

A job answer says the status, the exit code, the duration, the error sentence
and, per stream, at most the last :data:`TAIL_LINES` lines (:data:`TAIL_BYTES`)
with the stream's total lines and bytes and the calls that read more. Fields
without a value are left out (the server drops nulls from every answer).
``verbose`` adds the whole result record and the job as written
(docs/protocol.md, "Finishing").
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from execsvc.protocol.models import JobInfo, JobState, JobStatus
from execsvc.protocol.queue import JobQueue

from .. import api
from ..api.lines import stream_tail
from ..api.models import StreamTail
from ..api.stats import running_stats

TAIL_LINES = 40
"""Lines of each stream a job answer shows at most."""
TAIL_BYTES = 4096
"""Bytes of each stream a job answer shows at most."""


class SchedulesAnswer(BaseModel):
    """The queue's schedules (docs/protocol.md, "Schedules"), each as ``queue-view schedules`` shows it."""

    model_config = ConfigDict(defer_build=True)

    schedules: list[api.ScheduleSummary]


class Running(BaseModel):
    """A running job now: seconds since it started and its timeout; its process group's CPU
    seconds, resident memory (MiB) and process count (psutil)."""

    model_config = ConfigDict(defer_build=True)

    elapsed_s: float | None = None
    timeout_s: float | None = None
    cpu_s: float | None = None
    rss_mb: float | None = None
    processes: int | None = None


class JobAnswer(BaseModel):
    """One job, compact. ``status``: pending, running, completed, failed, timeout, cancelled,
    interrupted or invalid. ``waiting``: why a pending job has not started. ``stdout`` and
    ``stderr``: the end of each stream with its totals and how to read more. ``note``: what
    else to know (a worker was started, no worker serves the queue ...). ``result`` and
    ``spec`` (verbose only): the whole result record and the job as written."""

    model_config = ConfigDict(defer_build=True)

    job_id: str
    status: JobStatus
    exit_code: int | None = None
    signal: str | None = None
    duration_s: float | None = None
    error: str | None = None
    waiting: str | None = None
    running: Running | None = None
    stdout: StreamTail | None = None
    stderr: StreamTail | None = None
    note: str | None = None
    result: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None


class CancelAnswer(BaseModel):
    """What ``cancel_job`` did (``outcome``: cancelled, stopped, requested, already_finished),
    in a sentence, and the job after."""

    model_config = ConfigDict(defer_build=True)

    outcome: api.CancelOutcome
    message: str
    job: JobAnswer


def job_answer(queue: JobQueue, detail: api.JobDetail, *, verbose: bool = False) -> JobAnswer:
    """The compact answer for ``detail`` (:func:`queue_tools.api.get_job`)."""
    answer = JobAnswer(job_id=detail.job_id, status=detail.status, note=detail.note)
    result = detail.result
    if result is not None:
        answer.exit_code, answer.signal, answer.error = result.returncode, result.signal, result.error
        answer.duration_s = round(result.duration_s, 3) if result.duration_s is not None else None
    if detail.waiting is not None:
        answer.waiting = detail.waiting.reason
        answer.note = _without_waiting(detail.note)
    if detail.state is JobState.RUNNING:
        answer.running, problem = _running(queue, detail)
        if problem is not None:
            answer.note = f"{answer.note}; {problem}" if answer.note else problem
    if detail.state is not JobState.PENDING:
        info = _info(queue, detail)
        if info is not None:
            answer.stdout = _tail_or_none(queue, info, "stdout", detail.finished)
            answer.stderr = _tail_or_none(queue, info, "stderr", detail.finished)
    if verbose:
        answer.result = result.model_dump(mode="json", exclude_none=True) if result is not None else None
        answer.spec = detail.spec
        if answer.result is not None:
            answer.result.pop("stdout", None)  # the tails above show them, with their sizes
            answer.result.pop("stderr", None)
    return answer


def _without_waiting(note: str | None) -> str | None:
    """The note without its "waiting: <reason>" part (the answer says it in ``waiting``)."""
    if note is None:
        return None
    parts = [part for part in note.split("; ") if not part.startswith("waiting: ")]
    return "; ".join(parts) or None


def _info(queue: JobQueue, detail: api.JobDetail) -> JobInfo | None:
    try:
        return queue.get(detail.job_id)
    except Exception:  # it moved on meanwhile: the answer goes without the tails
        return None


def _tail_or_none(queue: JobQueue, info: JobInfo, stream: api.Stream, finished: bool) -> StreamTail | None:
    tail = stream_tail(queue, info, stream, lines=TAIL_LINES, max_bytes=TAIL_BYTES)
    if tail.bytes == 0 and tail.problem is None and (finished or stream == "stderr"):
        return None  # nothing was written: nothing to show
    return tail


def _running(queue: JobQueue, detail: api.JobDetail) -> tuple[Running, str | None]:
    """The running job's figures, and why its processes could not be measured (if so)."""
    running = Running(elapsed_s=detail.elapsed_s, timeout_s=api.timeout_of(queue, detail.spec))
    stats = running_stats(queue, detail.job_id)
    running.cpu_s, running.rss_mb, running.processes = stats.cpu_s, stats.rss_mb, stats.processes
    return running, None if stats.problem is None else f"CPU and memory not measured: {stats.problem}"


def dump(model: BaseModel) -> dict[str, Any]:
    """``model`` as JSON-ready data without null fields."""
    data: dict[str, Any] = _prune(model.model_dump(mode="json", by_alias=True))
    return data


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {key: _prune(item) for key, item in value.items()}
        return {key: item for key, item in pruned.items() if item is not None}
    if isinstance(value, list):
        return [_prune(item) for item in value]
    return value


def worker_started_note(pid: int | None, how: str) -> str:
    """The note an answer carries after the server started the queue's worker."""
    at = time.strftime("%H:%M:%S")
    return f"no worker was serving the queue, so one was started at {at} ({how}, pid {pid})"
