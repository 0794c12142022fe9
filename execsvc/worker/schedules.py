"""Recurring jobs in the worker: each schedule file's due times become runs in ``pending/``
(docs/protocol.md, "Schedules"; the file's model and the times: :mod:`execsvc.protocol.schedules`).

Owned by the loop's thread (:attr:`~.state.LoopState._schedules`). The loop sleeps until the
next due time of any schedule (:meth:`Schedules.next_due_at`, part of its next deadline), then
calls :meth:`Schedules.run_due`. ``schedules/`` is watched by a watchdog observer (its own
thread, which only posts :attr:`~execsvc.inbox.MessageKind.SCHEDULES` to the inbox) and read
again at every rescan; a file is parsed again only when it changed.

No due time is enqueued twice: a run's id is its due time (:func:`run_id`), and it is written
only if the queue holds no job of that id, with an exclusive create. So the state of a schedule
(its last run) is read back from the queue's names at each start, and a kill -9 at any moment
loses or repeats nothing: a time whose run was written is never written again; a time the
worker was down for is run once at the start only with ``catch_up`` (the latest such time).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from ..daemonlog import EventLog
from ..inbox import Inbox, MessageKind
from ..protocol.errors import UnsafeQueue
from ..protocol.listing import QueueReader
from ..protocol.models import JobState
from ..protocol.schedules import (
    Schedule,
    ScheduleFile,
    due_of_run_id,
    enqueue_run,
    last_due,
    last_run_id,
    mark_last_run,
    next_due,
    read_schedules,
    run_id,
    run_state,
)

_IN_FLIGHT = (JobState.PENDING, JobState.RUNNING)


@dataclass
class _Tracked:
    """A valid schedule the worker follows: its file, its next due time (``None``: disabled) and
    the id of its latest run (``None``: none yet)."""

    file: ScheduleFile
    schedule: Schedule
    next_due: datetime | None
    last_id: str | None


class _Wake(FileSystemEventHandler):
    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._inbox.put((MessageKind.SCHEDULES, ""), wake=True)


class Schedules:
    """The schedules of one queue, in the loop's thread: what is due when, and enqueueing runs."""

    def __init__(self, store: QueueReader) -> None:
        self._store = store
        self._folder = store.layout.root / "schedules"
        self._tracked: dict[str, _Tracked] = {}
        self._invalid: dict[str, tuple[int, int, int]] = {}  # logged once per version of the file
        self._observer: BaseObserver | None = None
        self._log: EventLog | None = None
        self._unsafe: str | None = None
        self._next_at: float | None = None  # min of the next due times, kept as they change (read every step)

    def start(self, log: EventLog, inbox: Inbox, now: datetime) -> list[str]:
        """Create ``schedules/`` (mode 0700) if missing, watch it, read every schedule and enqueue
        the catch-up runs (``catch_up``: one run for the latest due time missed since the
        schedule's last run or, with none, since its file was written). Returns the file names
        written into ``pending/``. A ``schedules/`` that others can write to is refused
        (``schedules_unsafe`` in ``daemon.log``): no schedule of it runs."""
        self._log = log
        try:
            self._store.layout.ensure_schedules()
        except (UnsafeQueue, OSError) as exc:
            self._unsafe = str(exc)
            log.error("schedules_unsafe", folder=str(self._folder), error=str(exc))
            return []
        observer = Observer()
        observer.schedule(  # not opened / closed-unwritten: reading the files would wake it again
            _Wake(inbox),
            str(self._folder),
            event_filter=[FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent],
        )
        try:
            observer.start()
            self._observer = observer
        except OSError as exc:  # inotify limits: the rescan still reads the folder
            log.warning("cannot_watch", folder=str(self._folder), error=str(exc))
        return self.reload(now, starting=True)

    def stop(self) -> None:
        """Stop watching (idempotent)."""
        if self._observer is not None:
            self._observer.stop()
            with contextlib.suppress(RuntimeError):
                self._observer.join()
            self._observer = None

    def next_due_at(self) -> float | None:
        """The earliest next due time of an enabled schedule, in Unix seconds (``None``: none)."""
        return self._next_at

    def _update_next(self) -> None:
        times = [t.next_due.timestamp() for t in self._tracked.values() if t.next_due is not None]
        self._next_at = min(times) if times else None

    def reload(self, now: datetime, *, starting: bool = False) -> list[str]:
        """Read ``schedules/`` again: new, changed and removed files (a changed one counts from
        ``now``). Returns the file names written into ``pending/`` (catch-up runs at start)."""
        if self._unsafe is not None or self._log is None:
            return []
        known_files = {name: tracked.file for name, tracked in self._tracked.items()}
        files = {file.name: file for file in read_schedules(self._store.layout, known_files)}
        for name in [name for name in self._tracked if name not in files]:
            del self._tracked[name]
            self._log.info("schedule_removed", schedule=name)
        for name in [name for name in self._invalid if name not in files]:
            del self._invalid[name]
        written = []
        for name, file in files.items():
            known = self._tracked.get(name)
            if known is not None and known.file.seen == file.seen:
                continue
            if file.schedule is None:
                self._forget_invalid(name, file)
                continue
            self._invalid.pop(name, None)
            tracked = _Tracked(file, file.schedule, None, known.last_id if known else None)
            if known is None:
                tracked.last_id = last_run_id(self._store.layout, name)
            self._tracked[name] = tracked
            if not file.schedule.enabled:
                self._log.info("schedule_disabled", schedule=name)
                continue
            if starting and file.schedule.catch_up:
                written += self._catch_up(tracked, now)
            tracked.next_due = next_due(file.schedule, now)
            self._log.info(
                "schedule_loaded" if known is None else "schedule_changed",
                schedule=name,
                next_due=tracked.next_due.isoformat(),
                last_run=tracked.last_id or "",
            )
        self._update_next()
        return written

    def run_due(self, now: datetime) -> list[str]:
        """Enqueue one run for each schedule whose next due time has come (missed times in
        between, if the loop woke late, make that one run: the latest), or skip it with
        ``overlap = skip`` while the last run is pending or running (``schedule_skipped``).
        Returns the file names written into ``pending/``."""
        written = []
        for name, tracked in self._tracked.items():
            if tracked.next_due is None or tracked.next_due > now:
                continue
            due = max(tracked.next_due, last_due(tracked.schedule, now))
            tracked.next_due = next_due(tracked.schedule, now)
            written += self._enqueue(name, tracked, due)
        self._update_next()
        return written

    def _catch_up(self, tracked: _Tracked, now: datetime) -> list[str]:
        """At start: one run for the latest due time missed since the last run (or the file's writing)."""
        missed = last_due(tracked.schedule, now)
        last = due_of_run_id(tracked.file.name, tracked.last_id) if tracked.last_id else None
        since = max(filter(None, (last, tracked.file.modified)))
        if missed <= since:
            return []
        return self._enqueue(tracked.file.name, tracked, missed, catch_up=True)

    def _enqueue(self, name: str, tracked: _Tracked, due: datetime, *, catch_up: bool = False) -> list[str]:
        assert self._log is not None
        job_id = run_id(name, tracked.schedule, due)
        if tracked.schedule.overlap == "skip" and tracked.last_id is not None and tracked.last_id != job_id:
            state = run_state(self._store, tracked.last_id)
            if state in _IN_FLIGHT:
                assert state is not None
                self._log.warning("schedule_skipped", job_id, schedule=name, run=tracked.last_id, state=state.value)
                return []
        try:
            written = enqueue_run(self._store, name, tracked.schedule, due)
        except (OSError, ValueError) as exc:  # ValueError: the template and the added fields (never seen)
            self._log.error("schedule_failed", job_id, schedule=name, error=str(exc))
            return []
        if written is None:  # enqueued before (by this worker or one before it): never twice
            if tracked.last_id is None or (due_of_run_id(name, tracked.last_id) or due) < due:
                tracked.last_id = job_id  # it is in the queue: the run overlap looks at
            return []
        tracked.last_id = written
        try:
            mark_last_run(self._store.layout, name, written)
        except OSError as exc:  # the run is in the queue: its id still says it was enqueued
            self._log.warning("schedule_not_marked", written, schedule=name, error=str(exc))
        fields = {"catch_up": "true"} if catch_up else {}
        self._log.info("schedule_enqueued", written, schedule=name, due=due.astimezone(UTC).isoformat(), **fields)
        return [f"{written}.json"]

    def _forget_invalid(self, name: str, file: ScheduleFile) -> None:
        """An invalid file: its schedule stops (if it ran), and one ``schedule_invalid`` line per version."""
        assert self._log is not None
        self._tracked.pop(name, None)
        if self._invalid.get(name) != file.seen:
            self._invalid[name] = file.seen
            self._log.error("schedule_invalid", schedule=name, file=str(file.path), error=file.error or "")
