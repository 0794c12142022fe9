"""The worker's groups: each group's slots, which of them are in use, and which groups are paused
(docs/protocol.md, "Groups"; docs/scheduling.md, "Groups").

A job runs in its ``group`` (``default`` when it names none). Each group has its own slots
(``[groups.NAME] slots = N``; ``default``'s are the worker's ``slots``) and its own line
(priority, then FIFO: the :class:`~execsvc.scheduler.Scheduler` keeps one per group), so a
full or paused group never holds back another's jobs; ``total_slots``, when set, caps all
groups together. A group no config declares is made when a job first names it, with
``default``'s slots (``unknown_groups = "create"``, the ``on_created`` callback logs it), or its
jobs are refused (``"refuse"``: :meth:`GroupSlots.refusal`).

Whether a group may start a job is :func:`execsvc.protocol.readiness.group_wait`, the rule the
fronts explain waiting jobs by. A running job holds one slot of its group: its index is the
lowest free one (0-based), given to the job as ``EXECSVC_SLOT`` (:meth:`GroupSlots.acquire`)
and freed when the job's slot is (:meth:`GroupSlots.release`). All of it lives in the loop's
thread.
"""

from __future__ import annotations

from collections.abc import Callable

from .config import WorkerConfig
from .protocol.defaults import DEFAULT_GROUP
from .protocol.readiness import GroupLoad, group_wait, unknown_group_reason


class GroupSlots:
    """Slots per group, in use and in all, and the paused groups (``paused``, set by the loop)."""

    def __init__(self, config: WorkerConfig, on_created: Callable[[str, int], None]) -> None:
        """``on_created(group, slots)``: called once for each group made on the fly."""
        self._declared = config.group_slots
        self._slots = dict(self._declared)
        self._total = config.total_slots
        self._refuse = config.unknown_groups == "refuse"
        self._on_created = on_created
        self._busy: dict[str, set[int]] = {}
        self._running = 0
        self.paused: frozenset[str] = frozenset()

    @property
    def running(self) -> int:
        """Jobs of every group that hold a slot."""
        return self._running

    def slots_of(self, group: str) -> int:
        """The slots of ``group``, made now with ``default``'s if it is new (unless unknown groups are refused)."""
        slots = self._slots.get(group)
        if slots is None:
            slots = self._declared[DEFAULT_GROUP]
            if not self._refuse:
                self._slots[group] = slots
                self._on_created(group, slots)
        return slots

    def wait(self, group: str) -> str | None:
        """Why no job of ``group`` may be claimed now (:func:`group_wait`), or ``None``.

        A group that is refused needs no slot: its job is claimed to be recorded ``invalid``.
        """
        if self.refusal(group) is not None:
            return None
        load = GroupLoad(self.slots_of(group), len(self._busy.get(group, ())), group in self.paused)
        return group_wait(group, load, total_running=self._running, total_slots=self._total)

    def may_start(self, group: str) -> bool:
        """Whether a ready job of ``group`` may be claimed now."""
        return self.wait(group) is None

    def refusal(self, group: str) -> str | None:
        """Why a job naming ``group`` is refused (not declared, ``unknown_groups = "refuse"``), or ``None``."""
        if not self._refuse or group in self._declared:
            return None
        return unknown_group_reason(group, self._declared)

    def acquire(self, group: str, wanted: int | None = None) -> int:
        """Take the lowest free slot index of ``group`` for a job that starts, or ``wanted`` if it
        is free (a job adopted at start-up keeps the slot it was started in); returns it."""
        busy = self._busy.setdefault(group, set())
        if wanted is not None and wanted >= 0 and wanted not in busy:
            slot = wanted
        else:
            slot = next(index for index in range(len(busy) + 1) if index not in busy)
        busy.add(slot)
        self._running += 1
        return slot

    def release(self, group: str, slot: int) -> None:
        """A job of ``group`` gave its ``slot`` back (it exited, or never started)."""
        busy = self._busy.get(group)
        if busy is not None and slot in busy:
            busy.remove(slot)
            self._running -= 1
            if not busy:
                del self._busy[group]
