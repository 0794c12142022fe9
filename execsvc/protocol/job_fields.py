"""The parts of a job's fields that are shapes of their own: ``after_mode``, ``restart``,
``limits``, ``sandbox``, ``ready_when``, a record's ``sandbox``, and the bounds on times,
delays, retries and attempts (docs/protocol.md, "Scheduling fields", "Sandbox", "Services").

:mod:`.models` builds the job and record models from them and re-exports every name here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator, model_validator

AfterMode = Literal["success", "any"]


RestartPolicy = Literal["no", "on-failure", "always"]
"""``restart``: when a job ends, whether it starts again (docs/protocol.md, "Services")."""


class JobLimits(BaseModel):
    """``limits``: what one job may use (docs/protocol.md, "Scheduling fields"); each ``None`` is no limit.

    ``cpu_s`` (CPU seconds, RLIMIT_CPU), ``memory_mb`` (address space in MiB,
    RLIMIT_AS), ``open_files`` (RLIMIT_NOFILE) are set in the job's process by
    ``prlimit(1)`` before it execs; ``processes`` (processes in the job's
    process group at once) and ``output_bytes`` (bytes per stream) are checked
    by the worker while the job runs. Each has an upper bound that the kernel's
    limits can hold: ``cpu_s`` 10^9, ``memory_mb`` 2^40, ``open_files`` and
    ``processes`` 2^31 - 1, ``output_bytes`` 2^62.
    """

    model_config = ConfigDict(defer_build=True, extra="forbid", strict=True, frozen=True)

    cpu_s: float | None = Field(default=None, gt=0, le=1e9, allow_inf_nan=False)
    memory_mb: StrictInt | None = Field(default=None, gt=0, le=2**40)
    open_files: StrictInt | None = Field(default=None, gt=0, le=2**31 - 1)
    processes: StrictInt | None = Field(default=None, gt=0, le=2**31 - 1)
    output_bytes: StrictInt | None = Field(default=None, gt=0, le=2**62)


SANDBOX_PATHS_MAX = 100
"""Most paths in each list of a ``sandbox`` object."""


class JobSandbox(BaseModel):
    """``sandbox`` as an object: how a job's sandbox differs from the default profile (docs/protocol.md,
    "Sandbox").

    ``network``: share the host's network (default: none but a private loopback).
    ``writable``: more paths the job may write (each must exist; its ``cwd`` and a private
    ``/tmp`` are writable anyway). ``readable_only``: paths made read-only (each must exist),
    e.g. a folder inside the ``cwd``. ``hidden``: paths masked with an empty folder or an empty
    file. Each path is absolute or starts with ``~/`` (the worker's home directory); at most
    :data:`SANDBOX_PATHS_MAX` in each list.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    network: StrictBool = False
    writable: list[StrictStr] = Field(default_factory=list, max_length=SANDBOX_PATHS_MAX)
    readable_only: list[StrictStr] = Field(default_factory=list, max_length=SANDBOX_PATHS_MAX)
    hidden: list[StrictStr] = Field(default_factory=list, max_length=SANDBOX_PATHS_MAX)

    @field_validator("writable", "readable_only", "hidden")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if "\x00" in path or not (path.startswith("/") or path == "~" or path.startswith("~/")):
                raise ValueError(f"{path!r} is not a path a sandbox can take: give an absolute path or one starting ~/")
        return value


class ReadyWhen(BaseModel):
    """``ready_when``: when a running job is ready (docs/protocol.md, "Services"): ``line``, a
    regular expression (Python's ``re``, at most 1,000 characters) that a line of its stdout or
    stderr matches, or ``port``, a TCP port on 127.0.0.1 that accepts a connection. Exactly one."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    line: StrictStr | None = Field(default=None, min_length=1, max_length=1000)
    port: StrictInt | None = Field(default=None, ge=1, le=65535)

    @field_validator("line")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            import re

            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"{value!r} is not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one(self) -> ReadyWhen:
        if (self.line is None) == (self.port is None):
            raise ValueError('ready_when takes exactly one of "line" (a regular expression) and "port"')
        return self


class SandboxRecord(BaseModel):
    """``result.sandbox``: the sandbox a job ran in, as the worker applied it (docs/protocol.md, "Sandbox").

    ``profile``: ``"default"`` (the worker's default profile) or ``"job"`` (the job's own
    ``sandbox`` object over it); ``reason``: ``"asked"`` (the job's ``sandbox`` field),
    ``"required"`` (the worker's ``sandbox = "required"``) or ``"sandbox_for"`` (the front
    that submitted it, in ``submitted_by``). Paths are absolute, as mounted: ``writable``
    (the ``cwd`` first, when it is writable), ``readable_only`` and ``hidden``.
    """

    profile: Literal["default", "job"]
    reason: Literal["asked", "required", "sandbox_for"]
    network: bool = False
    writable: list[str] = Field(default_factory=list)
    readable_only: list[str] = Field(default_factory=list)
    hidden: list[str] = Field(default_factory=list)


FIRST_YEAR = 1970
LAST_YEAR = 9998
"""The years a time in a job can name (``not_before``, ``retry_at``): in any time zone it
is then a moment every front can show and every clock can wait for."""
MAX_DELAY_S = 100 * 365.25 * 86_400
"""Longest ``delay_s`` and ``retry_delay_s``: 100 years (3,155,760,000 seconds)."""
MAX_RETRIES = 1000
"""Most ``retries`` a job may ask for."""
MAX_ATTEMPT = 10**8
"""Largest ``attempt`` of a service (``restart``), which gets a new attempt at each restart; any
other job's is at most ``MAX_RETRIES + 1``."""


def parse_time(value: str) -> datetime:
    """An ISO 8601 time (``2026-11-21T10:00:00+01:00``; without a zone it is local time).

    Raises :class:`ValueError` saying what is expected: an ISO 8601 time in the
    years :data:`FIRST_YEAR` to :data:`LAST_YEAR`."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time like 2026-11-21T10:00:00+01:00") from None
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ValueError(f"{value!r} is not in the years {FIRST_YEAR} to {LAST_YEAR}, which a time in a job must be")
    return moment if moment.tzinfo is not None else moment.astimezone()
