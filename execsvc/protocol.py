"""The queue protocol as a Python API: submit, read, claim, finish (PROTOCOL.md).

Pure file operations on one queue root; nothing here knows about MCP, the CLI
or how jobs are run. Clients (``queue_tools``, foreign Python code) use
:meth:`JobQueue.submit`, :meth:`~JobQueue.get`, :meth:`~JobQueue.list` and
:meth:`~JobQueue.wait`; the worker uses :meth:`~JobQueue.claim` and
:meth:`~JobQueue.finish`.

Guarantees, each on one file system:

- submit: the job appears in ``pending/`` whole or not at all (hidden temp
  file, fsync, ``link`` to the final name, folder fsync); an existing file is
  never replaced.
- claim: ``link`` into ``running/`` then ``unlink`` from ``pending/`` (see
  :func:`~execsvc.durable.move_no_replace`); both folders are fsync'd before
  the job may start, so a job that ran can never reappear in ``pending/``
  after a power cut. A crash between the two calls leaves one file under two
  names, which :meth:`JobQueue.settle_running` undoes (the job had not started).
- finish: the record is durable in ``completed/`` or ``failed/`` before the
  job leaves ``running/``; no record or job file is ever overwritten.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import psutil
from pydantic import ValidationError
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from . import finish_index
from .daemonlog import append_event
from .durable import (
    TEMP_PREFIX,
    MovedAside,
    fsync_dir,
    move_no_replace,
    read_regular_file,
    temp_file_writer,
    unlink_if_exists,
    write_durable,
)
from .errors import InvalidJobId, JobIdTaken, JobNotFound
from .jobfile import spec_if_valid, submitted_by
from .layout import (
    CANCEL_PREFIX,
    JOB_SUFFIXES,
    SIDECAR_SUFFIX,
    QueueLayout,
    check_job_id,
    is_ignored_name,
    readable_name,
    sanitize_job_id,
    split_job_name,
)
from .models import JobInfo, JobKind, JobRecord, JobResult, JobSpec, JobState, JobStatus, SidecarRecord, WorkerInfo
from .schedule import peek

FINISHED_STATES = (JobState.COMPLETED, JobState.FAILED)
_GET_PASSES = 4
"""Lookups of one job in get(); each further pass means it moved on while being looked up."""


class _QuietObserverStop(logging.Filter):
    """Drops watchdog's "queue_events() called when the thread is inactive": an ERROR it logs
    when an observer is stopped while its emitter is mid-read. Harmless, but with no logging
    configured Python prints it on the user's terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_QuietObserverStop())


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


@dataclass(frozen=True)
class Cancellation:
    """What :meth:`JobQueue.cancel` did.

    ``outcome`` is ``"cancelled"`` (the job was pending: it is now in
    ``failed/`` with status ``cancelled`` and never ran), ``"requested"`` (the
    job is running: the worker was asked to stop its process group and will
    record it ``cancelled``), or ``"finished"`` (it had already ended; nothing
    was done). ``info`` is the job's state right after.
    """

    outcome: Literal["cancelled", "requested", "finished"]
    info: JobInfo


class JobEntry(NamedTuple):
    """One job as its folder entry shows it, without reading the file (for fast listings).

    ``path`` (a string: a ``Path`` per entry costs more than the ``stat``) is
    the job file (pending, running) or its record (finished);
    ``mtime_ns`` its modification time (for a record: when the job finished);
    ``ctime_ns`` its inode change time, which for a running job is when it was
    claimed (the claim's rename sets it); for a record known from the
    finish-time index (:mod:`.finish_index`) it is ``mtime_ns`` too.
    """

    job_id: str
    state: JobState
    path: str
    mtime_ns: int
    ctime_ns: int


def new_job_id() -> str:
    """A fresh, time-ordered job id: ``20261121-101400-3f9a1c2b`` (UTC time + random hex)."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


class JobQueue:
    """One queue root and the operations of the protocol on it.

    ``JobQueue(root)`` creates the folders (mode 0700) if missing. Every
    method that takes a ``job_id`` raises :class:`~execsvc.errors.InvalidJobId`
    for ids the protocol does not allow.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.layout = QueueLayout.at(root)
        self.on_moved_aside: Callable[[MovedAside], None] | None = None
        """Told of what :meth:`finish` found at an index's name and moved aside (the worker logs it)."""
        if create:
            self.layout.ensure()

    @property
    def root(self) -> Path:
        return self.layout.root

    # ----- submitting -------------------------------------------------------------

    def submit(
        self,
        spec: JobSpec | dict[str, Any],
        *,
        job_id: str | None = None,
        submitted_by: str = "api",
        held: bool = False,
    ) -> str:
        """Enqueue a JSON job; return its job id.

        ``spec`` is validated as a :class:`JobSpec` (``pydantic.ValidationError``
        if it is not one). With ``job_id=None`` a fresh id is made; a given
        ``job_id`` that the queue already holds raises :class:`JobIdTaken`.
        ``submitted_by`` is written into the job as its ``submitted_by`` field
        unless the spec has one (the worker copies it into the record).
        ``held`` submits it on hold (see :meth:`hold`): it waits for :meth:`release`.
        """
        model = spec if isinstance(spec, JobSpec) else JobSpec.model_validate(spec)
        if "submitted_by" not in (model.model_extra or {}):
            model = JobSpec.model_validate({**model.model_dump(exclude_unset=True), "submitted_by": submitted_by})
        data = model.model_dump_json(exclude_unset=True).encode("utf-8")
        return self._submit_bytes(data, ".json", job_id, held)

    def submit_script(
        self, script: str | bytes, *, job_id: str | None = None, suffix: str = ".sh", held: bool = False
    ) -> str:
        """Enqueue a text job (a shell script, or any script with a ``#!`` line); return its id."""
        if JOB_SUFFIXES.get(suffix) != "text":
            raise ValueError("a text job's suffix is .sh or .txt")
        data = script.encode("utf-8") if isinstance(script, str) else script
        return self._submit_bytes(data, suffix, job_id, held)

    def _submit_bytes(self, data: bytes, suffix: str, job_id: str | None, held: bool = False) -> str:
        if job_id is not None:
            check_job_id(job_id)
            if self.layout.id_in_use(job_id) or self._pending_path(job_id) is not None:
                raise JobIdTaken(f"job id {job_id!r} is already in the queue")
        folder = self.layout.ensure_held() if held else self.layout.pending
        while True:
            chosen = job_id or new_job_id()
            try:
                write_durable(folder / f"{chosen}{suffix}", data)
                return chosen
            except FileExistsError:
                if job_id is not None:
                    raise JobIdTaken(f"job id {job_id!r} is already in the queue") from None

    # ----- reading ----------------------------------------------------------------

    def get(self, job_id: str) -> JobInfo:
        """The job with this id, wherever it is; raises :class:`JobNotFound` if nowhere.

        The folders are read in the order a job travels (pending, running,
        finished), and read again if the job left ``running/`` while its record
        was being looked for, so a job that moves on meanwhile is still found.
        A finished record wins over a copy still in ``running/`` (the moment
        between the record becoming durable and the job leaving).
        """
        check_job_id(job_id)
        for _pass in range(_GET_PASSES):
            pending = self._pending_path(job_id)
            if pending is not None:
                return self._entry_info(JobState.PENDING, pending)
            running = self._find_entry(self.layout.running, job_id)
            for state in FINISHED_STATES:
                info = self._finished_info(state, job_id)
                if info is not None:
                    return info
            if running is None:
                break
            if os.path.lexists(running):
                return self._entry_info(JobState.RUNNING, running)
            # It finished after its record was looked for: look again (a job only moves forward).
        raise JobNotFound(f"no job with id {job_id!r} in queue {self.root}")

    def list(self, state: JobState | str) -> list[JobInfo]:
        """All jobs in one state, oldest first (modification time, then name).

        Finished jobs come with their result; pending and running ones with
        their spec when it is a readable JSON job.
        """
        state = JobState(state)
        infos: list[JobInfo] = []
        for entry in self.entries(state):
            info = (
                self._finished_info(state, entry.job_id)
                if state in FINISHED_STATES
                else self._entry_info(state, Path(entry.path))
            )
            if info is not None:
                infos.append(info)
        infos.sort(key=lambda info: (info.mtime, info.job_id))
        return infos

    def entries(self, state: JobState | str, *, use_index: bool = True) -> builtins.list[JobEntry]:
        """Every job in one state from names and ``stat`` alone, in no order; no job file is read.

        Scales to large histories: one ``scandir``, then one ``stat`` per
        pending or running job, and per finished job only where the folder's
        finish-time index (:mod:`.finish_index`) does not know its record
        (the index holds the time each record was written: a record touched
        since keeps its place; ``use_index=False`` takes every time from
        ``stat``); read the jobs you show with :meth:`get`. Pending entries with an
        unknown ending (which the worker will refuse) are left out, as in
        :meth:`list`.
        """
        state = JobState(state)
        if state in FINISHED_STATES:
            return self._finished_entries(state, use_index)
        with os.scandir(self.layout.folder(state)) as scan:
            dir_entries = [entry for entry in scan if not is_ignored_name(entry.name)]
        if state is JobState.PENDING and os.path.isdir(self.layout.held):
            with os.scandir(self.layout.held) as scan:
                dir_entries += [entry for entry in scan if not is_ignored_name(entry.name)]
        found: builtins.list[JobEntry] = []
        for entry in dir_entries:
            job_id = _unfinished_id(entry.name, state)
            if job_id is None:
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # it moved on while being listed
            found.append(JobEntry(job_id, state, entry.path, info.st_mtime_ns, info.st_ctime_ns))
        return found

    def _finished_entries(self, state: JobState, use_index: bool) -> builtins.list[JobEntry]:
        """:meth:`entries` for ``completed/`` or ``failed/``: one entry per record.

        A record is ``<id>.result.json``, or ``<id>.json`` when no
        ``<id>.result.json`` is beside it (else it is the job file beside its
        sidecar record). One plain loop with the tests written out: at
        100,000 records every call and attribute lookup per entry shows.
        """
        folder = self.layout.folder(state)
        with os.scandir(folder) as scan:
            dir_entries = [entry for entry in scan if entry.name[0] != "." and not entry.name.endswith(".tmp")]
        names = {entry.name for entry in dir_entries}
        indexed = finish_index.read(folder) if use_index else {}  # finish times without a stat each
        found: builtins.list[JobEntry] = []
        append = found.append
        sidecar, sidecar_length = SIDECAR_SUFFIX, len(SIDECAR_SUFFIX)
        for entry in dir_entries:
            name = entry.name
            if name.endswith(sidecar):
                job_id = name[:-sidecar_length]
            elif name.endswith(".json") and len(name) > 5 and name[:-5] + sidecar not in names:
                job_id = name[:-5]
            else:
                continue  # the job file beside a sidecar record, or not a record
            known = indexed.get(job_id)
            if known is not None and known[1] == entry.inode():  # still that record: see finish_index
                append(JobEntry(job_id, state, entry.path, known[0], known[0]))
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # it was cleaned while being listed
            append(JobEntry(job_id, state, entry.path, info.st_mtime_ns, info.st_ctime_ns))
        return found

    def wait(self, job_id: str, timeout_s: float | None = None) -> JobInfo:
        """Block until the job is finished or ``timeout_s`` passes; return its latest state.

        Woken by file events on ``completed/`` and ``failed/`` (no polling
        loop). Raises :class:`JobNotFound` if the job is in no folder.
        """
        check_job_id(job_id)
        changed = threading.Event()
        handler = _NameWatcher(job_id, changed)
        observer = Observer()
        for state in FINISHED_STATES:
            observer.schedule(handler, str(self.layout.folder(state)))
        observer.start()
        try:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while True:
                info = self.get(job_id)
                if info.state in FINISHED_STATES:
                    return info
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return info
                changed.wait(remaining)
                changed.clear()
        finally:
            observer.stop()
            observer.join()

    def worker_info(self) -> WorkerInfo | None:
        """The worker serving this queue (from ``worker.json``), or ``None`` if none is alive."""
        try:
            data = read_regular_file(self.layout.worker_file, _SPEC_MAX_BYTES)  # a FIFO there: no wait
            if data is None:
                return None
            info = WorkerInfo.model_validate_json(data)
        except (OSError, ValidationError):
            return None
        try:
            proc = psutil.Process(info.pid)
            if abs(proc.create_time() - info.started_at.timestamp()) > 5:
                return None  # the pid was reused by another process
        except psutil.Error:
            return None
        return info

    # ----- cancelling -----------------------------------------------------------------

    def cancel(self, job_id: str, *, requested_by: str = "a client") -> Cancellation:
        """Cancel a job (PROTOCOL.md, "Timeouts and cancelling"); see :class:`Cancellation`.

        A pending job is claimed exactly as a worker claims it (so it can never
        also start) and finished at once with status ``cancelled``; the line
        ``cancelled`` is appended to ``daemon.log``. For a running job a request
        file ``running/.cancel.<id>`` is written, which the serving worker acts on
        by stopping the job's process group (SIGTERM, then SIGKILL after its
        grace period). Raises :class:`JobNotFound` for an unknown id and
        :class:`OSError` when the queue cannot be written.
        """
        check_job_id(job_id)
        for _pass in range(_GET_PASSES):
            info = self.get(job_id)
            if info.state in FINISHED_STATES:
                return Cancellation("finished", info)
            if info.state is JobState.RUNNING:
                note = json.dumps({"job_id": job_id, "requested_by": requested_by, "requested_at": _now_iso()})
                with contextlib.suppress(FileExistsError):  # asked already: the worker acts on the first request
                    _create_note(self.layout.cancel_request(job_id), note.encode())
                return Cancellation("requested", info)
            try:
                claimed = self.claim(Path(info.path).name, folder=Path(info.path).parent)
            except (FileNotFoundError, FileExistsError):
                continue  # a worker claimed it meanwhile: look again
            spec = spec_if_valid(claimed.path) if claimed.kind == "json" else None
            error = f"cancelled by {requested_by} before it started; it never ran"
            result = JobResult(
                job_id=claimed.job_id,
                status=JobStatus.CANCELLED,
                returncode=None,  # set, so that the record says null: it never ran
                error=error,
                completed_at=datetime.now(UTC).astimezone(),
                job_file=claimed.job_file,
                submitted_by=submitted_by(spec),
            )
            self.finish(claimed, result, spec)
            with contextlib.suppress(OSError):
                append_event(self.layout.daemon_log, "WARNING", "cancelled", claimed.job_id, reason=error)
            return Cancellation("cancelled", self.get(claimed.job_id))
        return Cancellation("finished", self.get(job_id))  # it kept moving on: report where it ended up

    def cancel_requests(self) -> builtins.list[str]:
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

    # ----- holding -------------------------------------------------------------------

    def hold(self, job_id: str) -> JobInfo:
        """Put a pending job on hold: it stays pending (in ``pending/.held/``) but is not started.

        One ``rename``, atomic even against a crash, so it races safely with a
        worker's claim: exactly one of the two wins. Holding a held job does
        nothing. Raises :class:`JobNotFound` for an unknown id,
        :class:`ValueError` when the job has already started or finished, and
        :class:`FileExistsError` when a held file already has its name.
        """
        check_job_id(job_id)
        info = self.get(job_id)
        if info.held:
            return info
        if info.state is not JobState.PENDING:
            raise ValueError(f"job {job_id!r} is {info.state.value}; only a pending job can be held")
        source = Path(info.path)
        target = self.layout.ensure_held() / source.name
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "a held job already has this name", str(target))
        try:
            os.rename(source, target)
        except FileNotFoundError:
            now = self.get(job_id)
            raise ValueError(f"job {job_id!r} is {now.state.value}; it started before it could be held") from None
        self._flush(self.layout.held, self.layout.pending)
        return self.get(job_id)

    def release(self, job_id: str) -> JobInfo:
        """Release a held job back to ``pending/``, keeping its place in line (its file time).

        Moved with :func:`~execsvc.durable.move_no_replace`, so a new pending
        job that took its file name meanwhile is never replaced. A crash
        between its ``link`` and ``unlink`` leaves the job under both names;
        the worker removes the held one when it sees the pending one
        (:meth:`settle_release`). Releasing a job that is not held does
        nothing. Raises :class:`JobNotFound` for an unknown id and
        :class:`FileExistsError` when a pending job has its file name.
        """
        check_job_id(job_id)
        info = self.get(job_id)
        if not info.held:
            return info
        move_no_replace(Path(info.path), self.layout.pending / Path(info.path).name)
        self._flush(self.layout.pending, self.layout.held)
        return self.get(job_id)

    def settle_release(self, name: str, info: os.stat_result) -> bool:
        """Finish a :meth:`release` cut short: if ``pending/.held/<name>`` is the same file as
        ``pending/<name>`` (``info``, its ``lstat``), remove the held name; say whether it did."""
        twin = self.layout.held / name
        if not _same_file(twin, info):
            return False
        os.unlink(twin)
        return True

    @staticmethod
    def _flush(target: Path, source: Path) -> None:
        """fsync the folder a job moved into, then the one it left (as :meth:`flush_claims`)."""
        fsync_dir(target)
        fsync_dir(source)

    # ----- the worker's side --------------------------------------------------------

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

    def flush_claims(self) -> None:
        """Make every claim made so far durable: fsync ``running/``, then ``pending/``.

        In this order a power cut can leave a claimed job under both names
        (settled at the next start), never under neither.
        """
        self._flush(*self.claim_folders())

    def claim_folders(self) -> builtins.list[Path]:
        """The folders a claim changes, in the order they must be flushed (see :meth:`flush_claims`)."""
        return [self.layout.running, self.layout.pending]

    def finish(self, job: ClaimedJob, result: JobResult, spec: JobSpec | None) -> Path:
        """Record a claimed job's result and move it out of ``running/``; return the record's path.

        ``completed/`` when ``result.status`` is ``completed``, else ``failed/``.
        A JSON job with a valid ``spec`` becomes its own record (the job's
        fields plus ``result``); anything else keeps its file untouched with an
        ``<id>.result.json`` record beside it. The record is durable before
        the job leaves ``running/``.
        """
        folder = self.layout.completed if result.status is JobStatus.COMPLETED else self.layout.failed
        if spec is not None and job.kind == "json":
            record = JobRecord.model_validate({**spec.model_dump(exclude_unset=True), "result": result})
            path = folder / f"{job.job_id}.json"
            written = write_durable(path, record.model_dump_json(exclude_unset=True, indent=2).encode("utf-8"))
            self._index(folder, job.job_id, written)
            unlink_if_exists(job.path)
            return path
        sidecar = SidecarRecord(job_id=job.job_id, kind=job.kind, job_file=job.path.name, result=result)
        path = folder / f"{job.job_id}{SIDECAR_SUFFIX}"
        data = sidecar.model_dump_json(indent=2).encode("utf-8")
        beside = folder / job.path.name
        if stat.S_ISDIR(os.lstat(job.path).st_mode):  # a directory cannot be linked: record, then rename
            self._index(folder, job.job_id, write_durable(path, data))
            move_no_replace(job.path, beside)
            return path
        # The job file is linked in beside its record before the record appears, so whoever
        # sees the record finds the file too; the job leaves running/ last. A crash between
        # any two steps leaves what settle_running() tidies.
        os.link(job.path, beside, follow_symlinks=False)  # FileExistsError: a stray file has the name
        try:
            written = write_durable(path, data)
        except BaseException:
            unlink_if_exists(beside)
            raise
        self._index(folder, job.job_id, written)
        os.unlink(job.path)
        return path

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

    def running_jobs(self) -> builtins.list[tuple[str, Path]]:
        """(job id, path) of every entry in ``running/``."""
        return [(split_job_name(entry.name)[0], Path(entry.path)) for entry in _visible_entries(self.layout.running)]

    def settle_running(self, job_id: str, path: Path) -> str | None:
        """Tidy a ``running/`` entry left by a worker that stopped; say what was done.

        Returns ``"retried"`` when the job's next attempt is already pending
        (a :meth:`requeue` cut short: the ``running/`` copy is removed),
        ``"unclaimed"`` when the claim never completed (the same file
        is still in ``pending/``, so the job never started: the ``running/``
        name is removed and the job stays pending), ``"finished"`` when its
        record is already durable (the job file is moved beside the record, or
        removed for a JSON job, whose record replaced it), and ``None`` when
        the job really was cut short and still needs an ``interrupted`` record.
        A link of the job file that :meth:`finish` made beside a record that
        never appeared is removed first. Raises :class:`FileExistsError`,
        leaving the job file where it is, when another file already has its
        name beside the record.
        """
        info = path.lstat()
        if self._retried(job_id, path):
            os.unlink(path)  # requeue() was cut short: the next attempt is pending already
            return "retried"
        if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
            for entry in _visible_entries(self.layout.pending):
                if entry.inode() == info.st_ino and _same_file(entry.path, info):  # inode(): no syscall
                    os.unlink(path)
                    return "unclaimed"
            for state in FINISHED_STATES:
                twin = self.layout.folder(state) / path.name
                if _same_file(twin, info) and not os.path.lexists(twin.parent / (job_id + SIDECAR_SUFFIX)):
                    os.unlink(twin)  # finish() was cut short before the record appeared
        record = self.record_path(job_id)
        if record is None:
            return None
        if record.name.endswith(SIDECAR_SUFFIX):
            beside = record.parent / path.name
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

    def record_path(self, job_id: str) -> Path | None:
        """The finished record of ``job_id`` in ``completed/`` or ``failed/``, if there is one."""
        for state in FINISHED_STATES:
            folder = self.layout.folder(state)
            for name in (job_id + SIDECAR_SUFFIX, job_id + ".json"):
                if os.path.lexists(folder / name):
                    return folder / name
        return None

    def remove_stale_temp_files(self, unnamed_older_than_s: float) -> int:
        """Delete execsvc's temporary files whose writer has died (a crash mid-write); return how many.

        The writer's pid is in the name (:func:`~execsvc.durable.temp_path_for`);
        a file being written by a live process is left alone. A temporary file
        that names no pid is removed once older than ``unnamed_older_than_s``.
        """
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

    # ----- helpers ------------------------------------------------------------------

    def _unique_id(self, stem: str) -> str:
        base = stem
        try:
            check_job_id(base)
        except InvalidJobId:
            base = sanitize_job_id(stem)
        candidate, n = base, 1
        while self.layout.id_in_use(candidate):
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def _pending_path(self, job_id: str) -> Path | None:
        """The job's file in ``pending/``, or in ``pending/.held/`` when it is held."""
        return self._find_entry(self.layout.pending, job_id) or self._find_entry(self.layout.held, job_id)

    def _find_entry(self, folder: Path, job_id: str) -> Path | None:
        for name in self.layout.record_names(job_id)[1:]:
            path = folder / name
            if os.path.lexists(path):
                return path
        return None

    def _entry_info(self, state: JobState, path: Path) -> JobInfo:
        stem, _suffix, kind = split_job_name(path.name)
        spec = _read_json_object(path) if kind == "json" else None
        status = JobStatus.PENDING if state is JobState.PENDING else JobStatus.RUNNING
        held = state is JobState.PENDING and path.parent == self.layout.held
        return JobInfo(
            job_id=stem,
            state=state,
            status=status,
            kind=kind,
            path=str(path),
            mtime=_mtime(path),
            spec=spec,
            held=held,
        )

    def _finished_info(self, state: JobState, job_id: str) -> JobInfo | None:
        folder = self.layout.folder(state)
        sidecar = folder / (job_id + SIDECAR_SUFFIX)
        try:
            if os.path.lexists(sidecar):
                side = SidecarRecord.model_validate_json(_read_record(sidecar))
                spec = _read_json_object(folder / side.job_file) if side.kind == "json" else None
                return JobInfo(
                    job_id=job_id,
                    state=state,
                    status=side.result.status,
                    kind=side.kind,
                    path=str(sidecar),
                    mtime=_mtime(sidecar),
                    spec=spec,
                    result=side.result,
                )
            record_path = folder / f"{job_id}.json"
            raw = json.loads(_read_record(record_path))
            if not isinstance(raw, dict) or "result" not in raw:
                return None
            result = JobResult.model_validate(raw.pop("result"))
        except (OSError, ValueError, RecursionError):  # missing, unreadable, not JSON, too deep, damaged result
            return None
        return JobInfo(
            job_id=job_id,
            state=state,
            status=result.status,
            kind="json",
            path=str(record_path),
            mtime=_mtime(record_path),
            spec=raw,
            result=result,
        )


def _unfinished_id(name: str, state: JobState) -> str | None:
    """The job id of a ``pending/``/``running/`` entry; ``None`` for a pending file the worker will refuse."""
    job_id, _suffix, kind = split_job_name(name)
    return None if state is JobState.PENDING and kind == "other" else job_id


def _now_iso() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="milliseconds")


def _create_note(path: Path, data: bytes) -> None:
    """Create ``path`` in place with ``data``; :class:`FileExistsError` if it exists.

    For a cancel request: the worker watches ``running/`` for names created
    there (not renamed into it: every claim is such a rename), and acts on
    the name alone, so a note seen half-written is harmless.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _same_file(path: str | Path, info: os.stat_result) -> bool:
    """Whether ``path`` (not followed) is the file ``info`` describes: another name of one inode."""
    try:
        other = os.lstat(path)
    except FileNotFoundError:
        return False
    return (other.st_ino, other.st_dev) == (info.st_ino, info.st_dev)


class _NameWatcher(FileSystemEventHandler):
    """Sets an event when a file whose name starts with the job id appears."""

    def __init__(self, job_id: str, changed: threading.Event) -> None:
        self._prefix = job_id
        self._changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        for path in (event.src_path, getattr(event, "dest_path", "")):
            name = os.path.basename(os.fsdecode(path))
            if name.startswith(self._prefix):
                self._changed.set()


_SPEC_MAX_BYTES = 1024 * 1024
_RECORD_MAX_BYTES = 64 * 1024 * 1024  # a record holds its job (at most 16 MB by default) and two output tails


def _read_record(path: Path) -> bytes:
    """A record's bytes; raises ``ValueError`` for anything but a regular file of sane size."""
    data = read_regular_file(path, _RECORD_MAX_BYTES)
    if data is None:
        raise ValueError(f"{path} is not a record file")
    return data


def _visible_entries(folder: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        for entry in entries:
            if not is_ignored_name(entry.name):
                yield entry


def _read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object shown as a job's spec; ``None`` for anything else, or a file above
    ``_SPEC_MAX_BYTES`` (an invalid job of 100 MB is not read each time a queue is listed)."""
    try:
        data = read_regular_file(path, _SPEC_MAX_BYTES)
        if data is None:
            return None
        raw = json.loads(data)
    except (OSError, ValueError, RecursionError):  # RecursionError: nested too deeply to parse
        return None
    return raw if isinstance(raw, dict) else None


def _mtime(path: Path) -> datetime:
    try:
        stamp = path.lstat().st_mtime
    except FileNotFoundError:
        stamp = time.time()
    return datetime.fromtimestamp(stamp, UTC).astimezone()
