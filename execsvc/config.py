"""Worker settings and where the default queue lives."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

QUEUE_DIR_ENV = "EXECSVC_QUEUE_DIR"
"""Environment variable naming the queue root."""

JOB_ID_ENV = "EXECSVC_JOB_ID"
"""Set in every job's environment to its job id (also how leftover processes are found)."""

DEFAULT_TIMEOUT_S = 300.0
"""A job's timeout when it names none (PROTOCOL.md)."""


def default_queue_dir() -> Path:
    """``$EXECSVC_QUEUE_DIR`` if set, else the platform's user data dir + ``/command_queue``.

    That is ``~/.local/share/execsvc/command_queue`` on Linux and
    ``~/Library/Application Support/execsvc/command_queue`` on macOS.
    """
    configured = os.environ.get(QUEUE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_data_dir("execsvc", appauthor=False)) / "command_queue"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker can be told; times in seconds, sizes in bytes.

    - ``slots``: jobs run at once (start order stays FIFO).
    - ``default_timeout_s``: timeout of a job that names none.
    - ``max_timeout_s``: cap on any job's ``timeout_s``.
    - ``kill_grace_s``: time between SIGTERM and SIGKILL when a job's process group is stopped.
    - ``drain_timeout_s``: on SIGTERM/SIGINT, how long running jobs may go on before they are stopped.
    - ``output_tail_bytes``: most bytes of each stream kept in the result record.
    - ``max_job_file_bytes``: larger job files are invalid.
    - ``settle_s``: where the kernel cannot say whether a file is still open for
      writing, a text job must be this long unchanged before it runs.
    - ``rescan_interval_s``: safety rescan of ``pending/`` in case a file event was lost.
    - ``log_max_bytes`` / ``log_backups``: rotation of ``daemon.log``.
    - ``retention_days``: when set, finished jobs older than this are removed at start
      and once a day (records, job files and logs; as ``execsvc clean``).
    """

    slots: int = 1
    default_timeout_s: float = DEFAULT_TIMEOUT_S
    max_timeout_s: float = 86_400.0
    kill_grace_s: float = 5.0
    drain_timeout_s: float = 15.0
    output_tail_bytes: int = 64 * 1024
    max_job_file_bytes: int = 16 * 1024 * 1024
    settle_s: float = 0.5
    rescan_interval_s: float = 60.0
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    retention_days: float | None = None

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
        if not 0 < self.default_timeout_s <= self.max_timeout_s:
            raise ValueError("default_timeout_s must be > 0 and <= max_timeout_s")
        if self.retention_days is not None and self.retention_days <= 0:
            raise ValueError("retention_days must be > 0 (leave it unset to keep every job)")
        if self.kill_grace_s < 0 or self.drain_timeout_s < 0:
            raise ValueError("kill_grace_s and drain_timeout_s cannot be negative")
