"""execsvc: a file-queue job executor.

Programs drop job files into ``pending/``; a worker runs them in FIFO order and
records each result in ``completed/`` or ``failed/`` (the queue protocol,
described in docs/protocol.md). This package's public API is the protocol side::

    from execsvc import JobQueue, JobSpec, default_queue_dir

    queue = JobQueue(default_queue_dir())
    job_id = queue.submit(JobSpec(command="echo", args=["hi"]))
    info = queue.wait(job_id, timeout_s=10)
    print(info.status, info.result.stdout if info.result else None)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .protocol import __version__

if TYPE_CHECKING:
    from .config import WorkerConfig
    from .protocol.defaults import DEFAULT_TIMEOUT_S, QUEUE_DIR_ENV, default_queue_dir
    from .protocol.errors import (
        ExecsvcError,
        InvalidJob,
        InvalidJobId,
        JobIdTaken,
        JobNotFound,
        QueueLocked,
        UnsafeQueue,
        WatchFailed,
    )
    from .protocol.models import JobInfo, JobRecord, JobResult, JobSpec, JobState, JobStatus, SidecarRecord, WorkerInfo
    from .protocol.queue import JobQueue, new_job_id

_HOMES = {
    "config": ("WorkerConfig",),
    "protocol.defaults": ("DEFAULT_TIMEOUT_S", "QUEUE_DIR_ENV", "default_queue_dir"),
    "protocol.errors": (
        "ExecsvcError",
        "InvalidJob",
        "InvalidJobId",
        "JobIdTaken",
        "JobNotFound",
        "QueueLocked",
        "UnsafeQueue",
        "WatchFailed",
    ),
    "protocol.models": (
        "JobInfo",
        "JobRecord",
        "JobResult",
        "JobSpec",
        "JobState",
        "JobStatus",
        "SidecarRecord",
        "WorkerInfo",
    ),
    "protocol.queue": ("JobQueue", "new_job_id"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """The public names, each imported from its module on first use (``import execsvc`` alone loads no
    submodule: a client that submits a job never loads the worker's modules or watchdog).

    Raises :class:`AttributeError` for any other name.
    """
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next look-up is a plain global
    return value


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "QUEUE_DIR_ENV",
    "ExecsvcError",
    "InvalidJob",
    "InvalidJobId",
    "JobIdTaken",
    "JobInfo",
    "JobNotFound",
    "JobQueue",
    "JobRecord",
    "JobResult",
    "JobSpec",
    "JobState",
    "JobStatus",
    "QueueLocked",
    "SidecarRecord",
    "UnsafeQueue",
    "WatchFailed",
    "WorkerConfig",
    "WorkerInfo",
    "__version__",
    "default_queue_dir",
    "new_job_id",
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
