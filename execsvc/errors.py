"""Exceptions raised by execsvc.

One root, :class:`ExecsvcError`, with a few precise children, so a caller can
catch everything from this package with one clause or pick the case it handles.
"""

from __future__ import annotations


class ExecsvcError(Exception):
    """Root of every error raised on purpose by execsvc."""


class JobNotFound(ExecsvcError):
    """No job with this id is in any queue folder."""


class InvalidJobId(ExecsvcError):
    """A job id that the protocol does not allow (path separators, NUL, too long...)."""


class JobIdTaken(ExecsvcError):
    """A caller asked for a job id that the queue already holds."""


class InvalidJob(ExecsvcError):
    """A job file that cannot be run; ``reason`` is a sentence for a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsafeQueue(ExecsvcError):
    """The queue folders are writable by other users or owned by someone else."""


class WatchFailed(ExecsvcError):
    """The worker cannot get file events for ``pending/`` (e.g. the inotify limits are reached)."""


class QueueLocked(ExecsvcError):
    """Another worker already serves this queue root."""

    def __init__(self, message: str, holder_pid: int | None) -> None:
        super().__init__(message)
        self.holder_pid = holder_pid
