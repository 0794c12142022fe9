"""Why a pending job waits, and its place in line: the one rule the worker's scheduler and the
fronts both apply (docs/protocol.md, "Order and claiming").

:func:`wait_reason` is a pure function of a job's
:class:`~execsvc.protocol.scheduling.SchedulingFields` and where its dependencies are
(a ``lookup``); :func:`order_key` is the order among ready jobs, :func:`count_ahead`
how many start before one, and :func:`find_cycle` finds a cycle of ``after`` lists.
:func:`group_wait` says why a ready job's group lets it start no job now (paused, its slots
or the worker's ``total_slots`` busy; docs/protocol.md, "Groups").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from .models import JobState, JobStatus
from .scheduling import SchedulingFields

CONFIRM_MISSING_AFTER_S = 0.05
"""A dependency found nowhere is looked for again this much later before its dependent is doomed."""

Lookup = Callable[[str], "tuple[JobState, JobStatus] | None"]
"""Where a job id is now and its status (``None``: in no folder of the queue)."""

AfterOf = Callable[[str], "Sequence[str] | None"]
"""The ``after`` list of a pending job by id (``None``: no such pending job)."""

OrderKey = tuple[int, int, str]
"""A ready job's place in line: ``(-priority, mtime_ns, file name)``, smallest first."""


@dataclass(frozen=True)
class Doomed:
    """A pending job that must be recorded without running: ``status`` and the ``reason``."""

    name: str
    status: JobStatus
    reason: str


@dataclass(frozen=True)
class WaitReason:
    """Why a pending job has not started, by the worker's rules (see :func:`wait_reason`).

    ``doomed``: it can never run and is recorded at its claim (``name`` is the
    job's id there); ``missing``: the dependency found nowhere that dooms it (the
    worker looks once more, ``CONFIRM_MISSING_AFTER_S`` later, before it records
    it); ``held``: in ``pending/.held/`` until released; ``due_at``: seconds since
    the epoch it becomes due, when later than ``now``; ``waiting_for``: the ids in
    ``after`` still pending or running. Nothing set: ready, waiting for its turn.
    """

    doomed: Doomed | None = None
    missing: str | None = None
    held: bool = False
    due_at: float | None = None
    waiting_for: tuple[str, ...] = ()

    @property
    def blocked(self) -> bool:
        """Whether something other than jobs ahead keeps it waiting."""
        return self.doomed is not None or self.held or self.due_at is not None or bool(self.waiting_for)

    @property
    def doomed_sentence(self) -> str | None:
        """``will be recorded <status>: <reason>``, for a doomed job (else ``None``)."""
        if self.doomed is None:
            return None
        return f"will be recorded {self.doomed.status.value}: {self.doomed.reason}"


def cycle_reason(cycle: Sequence[str]) -> str:
    """The reason a member of ``cycle`` (ids, as :func:`find_cycle` gives them) is recorded invalid."""
    return f"its 'after' list closes a dependency cycle: {' → '.join([*cycle, cycle[0]])}"


def find_cycle(job_id: str, after_of: AfterOf) -> list[str]:
    """The ids of a cycle of ``after`` lists among pending jobs that passes ``job_id`` (starting
    with it), or ``[]``. ``after_of`` gives a pending job's ``after`` list (``None``: not pending)."""
    path: list[str] = []
    seen: set[str] = set()

    def visit(current: str) -> bool:
        after = after_of(current)
        if after is None:
            return False
        path.append(current)
        for dep in after:
            if dep == job_id:
                return True
            if dep not in seen:
                seen.add(dep)
                if visit(dep):
                    return True
        path.pop()
        return False

    return path if visit(job_id) else []


def wait_reason(
    fields: SchedulingFields,
    lookup: Lookup,
    now: float,
    *,
    held: bool = False,
    job_id: str = "",
    after_of: AfterOf | None = None,
) -> WaitReason:
    """Why a pending job with ``fields`` waits at ``now`` (seconds since the epoch); pure but for ``lookup``.

    The ``after`` list is read in order and the first dependency that dooms
    the job decides: one found nowhere (``invalid``), or one that ended other
    than completed under ``after_mode`` ``"success"`` (``cancelled``). With
    ``after_of`` (the pending jobs' ``after`` lists) a cycle through ``job_id``
    dooms it ``invalid`` first. A job ``held`` is not offered to the scheduler;
    the fronts pass it.
    """
    if after_of is not None and fields.after:
        cycle = find_cycle(job_id, after_of)
        if cycle:
            return WaitReason(doomed=Doomed(job_id, JobStatus.INVALID, cycle_reason(cycle)), held=held)
    unsettled: list[str] = []
    for dep in fields.after:
        where = lookup(dep)
        if where is None:
            reason = f"it runs after job {dep!r}, which is not in this queue"
            return WaitReason(doomed=Doomed(job_id, JobStatus.INVALID, reason), missing=dep, held=held)
        state, status = where
        if state in (JobState.PENDING, JobState.RUNNING):
            unsettled.append(dep)
        elif fields.after_mode == "success" and status is not JobStatus.COMPLETED:
            reason = (
                f"job {dep!r}, which it runs after, ended {status.value}; with after_mode 'success' every "
                "job in 'after' must complete, so this one never ran"
            )
            return WaitReason(doomed=Doomed(job_id, JobStatus.CANCELLED, reason), held=held)
    due_at = fields.due_at if fields.due_at is not None and fields.due_at > now else None
    return WaitReason(held=held, due_at=due_at, waiting_for=tuple(unsettled))


def order_key(fields: SchedulingFields, mtime_ns: int, name: str) -> OrderKey:
    """A ready job's place in line (:data:`OrderKey`): highest ``priority`` first, then oldest file, then name."""
    return (-fields.priority, mtime_ns, name)


def count_ahead(mine: OrderKey, keys: Iterable[OrderKey]) -> int:
    """How many of the ready jobs ``keys`` start before the one at ``mine``."""
    return sum(key < mine for key in keys)


@dataclass(frozen=True)
class GroupLoad:
    """One group's slots as the worker counts them: ``slots`` it has, ``running`` jobs of it that
    hold one, and whether it is ``paused`` (``pending/.paused.<group>`` exists)."""

    slots: int
    running: int = 0
    paused: bool = False


def unknown_group_reason(group: str, declared: Iterable[str]) -> str:
    """Why a job naming ``group``, which the worker's config does not declare, is recorded
    ``invalid`` under ``unknown_groups = "refuse"`` (the worker records it, the fronts foretell it)."""
    return (
        f"the job names the group {group!r}, which the worker's config does not declare "
        f'(unknown_groups = "refuse"; declared: {", ".join(sorted(declared))})'
    )


def group_wait(group: str, load: GroupLoad, *, total_running: int = 0, total_slots: int | None = None) -> str | None:
    """Why a ready job of ``group`` cannot be claimed now, in words, or ``None`` when it can.

    Paused first (``group build is paused``), then the group's own slots (``2/2 slots of group
    build busy``), then the worker's cap on all groups together, ``total_slots`` (``total_running``
    jobs of every group hold one). The worker claims by this rule and the fronts explain by it.
    """
    if load.paused:
        return f"group {group} is paused (execsvc group resume {group})"
    if load.running >= load.slots:
        return f"{load.running}/{load.slots} slots of group {group} busy"
    if total_slots is not None and total_running >= total_slots:
        return f"{total_running}/{total_slots} slots of the worker busy (total_slots, all groups)"
    return None
