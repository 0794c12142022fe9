"""A group commit: many claims made durable by one ``fsync`` of their folders, and the records
written after each flush in the same thread.

The worker's claims move files between ``pending/`` and ``running/``; both folders must be on
disk before the job's record is written (docs/protocol.md, "Order and claiming").
:class:`GroupFlusher` flushes them in a thread of its own, so that a burst of claims shares
one flush and the loop never waits on the disk. Work handed to :meth:`GroupFlusher.submit`
(the worker's records) is done in that thread right after a flush, many items at a time:
every claim made before an item was submitted is on disk before the item is done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from .durable import fsync_dir

Item = TypeVar("Item")

MAX_BATCH = 32
"""Submitted items handed to the batch function at most at once (bounds one commit's time)."""


class GroupFlusher(Generic[Item]):
    """fsyncs a fixed list of folders in its own thread, many requests per flush (a group commit),
    then does the submitted items of that flush in the same thread.

    :meth:`request` is cheap and returns a ticket; :meth:`wait` blocks until a
    flush that began after that request has finished. Requests that arrive
    while a flush runs share the next one, so a burst of claims costs one
    flush, not one each. The folders are flushed in the order given.
    ``batch``, if given, is called in the flusher's thread after each flush
    with the items :meth:`submit`-ted before that flush began (in order, at
    most :data:`MAX_BATCH`) and the flush's error (``None``, or the
    ``OSError`` text); it must not raise.
    """

    def __init__(self, folders: list[Path], batch: Callable[[list[Item], str | None], None] | None = None) -> None:
        self._folders = folders
        self._batch = batch
        self._cond = threading.Condition()
        self._requested = 0
        self._flushed = 0
        self._items: list[Item] = []
        self._errors: dict[int, str] = {}
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="execsvc-flush", daemon=True)
        self._thread.start()

    def request(self) -> int:
        """Ask for a flush of every change made so far; returns the ticket for :meth:`wait`."""
        with self._cond:
            self._requested += 1
            self._cond.notify_all()  # (waiters of wait() share the condition with the thread)
            return self._requested

    def wait(self, ticket: int) -> str | None:
        """Block until ``ticket``'s flush is done; ``None``, or what went wrong (``OSError`` text)."""
        with self._cond:
            while self._flushed < ticket:
                self._cond.wait()
            return self._errors.pop(ticket, None)

    def submit(self, items: list[Item]) -> None:
        """Hand ``items`` to the batch function, after a flush that begins after this call."""
        if not items:
            return
        assert self._batch is not None, "a GroupFlusher without a batch function takes no items"
        with self._cond:
            self._items.extend(items)
            self._cond.notify_all()

    def close(self) -> None:
        """Flush what was requested and do what was submitted, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._requested == self._flushed and not self._items and not self._closing:
                    self._cond.wait()
                if self._requested == self._flushed and not self._items:
                    return
                target = self._requested
                items, self._items = self._items[:MAX_BATCH], self._items[MAX_BATCH:]
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
            if items and self._batch is not None:
                self._batch(items, error)
            del items  # not kept while the thread waits
