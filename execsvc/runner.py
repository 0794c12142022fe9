"""One job's process group: start it, wait for it, stop it (docs/protocol.md, "Timeouts and cancelling").

The job runs in a new session, started by ``os.posix_spawn`` with
``setsid=True`` (``subprocess.Popen`` with ``start_new_session=True`` only
where ``posix_spawn`` cannot do what is asked, see
:meth:`JobProcess._spawn_process`; never ``preexec_fn``, which is unsafe in a
threaded process), so its process id is also its process group id and the
whole tree can be signalled at once.
stdout and stderr go straight to files in ``logs/`` through the kernel: the
worker holds none of the output in memory and reads back only a bounded tail.

When the job's main process exits, anything it left running in its process
group gets SIGTERM, then SIGKILL after the grace period, as systemd does for
a unit's control group: a finished job leaves nothing behind. A job that must
leave a process running starts it in a session of its own (``setsid``).

Processes a job leaves behind outside its group are re-parented to the worker and reaped by
:mod:`execsvc.reaper`; the processes this module starts itself (jobs, hooks) are registered
there under its lock at the spawn, so the reaper never takes the exit status a job's own
wait is for. A job's logs are read back by :mod:`execsvc.job_logs`; its processes, wherever
they went, are found by :mod:`execsvc.job_processes`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import psutil

from .limits import prlimit_prefix
from .protocol.durable import MovedAside, open_regular
from .protocol.errors import ExecsvcError
from .reaper import _children_lock, _own_children, reap_orphans, reaps_orphans
from .run_request import RunRequest


class SpawnError(ExecsvcError):
    """The job could not be started; the message says why, for a person."""


class StartDeferred(SpawnError):
    """The job could not be started for a reason of the worker's, not of the job: its log files
    cannot be created (too many open files, no space or inodes left, ``logs/`` not writable), or
    no process can be made now. Nothing of the job ran; it may start once the cause is gone."""


_WORKER_SHORTAGES = (errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM, errno.ENOSPC, errno.EDQUOT)
"""Spawn failures that are about the worker's resources (descriptors, processes, memory), not the job."""


@dataclass(frozen=True)
class ExitInfo:
    """How a started job ended: ``returncode`` < 0 is the signal that killed it."""

    returncode: int
    started_at: datetime
    ended_at: datetime
    duration_s: float
    leftovers_stopped: bool


def now() -> datetime:
    """The current time, timezone-aware (local zone), for records and logs."""
    return datetime.now(UTC).astimezone()


def signal_name(returncode: int | None) -> str | None:
    """``"SIGKILL"`` for a returncode of -9; ``None`` for a normal exit."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


class JobProcess:
    """A job's process group. :meth:`start` once; then, when :attr:`pidfd` is readable (the
    worker's loop waits on it with every other job's), :meth:`reap`, and :meth:`stop_leftovers`
    in a job thread if the answer says processes remain. Where there is no pidfd (macOS, Linux
    before 5.3) :meth:`wait` does all that in the one thread that calls it.

    :meth:`signal_group` may be called from any thread at any time; it does
    nothing once the job's main process has exited and been reaped, so it can
    never hit an unrelated process that reused the id.
    """

    def __init__(self, request: RunRequest, stdout_path: Path, stderr_path: Path, *, kill_grace_s: float) -> None:
        self.request = request
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.kill_grace_s = kill_grace_s
        self.pid: int | None = None
        self.started_at: datetime | None = None
        self._started_mono = 0.0
        self._popen: subprocess.Popen[bytes] | None = None
        self.pidfd: int | None = None  # readable once the main process has exited (Linux >= 5.3), else None
        self._lock = threading.Lock()
        self._exited = False
        self._signalled = False
        self._registered = False
        self.moved_aside: list[MovedAside] = []  # not regular files found where the logs go

    def start(self) -> None:
        """Start the job in its own session, output to the log files.

        Raises :class:`SpawnError` (working directory missing, command not
        found, not executable...) with nothing left running; its subclass
        :class:`StartDeferred` when the cause is the worker's, not the job's
        (a log file cannot be created, no file descriptor or process left).
        Each log is opened by :func:`~execsvc.protocol.durable.open_regular`: what
        it moved aside is in :attr:`moved_aside`.
        """
        request = self.request
        if not request.cwd.is_dir():
            what = "does not exist" if not request.cwd.exists() else "is not a directory"
            raise SpawnError(f"the working directory {request.cwd} {what}")
        try:
            prefix = prlimit_prefix(request.limits)
        except RuntimeError as exc:
            raise SpawnError(str(exc)) from None
        argv, executable = request.argv, request.executable
        if prefix:  # prlimit sets the rlimits on itself, then execs the job (see execsvc.limits)
            argv, executable = [*prefix, executable or argv[0], *argv[1:]], None
        if request.sandbox is not None:  # bwrap makes the sandbox, then execs the rest in it (execsvc.sandbox)
            argv, executable = [*request.sandbox.argv, executable or argv[0], *argv[1:]], None
        out_fd = self._open_log(self.stdout_path)
        try:
            err_fd = self._open_log(self.stderr_path)
            try:
                try:
                    stdin_file = _stdin_file(request.stdin)
                except OSError as exc:
                    raise StartDeferred(f"its stdin could not be stored: {exc.strerror or exc}") from exc
                try:
                    self.pid = self._spawn(argv, executable, stdin_file, out_fd, err_fd)
                except OSError as exc:
                    if exc.errno in _WORKER_SHORTAGES:
                        raise StartDeferred(f"the job could not be started: {exc.strerror or exc}") from exc
                    raise SpawnError(_describe_spawn_error(request.argv[0], exc)) from exc
                finally:
                    if stdin_file is not None:
                        stdin_file.close()
            finally:
                os.close(err_fd)
        finally:
            os.close(out_fd)
        self.started_at = now()
        self._started_mono = time.monotonic()
        self.pidfd = _pidfd_open(self.pid)

    def _open_log(self, path: Path) -> int:
        """A descriptor of the log at ``path``, created 0600 or emptied; raises :class:`StartDeferred`."""
        try:
            fd, moved = open_regular(path, os.O_WRONLY | os.O_CREAT, truncate=True)
        except OSError as exc:
            raise StartDeferred(f"its log file {path} cannot be created: {exc.strerror or exc}") from exc
        if moved is not None:
            self.moved_aside.append(moved)
        return fd

    def _spawn(self, argv: list[str], executable: str | None, stdin: IO[bytes] | None, out_fd: int, err_fd: int) -> int:
        """Start the process (see :meth:`_spawn_process`) and register it as this process's own
        child in the same step, so that :func:`reap_orphans` never reaps it."""
        with _children_lock:
            pid = self._spawn_process(argv, executable, stdin, out_fd, err_fd)
            _own_children.add(pid)
        self._registered = True
        return pid

    def _spawn_process(
        self, argv: list[str], executable: str | None, stdin: IO[bytes] | None, out_fd: int, err_fd: int
    ) -> int:
        """Start the process; its pid. ``os.posix_spawn`` where it can do all that is asked (the job
        runs in this process's working directory and its program is found), else ``subprocess.Popen``.

        ``posix_spawn`` (a ``vfork``-style clone in glibc) skips ``Popen``'s
        Python work and its wait on a pipe for the child's ``exec``. It
        cannot change the directory (Python 3.11) nor close descriptors, so
        the worker runs in its jobs' default directory and keeps its own
        descriptors close-on-exec (:func:`keep_descriptors_from_jobs`); the
        signals Python ignores (SIGPIPE, SIGXFSZ) are reset to their
        defaults, as ``Popen`` does. Raises :class:`OSError` when the program
        cannot be started.
        """
        request = self.request
        program = _spawn_path(executable or argv[0], request)
        if program is not None:
            stdin_action = (
                (os.POSIX_SPAWN_DUP2, stdin.fileno(), 0)
                if stdin is not None
                else (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
            )
            actions = [stdin_action, (os.POSIX_SPAWN_DUP2, out_fd, 1), (os.POSIX_SPAWN_DUP2, err_fd, 2)]
            with contextlib.suppress(NotImplementedError):  # a libc without POSIX_SPAWN_SETSID: Popen
                spawn = os.posix_spawn if "/" in program else os.posix_spawnp
                return spawn(program, argv, request.env, file_actions=actions, setsid=True, setsigdef=_RESET)
        self._popen = subprocess.Popen(
            argv,
            executable=executable,
            cwd=request.cwd,
            env=request.env,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=out_fd,
            stderr=err_fd,
            start_new_session=True,
            close_fds=True,
        )
        return self._popen.pid

    def group_size(self) -> int:
        """How many processes are in the job's process group now (0 once it has exited); for a
        sandboxed job, how many run in its sandbox."""
        if self.pid is None or self._exited:
            return 0
        if self.request.sandbox is not None:  # its processes are bwrap's descendants, in sessions of their own
            with contextlib.suppress(psutil.Error):
                return len(psutil.Process(self.pid).children(recursive=True)) - 1  # not the sandbox's own PID 1
            return 0
        count = 0
        for pid in psutil.pids():
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == self.pid:
                    count += 1
        return count

    def output_sizes(self) -> tuple[int, int]:
        """The sizes of the job's stdout and stderr logs so far, in bytes."""
        sizes = []
        for path in (self.stdout_path, self.stderr_path):
            try:
                sizes.append(os.stat(path).st_size)
            except FileNotFoundError:
                sizes.append(0)
        return sizes[0], sizes[1]

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the job's whole process group; False if it had already exited."""
        with self._lock:
            if self._exited or self.pid is None:
                return False
            self._signalled = True
            _killpg(self.pid, sig)
            return True

    def wait(self) -> ExitInfo:
        """Block until the job's main process exits, then stop what it left behind.

        The main process is first waited for without reaping it (``waitid``
        with ``WNOWAIT``), so its process group id stays reserved while the
        leftovers are signalled. Equivalent to waiting for :attr:`pidfd`,
        then :meth:`reap` and :meth:`stop_leftovers`.
        """
        assert self.pid is not None
        if hasattr(os, "waitid"):
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        return self.stop_leftovers(self.reap())

    def reap(self) -> ExitInfo:
        """Once the main process has exited (:attr:`pidfd` readable): signal the rest of its
        process group, reap it, and say whether anything of the group is left.

        Never blocks after the exit. The group gets SIGTERM (SIGKILL if the job
        was already signalled) while the exited main process still holds its id.
        ``leftovers_stopped`` in the answer means processes remain: call
        :meth:`stop_leftovers` (which may block for the grace period).
        """
        assert self.pid is not None and self.started_at is not None
        with self._lock:
            self._exited = True
            _killpg(self.pid, signal.SIGKILL if self._signalled else signal.SIGTERM)
        returncode = self._popen.wait() if self._popen is not None else _reap(self.pid)
        ended_mono = time.monotonic()
        if self._registered:  # reaped: from now on a child with this pid is not ours
            with _children_lock:
                _own_children.discard(self.pid)
            self._registered = False
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        return ExitInfo(
            returncode=returncode,
            started_at=self.started_at,
            ended_at=now(),
            duration_s=round(ended_mono - self._started_mono, 6),
            leftovers_stopped=_group_alive(self.pid),
        )

    def stop_leftovers(self, exit_info: ExitInfo) -> ExitInfo:
        """After :meth:`reap` found leftovers: wait up to the grace period for them to end
        (unless the job was signalled), then SIGKILL the group. Blocks; call it in a job thread."""
        assert self.pid is not None
        if exit_info.leftovers_stopped:
            if not self._signalled:
                _wait_group_gone(self.pid, self.kill_grace_s)
            _killpg(self.pid, signal.SIGKILL)
        return exit_info


def _stdin_file(data: bytes | None) -> IO[bytes] | None:
    """The job's stdin as an unlinked temporary file: no feeder thread, no pipe to fill."""
    if data is None:
        return None
    handle = tempfile.TemporaryFile()  # noqa: SIM115 - handed to Popen, closed by the caller
    handle.write(data)
    handle.seek(0)
    return handle


_RESET = (signal.SIGPIPE, signal.SIGXFSZ)  # ignored by Python; a job starts with their defaults


def keep_descriptors_from_jobs() -> None:
    """Make every descriptor of this process above 2 close-on-exec, so no job started by
    ``posix_spawn`` inherits one (watchdog's inotify descriptor is not, nor is whatever the
    worker's parent left open). Python opens its own close-on-exec already (PEP 446)."""
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            with contextlib.suppress(OSError, ValueError):  # the listing's own descriptor is gone by now
                if int(name) > 2:
                    os.set_inheritable(int(name), False)


def _spawn_path(program: str, request: RunRequest) -> str | None:
    """The program ``posix_spawn`` should start (a bare name when the job's PATH is this
    process's: ``posix_spawnp`` then searches it in the child, no ``stat`` per folder here), or
    ``None`` when ``Popen`` must (the job runs elsewhere than this process's directory, the
    program is not found in the job's own PATH, or this system has no ``posix_spawn``)."""
    if not hasattr(os, "posix_spawn") or str(request.cwd) != os.getcwd():
        return None
    path = request.env.get("PATH", os.defpath)
    if "/" in program or path == os.environ.get("PATH", os.defpath):
        return program  # a bare name: posix_spawnp searches this process's PATH, the job's too
    return shutil.which(program, path=path)  # None: Popen's error says why


def _reap(pid: int) -> int:
    """Reap our exited child ``pid``; its exit code as ``Popen.returncode`` gives it (-N: signal N)."""
    try:
        _pid, status = os.waitpid(pid, 0)
    except ChildProcessError:  # reaped elsewhere: as Popen does
        return 0
    return os.waitstatus_to_exitcode(status)


def _pidfd_open(pid: int) -> int | None:
    """A pidfd for our child ``pid`` (not yet reaped, so it cannot be another process), or ``None``
    where the system has none (not Linux, kernel before 5.3)."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group_gone(pgid: int, grace_s: float) -> None:
    """Wait up to ``grace_s`` for a process group to empty (only reached when leftovers exist);
    where this process reaps orphans, the group's zombies re-parented here are reaped as they come."""
    deadline = time.monotonic() + grace_s
    delay = 0.005
    while time.monotonic() < deadline:
        if reaps_orphans():
            reap_orphans()
        if not _group_alive(pgid):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _describe_spawn_error(program: str, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        where = "" if "/" in program else " in PATH"
        return f"command not found: '{program}' (no such file{where})"
    if isinstance(exc, PermissionError):
        return f"permission denied running '{program}' (is it executable?)"
    if exc.errno == errno.ENOEXEC:
        return f"'{program}' is not a program this system can run (exec format error)"
    return f"the job could not be started: {exc.strerror or exc}"
