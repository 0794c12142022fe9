"""Groups as the fronts show them (docs/protocol.md, "Groups"): each group's slots in use and in
all, whether it is paused, how many jobs wait in it; and the load a pending job's group is under,
for :func:`execsvc.protocol.readiness.group_wait` (the worker's own rule).

The slots come from ``worker.json`` (``groups``: the declared ones; a group made on the fly has
the ``default`` group's); the pauses from the ``pending/.paused.<group>`` files; which group a
job is in from its scheduling fields (each pending and running job file is read once per call).
"""

from __future__ import annotations

import os

from execsvc.protocol.defaults import DEFAULT_GROUP
from execsvc.protocol.layout import split_job_name
from execsvc.protocol.models import JobState, WorkerInfo
from execsvc.protocol.queue import JobQueue
from execsvc.protocol.readiness import GroupLoad, group_wait
from execsvc.protocol.scheduling import PLAIN, peek

from .models import GroupSummary


class GroupLoads:
    """The groups of one queue as read once: the worker's slots, the pauses, the running jobs' groups."""

    def __init__(self, queue: JobQueue, worker: WorkerInfo | None = None) -> None:
        self.worker = worker if worker is not None else queue.worker_info()
        self.paused = queue.paused_groups()
        self.running: dict[str, int] = {}
        for entry in queue.entries(JobState.RUNNING):
            group = group_of(entry.path, entry.mtime_ns / 1e9)
            self.running[group] = self.running.get(group, 0) + 1

    def slots_of(self, group: str) -> int | None:
        """The slots the serving worker gives ``group`` (``None``: no worker, or it refuses the group)."""
        if self.worker is None:
            return None
        declared = self.worker.groups or {DEFAULT_GROUP: self.worker.slots}
        if group in declared:
            return declared[group]
        return None if self.worker.unknown_groups == "refuse" else declared.get(DEFAULT_GROUP, self.worker.slots)

    def wait(self, group: str) -> str | None:
        """Why a ready job of ``group`` is not claimed now (:func:`group_wait`), or ``None``."""
        slots = self.slots_of(group)
        if slots is None:
            return f"group {group} is paused (execsvc group resume {group})" if group in self.paused else None
        load = GroupLoad(slots, self.running.get(group, 0), group in self.paused)
        total = self.worker.total_slots if self.worker is not None else None
        return group_wait(group, load, total_running=sum(self.running.values()), total_slots=total)


def group_of(path: str, written_at: float) -> str:
    """The group the pending or running job file at ``path`` names (``default`` if none, or unreadable)."""
    try:
        fields = peek(path, split_job_name(os.path.basename(path))[2], written_at)
    except OSError:
        fields = PLAIN
    return fields.group


def group_summaries(queue: JobQueue) -> list[GroupSummary]:
    """Every group the worker declares, is paused, or a pending or running job names; by name,
    ``default`` first."""
    loads = GroupLoads(queue)
    pending: dict[str, int] = {}
    for entry in queue.entries(JobState.PENDING):
        group = group_of(entry.path, entry.mtime_ns / 1e9)
        pending[group] = pending.get(group, 0) + 1
    declared = set(loads.worker.groups or ()) if loads.worker is not None else set()
    names = {DEFAULT_GROUP} | declared | loads.paused | set(loads.running) | set(pending)
    return [
        GroupSummary(
            name=name,
            slots=loads.slots_of(name),
            running=loads.running.get(name, 0),
            pending=pending.get(name, 0),
            paused=name in loads.paused,
        )
        for name in sorted(names, key=lambda name: (name != DEFAULT_GROUP, name))
    ]


def has_groups(queue: JobQueue, worker: WorkerInfo | None) -> bool:
    """Whether the queue has more than the ``default`` group to show: declared, or paused."""
    declared = worker is not None and bool(set(worker.groups or ()) - {DEFAULT_GROUP})
    return declared or bool(queue.paused_groups())
