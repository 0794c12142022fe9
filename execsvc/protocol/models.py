"""Records that cross the queue boundary, as pydantic models.

Every shape here comes from the queue protocol (docs/protocol.md): the JSON
job a producer drops into ``pending/``, the ``result`` object the worker adds
when the job ends, the ``<id>.result.json`` sidecar record for text and
invalid jobs, and ``worker.json``.

Every model is built (its validator and serializer) at its first use, not at import
(``defer_build``): a client that enqueues a job builds :class:`JobSpec` and no record model.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from .job_fields import (
    FIRST_YEAR,
    LAST_YEAR,
    MAX_ATTEMPT,
    MAX_DELAY_S,
    MAX_RETRIES,
    SANDBOX_PATHS_MAX,
    AfterMode,
    JobLimits,
    JobSandbox,
    ReadyWhen,
    RestartPolicy,
    SandboxRecord,
    parse_time,
)

__all__ = [
    "CANCEL_SIGNALS",
    "FIRST_YEAR",
    "LAST_YEAR",
    "MAX_ATTEMPT",
    "MAX_DELAY_S",
    "MAX_RETRIES",
    "SANDBOX_PATHS_MAX",
    "SCHEDULING_FIELDS",
    "AfterMode",
    "CancelRequest",
    "CancelSignal",
    "JobInfo",
    "JobKind",
    "JobLimits",
    "JobOptions",
    "JobRecord",
    "JobResult",
    "JobSandbox",
    "JobSpec",
    "JobState",
    "JobStatus",
    "ReadyWhen",
    "RestartPolicy",
    "SandboxRecord",
    "SidecarRecord",
    "WorkerInfo",
    "parse_time",
]


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


class JobOptions(BaseModel):
    """The fields that say when and how a job runs, shared by JSON jobs and text jobs' headers.

    Scheduling (docs/protocol.md, "Scheduling fields"): ``priority`` (higher first among
    ready jobs, FIFO within one), ``after`` (job ids) with ``after_mode``
    (``success``: all must complete, else this job is cancelled; ``any``: all
    must have finished), ``not_before`` (ISO 8601) and ``delay_s`` (seconds after
    the job file was written), ``retries`` with ``retry_delay_s`` (doubled after
    each attempt), ``limits``, ``on_finish`` (a shell command line run after
    the job, its record's path in ``$EXECSVC_RECORD``), ``webhook`` (an
    http(s) URL that gets the record by POST), ``sandbox`` (``true`` for the worker's
    default profile, ``false``, or a :class:`JobSandbox`; docs/protocol.md, "Sandbox"), ``restart``
    (``"no"``, ``"on-failure"`` or ``"always"``: a service, started again when it ends) with
    ``restart_delay_s`` (the first restart's delay, doubled per recent restart; docs/protocol.md,
    "Services"), ``ready_when`` (a :class:`ReadyWhen`: when the running job counts as ready), ``group`` (the
    group whose slots it runs in, ``None``: ``default``; docs/protocol.md, "Groups").
    ``attempt`` and ``retry_at`` are written by the worker when it re-enqueues a
    failed job for another attempt, or a service for its restart. ``timeout_s`` given as
    ``null`` in a JSON job (see :meth:`asks_no_timeout`) asks for no timeout at all.
    Bounds: times in the years :data:`FIRST_YEAR` to :data:`LAST_YEAR`, delays
    up to :data:`MAX_DELAY_S`, ``retries`` up to :data:`MAX_RETRIES`; a job
    outside them is not valid (the worker records it ``invalid``, saying which).
    """

    model_config = ConfigDict(defer_build=True, extra="allow", strict=True)

    timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    priority: StrictInt = Field(default=0, ge=-1_000_000, le=1_000_000)
    after: list[StrictStr] | None = Field(default=None, max_length=1000)
    after_mode: AfterMode = "success"
    not_before: StrictStr | None = None
    delay_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    retries: StrictInt | None = Field(default=None, ge=0, le=MAX_RETRIES)
    retry_delay_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    limits: JobLimits | None = None
    on_finish: StrictStr | None = Field(default=None, min_length=1)
    webhook: StrictStr | None = None
    attempt: StrictInt = Field(default=1, ge=1, le=MAX_ATTEMPT)
    retry_at: StrictStr | None = None
    sandbox: StrictBool | JobSandbox | None = None
    restart: RestartPolicy | None = None
    restart_delay_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    ready_when: ReadyWhen | None = None
    group: StrictStr | None = None

    @field_validator("group")
    @classmethod
    def _group_name(cls, value: str | None) -> str | None:
        from .layout import group_problem

        problem = None if value is None else group_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("not_before", "retry_at")
    @classmethod
    def _iso_time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value)
        return value

    @field_validator("delay_s", "retry_delay_s", "restart_delay_s")
    @classmethod
    def _delay(cls, value: float | None) -> float | None:
        if value is not None and value > MAX_DELAY_S:
            raise ValueError(f"a delay is at most {MAX_DELAY_S:.0f} seconds (100 years), not {value:g}")
        return value

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("a webhook is an http:// or https:// URL")
        return value

    @field_validator("after")
    @classmethod
    def _job_ids(cls, value: list[str] | None) -> list[str] | None:
        for job_id in value or []:
            if not job_id or "/" in job_id or job_id.startswith("."):
                raise ValueError(f"{job_id!r} is not a job id")
        return value

    @model_validator(mode="after")
    def _attempt_of_a_service(self) -> JobOptions:
        if self.attempt > MAX_RETRIES + 1 and not self.is_service():
            raise ValueError(
                f"attempt is at most {MAX_RETRIES + 1} for a job that is not a service (restart), not {self.attempt}"
            )
        return self

    def asks_no_timeout(self) -> bool:
        """Whether the job asks for no timeout: ``"timeout_s": null`` written out (absent: the default)."""
        return self.timeout_s is None and "timeout_s" in self.model_fields_set

    def is_service(self) -> bool:
        """Whether the job is a service: ``restart`` is ``"on-failure"`` or ``"always"``."""
        return self.restart in ("on-failure", "always")

    def due_at(self, written_at: float) -> float | None:
        """When the job may start (seconds since the epoch), or ``None`` for at once.

        ``retry_at`` when the worker set one; else the later of ``not_before``
        and ``written_at + delay_s`` (``written_at``: the job file's mtime).
        """
        if self.retry_at is not None:
            return parse_time(self.retry_at).timestamp()
        due = [parse_time(self.not_before).timestamp()] if self.not_before is not None else []
        if self.delay_s:
            due.append(written_at + self.delay_s)
        return max(due) if due else None


SCHEDULING_FIELDS = tuple(name for name in JobOptions.model_fields if name != "timeout_s")
"""The names of the scheduling fields (docs/protocol.md, "Scheduling fields"), and the worker's
``attempt`` and ``retry_at``: a job naming none of them needs no :class:`JobOptions` before its claim."""


class JobSpec(JobOptions):
    """A JSON job, in either shape of the protocol.

    ``{"command": "echo", "args": ["hi"], "description": ...}`` runs ``command``
    directly with ``args``; ``{"task_id": ..., "command": "python3 x.py",
    "purpose": ...}`` (no ``args``) runs ``command`` as a ``/bin/sh -c`` line.
    ``shell`` overrides that choice. Fields not named here are kept untouched
    and written back into the finished record. Types are strict: ``"5"`` is not
    a ``timeout_s``, ``{"A": 1}`` is not an ``env``.
    """

    model_config = ConfigDict(defer_build=True, extra="allow", strict=True)

    command: StrictStr = Field(min_length=1, max_length=1_000_000)
    args: list[StrictStr] | None = None
    shell: StrictBool | None = None
    description: StrictStr | None = None
    purpose: StrictStr | None = None
    task_id: StrictStr | None = None
    result_file: StrictStr | None = Field(default=None, min_length=1)
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
    """The ``result`` object of a finished job (docs/protocol.md, "Finishing").

    ``returncode`` is the exit code, a negative number for the signal that
    killed the process (as in :mod:`subprocess`), or ``None`` when the job never
    ran or never exited. ``stdout`` and ``stderr`` hold at most the last
    ``output_tail_bytes`` of each stream (UTF-8, invalid bytes replaced); the
    whole stream is in ``stdout_log`` / ``stderr_log`` (paths relative to the
    queue root). Times are ISO 8601 with a time zone; ``duration_s`` in seconds.
    """

    model_config = ConfigDict(defer_build=True)

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
    attempt: int | None = None  # which attempt this record is, for a job with retries
    attempt_records: list[str] | None = None  # records of the earlier attempts (paths relative to the queue root)
    limits: JobLimits | None = None  # the limits in force (the job's, the worker's defaults, capped)
    limit_exceeded: str | None = None  # the name of the limit the job went beyond, e.g. "memory_mb"
    sandbox: SandboxRecord | None = None  # the sandbox the job ran in (docs/protocol.md, "Sandbox"); None: none
    note: str | None = None  # what the worker found about the job's own files (removed or changed by the job...)
    group: str | None = None  # the group it ran in (docs/protocol.md, "Groups"); None: it never started
    slot: int | None = None  # its slot's index within the group (EXECSVC_SLOT); None: it never started
    host: str | None = None  # the remote worker that ran it (docs/distributed.md); None: the worker itself
    remote_logs: list[str] | None = None  # "<host>:<path>" of its whole logs there, when not all output was shipped


class JobRecord(JobSpec):
    """A finished JSON job: the job's own fields plus ``result``."""

    model_config = ConfigDict(defer_build=True, extra="allow", strict=False)

    result: JobResult


class SidecarRecord(BaseModel):
    """``<id>.result.json``: the record beside a finished text job or an invalid entry.

    ``job_file`` is the entry's name beside this record (the script, or the
    untouched invalid file).
    """

    model_config = ConfigDict(defer_build=True)

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

    model_config = ConfigDict(defer_build=True)

    job_id: str
    state: JobState
    status: JobStatus
    kind: JobKind
    path: str
    mtime: datetime
    spec: dict[str, Any] | None = None
    result: JobResult | None = None
    held: bool = False
    ready: bool = False  # running, and its ready_when has been met (docs/protocol.md, "Services")


CANCEL_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL")
"""Signals a cancel request may ask for (docs/protocol.md, "Timeouts and cancelling")."""
CancelSignal = Literal["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGKILL"]


class CancelRequest(BaseModel):
    """``running/.cancel.<id>``: a client's request that the worker stop a running job.

    ``signal`` is what the job's process group gets first (SIGKILL at once for a
    forced cancel); any other than SIGKILL is followed by SIGKILL after the
    worker's kill grace if the group is still running. Unknown fields are ignored;
    a request that cannot be read as this model stops the job with SIGTERM.
    """

    job_id: str | None = None
    requested_by: str | None = None
    requested_at: str | None = None
    signal: CancelSignal = "SIGTERM"
    force: bool = False


class WorkerInfo(BaseModel):
    """``worker.json``: the worker that holds the queue lock, and the settings clients show."""

    model_config = ConfigDict(defer_build=True)

    pid: int
    slots: int
    started_at: datetime
    queue_dir: str
    version: str
    allowed_commands: list[str] | None = None  # the command policy (execsvc.policy); None: any command
    allow_shell: bool = True
    allow_no_timeout: bool | None = None  # whether a job may have no timeout ("timeout_s": null); None: unknown
    sandbox: str | None = None  # the sandbox policy: "off", "on-request", "required" (None: a worker without it)
    sandbox_for: list[str] | None = None  # the fronts (submitted_by) whose jobs always run sandboxed
    config_file: str | None = None
    default_timeout_s: float | None = None  # timeout of a job that names none (seconds)
    max_timeout_s: float | None = None  # cap on any job's timeout_s (seconds)
    kill_grace_s: float | None = None  # time between SIGTERM and SIGKILL when a job is stopped (seconds)
    groups: dict[str, int] | None = None  # slots of each group the config declares, "default" among them
    total_slots: int | None = None  # cap on the jobs of all groups running at once; None: none
    unknown_groups: str | None = None  # a job naming another group: "create" (default's slots) or "refuse"
