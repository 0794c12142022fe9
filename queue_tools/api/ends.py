"""Waiting for several jobs to end, on file events: what ``execsvc wait`` (pueue's ``wait``,
tsp's ``-w``) stands on."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from execsvc.protocol import FINISHED_STATES
from execsvc.protocol.changes import folder_changes
from execsvc.protocol.models import JobInfo
from execsvc.protocol.queue import JobQueue


def job_ends(queue: JobQueue, job_ids: Sequence[str], timeout_s: float | None = None) -> Iterator[JobInfo]:
    """Each job's :class:`~execsvc.protocol.models.JobInfo` once it has finished (``completed/`` or
    ``failed/``), in the order they end (those finished already first, in the order given).

    Every id is looked up before anything is waited for: an id the queue does not hold raises
    :class:`~execsvc.protocol.errors.JobNotFound` (a malformed one
    :class:`~execsvc.protocol.errors.InvalidJobId`), and so does one that leaves the queue
    unfinished while waited for. Woken by file events on ``completed/`` and ``failed/``
    (:func:`~execsvc.protocol.changes.folder_changes`, no polling loop). Ends when every job has
    ended, or after ``timeout_s`` seconds (``None``: no limit) with some still unfinished. A held
    job, or a service (``restart``) that is never cancelled, keeps it waiting.
    """
    left = list(dict.fromkeys(job_ids))
    for job_id in left:
        queue.get(job_id)
    finished = [queue.layout.folder(state) for state in FINISHED_STATES]
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with folder_changes(finished, "jobs' ends") as changed:
        while left:
            for job_id in list(left):
                info = queue.get(job_id)
                if info.state in FINISHED_STATES:
                    left.remove(job_id)
                    yield info
            remaining = None if deadline is None else deadline - time.monotonic()
            if not left or (remaining is not None and remaining <= 0):
                return
            changed(remaining)
