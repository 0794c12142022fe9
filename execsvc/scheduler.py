"""The worker's order of pending jobs: priority, FIFO, due times, dependencies (docs/protocol.md, "Order and claiming").

In memory only, rebuilt from the files at every start: everything it knows
came from a job file (:class:`~execsvc.protocol.scheduling.SchedulingFields`) or from where a
dependency's file is (the ``lookup`` the worker passes). A pending job is in
one of four places here:

- *ready*: due, dependencies settled; in one line per group (docs/protocol.md,
  "Groups"), taken highest ``priority`` first, then oldest file (mtime, then
  name), from the groups the caller lets start a job (:meth:`Scheduler.take_ready`);
- *timed*: due later; the worker sleeps until :meth:`Scheduler.next_due_at`
  (no polling);
- *waiting*: for jobs named in ``after`` that have not finished; re-checked
  when one of them is recorded (:meth:`Scheduler.settled`);
- *doomed*: it can never run (a dependency is unknown or failed, or the
  ``after`` lists form a cycle); the worker claims it and records it at once,
  ``invalid`` or ``cancelled``, with the reason. A dependency is unknown only
  when a second look, ``CONFIRM_MISSING_AFTER_S`` after the first (the job
  waits among the timed ones meanwhile), finds it nowhere either: a job being
  moved between folders can be missed by one look.

Why a pending job waits is decided by :func:`execsvc.protocol.readiness.wait_reason`:
the scheduler places jobs by it, and the fronts (``queue_tools.api``) explain
pending jobs with it, so both give one answer.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, KeysView
from dataclasses import dataclass, field

from .protocol.models import JobStatus
from .protocol.readiness import (
    CONFIRM_MISSING_AFTER_S,
    Doomed,
    Lookup,
    cycle_reason,
    find_cycle,
    order_key,
    wait_reason,
)
from .protocol.scheduling import SchedulingFields

_ReadyItem = tuple[int, int, str, int]  # (-priority, mtime_ns, file name, generation)


@dataclass
class _Entry:
    job_id: str
    fields: SchedulingFields
    mtime_ns: int
    generation: int
    waiting_for: set[str] = field(default_factory=set)
    unseen: set[str] = field(default_factory=set)  # dependencies found nowhere once: confirmed at the next look


class Scheduler:
    """Pending jobs by file name (``pending/<name>``), in the order they may start."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._entries: dict[str, _Entry] = {}
        self._names_by_id: dict[str, str] = {}
        self._ready: dict[str, list[_ReadyItem]] = {}  # group -> heap of (-priority, mtime_ns, name, generation)
        self._timed: list[tuple[float, str, int]] = []  # (due_at, name, generation)
        self._dependents: dict[str, set[str]] = {}  # job id -> names waiting for it
        self._doomed: deque[Doomed] = deque()
        self._generations = itertools.count(1)

    @property
    def depended_on_ids(self) -> KeysView[str]:
        """Ids that waiting jobs depend on (a live view; ``in`` is safe from the file-event thread)."""
        return self._dependents.keys()

    def offer(self, name: str, job_id: str, fields: SchedulingFields, mtime_ns: int, now: float) -> None:
        """A complete job file in ``pending/``: place it (again, if it was known)."""
        self.forget(name)
        entry = _Entry(job_id, fields, mtime_ns, next(self._generations))
        self._entries[name] = entry
        self._names_by_id[job_id] = name
        if fields.after:
            cycle = find_cycle(job_id, self._after_of)
            if cycle:
                for member in cycle:
                    member_name = self._names_by_id.get(member)
                    if member_name is not None:
                        self._doom(member_name, JobStatus.INVALID, cycle_reason(cycle))
                return
        self._place(name, now)

    def forget(self, name: str) -> None:
        """The file left ``pending/`` (claimed, held, removed): drop it."""
        entry = self._entries.pop(name, None)
        if entry is None:
            return
        if self._names_by_id.get(entry.job_id) == name:
            del self._names_by_id[entry.job_id]
        for dep in entry.waiting_for:
            names = self._dependents.get(dep)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._dependents[dep]

    def settled(self, job_id: str, now: float) -> None:
        """A job left ``running/`` (recorded, or retried): look again at the jobs waiting for it."""
        for name in sorted(self._dependents.pop(job_id, ())):
            entry = self._entries.get(name)
            if entry is not None:
                entry.waiting_for.discard(job_id)
                self._place(name, now)

    def recheck(self, now: float) -> None:
        """Look again at every waiting job (after a rescan: a dependency may have moved unseen)."""
        for job_id in list(self._dependents):
            self.settled(job_id, now)

    def wake(self, now: float) -> None:
        """Move the jobs due by ``now`` on (to ready, or to waiting for their dependencies)."""
        while self._timed and self._timed[0][0] <= now:
            due, name, generation = heapq.heappop(self._timed)
            entry = self._entries.get(name)
            if entry is not None and entry.generation == generation:
                self._place(name, now, due_checked=due == entry.fields.due_at)  # else a second look: see _place

    def next_due_at(self) -> float | None:
        """The earliest time (seconds since the epoch) a timed job becomes due, if any."""
        while self._timed:
            _due, name, generation = self._timed[0]
            entry = self._entries.get(name)
            if entry is not None and entry.generation == generation:
                return self._timed[0][0]
            heapq.heappop(self._timed)
        return None

    def take_doomed(self) -> Doomed | None:
        """The next job to record without running, if any (it is forgotten here)."""
        while self._doomed:
            doomed = self._doomed.popleft()
            if doomed.name in self._entries:
                self.forget(doomed.name)
                return doomed
        return None

    def take_ready(self, may_start: Callable[[str], bool] | None = None) -> str | None:
        """The name of the next job to start, if any is ready: the first in line (highest priority,
        then oldest) of the heads of the groups that ``may_start`` (a group name to whether it may
        start a job now; ``None``: every group). A group that may not keeps its line as it is."""
        best: _ReadyItem | None = None
        best_group = ""
        for group, heap in list(self._ready.items()):
            head = self._head(heap)
            if head is None:
                del self._ready[group]
            elif (best is None or head < best) and (may_start is None or may_start(group)):
                best, best_group = head, group
        if best is None:
            return None
        heap = self._ready[best_group]
        heapq.heappop(heap)
        if not heap:
            del self._ready[best_group]
        self.forget(best[2])
        return best[2]

    def ready_count(self) -> int:
        """How many items the ready lines hold (stale ones too: an upper bound)."""
        return sum(len(heap) for heap in self._ready.values())

    def _head(self, heap: list[_ReadyItem]) -> _ReadyItem | None:
        """The first live item of one group's line (stale ones are dropped), or ``None``."""
        while heap:
            _priority, _mtime, name, generation = heap[0]
            entry = self._entries.get(name)
            if entry is not None and entry.generation == generation:
                return heap[0]
            heapq.heappop(heap)
        return None

    def has_ready(self) -> bool:
        """Whether a job is ready or doomed (cheap; stale heap items may make it a false yes)."""
        return bool(self._ready or self._doomed)

    # ----- placing ---------------------------------------------------------------------

    def _place(self, name: str, now: float, *, due_checked: bool = False) -> None:
        entry = self._entries[name]
        fields = entry.fields
        reason = wait_reason(fields, self._lookup, now)
        if reason.missing is not None and reason.missing not in entry.unseen:  # a job moving can be missed
            entry.unseen = {reason.missing}
            heapq.heappush(self._timed, (now + CONFIRM_MISSING_AFTER_S, name, entry.generation))
            return
        entry.unseen.clear()
        if reason.doomed is not None:
            self._doom(name, reason.doomed.status, reason.doomed.reason)
            return
        if not due_checked and reason.due_at is not None:
            heapq.heappush(self._timed, (reason.due_at, name, entry.generation))
            return
        if reason.waiting_for:
            entry.waiting_for = set(reason.waiting_for)
            for dep in reason.waiting_for:
                self._dependents.setdefault(dep, set()).add(name)
            return
        line = self._ready.setdefault(fields.group, [])
        heapq.heappush(line, (*order_key(fields, entry.mtime_ns, name), entry.generation))

    def _doom(self, name: str, status: JobStatus, reason: str) -> None:
        entry = self._entries.get(name)
        if entry is None:
            return
        entry.generation = next(self._generations)  # out of every heap
        self._doomed.append(Doomed(name, status, reason))

    def _after_of(self, job_id: str) -> tuple[str, ...] | None:
        name = self._names_by_id.get(job_id)
        return None if name is None else self._entries[name].fields.after
