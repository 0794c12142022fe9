"""The worker's mailbox: messages from other threads, with a file descriptor that wakes a selector.

Threads (the file-event reader, job threads, signal handlers) post
``(kind, value)`` tuples with :meth:`Inbox.put`; the worker's loop waits in
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
from queue import Empty, SimpleQueue

Message = tuple[str, str]


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
