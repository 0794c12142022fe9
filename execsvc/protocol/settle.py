"""Settling what a worker that stopped left in the queue (docs/protocol.md, "Crashes and restarts").

:class:`CrashSettling` is the part of :class:`~execsvc.protocol.store.JobStore` a worker uses
at start-up, before it claims anything: each ``running/`` entry is tidied by what its files
say (a claim cut short is undone, a finish cut short completed, a requeue cut short
removed; :meth:`~CrashSettling.settle_running`), a release cut short is finished
(:meth:`~CrashSettling.settle_release`), and the temporary files of writers that died are
removed (:meth:`~CrashSettling.remove_stale_temp_files`). Nothing is ever run twice or
lost: a job that may have run is never put back in ``pending/``.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from .durable import TEMP_PREFIX, move_no_replace, temp_file_writer, unlink_if_exists
from .layout import SIDECAR_SUFFIX, is_kept_name_of, job_id_problem, sanitize_job_id, split_job_name
from .listing import FINISHED_STATES, QueueReader, read_record, visible_entries
from .models import JobState, SidecarRecord
from .scheduling import peek


class CrashSettling(QueueReader):
    """A queue's settling of what a stopped worker or writer left (the worker's start-up)."""

    def settle_release(self, name: str, info: os.stat_result) -> bool:
        """Finish a :meth:`~execsvc.protocol.queue.JobQueue.release` cut short: if
        ``pending/.held/<name>`` is the same file as ``pending/<name>`` (``info``, its ``lstat``),
        remove the held name; say whether it did."""
        twin = self.layout.held / name
        if not _same_file(twin, info):
            return False
        os.unlink(twin)
        return True

    def running_jobs(self) -> list[tuple[str, Path]]:
        """(job id, path) of every entry in ``running/``."""
        return [(split_job_name(entry.name)[0], Path(entry.path)) for entry in visible_entries(self.layout.running)]

    def settle_running(self, job_id: str, path: Path) -> str | None:
        """Tidy a ``running/`` entry left by a worker that stopped; say what was done.

        Returns ``"retried"`` when the job's next attempt is already pending
        (a :meth:`~execsvc.protocol.store.JobStore.requeue` cut short: the ``running/`` copy is removed),
        ``"unclaimed"`` when the claim never completed (the same file is
        still in ``pending/`` under the name it was claimed from, and the job
        has no output log, so it never started: the ``running/`` name is
        removed and the job stays pending; a file with another name there is
        another job, see :meth:`~execsvc.protocol.store.JobStore.unshare`), ``"finished"`` when its
        record is already durable (the job file is moved beside the record, or
        removed for a JSON job, whose record replaced it), and ``None`` when
        the job really was cut short and still needs an ``interrupted`` record.
        A link of the job file that :meth:`~execsvc.protocol.store.JobStore.finish` made beside a record that
        never appeared is removed first. Raises :class:`FileExistsError`,
        leaving the job file where it is, when another file already has its
        name beside the record.
        """
        info = path.lstat()
        if self._retried(job_id, path):
            os.unlink(path)  # requeue() was cut short: the next attempt is pending already
            return "retried"
        if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
            if not os.path.lexists(self.layout.stdout_log(job_id)):  # made before its process starts
                for entry in visible_entries(self.layout.pending):
                    if (
                        entry.inode() == info.st_ino  # no syscall
                        and _claimed_as(entry.name, path.name)
                        and _same_file(entry.path, info)
                    ):
                        os.unlink(path)
                        return "unclaimed"
            for state in FINISHED_STATES:
                folder = self.layout.folder(state)
                if os.path.lexists(folder / (job_id + SIDECAR_SUFFIX)):
                    continue
                for twin in _twins(folder, path.name):
                    if _same_file(twin, info):
                        os.unlink(twin)  # finish() was cut short before the record appeared
        record = self.record_path(job_id)
        if record is None:
            return None
        if record.name.endswith(SIDECAR_SUFFIX):
            beside = record.parent / (_sidecar_job_file(record) or path.name)
            if _same_file(beside, info):
                os.unlink(path)  # finish() was cut short after the record: only running/ is left to tidy
            else:
                move_no_replace(path, beside)  # FileExistsError: a stray file is there; keep ours
        else:
            unlink_if_exists(path)  # a JSON job's record replaced its file
        return "finished"

    def _retried(self, job_id: str, path: Path) -> bool:
        """Whether ``pending/`` holds a later attempt of the job whose ``running/`` entry is ``path``."""
        pending = self._pending_path(job_id)
        if pending is None or pending.name != path.name or _same_file(pending, path.lstat()):
            return False
        kind = split_job_name(path.name)[2]
        try:
            return peek(pending, kind, 0).attempt > peek(path, kind, 0).attempt
        except OSError:
            return False

    def remove_stale_temp_files(self, unnamed_older_than_s: float) -> int:
        """Delete execsvc's temporary files whose writer has died (a crash mid-write); return how many.

        The writer's pid is in the name (:func:`~execsvc.protocol.durable.temp_path_for`);
        a file being written by a live process is left alone. A temporary file
        that names no pid is removed once older than ``unnamed_older_than_s``.
        """
        import psutil

        removed = 0
        cutoff = time.time() - unnamed_older_than_s
        for state in JobState:
            for entry in os.scandir(self.layout.folder(state)):
                if not (entry.name.startswith(TEMP_PREFIX) and entry.name.endswith(".tmp")):
                    continue
                writer = temp_file_writer(entry.name)
                try:
                    stale = (
                        not psutil.pid_exists(writer) or writer == os.getpid()
                        if writer is not None
                        else entry.stat(follow_symlinks=False).st_mtime < cutoff
                    )
                    if stale:
                        os.unlink(entry.path)
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed


def _id_base(stem: str) -> str:
    """The id a claim gives the file ``<stem><suffix>`` when that id is free (see ``JobStore._unique_id``)."""
    return stem if job_id_problem(stem) is None else sanitize_job_id(stem)


def _claimed_as(pending_name: str, running_name: str) -> bool:
    """Whether a claim of ``pending/<pending_name>`` may have named the job ``running/<running_name>``:
    the same ending, and its id, or that id with ``-<n>`` (``JobStore._unique_id``)."""
    stem, suffix, _kind = split_job_name(pending_name)
    running_id, running_suffix, _kind = split_job_name(running_name)
    if suffix != running_suffix:
        return False
    base = _id_base(stem)
    number = running_id[len(base) + 1 :]
    return running_id == base or (running_id.startswith(f"{base}-") and number.isdigit())


def _twins(folder: Path, name: str) -> list[Path]:
    """``folder/<name>`` and every :func:`~execsvc.protocol.layout.kept_name` of it there (a finish may
    have linked the job file under either); the folder is read only when ``name`` is taken."""
    twins = [folder / name]
    if os.path.lexists(twins[0]):
        twins += [Path(entry.path) for entry in os.scandir(folder) if is_kept_name_of(entry.name, name)]
    return twins


def _sidecar_job_file(record: Path) -> str | None:
    """The ``job_file`` a sidecar record names, if it can be read and is a plain name."""
    try:
        name = SidecarRecord.model_validate_json(read_record(record)).job_file
    except (OSError, ValueError):
        return None
    return name if name and "/" not in name and name not in (".", "..") else None


def _same_file(path: str | Path, info: os.stat_result) -> bool:
    """Whether ``path`` (not followed) is the file ``info`` describes: another name of one inode."""
    try:
        other = os.lstat(path)
    except FileNotFoundError:
        return False
    return (other.st_ino, other.st_dev) == (info.st_ino, info.st_dev)
