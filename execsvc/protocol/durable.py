"""Durable, never-overwriting file operations, the way Maildir and nq do them.

A record is written under a hidden temporary name in its destination folder,
flushed to disk (``fsync``), then given its final name by a rename that fails
instead of replacing an existing file (``renameat2(RENAME_NOREPLACE)`` on
Linux, ``link()`` then ``unlink()`` elsewhere), and the folder is flushed so
the new name survives a power cut. A reader never sees a half-written record.
Jobs move between folders the same way, by a rename that never replaces
(:func:`move_no_replace`). Files of the queue are opened and read only as regular
files of their own (:func:`open_regular`, :func:`read_regular_file`): never through a
link, never waiting on a FIFO. Whether a file is still being written is asked in
:mod:`.leases`; the worker's batched folder flushes are :mod:`.flusher`'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TEMP_PREFIX = ".execsvc-"
"""Every temporary file execsvc writes starts with this (and ends in ``.tmp``)."""


def temp_path_for(dest: Path) -> Path:
    """A fresh hidden temporary name beside ``dest`` (ignored by the worker).

    ``.execsvc-<name>-<writer pid>-<random>.tmp``: the pid lets a later worker
    tell a crashed writer's leftovers from a file being written right now.
    """
    return dest.with_name(f"{TEMP_PREFIX}{dest.name[:100]}-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def temp_file_writer(name: str) -> int | None:
    """The pid of the process that wrote an execsvc temporary file, from its name, if it says."""
    if not (name.startswith(TEMP_PREFIX) and name.endswith(".tmp")):
        return None
    parts = name[: -len(".tmp")].rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (new and renamed names) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(
    dest: Path, data: bytes, *, replace: bool = False, sync: bool = True, sync_folder: bool = True
) -> os.stat_result:
    """Write ``data`` to ``dest`` atomically: temp file, fsync, rename (never replacing), fsync folder.

    Returns the written file's ``stat`` (taken before the rename, which keeps
    its inode and modification time). With ``replace=False`` (the default) an
    existing ``dest`` is never overwritten: :class:`FileExistsError` is raised
    and nothing is left behind. ``sync=False`` skips both fsyncs (for files
    that need atomicity, not durability); ``sync_folder=False`` skips only the
    folder's (the caller flushes it, for many files at once: see
    :mod:`.record_batch`). Raises :class:`OSError` on any
    file-system failure, after removing the temporary file.
    """
    tmp = temp_path_for(dest)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            _write_all(fd, data)
            if sync:
                os.fsync(fd)
            written = os.fstat(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, dest)
        elif _RENAME_NOREPLACE is None or not _RENAME_NOREPLACE(tmp, dest):
            os.link(tmp, dest)
            os.unlink(tmp)
    except BaseException:
        unlink_if_exists(tmp)
        raise
    if sync and sync_folder:
        fsync_dir(dest.parent)
    return written


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


ASIDE_INFIX = ".aside-"
"""``<name>.aside-<random>``: where :func:`open_regular` moves what was not a regular file."""

_NOT_REGULAR_ERRNOS = (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV)
"""What ``open(O_NOFOLLOW | O_NONBLOCK)`` answers for a link, a folder, a FIFO without reader or a
socket, a device without driver."""


class NotRegularFile(OSError):
    """What :func:`open_regular` raises with ``move_aside=False`` when ``path`` is not a regular file
    (a FIFO, a symbolic link, a directory, a socket, a device): ``what`` says which, as
    :class:`MovedAside` does. An :class:`OSError` with ``errno`` ``EINVAL`` and ``strerror``
    ``"not a regular file: <what>"``; ``str()`` is a sentence naming the path."""

    def __init__(self, path: Path | str, what: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file: {what}", str(path))
        self.what = what

    def __str__(self) -> str:
        return f"{self.filename} is {self.what}, not a regular file"


@dataclass(frozen=True)
class MovedAside:
    """Something not a regular file that :func:`open_regular` found at ``path`` and renamed to ``aside``."""

    path: Path
    aside: Path
    what: str  # "a FIFO", "a symbolic link", "a directory", ...

    def describe(self) -> str:
        """A sentence for a warning: what was there and where it went."""
        return f"{self.path} was {self.what}, not a regular file; it was moved aside to {self.aside.name}"


def open_regular(
    path: Path, flags: int, mode: int = 0o600, *, truncate: bool = False, move_aside: bool = True
) -> tuple[int, MovedAside | None]:
    """Open (or create) ``path``, a file of the queue, as a regular file of its own, never following
    a link or blocking.

    ``flags`` are ``os.open`` flags (``O_WRONLY | O_CREAT | O_APPEND`` ...);
    ``O_NOFOLLOW``, ``O_NONBLOCK`` and ``O_CLOEXEC`` are added, and
    ``O_NONBLOCK`` is taken off the open file again. Anything else at
    ``path`` (a FIFO, which a plain ``open`` would wait on forever; a
    symbolic link, which it would follow; a directory, socket or device) is
    renamed to ``<name>.aside-<random>`` beside it, never removed, and the
    open is tried again; so is a file with other hard links when
    ``truncate`` asks that the file start empty (cutting it would cut the
    other names' file too). Returns the descriptor and what was moved aside
    (``None``: nothing). Raises :class:`OSError` when the file cannot be
    opened or created (``EMFILE``, ``ENOSPC``, ``EACCES`` ...) or what is
    there cannot be moved; with ``move_aside=False`` (a path outside the
    queue, where renaming is not this program's business, or a client of the
    queue, which only reads) whenever ``path`` is not a regular file
    (:class:`NotRegularFile`, saying what is there; nothing is moved).
    """
    moved: MovedAside | None = None
    for _try in range(3):
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
        except OSError as exc:
            if exc.errno not in _NOT_REGULAR_ERRNOS or not os.path.lexists(path):
                raise
            if not move_aside:
                raise NotRegularFile(path, _kind_of(os.lstat(path))) from None
            moved = _move_aside(path)
            continue
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and not (truncate and info.st_nlink > 1):
                fcntl.fcntl(fd, fcntl.F_SETFL, flags & os.O_APPEND)  # O_NONBLOCK off (F_SETFL sets all)
                if truncate and info.st_size:
                    os.ftruncate(fd, 0)
                return fd, moved
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if not move_aside:
            raise NotRegularFile(path, _kind_of(info))
        moved = _move_aside(path, info)
    raise OSError(errno.EEXIST, "something not a regular file keeps coming back", str(path))


def _move_aside(path: Path, info: os.stat_result | None = None) -> MovedAside:
    """Rename what is at ``path`` to a fresh ``<name>.aside-<random>`` beside it (never replacing)."""
    if info is None:
        info = os.lstat(path)
    aside = path.with_name(f"{path.name[:180]}{ASIDE_INFIX}{secrets.token_hex(4)}")
    move_no_replace(path, aside)
    return MovedAside(path, aside, _kind_of(info))


def _kind_of(info: os.stat_result) -> str:
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    for test, what in kinds:
        if test(info.st_mode):
            return what
    return f"a regular file with {info.st_nlink} hard links" if stat.S_ISREG(info.st_mode) else "not a regular file"


def append_line(path: Path, line: bytes) -> MovedAside | None:
    """Append ``line`` to ``path`` (created 0600 if missing) with one ``O_APPEND`` write, which
    never interleaves with other writers' appends. Not fsync'd. Opened by :func:`open_regular`:
    returns what it moved aside (``None``: nothing). Raises :class:`OSError`."""
    fd, moved = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return moved


def move_no_replace(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` without ever replacing ``dst``.

    On Linux this is one ``renameat2(RENAME_NOREPLACE)``: atomic, and
    :class:`FileExistsError` if ``dst`` exists. Where that call is missing or
    the file system refuses it, anything but a directory moves by ``link``
    then ``unlink`` (``link`` fails atomically if ``dst`` exists); a crash
    between the two calls leaves the same file under both names, which the
    worker's start-up settles. Directories then move by ``rename`` after an
    existence check. Symbolic links are moved, never followed. Raises
    :class:`FileNotFoundError` if ``src`` is gone (or went away between the
    two calls; then ``dst`` is removed again).
    """
    if _RENAME_NOREPLACE is not None and _RENAME_NOREPLACE(src, dst):
        return
    if stat.S_ISDIR(os.lstat(src).st_mode):
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "destination exists", str(dst))
        os.rename(src, dst)
        return
    os.link(src, dst, follow_symlinks=False)
    try:
        os.unlink(src)
    except FileNotFoundError:
        os.unlink(dst)
        raise


def _renameat2_noreplace() -> Callable[[Path, Path], bool] | None:
    """glibc's ``renameat2`` with ``RENAME_NOREPLACE`` (Linux 3.15, glibc 2.28), or ``None``.

    The function returns False when the file system does not support the
    flag (the caller then moves another way) and raises :class:`OSError`
    for any other failure.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_noreplace = -100, 1

    def move(src: Path, dst: Path) -> bool:
        if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return True
        code = ctypes.get_errno()
        if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            return False
        raise OSError(code, os.strerror(code), str(src), None, str(dst))

    return move


_RENAME_NOREPLACE = _renameat2_noreplace()


def copy_over(path: Path, data: bytes | None, times_ns: tuple[int, int]) -> None:
    """Give the name ``path`` a new inode of its own holding ``data`` (``None``: the file's bytes).

    For a claimed job file with other names (hard links), so that nothing
    outside the queue can change it. The copy is written under a hidden
    temporary name beside ``path`` (mode 0600), given the access and
    modification times ``times_ns``, fsync'd, renamed over ``path``, and the
    folder is fsync'd: ``path`` is the old inode or the whole copy, never
    anything else, also after a crash. The old inode keeps its other names
    and its content. Raises :class:`OSError`, leaving ``path`` as it was.
    """
    tmp = temp_path_for(path)
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            if data is not None:
                _write_all(out, data)
            else:
                src = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    while chunk := os.read(src, 1 << 20):
                        _write_all(out, chunk)
                finally:
                    os.close(src)
            os.utime(out, ns=times_ns)
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(tmp, path)
    except BaseException:
        unlink_if_exists(tmp)
        raise
    fsync_dir(path.parent)


def read_regular_file(path: Path, max_bytes: int, *, head: bool = False) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``, else ``None``.

    With ``head``, a bigger file is not refused: its first ``max_bytes`` are returned.

    Never blocks and never follows a link: a FIFO, socket, device or symlink
    left in a queue folder by a foreign tool reads as ``None`` (a plain
    ``open`` of a FIFO would wait forever for a writer). Raises
    :class:`OSError` (``FileNotFoundError`` ...) when the file cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_size > max_bytes and not head):
            return None
        if head:
            return os.read(fd, min(info.st_size + 1, max_bytes))  # a buffer of the file's size, not the limit
        return _read_all(fd, info.st_size, max_bytes)
    finally:
        os.close(fd)


def _read_all(fd: int, size: int, max_bytes: int) -> bytes | None:
    """The rest of an open file of ``size`` bytes (it may grow meanwhile); ``None`` past ``max_bytes``."""
    chunks: list[bytes] = []
    total = 0
    while chunk := os.read(fd, size + 1 if not chunks else 65536):
        chunks.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            return None
    return b"".join(chunks)


def unlink_if_exists(path: Path) -> None:
    """Remove ``path``; a file that is already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
