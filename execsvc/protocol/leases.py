"""Whether a file is still being written, asked of the kernel: Linux read leases (``F_SETLEASE``).

A read lease is refused exactly while some process has the file open for writing, and while
one is held another process's open for writing waits until it is dropped. The worker asks
this of a pending job file it looks at (:func:`look_at_file`) and holds one while it reads a
claimed job file (:func:`read_unwritten`), so it never runs a job file a writer is still
writing (docs/protocol.md, "Submitting a job"). A broken lease signals the holder with SIGIO:
:func:`install_lease_guard` makes that harmless. Where leases cannot be used (other systems,
other owners' files, file systems without them) the answer is ``None``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import sys
import threading
from pathlib import Path
from typing import NamedTuple

from .durable import _read_all

_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)  # Linux-only; same value on every architecture


_lease_guard_installed = False


def install_lease_guard() -> None:
    """Catch SIGIO, so that a lease broken by a writer cannot kill this process.

    When another process opens a leased file for writing, the kernel signals
    the lease holder with SIGIO, whose default action ends the process. A
    Python handler (reset to the default in child processes at ``exec``) makes
    it harmless. Call from the main thread before :func:`look_at_file`.
    """
    global _lease_guard_installed
    if hasattr(signal, "SIGIO") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGIO, lambda _signum, _frame: None)
        _lease_guard_installed = True


def look_at_file(path: str, max_bytes: int) -> tuple[bool | None, bytes | None, os.stat_result | None]:
    """One open of a file another program may still be writing (a pending job, on the worker's path).

    Returns whether any process has it open for writing and, when none has,
    the opened file's ``fstat`` and, for a regular file, its first
    ``max_bytes`` bytes (else ``None``, read after the ``fstat``).
    On Linux the first answer comes from a read lease (``F_SETLEASE``), which
    is refused exactly while the file is open for writing somewhere; the lease
    is dropped at once. It is ``None`` where that question cannot be asked
    (other systems, file systems without leases, files of another owner, or
    :func:`install_lease_guard` not called). Never blocks and never follows a
    link; raises :class:`OSError` (``FileNotFoundError`` ...) when the file
    cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        writing = _writers_on(fd)
        if writing:
            return True, None, None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return writing, None, info
        return writing, os.read(fd, min(info.st_size + 1, max_bytes)), info  # +1: a file that grew shows it
    finally:
        os.close(fd)


def _writers_on(fd: int) -> bool | None:
    writing = _take_read_lease(fd)
    if writing is False:
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
    return writing


class Snapshot(NamedTuple):
    """What :func:`read_unwritten` saw in one open of a file.

    ``data``: its whole content, or ``None`` (being written, not a regular
    file, above the size limit). ``info``: the ``fstat`` of the opened file,
    taken as it was read. ``writing``: whether a process had it open for
    writing (``None``: that cannot be asked here, see :func:`look_at_file`).
    """

    data: bytes | None
    info: os.stat_result
    writing: bool | None


def read_unwritten(path: Path | str, max_bytes: int) -> Snapshot:
    """Read a whole file that no process may write while it is read (a claimed job, on the worker's path).

    One open, which never blocks and never follows a link. On Linux a read
    lease (``F_SETLEASE``) is held while the file is read: the kernel refuses
    it while any process has the file open for writing (then ``writing`` is
    True and nothing is read), and while it is held another process's open
    for writing waits until it is dropped, at the end of this call. So the
    bytes are the whole file as ``info`` describes it. ``data`` is ``None``
    for anything but a regular file and for a file above ``max_bytes`` (or
    that grew past it while read). Costs two ``fcntl`` calls more than
    :func:`read_regular_file`. Raises :class:`OSError` (``FileNotFoundError``,
    ``ELOOP`` for a symbolic link ...) when the file cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    writing = None
    try:
        writing = _take_read_lease(fd)
        info = os.fstat(fd)
        if writing or not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            return Snapshot(None, info, writing)
        return Snapshot(_read_all(fd, info.st_size, max_bytes), info, writing)
    finally:
        if writing is False:
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
        os.close(fd)


def _take_read_lease(fd: int) -> bool | None:
    """Take a read lease on ``fd``: False when taken (the caller drops it), True when refused
    because the file is open for writing, ``None`` when leases cannot be used here."""
    if not (sys.platform.startswith("linux") and _lease_guard_installed):
        return None
    try:
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno in (errno.EAGAIN, errno.EBUSY) else None
    return False
