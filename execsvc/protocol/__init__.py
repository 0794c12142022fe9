"""The queue protocol as a library (docs/protocol.md): the folder layout, the job and record
models, durable file operations, job-file parsing, listings with the finish-time index, the
client API (:class:`JobQueue`) and the worker's side of it (:class:`JobStore`).

It imports nothing of the worker, its config or its log, nor of the fronts. Its modules:
``defaults`` (environment names, the default queue, default timeout), ``layout``, ``models``,
``errors``, ``durable``, ``finish_index``, ``record_batch`` (records made durable in groups),
``jobfile``, ``scheduling`` (a job's scheduling fields), ``readiness`` (why a pending job waits),
``listing`` (:class:`QueueReader`),
``store`` (:class:`JobStore`), ``queue`` (:class:`JobQueue`), ``changes`` (waiting for a
folder to change), ``schedules`` (recurring jobs: the schedule file, due times, run ids),
``logline`` and ``visible``.

The names below are imported from their module on first use, so ``import execsvc.protocol``
alone loads none of them (a client that only needs :mod:`.layout` pays for no model).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
"""The version of execsvc, as ``pyproject.toml`` has it (the folder contract is version 1: docs/protocol.md)."""

if TYPE_CHECKING:
    from .changes import folder_changes
    from .listing import FINISHED_STATES, JobEntry, QueueReader
    from .queue import Cancellation, JobQueue, new_job_id
    from .store import ClaimedJob, JobStore

_HOMES = {
    "changes": ("folder_changes",),
    "listing": ("FINISHED_STATES", "JobEntry", "QueueReader"),
    "queue": ("Cancellation", "JobQueue", "new_job_id"),
    "store": ("ClaimedJob", "JobStore"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """The names of :data:`__all__`, each imported from its module on first use.

    Raises :class:`AttributeError` for any other name.
    """
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "FINISHED_STATES",
    "Cancellation",
    "ClaimedJob",
    "JobEntry",
    "JobQueue",
    "JobStore",
    "QueueReader",
    "__version__",
    "folder_changes",
    "new_job_id",
]
