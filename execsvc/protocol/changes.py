"""Waiting for a change in queue folders: file events through watchdog, or a slow look where
the folders cannot be watched. For clients that wait (``JobQueue.wait``, ``queue-view --follow``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # watchdog and logging are imported where they are used: a client that submits needs neither
    import logging

    from watchdog.observers.api import BaseObserver


def _not_observer_stop(record: logging.LogRecord) -> bool:
    return "called when the thread is inactive" not in record.getMessage()


def quiet_observer_stop() -> None:
    """Drop watchdog's "queue_events() called when the thread is inactive": an ERROR it logs
    when an observer is stopped while its emitter is mid-read. Harmless, but with no logging
    configured Python prints it on the user's terminal. Called before an observer is made;
    calling it again changes nothing."""
    import logging

    logging.getLogger("watchdog.observers.inotify").addFilter(_not_observer_stop)


NO_CHANGE_EVENTS = frozenset({"opened", "closed_no_write"})
"""watchdog's event types of a file opened, or closed without a write: nothing changed (a
reader's own reads make them)."""

POLL_S = 0.5
"""How often a client looks at the queue when its folders cannot be watched (seconds)."""


@contextmanager
def folder_changes(
    folders: Sequence[Path], what: str, *, name_prefix: str = ""
) -> Iterator[Callable[[float | None], None]]:
    """Watch ``folders``; inside, ``changed(timeout_s)`` blocks until a change in them (a file created,
    written, moved, removed; not one opened or read) names a file or folder whose name starts with
    ``name_prefix`` (``""``: any), or ``timeout_s`` seconds pass (``None``: no limit). Events
    while nobody waits are kept for the next call.

    Where the folders cannot be watched (no inotify instance left: EMFILE; a folder that
    refuses a watch) ``changed`` returns at least every :data:`POLL_S` seconds instead, and a
    warning of the ``execsvc`` logger says so once, naming ``what`` was to be watched for.
    The watch starts before the body runs, so a change right after entering is not missed.
    """
    import logging

    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    event = threading.Event()

    class Wake(FileSystemEventHandler):
        def on_any_event(self, seen: FileSystemEvent) -> None:
            if seen.event_type in NO_CHANGE_EVENTS:  # a read, the waiter's own among them
                return
            paths = (seen.src_path, getattr(seen, "dest_path", ""))
            if not name_prefix or any(os.path.basename(os.fsdecode(path)).startswith(name_prefix) for path in paths):
                event.set()

    quiet_observer_stop()
    observer: BaseObserver | None = None
    try:
        observer = Observer()  # may take an inotify instance already
        for folder in folders:
            observer.schedule(Wake(), str(folder))
        observer.start()
    except OSError as exc:
        if observer is not None:
            observer.stop()  # never started: stops the watches that did start and its inotify reader
        observer = None
        logging.getLogger("execsvc").warning(
            "execsvc: cannot watch the queue for %s (%s); looking every %g s instead", what, exc.strerror or exc, POLL_S
        )

    def changed(timeout_s: float | None) -> None:
        if observer is None:
            timeout_s = POLL_S if timeout_s is None else min(timeout_s, POLL_S)
        event.wait(timeout_s)
        event.clear()

    try:
        yield changed
    finally:
        if observer is not None:
            observer.stop()
            observer.join()
