"""File events for the worker: names appearing in ``pending/``, cancel requests in ``running/``.

Events are a wake-up call, posted to the worker's inbox as messages (:data:`~.inbox.Message`,
a :class:`~.inbox.MessageKind` and a string):
``("event", name)`` for a file created, moved in, or closed after writing in
``pending/``, and for a group's pause file (``pending/.paused.<group>``) removed too;
``("cancel", job_id)`` for a ``running/.cancel.<id>`` request;
``("left_running", job_id)`` when a job that others wait for leaves ``running/``;
``("rescan", "")`` when events may have been lost (the kernel's queue
overflowed); ``("watch_lost", folder)`` when a watched folder (``pending``,
``running``, or the queue ``root`` when one is given) was removed, moved or
replaced. The worker looks at the files themselves; a slow rescan covers
anything an event missed.

Two ways, both watchdog:

- On Linux, :class:`DirectInotifyEvents` registers callbacks with watchdog's
  inotify wrapper (``watchdog.observers.inotify_c.InotifyFD``, the object
  watchdog's own ``InotifyObserver`` is built on). Started with
  ``own_thread=False``, it has no thread at all: the worker waits on its
  descriptor (:meth:`DirectInotifyEvents.fileno`) in its own loop and calls
  :meth:`DirectInotifyEvents.read` when it is readable, so an event reaches
  the worker with no thread hop, and the worker can read what is waiting
  before it chooses the next job. Otherwise one thread reads the descriptor
  (one hop instead of watchdog's three: reader, emitter, dispatcher).
- Elsewhere (macOS FSEvents or kqueue), or if that wrapper is missing,
  :class:`ObserverEvents`: a watchdog ``Observer`` with event handlers.
"""

from __future__ import annotations

import os
from collections.abc import Container
from typing import Any, Protocol

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from .inbox import Message, MessageKind
from .protocol.layout import CANCEL_PREFIX, PAUSED_PREFIX, split_job_name


class MessageSink(Protocol):
    """Where events are posted as ``(kind, value)`` (the worker's :class:`~.inbox.Inbox`, or a ``SimpleQueue``)."""

    def put(self, item: Message, /) -> None:
        """Post one message; safe from any thread."""


try:  # watchdog >= 7.1 on Linux
    from watchdog.observers.inotify_c import CallbackId, InotifyConstants, InotifyEvent, InotifyFD, Mask
except (ImportError, OSError):  # not Linux, or a libc without inotify
    InotifyFD = None  # type: ignore[assignment,misc]


class FileEvents(Protocol):
    """Started once by the worker, stopped once at shutdown."""

    def start(self, *, own_thread: bool = True) -> None:
        """Start watching. Raises :class:`OSError` when a folder cannot be watched (inotify limits).

        ``own_thread=False`` asks to be read from the caller's loop where this
        way allows it (then :meth:`fileno` is not ``None``).
        """

    def fileno(self) -> int | None:
        """The descriptor to wait on before calling :meth:`read`; ``None`` when a thread reads events."""

    def read(self) -> None:
        """Post the events waiting on :meth:`fileno` (call it when readable; never blocks then)."""

    def stop(self) -> None:
        """Stop watching and join the watching thread(s)."""


def open_file_events(
    pending: str,
    running: str,
    inbox: MessageSink,
    awaited: Container[str] = (),
    *,
    direct: bool | None = None,
    root: str | None = None,
) -> FileEvents:
    """The best watch this platform has; ``direct=False`` forces the portable observer.

    ``awaited`` holds the ids of jobs that others wait for (read at each event:
    pass a live view); their leaving ``running/`` is posted as ``left_running``.
    ``root``: the queue root, watched (inotify only) for its own removal or move,
    posted as ``("watch_lost", "root")``; elsewhere the worker's periodic check sees it.
    """
    if direct is None:
        direct = InotifyFD is not None
    if direct:
        return DirectInotifyEvents(pending, running, inbox, awaited, root=root)
    return ObserverEvents(pending, running, inbox, awaited)


def _left_running(name: str, awaited: Container[str], inbox: MessageSink) -> None:
    job_id = split_job_name(name)[0]
    if job_id in awaited:
        inbox.put((MessageKind.LEFT_RUNNING, job_id))


class _PendingCallback:
    """watchdog's ``WatchCallback`` for ``pending/``: posts every name the kernel reports."""

    def __init__(self, inbox: MessageSink) -> None:
        self._inbox = inbox

    def on_event(self, event: InotifyEvent) -> None:
        if event.name:
            name = os.fsdecode(event.name)
            if not event.is_delete or name.startswith(PAUSED_PREFIX):  # a removal matters only for a pause
                self._inbox.put((MessageKind.EVENT, name))
        elif event.is_move_self:
            self._inbox.put((MessageKind.WATCH_LOST, "pending"))

    def on_watch_deleted(self, wd: int) -> None:
        self._inbox.put((MessageKind.WATCH_LOST, "pending"))

    def on_queue_overflow(self) -> None:
        self._inbox.put((MessageKind.RESCAN, ""))


class _RunningCallback(_PendingCallback):
    """watchdog's ``WatchCallback`` for ``running/``: cancel requests, and awaited jobs leaving."""

    def __init__(self, inbox: MessageSink, awaited: Container[str]) -> None:
        super().__init__(inbox)
        self._awaited = awaited

    def on_event(self, event: InotifyEvent) -> None:
        if event.is_move_self:
            self._inbox.put((MessageKind.WATCH_LOST, "running"))
            return
        name = os.fsdecode(event.name)
        if name.startswith(CANCEL_PREFIX):
            self._inbox.put((MessageKind.CANCEL, name[len(CANCEL_PREFIX) :]))
        elif event.is_delete or event.is_moved_from:
            _left_running(name, self._awaited, self._inbox)

    def on_watch_deleted(self, wd: int) -> None:
        self._inbox.put((MessageKind.WATCH_LOST, "running"))


class _RootCallback(_PendingCallback):
    """watchdog's ``WatchCallback`` for the queue root: only its own removal or move."""

    def on_event(self, event: InotifyEvent) -> None:
        if event.is_delete_self or event.is_move_self:
            self._inbox.put((MessageKind.WATCH_LOST, "root"))

    def on_watch_deleted(self, wd: int) -> None:
        self._inbox.put((MessageKind.WATCH_LOST, "root"))


if InotifyFD is not None:

    class _LoopInotifyFD(InotifyFD):
        """watchdog's ``InotifyFD``, readable from another loop: its descriptor, and closing it without its thread."""

        def fileno(self) -> int | None:
            fd = getattr(self, "_inotify_fd", None)  # not public in watchdog: None means "use the thread"
            return fd if isinstance(fd, int) else None

        def read_ready(self) -> None:
            for event in self.read_events():
                self.handle_event(event)

        def close_unstarted(self) -> None:
            """``close`` for an instance whose thread never ran: watchdog's ``close`` frees the
            descriptors itself only when no read is under way, else it leaves that to its thread."""
            left_to_thread = getattr(self, "_is_reading", False)
            self.close()
            if left_to_thread:
                self._close_resources()


class DirectInotifyEvents:
    """Callbacks on a private watchdog ``InotifyFD`` (Linux): read in the caller's loop, or by one thread."""

    def __init__(
        self, pending: str, running: str, inbox: MessageSink, awaited: Container[str] = (), *, root: str | None = None
    ) -> None:
        self._folders = (pending, running)
        self._root = root
        self._inbox = inbox
        self._awaited = awaited
        self._fd: Any = None
        self._in_loop = False

    def start(self, *, own_thread: bool = True) -> None:
        assert InotifyFD is not None
        fd = _LoopInotifyFD()
        constants = InotifyConstants
        arrivals = constants.IN_CREATE | constants.IN_MOVED_TO | constants.IN_DELETE_SELF | constants.IN_MOVE_SELF
        try:
            fd.add_callback(
                os.fsencode(self._folders[0]),
                Mask(arrivals | constants.IN_CLOSE_WRITE | constants.IN_DELETE),
                _PendingCallback(self._inbox),
                CallbackId(1),
            )
            fd.add_callback(
                os.fsencode(self._folders[1]),
                # Not IN_MOVED_TO: every claim is a rename into running/, and would wake the loop for
                # nothing; cancel requests are created in place (IN_CREATE), see JobQueue.cancel.
                Mask(
                    constants.IN_CREATE
                    | constants.IN_DELETE_SELF
                    | constants.IN_MOVE_SELF
                    | constants.IN_DELETE
                    | constants.IN_MOVED_FROM
                ),
                _RunningCallback(self._inbox, self._awaited),
                CallbackId(2),
            )
            if self._root is not None:
                fd.add_callback(
                    os.fsencode(self._root),
                    Mask(constants.IN_DELETE_SELF | constants.IN_MOVE_SELF),
                    _RootCallback(self._inbox),
                    CallbackId(3),
                )
        except OSError:
            fd.close_unstarted()
            raise
        self._fd = fd
        self._in_loop = not own_thread and fd.fileno() is not None
        if not self._in_loop:
            fd.start()

    def fileno(self) -> int | None:
        return self._fd.fileno() if self._in_loop and self._fd is not None else None

    def read(self) -> None:
        if self._in_loop and self._fd is not None:
            self._fd.read_ready()

    def stop(self) -> None:
        if self._fd is None:
            return
        if self._in_loop:
            self._fd.close_unstarted()
        elif self._fd.is_alive():
            self._fd.stop()
            self._fd.join()
        self._fd = None


class _PendingEvents(FileSystemEventHandler):
    def __init__(self, inbox: MessageSink) -> None:
        self._inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = event.dest_path if isinstance(event, (FileMovedEvent, DirMovedEvent)) else event.src_path
        name = os.path.basename(os.fsdecode(path)) if path else ""
        if name and (not isinstance(event, FileDeletedEvent) or name.startswith(PAUSED_PREFIX)):
            self._inbox.put((MessageKind.EVENT, name))


class _CancelEvents(FileSystemEventHandler):
    def __init__(self, inbox: MessageSink, awaited: Container[str]) -> None:
        self._inbox = inbox
        self._awaited = awaited

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = event.dest_path if isinstance(event, FileMovedEvent) else event.src_path
        name = os.path.basename(os.fsdecode(path)) if path else ""
        if name.startswith(CANCEL_PREFIX):
            self._inbox.put((MessageKind.CANCEL, name[len(CANCEL_PREFIX) :]))
        elif isinstance(event, FileDeletedEvent):
            _left_running(name, self._awaited, self._inbox)


class ObserverEvents:
    """A watchdog ``Observer`` (FSEvents, kqueue or inotify) with one handler per folder."""

    def __init__(self, pending: str, running: str, inbox: MessageSink, awaited: Container[str] = ()) -> None:
        from .protocol.changes import quiet_observer_stop

        quiet_observer_stop()
        self._observer = Observer()
        self._observer.schedule(
            _PendingEvents(inbox),
            pending,
            event_filter=[
                FileCreatedEvent,
                FileMovedEvent,
                FileClosedEvent,
                FileDeletedEvent,
                DirCreatedEvent,
                DirMovedEvent,
            ],
        )
        self._observer.schedule(
            _CancelEvents(inbox, awaited), running, event_filter=[FileCreatedEvent, FileMovedEvent, FileDeletedEvent]
        )

    def start(self, *, own_thread: bool = True) -> None:
        self._observer.start()  # always its own threads

    def fileno(self) -> int | None:
        return None

    def read(self) -> None:
        pass

    def stop(self) -> None:
        if self._observer.is_alive():
            self._observer.stop()
            self._observer.join()
