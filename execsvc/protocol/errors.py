"""Exceptions raised by execsvc.

One root, :class:`ExecsvcError`, with a few precise children, so a caller can
catch everything from this package with one clause or pick the case it handles.
The children defined elsewhere are :class:`~execsvc.config.ConfigError` and
:class:`~execsvc.runner.SpawnError`. A failure of the file system itself stays
an :class:`OSError` (so does :class:`~execsvc.protocol.durable.NotRegularFile`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError


class ExecsvcError(Exception):
    """Root of every error raised on purpose by execsvc."""


class JobNotFound(ExecsvcError):
    """No job with this id is in any queue folder."""


class InvalidJobId(ExecsvcError):
    """A job id that the protocol does not allow (path separators, NUL, too long...)."""


class JobIdTaken(ExecsvcError):
    """A caller asked for a job id that the queue already holds."""


class JobNotPending(ExecsvcError, ValueError):
    """A job asked to be held that has already started or finished (only a pending job can be)."""


class JobFileNameTaken(ExecsvcError, FileExistsError):
    """A job file cannot be held: ``pending/.held/`` has a file of its name; nothing was moved.
    An :class:`OSError` with ``errno`` ``EEXIST`` and the taken path as ``filename``."""


class InvalidJob(ExecsvcError):
    """A job file that cannot be run; ``reason`` is a sentence for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidSchedule(ExecsvcError, ValueError):
    """A schedule file that cannot be used (docs/protocol.md, "Schedules"); the message says why."""


class UnsafeQueue(ExecsvcError):
    """The queue folders are writable by other users or owned by someone else."""


class WatchFailed(ExecsvcError):
    """The worker cannot get file events for ``pending/`` (e.g. the inotify limits are reached)."""


class QueueLocked(ExecsvcError):
    """Another worker already serves this queue root."""

    def __init__(self, message: str, holder_pid: int | None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid


def validation_problems(exc: ValidationError) -> str:
    """What a pydantic error says is wrong with a job's (or the worker's settings') fields, as
    sentences joined by ``; `` (``'limits.memory_mb': Input should be greater than 0``): the one
    wording of :class:`InvalidJob` reasons, :class:`~execsvc.config.ConfigError` messages, the MCP
    server's and ``execsvc submit``'s refusals."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "job"
        if error["type"] == "missing":
            problems.append(f"the required field '{where}' is missing")
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"'{where}': {message}")
    return "; ".join(problems)
