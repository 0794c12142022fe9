"""Why a pending job waits, by the worker's own rules (:mod:`execsvc.protocol.readiness`)."""

from __future__ import annotations

import os
import time

from execsvc.protocol import JobEntry
from execsvc.protocol.defaults import DEFAULT_GROUP
from execsvc.protocol.errors import InvalidJobId, JobNotFound
from execsvc.protocol.layout import split_job_name
from execsvc.protocol.models import JobInfo, JobState, JobStatus
from execsvc.protocol.queue import JobQueue
from execsvc.protocol.readiness import OrderKey, count_ahead, order_key, wait_reason
from execsvc.protocol.scheduling import PLAIN, SchedulingFields, peek

from .groups import GroupLoads
from .models import Waiting, moment


def waiting_of(queue: JobQueue, info: JobInfo, *, count_ahead: bool = False, slots: bool = True) -> Waiting:
    """Why the pending job ``info`` waits (see :class:`Waiting`), from the files alone, by the
    worker's rules (:func:`execsvc.protocol.readiness.wait_reason`, and
    :func:`~execsvc.protocol.readiness.group_wait` for its group).

    ``count_ahead`` also counts the ready jobs that start before it (reads
    every pending job's scheduling fields); ``slots=False`` leaves out whether its group's slots
    are busy (that reads each running job's file; a pause is said all the same).
    """
    return Rules(queue).waiting(info, count_ahead=count_ahead, slots=slots)


class Rules:
    """The scheduler's rules applied to the queue's files, read once per call of the API."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.now = time.time()
        self._pending: dict[str, tuple[JobEntry, SchedulingFields]] | None = None
        self._infos: dict[str, JobInfo | None] = {}
        self._groups: GroupLoads | None = None

    def groups(self) -> GroupLoads:
        """The groups' slots, pauses and running jobs (read once)."""
        if self._groups is None:
            self._groups = GroupLoads(self.queue)
        return self._groups

    def pending(self) -> dict[str, tuple[JobEntry, SchedulingFields]]:
        """Every pending job (held ones too) by id, with its scheduling fields (read once)."""
        if self._pending is None:
            self._pending = {
                entry.job_id: (entry, _entry_schedule(entry)) for entry in self.queue.entries(JobState.PENDING)
            }
        return self._pending

    def info(self, job_id: str) -> JobInfo | None:
        """The job with this id (``None``: in no folder), looked up once per call of the API."""
        if job_id not in self._infos:
            try:
                self._infos[job_id] = self.queue.get(job_id)
            except (JobNotFound, InvalidJobId):
                self._infos[job_id] = None
        return self._infos[job_id]

    def lookup(self, job_id: str) -> tuple[JobState, JobStatus] | None:
        info = self.info(job_id)
        return None if info is None else (info.state, info.status)

    def after_of(self, job_id: str) -> tuple[str, ...] | None:
        """A pending job's ``after`` list, as the worker's scheduler knows it (a held job is not offered)."""
        info = self.info(job_id)
        if info is None or info.state is not JobState.PENDING or info.held:
            return None
        return _schedule_of(info.path, info.mtime.timestamp()).after

    def held(self, entry: JobEntry) -> bool:
        return os.path.dirname(entry.path) == str(self.queue.layout.held)

    def blocked(self, entry: JobEntry, schedule: SchedulingFields | None = None) -> bool:
        """Whether a pending job waits for more than its turn (doomed, held, not yet due, a dependency)."""
        schedule = _entry_schedule(entry) if schedule is None else schedule
        held = self.held(entry)
        after_of = self.after_of if schedule.after else None
        reason = wait_reason(schedule, self.lookup, self.now, held=held, job_id=entry.job_id, after_of=after_of)
        groups = self.groups()
        return reason.blocked or groups.paused(schedule.group) or groups.refusal(schedule.group) is not None

    def waiting(self, info: JobInfo, *, count_ahead: bool, slots: bool = True) -> Waiting:
        schedule = _schedule_of(info.path, info.mtime.timestamp())
        after_of = self.after_of if schedule.after else None
        why = wait_reason(schedule, self.lookup, self.now, held=info.held, job_id=info.job_id, after_of=after_of)
        waiting = Waiting(
            priority=schedule.priority,
            held=why.held,
            attempt=schedule.attempt,
            retries=schedule.retries,
            after_mode=schedule.after_mode if schedule.after else None,
            waiting_for=list(why.waiting_for),
            doomed=why.doomed_sentence,
            problem=schedule.problem,
            group=schedule.group if schedule.group != DEFAULT_GROUP else None,
            group_paused=self.groups().paused(schedule.group),
        )
        if why.due_at is not None:
            waiting.due_at = moment(why.due_at)
            if waiting.due_at is None:
                waiting.problem = f"its due time ({why.due_at:g} s after 1970) is past the year 9999"
        refusal = self.groups().refusal(schedule.group) if schedule.group != DEFAULT_GROUP else None
        if refusal is not None and waiting.doomed is None:
            waiting.doomed = f"will be recorded invalid: {refusal}"
        if not why.blocked and (slots or waiting.group_paused):
            # The default group's own slots are said by get_job's note (who holds them), as before groups.
            waiting.group_wait = self.groups().wait(schedule.group, own_slots=schedule.group != DEFAULT_GROUP)
        if count_ahead and not waiting.blocked:
            waiting.jobs_ahead = self.jobs_ahead(info.job_id)
        waiting.reason = _waiting_reason(waiting)
        return waiting

    def jobs_ahead(self, job_id: str) -> int | None:
        """How many ready pending jobs of its group start before ``job_id`` (the worker's order:
        :func:`order_key`, in each group's own line)."""
        keys: dict[str, OrderKey] = {}
        pending = self.pending()
        group = pending[job_id][1].group if job_id in pending else DEFAULT_GROUP
        for other, (entry, schedule) in pending.items():
            if schedule.group != group:
                continue
            if other == job_id or not self.blocked(entry, schedule):
                keys[other] = order_key(schedule, entry.mtime_ns, os.path.basename(entry.path))
        mine = keys.get(job_id)
        return None if mine is None else count_ahead(mine, keys.values())


def _entry_schedule(entry: JobEntry) -> SchedulingFields:
    return _schedule_of(entry.path, entry.mtime_ns / 1e9)


def _waiting_reason(waiting: Waiting) -> str:
    parts = []
    if waiting.problem:
        parts.append(f"not valid, a worker refuses it: {waiting.problem}")
    if waiting.doomed:
        parts.append(waiting.doomed)
    if waiting.held:
        parts.append("held: it does not start until released (release_job, or execsvc release)")
    if waiting.due_at is not None:
        when = waiting.due_at.isoformat(timespec="seconds")
        if waiting.attempt > 1 and waiting.retries is not None:
            parts.append(f"retry {waiting.attempt - 1} of {waiting.retries} at {when}")
        else:
            parts.append(f"due at {when}")
    if waiting.waiting_for:
        parts.append(f"waiting for job(s) {', '.join(waiting.waiting_for)} to finish")
    if not parts:
        ahead = waiting.jobs_ahead
        of = f" of group {waiting.group}" if waiting.group else ""
        parts.append(f"behind {ahead} job(s){of}" if ahead is not None else "ready, waiting for its turn")
    if waiting.group_wait:
        parts.append(waiting.group_wait)
    return "; ".join(parts)


def _schedule_of(path: str, written_at: float) -> SchedulingFields:
    try:
        return peek(path, split_job_name(os.path.basename(path))[2], written_at)
    except OSError:
        return PLAIN
