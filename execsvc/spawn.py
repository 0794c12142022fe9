"""``posix_spawn`` of a job in a session of its own, with the interpreter's lock released.

CPython's ``os.posix_spawn`` keeps the GIL while the C library clones the process and the child
execs (glibc's ``posix_spawn`` is a ``vfork``-style clone: the caller waits for the ``exec``), so
every other thread of the worker waits for each job's start. :func:`spawn_in_session` calls the
C library's ``posix_spawn``/``posix_spawnp`` through :mod:`ctypes`, which releases the GIL for
the call, with the same file actions and attributes as ``os.posix_spawn(..., setsid=True,
setsigdef=...)``: the child's stdin is ``/dev/null`` or a given descriptor, its stdout and
stderr the given descriptors, it starts a new session (its pid is its process group id), and
the given signals are reset to their defaults. Only on Linux with glibc >= 2.26 (the flag
values are glibc's); :data:`AVAILABLE` says whether it can be used, else callers use
``os.posix_spawn``. Raises the audit event ``os.posix_spawn`` as ``os.posix_spawn`` does.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import sys
from collections.abc import Iterable, Mapping

_POSIX_SPAWN_SETSIGDEF = 0x04  # glibc's <spawn.h>
_POSIX_SPAWN_SETSID = 0x80  # glibc >= 2.26
_OPAQUE_BYTES = 1024  # more than glibc's posix_spawnattr_t (336), file actions (80) and sigset_t (128)


def _libc() -> ctypes.CDLL | None:
    """The C library, where it is glibc >= 2.26 on Linux with every function used here."""
    name, version = platform.libc_ver()
    if not sys.platform.startswith("linux") or name != "glibc":
        return None
    if tuple(int(part) for part in version.split(".")[:2] if part.isdigit()) < (2, 26):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for function in ("posix_spawn", "posix_spawnp", "posix_spawnattr_setflags", "posix_spawnattr_setsigdefault"):
            getattr(libc, function)
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()
AVAILABLE = _LIBC is not None
"""Whether :func:`spawn_in_session` can be used here (Linux, glibc >= 2.26)."""


def _strings(items: Iterable[str]) -> ctypes.Array[ctypes.c_char_p]:
    """A NULL-terminated ``char *[]`` of ``items``, encoded as file names are."""
    encoded = [os.fsencode(item) for item in items]
    return (ctypes.c_char_p * (len(encoded) + 1))(*encoded, None)


def spawn_in_session(
    program: str,
    argv: list[str],
    env: Mapping[str, str],
    *,
    stdin_fd: int | None,
    stdout_fd: int,
    stderr_fd: int,
    reset_signals: Iterable[signal.Signals],
) -> int:
    """Start ``program`` (searched in this process's ``PATH`` when it has no ``/``, as
    ``posix_spawnp`` does) with ``argv`` and ``env``, in a new session; its pid.

    ``stdin_fd``: the descriptor to give the child as stdin (``None``: ``/dev/null``).
    Raises :class:`OSError` (the C library's error, for example ``ENOENT`` when the program
    is not found, ``EACCES``, ``ENOEXEC``) when it cannot be started. Only when
    :data:`AVAILABLE`.
    """
    libc = _LIBC
    assert libc is not None, "spawn_in_session() needs Linux with glibc: see AVAILABLE"
    sys.audit("os.posix_spawn", program, argv, env)
    actions = ctypes.create_string_buffer(_OPAQUE_BYTES)
    attr = ctypes.create_string_buffer(_OPAQUE_BYTES)
    sigset = ctypes.create_string_buffer(_OPAQUE_BYTES)
    _check(libc.posix_spawn_file_actions_init(actions))
    try:
        _check(libc.posix_spawnattr_init(attr))
        try:
            if stdin_fd is None:
                _check(libc.posix_spawn_file_actions_addopen(actions, 0, b"/dev/null", os.O_RDONLY, 0))
            else:
                _check(libc.posix_spawn_file_actions_adddup2(actions, stdin_fd, 0))
            _check(libc.posix_spawn_file_actions_adddup2(actions, stdout_fd, 1))
            _check(libc.posix_spawn_file_actions_adddup2(actions, stderr_fd, 2))
            _check(libc.sigemptyset(sigset))
            for signum in reset_signals:
                _check(libc.sigaddset(sigset, int(signum)))
            _check(libc.posix_spawnattr_setsigdefault(attr, sigset))
            _check(libc.posix_spawnattr_setflags(attr, ctypes.c_short(_POSIX_SPAWN_SETSIGDEF | _POSIX_SPAWN_SETSID)))
            args, envp = _strings(argv), _strings(f"{key}={value}" for key, value in env.items())
            pid = ctypes.c_int(0)
            call = libc.posix_spawnp if "/" not in program else libc.posix_spawn
            error = call(ctypes.byref(pid), os.fsencode(program), actions, attr, args, envp)  # the GIL released
            if error:
                raise OSError(error, os.strerror(error), program)
            return pid.value
        finally:
            libc.posix_spawnattr_destroy(attr)
    finally:
        libc.posix_spawn_file_actions_destroy(actions)


def _check(result: int) -> None:
    """The answer of a ``posix_spawn*`` helper (an error number) or of ``sig*set`` (-1 and errno)."""
    if result == -1:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    if result:
        raise OSError(result, os.strerror(result))
