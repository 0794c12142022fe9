"""The worker's mailbox: messages from other threads, with a file descriptor that wakes a selector.

Threads (the file-event reader, job threads, signal handlers) post
``(kind, value)`` tuples (a :class:`MessageKind` and a string, see there)
with :meth:`Inbox.put`; the worker's loop waits in
one ``selectors`` call on :meth:`Inbox.fileno` together with the pidfds of
its running jobs, so a job's exit and a message wake it the same way, with
no thread in between. The wake-up is one byte in a non-blocking pipe (as
asyncio's self-pipe): a full pipe already means "wake up", so a failed write
is ignored.
"""

from __future__ import annotations

import contextlib
import os
import threading
from enum import StrEnum, unique
from queue import Empty, SimpleQueue


@unique
class MessageKind(StrEnum):
    """What a message tells the worker's loop; the value that comes with it is a string (``""``: none).

    A ``StrEnum`` so that a message reads and compares as the ``(kind, value)`` strings it is
    (``MessageKind.EVENT == "event"``); the loop dispatches on the member (``Worker._handle``),
    and ``mypy`` sees a kind it does not handle.
    """

    EVENT = "event"
    """A name appeared in ``pending/`` (created, moved in, or closed after writing): the file's name."""
    EXITED = "exited"
    """A job's main process exited, seen by its job thread (no pidfd): the job id."""
    RECORDED = "recorded"
    """A job's record and log line are written: the job id."""
    LEFT_RUNNING = "left_running"
    """A job that others wait for, or a running job's own file, left ``running/``: the job id."""
    RECORD_FAILING = "record_failing"
    """A record cannot be written (full disk, permissions): the reason, in words."""
    RECORD_WRITTEN = "record_written"
    """A record was written again after a failing one: the job id."""
    CHILD = "child"
    """SIGCHLD as a subreaper: an orphan may wait to be reaped (no value)."""
    SIGNAL = "signal"
    """A stop or status signal reached the worker: its number, in decimal."""
    HOOKS_DONE = "hooks_done"
    """A job's finish hooks ended: the job id (a wake-up, so that a stopping loop sees them done)."""
    CANCEL = "cancel"
    """A ``running/.cancel.<id>`` request appeared: the job id."""
    RESCAN = "rescan"
    """File events may have been lost (the kernel's queue overflowed): no value."""
    SCHEDULES = "schedules"
    """Something changed in ``schedules/``: read the schedule files again (no value)."""
    WATCH_LOST = "watch_lost"
    """A watched folder was removed, moved or replaced: ``pending``, ``running`` or ``root``."""


Message = tuple[MessageKind, str]


class Inbox:
    """A thread-safe FIFO of messages with a readable file descriptor while any may be waiting."""

    def __init__(self) -> None:
        self._owner = threading.get_ident()  # the loop's thread: what it posts itself needs no wake-up
        self._messages: SimpleQueue[Message] = SimpleQueue()
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def put(self, message: Message, /, wake: bool | None = None) -> None:
        """Post a message (safe from any thread and from a signal handler).

        ``wake``: whether to make :meth:`fileno` readable. By default only a
        post from another thread does: what the loop's own thread posts while
        it works (the file events it reads itself) is drained before it waits
        again. Pass ``wake=True`` from a signal handler (it runs in the loop's
        thread, and the interrupted wait is resumed after it) or from the
        loop's thread outside the loop.
        """
        self._messages.put(message)
        if wake or (wake is None and threading.get_ident() != self._owner):
            self.wake()

    def wake(self) -> None:
        """Make :meth:`fileno` readable (after a ``put(..., wake=False)`` that turned out to matter)."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._write_fd, b"\0")

    def waiting(self) -> bool:
        """Whether messages wait to be drained (a snapshot: another thread may post right after)."""
        return not self._messages.empty()

    def fileno(self) -> int:
        """The descriptor a selector waits on; readable after a :meth:`put`."""
        return self._read_fd

    def drain(self, *, woken: bool = True) -> list[Message]:
        """Every message posted so far, oldest first (never blocks).

        ``woken``: whether :meth:`fileno` was seen readable; only then is the
        wake-up read and cleared (one system call the loop saves on the steps
        another descriptor woke it for). A wake-up left unread makes the next
        wait return at once, nothing more.
        """
        if woken:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._read_fd, 4096):
                    pass
        messages = []
        while True:
            try:
                messages.append(self._messages.get_nowait())
            except Empty:
                return messages

    def close(self) -> None:
        """Close the pipe; call once nothing posts any more."""
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
