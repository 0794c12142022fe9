"""The worker's side of the queue protocol: claim, unclaim, unshare, finish, requeue, settle
(docs/protocol.md, "Order and claiming", "Finishing", "Crashes and restarts").

Guarantees, each on one file system:

- claim: one rename from ``pending/`` into ``running/`` that never replaces
  (:func:`~execsvc.protocol.durable.move_no_replace`: ``renameat2(RENAME_NOREPLACE)`` on
  Linux, ``link`` then ``unlink`` where that call is missing). Both folders are
  fsync'd before :meth:`~JobStore.claim` returns, or, with ``flush=False`` (the
  worker's way, by its flusher while the job starts), before the job's record
  is written. Where the move is ``link`` + ``unlink``, a crash between the two
  calls leaves one file under two names, which :meth:`JobStore.settle_running`
  undoes (the job had not started). What a stopped worker left is settled by the
  methods of :class:`~execsvc.protocol.settle.CrashSettling`, which ``JobStore`` inherits.
  A claimed file that has other names (hard links) gets an inode of its own
  before it runs (:meth:`JobStore.unshare`); one that is not the file the
  worker chose goes back to ``pending/`` unstarted (:meth:`JobStore.unclaim`).
- finish: the record is durable in ``completed/`` or ``failed/`` before the
  job leaves ``running/``; no record or job file is ever overwritten.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from . import finish_index
from .durable import (
    MovedAside,
    copy_over,
    fsync_dir,
    move_no_replace,
    read_regular_file,
    unlink_if_exists,
    write_durable,
)
from .jobfile import ClaimedFile
from .layout import (
    CANCEL_PREFIX,
    SIDECAR_SUFFIX,
    kept_name,
    numbered_job_id,
    readable_name,
    split_job_name,
)
from .models import JobKind, JobRecord, JobResult, JobSpec, JobStatus, SidecarRecord
from .record_batch import RecordBatch
from .settle import CrashSettling, _id_base


@dataclass(frozen=True)
class ClaimedJob:
    """A job the worker has moved into ``running/``.

    ``job_id`` may differ from the submitted name's stem when that id was
    already used or not valid (``renamed_from`` then says the original stem).
    """

    job_id: str
    kind: JobKind
    path: Path
    job_file: str
    renamed_from: str | None


class JobStore(CrashSettling):
    """A queue as the worker changes it; a client cancelling a pending job uses it too
    (:meth:`JobQueue.cancel` claims and finishes it)."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        super().__init__(root, create=create)
        self.on_moved_aside: Callable[[MovedAside], None] | None = None
        """Told of what :meth:`finish` found at an index's name and moved aside (the worker logs it)."""

    def cancel_requests(self) -> list[str]:
        """Ids of the running jobs with a cancel request waiting in ``running/`` (for the worker)."""
        with os.scandir(self.layout.running) as entries:
            return [e.name[len(CANCEL_PREFIX) :] for e in entries if e.name.startswith(CANCEL_PREFIX)]

    def drop_cancel_request(self, job_id: str) -> bool:
        """Remove the cancel request of ``job_id`` once acted on (or stale); whether there was one."""
        try:
            os.unlink(self.layout.cancel_request(job_id))
        except FileNotFoundError:
            return False
        return True

    @staticmethod
    def _flush(target: Path, source: Path) -> None:
        """fsync the folder a job moved into, then the one it left (as :meth:`flush_claims`)."""
        fsync_dir(target)
        fsync_dir(source)

    def _unique_id(self, stem: str) -> str:
        """``stem`` if it is a valid id not in use, else the first of ``<id>-2``, ``<id>-3``... that
        is free (:func:`~execsvc.protocol.layout.numbered_job_id`: valid too), ``<id>`` being ``stem`` made valid."""
        base = _id_base(stem)
        candidate, n = base, 1
        while self.layout.id_in_use(candidate):
            n += 1
            candidate = numbered_job_id(base, n)
        return candidate

    def claim(self, name: str, *, flush: bool = True, folder: Path | None = None) -> ClaimedJob:
        """Move ``pending/<name>`` into ``running/``: the claim. Only the claimer runs the job.

        The job keeps its id unless that id is already used in the queue (or
        is not a valid id): then it gets a new unique one, reported in
        ``renamed_from``. The claim takes effect when the job leaves
        ``pending/`` (at once for every process: a crash of the claimer
        cannot undo it). With ``flush`` (the default) both folders are
        fsync'd before this returns, so the claim also survives a power cut;
        with ``flush=False`` the caller calls :meth:`flush_claims` itself, and
        must before it writes the job's record. ``folder`` is where the job
        is, if not ``pending/`` (``pending/.held/`` for a held job being
        cancelled). Raises :class:`FileNotFoundError` if the file is gone
        (removed or cancelled since it was seen).
        """
        stem, suffix, kind = split_job_name(name)
        job_id = self._unique_id(stem)
        target = self.layout.running / f"{job_id}{suffix}"
        move_no_replace((folder or self.layout.pending) / name, target)
        if flush:
            self.flush_claims()
        renamed_from = None if job_id == stem else readable_name(stem)
        return ClaimedJob(job_id, kind, target, readable_name(name), renamed_from)

    def unclaim(self, job: ClaimedJob, name: str) -> None:
        """Undo the claim of a job that has not started: move it back to ``pending/<name>``.

        For a claimed file that turns out not to be the one the worker chose
        (being written, or changed since it was seen). The same rename that
        never replaces as :meth:`claim`; not flushed (the caller asks for it).
        A crash before it leaves the job in ``running/``, where the next start
        records it ``interrupted``: never run. Raises :class:`FileExistsError`
        when a new file took the name in ``pending/`` meanwhile (the job stays
        claimed).
        """
        move_no_replace(job.path, self.layout.pending / name)

    def unshare(
        self, job: ClaimedJob, name: str, data: bytes | None = None, info: os.stat_result | None = None
    ) -> None:
        """Give a claimed job file that has other names (hard links) an inode of its own, before it
        runs or is recorded; a regular file with one name (or anything else) is left alone.

        ``name`` is the name it was claimed from, ``data`` the file's bytes
        as read at the claim (``None``: copied from the file), ``info`` its
        ``fstat`` (``None``: looked up). A held name of the same file
        (:meth:`release` cut short) is removed first, as
        :meth:`settle_release` does; then the job's name in ``running/`` gets
        a durable private copy (:func:`~execsvc.protocol.durable.copy_over`, same
        times), so no other name can change what runs or what is kept, and
        the start-up recovery never mistakes the job for a claim cut short.
        The other names keep the old file, untouched. Raises
        :class:`OSError`, the job file unchanged.
        """
        if info is None:
            info = os.lstat(job.path)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink == 1:
            return
        links = info.st_nlink
        if self.settle_release(name, info):
            links -= 1
        if links > 1:
            copy_over(job.path, data, (info.st_atime_ns, info.st_mtime_ns))

    def flush_claims(self) -> None:
        """Make every claim made so far durable: fsync ``running/``, then ``pending/``.

        In this order a power cut can leave a claimed job under both names
        (settled at the next start), never under neither.
        """
        self._flush(*self.claim_folders())

    def claim_folders(self) -> list[Path]:
        """The folders a claim changes, in the order they must be flushed (see :meth:`flush_claims`)."""
        return [self.layout.running, self.layout.pending]

    def finish(
        self, job: ClaimedJob, result: JobResult, spec: JobSpec | None, batch: RecordBatch | None = None
    ) -> Path:
        """Record a claimed job's result and move it out of ``running/``; return the record's path.

        ``completed/`` when ``result.status`` is ``completed``, else ``failed/``.
        A JSON job with a valid ``spec`` becomes its own record (the job's
        fields plus ``result``); anything else keeps its file untouched with an
        ``<id>.result.json`` record beside it. The record is durable before
        the job leaves ``running/``. No name collision refuses a record: when
        another file already has the job file's name beside the record (or
        ``<id>.json``, for a JSON job), the job file is kept under a free
        hidden name (:func:`~execsvc.protocol.layout.kept_name`), named by the
        sidecar record's ``job_file`` and said in ``result.note``; a stray file
        with the record's own name, ``<id>.result.json``, is moved aside to a
        hidden name first (:meth:`_move_stray_aside`). With a ``batch``
        (:class:`~execsvc.protocol.record_batch.RecordBatch`), the record file is
        written and fsync'd but its folder's flush, its index line and the job's
        removal from ``running/`` wait for :meth:`RecordBatch.commit` (a job file
        that is a directory is recorded at once, as without a batch). Raises
        :class:`OSError` when the folders cannot be written.
        """
        folder = self.layout.completed if result.status is JobStatus.COMPLETED else self.layout.failed
        if spec is not None and job.kind == "json":
            record = JobRecord.model_validate({**spec.model_dump(exclude_unset=True), "result": result})
            path = folder / f"{job.job_id}.json"
            try:
                data = record.model_dump_json(exclude_unset=True, indent=2).encode("utf-8")
                written = write_durable(path, data, sync_folder=batch is None)
            except FileExistsError:  # another file has the record's name: keep the job beside a sidecar record
                return self._finish_beside(job, result, folder, batch)
            if batch is not None:
                batch.add(folder, job.job_id, written, job.path)
                return path
            self._index(folder, job.job_id, written)
            unlink_if_exists(job.path)
            return path
        return self._finish_beside(job, result, folder, batch)

    def _finish_beside(self, job: ClaimedJob, result: JobResult, folder: Path, batch: RecordBatch | None) -> Path:
        """:meth:`finish` for a job kept as its file with an ``<id>.result.json`` record beside it."""
        path = folder / f"{job.job_id}{SIDECAR_SUFFIX}"
        if stat.S_ISDIR(os.lstat(job.path).st_mode):  # a directory cannot be linked: record, then rename
            name = _free_name(folder, job.path.name)
            self._index(folder, job.job_id, write_durable(path, self._sidecar(job, result, folder, name)))
            move_no_replace(job.path, folder / name)
            return path
        # The job file is linked in beside its record before the record appears, so whoever
        # sees the record finds the file too; the job leaves running/ last. A crash between
        # any two steps leaves what settle_running() tidies.
        name = job.path.name
        for n in itertools.count(1):
            try:
                os.link(job.path, folder / name, follow_symlinks=False)
                break
            except FileExistsError:  # a stray file has the name: keep the job file under a free one
                name = _free_name(folder, job.path.name, n + 1)
        try:
            try:
                written = write_durable(path, self._sidecar(job, result, folder, name), sync_folder=batch is None)
            except FileExistsError:  # a stray took the record's own name while the job ran
                self._move_stray_aside(folder, path.name, result)
                written = write_durable(path, self._sidecar(job, result, folder, name), sync_folder=batch is None)
        except BaseException:
            unlink_if_exists(folder / name)
            raise
        if batch is not None:
            batch.add(folder, job.job_id, written, job.path)
            return path
        self._index(folder, job.job_id, written)
        os.unlink(job.path)
        return path

    @staticmethod
    def _move_stray_aside(folder: Path, name: str, result: JobResult) -> None:
        """Rename the file that has a record's name, ``folder/<name>``, to a free hidden name
        (``.<name>.stray-<n>``: never a job's, never a record's), so the record can take its name;
        said in ``result.note``. Only a foreign file can be there: a claim never gives a job an id
        that any file in ``completed/`` or ``failed/`` is named by. Atomic on one filesystem; the
        stray is kept, never overwritten. Raises :class:`OSError` when it cannot be moved."""
        for n in itertools.count(1):
            aside = f".{name}.stray-{n}"
            try:
                move_no_replace(folder / name, folder / aside)
                break
            except FileExistsError:
                continue
            except FileNotFoundError:  # the stray went away by itself
                return
        moved = (
            f"{folder.name}/{readable_name(name)} was taken by another file while the job ran; that file "
            f"was kept as {readable_name(aside)}"
        )
        result.note = f"{result.note}; {moved}" if result.note else moved

    @staticmethod
    def _sidecar(job: ClaimedJob, result: JobResult, folder: Path, name: str) -> bytes:
        """The bytes of a sidecar record naming ``name`` as the job file; a name other than the
        job file's own is said in ``result.note``."""
        if name != job.path.name:
            taken = (
                f"{folder.name}/{readable_name(job.path.name)} was already taken by another file, so the "
                f"job file is kept beside this record as {readable_name(name)}"
            )
            if taken not in (result.note or ""):  # (finish may be tried again: said once)
                result.note = f"{result.note}; {taken}" if result.note else taken
        sidecar = SidecarRecord(job_id=job.job_id, kind=job.kind, job_file=name, result=result)
        return sidecar.model_dump_json(indent=2).encode("utf-8")

    def restore_job_file(self, job: ClaimedJob, claimed: ClaimedFile) -> tuple[ClaimedFile, str | None]:
        """Put a running job's file back as it was claimed if the job removed, moved, replaced or
        changed it; return the file now in ``running/`` (``claimed`` itself, or the restored copy's
        identity) and a sentence saying what the job did (``None``: the file is untouched).

        The job's own file is a fact about the job, never a reason to stop the queue: the claimed
        bytes are written durably under the job's name in ``running/`` (renamed over whatever the
        job put there; a directory it put there is removed first), so that :meth:`finish` keeps
        the job as it was claimed and, should the worker die first, the next start still finds
        the job in ``running/``. Raises :class:`OSError` when ``running/`` cannot be written.
        """
        try:
            info = os.lstat(job.path)
        except FileNotFoundError:
            what = "removed or moved"
        else:
            if claimed.describes(info):
                return claimed, None
            if (info.st_ino, info.st_dev) != (claimed.ino, claimed.dev) or not stat.S_ISREG(info.st_mode):
                what = "replaced"  # (an inode number can be reused at once: a directory made in its place)
            elif info.st_size == claimed.size and read_regular_file(job.path, claimed.size) == claimed.data:
                return replace(claimed, mtime_ns=info.st_mtime_ns), None  # touched, not changed
            else:
                what = "changed"
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(job.path)
        written = write_durable(job.path, claimed.data, replace=True)
        restored = ClaimedFile(claimed.data, written.st_dev, written.st_ino, written.st_size, written.st_mtime_ns)
        return restored, (
            f"the job {what} its own job file running/{readable_name(job.path.name)} while it ran; "
            "the file kept with this record is the job as it was claimed"
        )

    def _index(self, folder: Path, job_id: str, record: os.stat_result) -> None:
        """Append to ``folder``'s finish-time index; tell :attr:`on_moved_aside` what it moved aside."""
        moved = finish_index.append(folder, job_id, record)
        if moved is not None and self.on_moved_aside is not None:
            self.on_moved_aside(moved)

    def requeue(self, job: ClaimedJob, data: bytes) -> Path:
        """Put a claimed job back into ``pending/`` under its id, with new contents (its next attempt).

        The new file is durable in ``pending/`` before the job leaves
        ``running/``; a crash in between leaves both, and
        :meth:`settle_running` then removes the ``running/`` copy (the
        pending one says a later ``attempt``). Raises :class:`FileExistsError`
        when a pending file already has the name (nothing is changed).
        """
        path = self.layout.pending / job.path.name
        write_durable(path, data)
        os.unlink(job.path)
        return path


def _free_name(folder: Path, name: str, first: int = 1) -> str:
    """``name`` if nothing in ``folder`` has it (tried when ``first`` is 1), else the first free
    :func:`~execsvc.protocol.layout.kept_name` from number ``max(first, 2)`` on."""
    if first <= 1 and not os.path.lexists(folder / name):
        return name
    for n in itertools.count(max(first, 2)):
        kept = kept_name(name, n)
        if not os.path.lexists(folder / kept):
            return kept
    raise AssertionError("unreachable")
