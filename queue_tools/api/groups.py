"""Groups as the fronts show them (docs/protocol.md, "Groups"): each group's slots in use and in
all, whether it is paused, how many jobs wait in it; and the load a pending job's group is under,
for :func:`execsvc.protocol.readiness.group_wait` (the worker's own rule).

The slots come from ``worker.json`` (``groups``: the declared ones; a group made on the fly has
the ``default`` group's); the pauses from the ``pending/.paused.<group>`` files; which group a
job is in from its scheduling fields (each pending and running job file is read once per call).
"""

from __future__ import annotations

import os
from functools import cached_property

from execsvc.protocol.defaults import DEFAULT_GROUP
from execsvc.protocol.layout import PAUSED_PREFIX, split_job_name
from execsvc.protocol.models import JobState, WorkerInfo
from execsvc.protocol.queue import JobQueue
from execsvc.protocol.readiness import GroupLoad, group_wait, unknown_group_reason
from execsvc.protocol.scheduling import PLAIN, peek

from .models import GroupSummary


class GroupLoads:
    """The groups of one queue as read once, each part when first asked: the worker's slots, each
    group's pause (one look at its pause file), the running jobs' groups (each running job's file)."""

    def __init__(self, queue: JobQueue, worker: WorkerInfo | None = None) -> None:
        self.queue = queue
        self.worker = worker if worker is not None else queue.worker_info()
        self._paused: dict[str, bool] = {}

    def paused(self, group: str) -> bool:
        """Whether ``group`` is paused (``pending/.paused.<group>`` exists)."""
        if group not in self._paused:
            self._paused[group] = os.path.lexists(self.queue.layout.pending / f"{PAUSED_PREFIX}{group}")
        return self._paused[group]

    @cached_property
    def running(self) -> dict[str, int]:
        """Running jobs per group."""
        running: dict[str, int] = {}
        for entry in self.queue.entries(JobState.RUNNING):
            group = group_of(entry.path, entry.mtime_ns / 1e9)
            running[group] = running.get(group, 0) + 1
        return running

    def slots_of(self, group: str) -> int | None:
        """The slots the serving worker gives ``group`` (``None``: no worker, or it refuses the group)."""
        if self.worker is None:
            return None
        declared = self.worker.groups or {DEFAULT_GROUP: self.worker.slots}
        if group in declared:
            return declared[group]
        return None if self.worker.unknown_groups == "refuse" else declared.get(DEFAULT_GROUP, self.worker.slots)

    def refusal(self, group: str) -> str | None:
        """Why the serving worker will record a job of ``group`` ``invalid`` (an undeclared group
        under ``unknown_groups = "refuse"``), or ``None``."""
        worker = self.worker
        if worker is None or worker.unknown_groups != "refuse" or group in (worker.groups or {DEFAULT_GROUP: 0}):
            return None
        return unknown_group_reason(group, worker.groups or {DEFAULT_GROUP: worker.slots})

    def wait(self, group: str, *, own_slots: bool = True) -> str | None:
        """Why a ready job of ``group`` is not claimed now (:func:`group_wait`), or ``None``;
        ``own_slots=False`` leaves the group's own slots out (a pause and ``total_slots`` only)."""
        slots = self.slots_of(group)
        if slots is None or self.paused(group):  # paused: said without reading the running jobs
            return group_wait(group, GroupLoad(0, paused=True)) if self.paused(group) else None
        running = self.running.get(group, 0)
        load = GroupLoad(slots if own_slots else running + 1, running)
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
    paused = queue.paused_groups()
    pending: dict[str, int] = {}
    for entry in queue.entries(JobState.PENDING):
        group = group_of(entry.path, entry.mtime_ns / 1e9)
        pending[group] = pending.get(group, 0) + 1
    declared = set(loads.worker.groups or ()) if loads.worker is not None else set()
    names = {DEFAULT_GROUP} | declared | paused | set(loads.running) | set(pending)
    return [
        GroupSummary(
            name=name,
            slots=loads.slots_of(name),
            running=loads.running.get(name, 0),
            pending=pending.get(name, 0),
            paused=name in paused,
        )
        for name in sorted(names, key=lambda name: (name != DEFAULT_GROUP, name))
    ]


def has_groups(queue: JobQueue, worker: WorkerInfo | None) -> bool:
    """Whether the queue has more than the ``default`` group to show: declared, or paused."""
    declared = worker is not None and bool(set(worker.groups or ()) - {DEFAULT_GROUP})
    return declared or bool(queue.paused_groups())
