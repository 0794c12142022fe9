"""The server's one file watcher, fanned out to every open page.

One watchdog observer watches the queue's folders (``pending/`` with ``pending/.held/``,
``running/``, ``completed/``, ``failed/``, ``logs/``), as :func:`execsvc.protocol.changes.folder_changes`
does for one client. Its thread only notes which job each event names; the server's event loop
collects those names for :data:`BATCH_S` seconds and hands one :class:`Change` to every
subscriber. Events are a wake-up call, never the truth: a subscriber looks at the job's files
for what changed (docs/protocol.md, "Layout"). No page reads the disk on a timer.

A subscriber whose queue of changes is full (a page that stopped reading) gets one
``Change(overflowed=True)``: it should look at everything again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from execsvc.protocol.changes import NO_CHANGE_EVENTS, quiet_observer_stop
from execsvc.protocol.layout import SIDECAR_SUFFIX, QueueLayout, is_ignored_name, split_job_name

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

BATCH_S = 0.03
"""How long the hub gathers file events into one change (seconds)."""
SUBSCRIBER_BACKLOG = 64
"""Changes kept for one subscriber that has not read them; past that it gets ``overflowed``."""
_LOG_ENDINGS = (".stdout", ".stderr")

log = logging.getLogger("execsvc.web")


@dataclass(frozen=True)
class Change:
    """What the queue's file events named in one batch.

    ``job_ids``: jobs whose file moved or changed in a job folder; ``log_ids``: jobs whose
    ``logs/<id>.stdout`` or ``.stderr`` grew; ``overflowed``: changes were dropped for this
    subscriber, so anything may have changed.
    """

    job_ids: frozenset[str] = frozenset()
    log_ids: frozenset[str] = frozenset()
    overflowed: bool = False


def job_id_of(name: str) -> str | None:
    """The job id a file name in a job folder stands for (``x.json``, ``x.sh``, ``x.result.json``,
    an invalid entry's own name), or ``None`` for names no job has (hidden, temporary)."""
    if is_ignored_name(name):
        return None
    if name.endswith(SIDECAR_SUFFIX) and len(name) > len(SIDECAR_SUFFIX):
        return name[: -len(SIDECAR_SUFFIX)]
    return split_job_name(name)[0]


def log_id_of(name: str) -> str | None:
    """The job id of ``logs/<id>.stdout`` or ``logs/<id>.stderr``; ``None`` for any other name."""
    for ending in _LOG_ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)]
    return None


class FileEventHub:
    """The shared watcher of one queue. :meth:`start` and :meth:`stop` run in the event loop;
    :meth:`subscribe` gives an async iterator of :class:`Change`.

    ``live`` is false when the folders could not be watched (no inotify instance left, a
    folder that refuses a watch): pages are told to look every few seconds instead.
    """

    def __init__(self, layout: QueueLayout) -> None:
        self.layout = layout
        self.live = False
        self._observer: BaseObserver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._lock = threading.Lock()
        self._job_ids: set[str] = set()
        self._log_ids: set[str] = set()
        self._subscribers: set[asyncio.Queue[Change]] = set()
        self._task: asyncio.Task[None] | None = None

    # ----- the watchdog thread ---------------------------------------------------------

    def _noted(self, path: str | bytes, folder_is_logs: bool) -> None:
        name = os.path.basename(os.fsdecode(path))
        job_id = log_id_of(name) if folder_is_logs else job_id_of(name)
        if job_id is None:
            return
        with self._lock:
            (self._log_ids if folder_is_logs else self._job_ids).add(job_id)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    # ----- the event loop ---------------------------------------------------------------

    async def start(self) -> None:
        """Start watching (the folders must exist) and the task that hands changes out."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        self._loop = asyncio.get_running_loop()
        hub = self

        class Noted(FileSystemEventHandler):
            def __init__(self, logs: bool) -> None:
                self.logs = logs

            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.is_directory or event.event_type in NO_CHANGE_EVENTS:
                    return  # a folder's own events, and reads: the server reads jobs to show them
                hub._noted(event.src_path, self.logs)
                if getattr(event, "dest_path", ""):
                    hub._noted(event.dest_path, self.logs)

        quiet_observer_stop()
        observer: BaseObserver | None = None
        try:
            observer = Observer()
            observer.schedule(Noted(False), str(self.layout.pending), recursive=True)  # .held/ too
            for folder in (self.layout.running, self.layout.completed, self.layout.failed):
                observer.schedule(Noted(False), str(folder))
            observer.schedule(Noted(True), str(self.layout.logs))
            observer.start()
            self._observer, self.live = observer, True
        except OSError as exc:
            if observer is not None:
                observer.stop()
            log.warning("execsvc web: cannot watch the queue (%s); pages look every few seconds", exc.strerror or exc)
        self._task = asyncio.create_task(self._hand_out(), name="execsvc-web-hub")

    async def stop(self) -> None:
        """Stop the watcher and the task; idempotent."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._observer is not None:
            observer, self._observer = self._observer, None
            observer.stop()
            await asyncio.to_thread(observer.join)

    async def _hand_out(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(BATCH_S)  # gather the burst of events one job's move makes
            self._wake.clear()
            with self._lock:
                change = Change(frozenset(self._job_ids), frozenset(self._log_ids))
                self._job_ids.clear()
                self._log_ids.clear()
            for queue in list(self._subscribers):
                _offer(queue, change)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Change]]:
        """A queue that receives every :class:`Change` from now on, until the block ends."""
        queue: asyncio.Queue[Change] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        """How many subscribers there are now (open pages and log streams)."""
        return len(self._subscribers)


def _offer(queue: asyncio.Queue[Change], change: Change) -> None:
    """Put ``change`` in ``queue``; a full queue is emptied and told it overflowed."""
    try:
        queue.put_nowait(change)
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(Change(overflowed=True))
