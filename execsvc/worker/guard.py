"""The queue this worker serves: its lock, and whether the root and its folders are still the
ones served (safe from any thread: :meth:`QueueGuard._serves_root`; the checks run in the loop).
"""

from __future__ import annotations

import fcntl
import os
import signal

from filelock import FileLock, Timeout

from ..job_processes import queue_identity
from ..protocol.durable import MovedAside, open_regular
from ..protocol.errors import QueueLocked
from ..protocol.models import WorkerInfo
from .state import DeadlineAction
from .timers import Timers

QUEUE_LOST_EXIT = 75
"""The worker's exit code (EX_TEMPFAIL) when it stopped serving because its queue root, or
``pending/`` or ``running/``, was removed, moved or replaced: its service manager starts it
again, on whatever the queue path names now."""
_QUEUE_CHECK_S = 1.0  # how often the root, pending/ and running/ are checked to be the ones served


class QueueGuard(Timers):
    """The queue this worker serves: its lock (loop thread, at start) and the checks that its root
    and folders are still the ones served (loop thread; :meth:`_record_refusal` from any thread)."""

    def _acquire_lock(self, previous: WorkerInfo | None) -> None:
        """Take the queue for this worker alone, or raise :class:`~execsvc.protocol.errors.QueueLocked`.

        The lock is an exclusive ``flock`` on the queue root directory itself,
        through a descriptor held until :meth:`shutdown`. A lock on a path's
        file (``worker.lock`` alone) is defeated by deleting that file (a temp
        cleaner, ``rm -rf``): the next worker creates and locks a new file of
        the same name. The root's inode cannot be swapped under an open
        descriptor, and every path to it (a bind mount, a symbolic link) meets
        the same lock. After locking, the root's path must still name the locked
        directory (else it was replaced meanwhile). ``worker.lock`` is taken
        too, for workers of older versions that lock only it, and a live worker
        named by ``worker.json`` (``previous``) that is not this one is refused
        as well, lock or no lock. From then on :meth:`_check_queue` stops the
        worker as soon as the root path names another directory. Where the file
        system cannot ``flock`` a directory (NFS), ``worker.lock`` alone is
        taken, with a ``lock_degraded`` warning.
        """
        root = self.layout.root
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        lock = FileLock(str(self.layout.lock_file), timeout=0, mode=0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise self._locked() from None
            except OSError as exc:  # a file system that cannot flock a directory (NFS): worker.lock alone
                self.log.warning(
                    "lock_degraded",
                    reason=f"the queue root cannot be locked ({exc.strerror or exc}); only worker.lock is, "
                    "which deleting it defeats",
                )
            info = os.fstat(fd)
            identity = f"{info.st_dev}:{info.st_ino}"
            if queue_identity(root) != identity:
                raise QueueLocked(f"the queue root {root} was replaced while this worker started; start it again", None)
            # filelock opens worker.lock with O_TRUNC and follows a link: a link or FIFO put there
            # would have another file emptied or the start blocked. Only a regular file is left there.
            lock_fd, moved = open_regular(self.layout.lock_file, os.O_RDWR | os.O_CREAT)
            os.close(lock_fd)
            if moved is not None:
                self._log_moved_aside(moved)
            try:
                lock.acquire()
            except Timeout:
                raise self._locked() from None
            if previous is not None and previous.pid != os.getpid():
                lock.release()
                raise self._locked(previous)
        except BaseException:
            os.close(fd)
            raise
        self._root_fd, self._queue_id, self._lock = fd, identity, lock

    def _locked(self, holder: WorkerInfo | None = None) -> QueueLocked:
        holder = holder or self.queue.worker_info()
        who = (
            f"worker PID {holder.pid} (started {holder.started_at.isoformat(timespec='seconds')})"
            if holder
            else "another worker"
        )
        return QueueLocked(
            f"{who} is already serving the queue at {self.layout.root}; only one worker may serve a queue",
            holder.pid if holder else None,
        )

    def _serves_root(self) -> bool:
        """Whether the root's path still names the directory this worker locked (one ``stat``;
        safe from any thread)."""
        if self._root_lost is not None or self._queue_id is None:
            return False
        try:
            return queue_identity(self.layout.root) == self._queue_id
        except OSError:
            return False

    def _record_refusal(self) -> str | None:
        """Why no record may be written now (the root's path no longer names the directory this
        worker locked), ``None`` while records may be written; safe from any thread."""
        return None if self._serves_root() else (self._root_lost or "the queue root was replaced")

    def _queue_problem(self) -> tuple[str, bool] | None:
        """Why this worker can no longer serve its queue, and whether the root itself is gone
        (``True``) or only ``pending/`` or ``running/`` (``False``); ``None`` while all is well."""
        root = self.layout.root
        try:
            if queue_identity(root) != self._queue_id:
                return f"the queue root {root} was replaced by another directory", True
        except FileNotFoundError:
            return f"the queue root {root} was removed (or moved away)", True
        except OSError as exc:
            return f"the queue root {root} cannot be looked at: {exc.strerror or exc}", True
        for folder, known in self._folder_ids.items():
            try:
                if queue_identity(root / folder) == known:
                    continue
            except OSError:
                pass
            return f"{root / folder} was removed, moved or replaced", False
        return None

    def _check_queue(self) -> None:
        """After a lost watch, and every second: stop serving a queue whose folders changed.

        The root removed, moved or replaced: this worker serves nothing any
        more. It claims nothing, stops its running jobs (SIGTERM, then SIGKILL)
        and records none of them (a record would land in whatever directory
        now has the root's name: another queue), abandons its hooks, and exits
        with :data:`QUEUE_LOST_EXIT`. The jobs' files stay in the old root's
        ``running/``, if it still exists, and are settled by the next worker
        that serves it. Only ``pending/`` or ``running/`` replaced (the root
        is the same): the worker stops the normal way (drain, records
        written) and exits with :data:`QUEUE_LOST_EXIT`, so that it is started
        again and watches the new folder.
        """
        if self._root_lost is not None:
            return
        problem = self._queue_problem()
        if problem is None:
            return
        reason, root_gone = problem
        self.exit_code = QUEUE_LOST_EXIT
        if root_gone:
            self._root_lost = reason
            self._give_up.set()
            self._hook_stop.set()
            self._stopping = True
            self.log.error(
                "queue_lost",
                reason=reason,
                running=len(self._active),
                exit_code=QUEUE_LOST_EXIT,
                note="the worker stops serving at once: its running jobs are stopped and not recorded (they stay "
                "in the old root's running/, if it still exists); the service manager starts it again",
            )
            self._interrupt_all(f"the worker stopped serving: {reason}", signal.SIGTERM)
        elif not self._folder_lost:
            self._folder_lost = True
            self.log.error(
                "watch_lost",
                reason=reason,
                exit_code=QUEUE_LOST_EXIT,
                note="the worker stops (running jobs drain and are recorded) so that it is started again "
                "and watches the new folder",
            )
            if not self._stopping:
                self._stopping = True
                self._set_deadline(self.config.drain_timeout_s, DeadlineAction.DRAIN, "")

    def _log_moved_aside(self, moved: MovedAside, job_id: str | None = None) -> None:
        """Something not a regular file was where the worker writes one (safe from any thread)."""
        self.log.warning("moved_aside", job_id, file=str(moved.path), aside=moved.aside.name, reason=moved.describe())
