"""A group commit of folder flushes: many claims made durable by one ``fsync`` of their folders.

The worker's claims move files between ``pending/`` and ``running/``; both folders must be on
disk before the job's record is written (docs/protocol.md, "Order and claiming").
:class:`GroupFlusher` flushes them in a thread of its own, so that a burst of claims shares
one flush and the loop never waits on the disk.
"""

from __future__ import annotations

import threading
from pathlib import Path

from .durable import fsync_dir


class GroupFlusher:
    """fsyncs a fixed list of folders in its own thread, many requests per flush (a group commit).

    :meth:`request` is cheap and returns a ticket; :meth:`wait` blocks until a
    flush that began after that request has finished. Requests that arrive
    while a flush runs share the next one, so a burst of claims costs one
    flush, not one each. The folders are flushed in the order given.
    """

    def __init__(self, folders: list[Path]) -> None:
        self._folders = folders
        self._cond = threading.Condition()
        self._requested = 0
        self._flushed = 0
        self._errors: dict[int, str] = {}
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="execsvc-flush", daemon=True)
        self._thread.start()

    def request(self) -> int:
        """Ask for a flush of every change made so far; returns the ticket for :meth:`wait`."""
        with self._cond:
            self._requested += 1
            self._cond.notify_all()
            return self._requested

    def wait(self, ticket: int) -> str | None:
        """Block until ``ticket``'s flush is done; ``None``, or what went wrong (``OSError`` text)."""
        with self._cond:
            while self._flushed < ticket:
                self._cond.wait()
            return self._errors.pop(ticket, None)

    def close(self) -> None:
        """Flush what was requested, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._requested == self._flushed and not self._closing:
                    self._cond.wait()
                if self._requested == self._flushed:
                    return
                target = self._requested
            error = None
            try:
                for folder in self._folders:
                    fsync_dir(folder)
            except OSError as exc:
                error = repr(exc)
            with self._cond:
                if error is not None:
                    for ticket in range(self._flushed + 1, target + 1):
                        self._errors[ticket] = error
                self._flushed = target
                self._cond.notify_all()
