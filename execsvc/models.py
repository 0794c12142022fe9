"""Records that cross the queue boundary, as pydantic models.

Every shape here comes from the queue protocol (``shared/PROTOCOL.md``,
restated in the README): the JSON job a producer drops into ``pending/``, the
``result`` object the worker adds when the job ends, the ``<id>.result.json``
sidecar record for text and invalid jobs, and ``worker.json``.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, field_validator


class JobStatus(str, Enum):
    """Where a job stands. The last six are final and live in a result record."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    INVALID = "invalid"
    INTERRUPTED = "interrupted"


class JobState(str, Enum):
    """The queue folder a job is in: ``pending/``, ``running/``, ``completed/``, ``failed/``."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


JobKind = Literal["json", "text", "other"]


class JobSpec(BaseModel):
    """A JSON job, in either shape of the protocol.

    ``{"command": "echo", "args": ["hi"], "description": ...}`` runs ``command``
    directly with ``args``; ``{"task_id": ..., "command": "python3 x.py",
    "purpose": ...}`` (no ``args``) runs ``command`` as a ``/bin/sh -c`` line.
    ``shell`` overrides that choice. Fields not named here are kept untouched
    and written back into the finished record. Types are strict: ``"5"`` is not
    a ``timeout_s``, ``{"A": 1}`` is not an ``env``.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    command: StrictStr = Field(min_length=1, max_length=1_000_000)
    args: list[StrictStr] | None = None
    shell: StrictBool | None = None
    description: StrictStr | None = None
    purpose: StrictStr | None = None
    task_id: StrictStr | None = None
    result_file: StrictStr | None = Field(default=None, min_length=1)
    timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    cwd: StrictStr | None = Field(default=None, min_length=1)
    env: dict[StrictStr, StrictStr] | None = None
    stdin: StrictStr | None = None

    @field_validator("command")
    @classmethod
    def _command_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("command is blank")
        if "\x00" in value:
            raise ValueError("command contains a NUL byte")
        return value

    def runs_in_shell(self) -> bool:
        """True when ``command`` is a ``/bin/sh -c`` line (no ``args``, unless ``shell`` says otherwise)."""
        return self.shell if self.shell is not None else self.args is None


class JobResult(BaseModel):
    """The ``result`` object of a finished job (PROTOCOL.md, "Finishing").

    ``returncode`` is the exit code, a negative number for the signal that
    killed the process (as in :mod:`subprocess`), or ``None`` when the job never
    ran or never exited. ``stdout`` and ``stderr`` hold at most the last
    ``output_tail_bytes`` of each stream (UTF-8, invalid bytes replaced); the
    whole stream is in ``stdout_log`` / ``stderr_log`` (paths relative to the
    queue root). Times are ISO 8601 with a time zone; ``duration_s`` in seconds.
    """

    job_id: str
    status: JobStatus
    returncode: int | None = None
    signal: str | None = None
    error: str | None = None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    stdout_log: str | None = None
    stderr_log: str | None = None
    argv: list[str] | None = None
    pid: int | None = None
    timeout_s: float | None = None
    started_at: datetime | None = None
    completed_at: datetime
    duration_s: float | None = None
    job_file: str
    worker_pid: int | None = None
    submitted_by: str | None = None  # the job's own submitted_by field ("mcp", "execsvc submit", "api"), else "file"


class JobRecord(JobSpec):
    """A finished JSON job: the job's own fields plus ``result``."""

    model_config = ConfigDict(extra="allow", strict=False)

    result: JobResult


class SidecarRecord(BaseModel):
    """``<id>.result.json``: the record beside a finished text job or an invalid entry.

    ``job_file`` is the entry's name beside this record (the script, or the
    untouched invalid file).
    """

    job_id: str
    kind: JobKind
    job_file: str
    result: JobResult


class JobInfo(BaseModel):
    """What :meth:`execsvc.JobQueue.get` and ``list`` return for one job.

    ``path`` is the job's file (pending or running) or its record (finished).
    ``spec`` is the JSON job as written (``None`` for text jobs and unparsable
    files); ``result`` is set once the job is finished.
    """

    job_id: str
    state: JobState
    status: JobStatus
    kind: JobKind
    path: str
    mtime: datetime
    spec: dict[str, Any] | None = None
    result: JobResult | None = None


class WorkerInfo(BaseModel):
    """``worker.json``: the worker that holds the queue lock."""

    pid: int
    slots: int
    started_at: datetime
    queue_dir: str
    version: str
    allowed_commands: list[str] | None = None  # the command policy (execsvc.policy); None: any command
    allow_shell: bool = True
    config_file: str | None = None
