"""Building a job's ``result`` record (docs/protocol.md, "Finishing") from how it ended."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .job_logs import read_tail
from .policy import write_result_file
from .protocol import ClaimedJob
from .protocol.defaults import GROUP_ENV, SLOT_ENV
from .protocol.jobfile import submitted_by
from .protocol.layout import QueueLayout
from .protocol.models import JobResult, JobSpec, JobStatus
from .run_request import RunRequest
from .runner import ExitInfo, now, signal_name


def status_of_exit(returncode: int) -> tuple[JobStatus, str | None]:
    """``completed`` for exit code 0, else ``failed`` with a sentence saying how it ended."""
    if returncode == 0:
        return JobStatus.COMPLETED, None
    if returncode > 0:
        return JobStatus.FAILED, f"the job exited with code {returncode}"
    return JobStatus.FAILED, f"the job was killed by {signal_name(returncode)}"


_NOT_FOUND = re.compile(r"^(?:.*?: )?(?:line \d+: |\d+: )?(.+?): (?:command )?not found$", re.MULTILINE)
"""A shell's "not found" line: dash ``sh: 1: foo: not found``, bash ``bash: line 1: foo: command not found``."""


def command_not_found(returncode: int, stderr_tail: str) -> str | None:
    """The command a shell could not find, for exit code 127 with its "not found" line on stderr
    (the last such line); ``None`` otherwise."""
    if returncode != 127:
        return None
    found = _NOT_FOUND.findall(stderr_tail)
    return found[-1].strip() or None if found else None


def copy_result_file(
    layout: QueueLayout,
    claimed: ClaimedJob,
    request: RunRequest,
    status: JobStatus,
    error: str | None,
    roots: tuple[Path, ...],
) -> tuple[JobStatus, str | None]:
    """Copy the job's whole stdout to its ``result_file``, under one of ``roots`` without following
    a link (:func:`~.policy.write_result_file`); a failed copy fails a completed job, saying why."""
    if request.result_file is None:
        return status, error
    try:
        write_result_file(request.result_file, roots, layout.stdout_log(claimed.job_id))
    except OSError as exc:
        problem = f"stdout could not be written to result_file {request.result_file}: {exc.strerror or exc}"
        return (JobStatus.FAILED if status is JobStatus.COMPLETED else status), (
            f"{error}; {problem}" if error else problem
        )
    return status, error


def build_result(
    layout: QueueLayout,
    claimed: ClaimedJob,
    status: JobStatus,
    error: str | None,
    *,
    tail_bytes: int,
    request: RunRequest | None = None,
    exit_info: ExitInfo | None = None,
    pid: int | None = None,
    spec: JobSpec | None = None,
) -> JobResult:
    """The result record: status and error as given, output tails (at most ``tail_bytes`` per
    stream) from ``logs/``, and the times and exit code from ``exit_info`` when the job ran.
    ``submitted_by`` comes from the request's spec, or from ``spec`` when there is no request
    (a job settled after a crash)."""
    out = read_tail(layout.stdout_log(claimed.job_id), tail_bytes)
    err = read_tail(layout.stderr_log(claimed.job_id), tail_bytes)
    returncode = exit_info.returncode if exit_info else None
    result = JobResult(
        job_id=claimed.job_id,
        status=status,
        returncode=returncode,
        signal=signal_name(returncode),
        error=error,
        stdout=out.text,
        stderr=err.text,
        stdout_truncated=out.truncated,
        stderr_truncated=err.truncated,
        stdout_bytes=out.size_bytes,
        stderr_bytes=err.size_bytes,
        stdout_log=f"logs/{claimed.job_id}.stdout",
        stderr_log=f"logs/{claimed.job_id}.stderr",
        argv=request.argv if request else None,
        pid=pid,
        timeout_s=request.timeout_s if request else None,
        started_at=exit_info.started_at if exit_info else None,
        completed_at=exit_info.ended_at if exit_info else now(),
        duration_s=exit_info.duration_s if exit_info else None,
        job_file=claimed.job_file,
        worker_pid=os.getpid(),
        submitted_by=submitted_by(request.spec if request else spec),
    )
    return _with_group(request, _with_sandbox(request, result))


def _with_group(request: RunRequest | None, result: JobResult) -> JobResult:
    """``result`` with the ``group`` and ``slot`` the job ran in (the ``EXECSVC_GROUP`` and
    ``EXECSVC_SLOT`` it was given); unset for a job that never started."""
    env = request.env if request is not None else {}
    if GROUP_ENV in env and SLOT_ENV in env:
        result.group, result.slot = env[GROUP_ENV], int(env[SLOT_ENV])
    return result


def unstarted_result(claimed: ClaimedJob, status: JobStatus, error: str, request: RunRequest | None) -> JobResult:
    """The record of a job that never started (invalid, or it could not be spawned): no output, no logs."""
    result = JobResult(
        job_id=claimed.job_id,
        status=status,
        returncode=None,  # set, so that a JSON job's record says null (it is written with exclude_unset)
        error=error,
        completed_at=now(),
        job_file=claimed.job_file,
        worker_pid=os.getpid(),
        argv=request.argv if request else None,
        timeout_s=request.timeout_s if request else None,
        submitted_by=submitted_by(request.spec if request else None),
    )
    return _with_sandbox(request, result)


def _with_sandbox(request: RunRequest | None, result: JobResult) -> JobResult:
    """``result`` with ``sandbox`` set for a sandboxed job; for the others the field stays unset
    (a JSON job's record, written with ``exclude_unset``, has no ``sandbox`` at all)."""
    if request is not None and request.sandbox is not None:
        result.sandbox = request.sandbox.record
    return result
