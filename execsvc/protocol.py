"""The queue protocol as a Python API: submit, read, claim, finish (docs/protocol.md).

Pure file operations on one queue root; nothing here knows about MCP, the CLI
or how jobs are run. Clients (``queue_tools``, foreign Python code) use
:meth:`JobQueue.submit`, :meth:`~JobQueue.get`, :meth:`~JobQueue.list` and
:meth:`~JobQueue.wait`; the worker uses :meth:`~JobQueue.claim` and
:meth:`~JobQueue.finish`.

Guarantees, each on one file system:

- submit: the job appears in ``pending/`` whole or not at all (hidden temp
  file, fsync, a rename to the final name that never replaces, folder fsync:
  :func:`~execsvc.durable.write_durable`); an existing file is never replaced.
- claim: one rename from ``pending/`` into ``running/`` that never replaces
  (:func:`~execsvc.durable.move_no_replace`: ``renameat2(RENAME_NOREPLACE)`` on
  Linux, ``link`` then ``unlink`` where that call is missing). Both folders are
  fsync'd before :meth:`~JobQueue.claim` returns, or, with ``flush=False`` (the
  worker's way, by its flusher while the job starts), before the job's record
  is written (docs/protocol.md, "Order and claiming"). Where the move is
  ``link`` + ``unlink``, a crash between the two calls leaves
  one file under two names, which :meth:`JobQueue.settle_running` undoes (the
  job had not started).
  A claimed file that has other names (hard links) gets an inode of its own
  before it runs (:meth:`JobQueue.unshare`); one that is not the file the
  worker chose goes back to ``pending/`` unstarted (:meth:`JobQueue.unclaim`).
- finish: the record is durable in ``completed/`` or ``failed/`` before the
  job leaves ``running/``; no record or job file is ever overwritten.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import itertools
import json
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import ValidationError

from . import finish_index
from .durable import (
    TEMP_PREFIX,
    MovedAside,
    append_line,
    copy_over,
    fsync_dir,
    move_no_replace,
    read_regular_file,
    temp_file_writer,
    unlink_if_exists,
    write_durable,
)
from .errors import JobFileNameTaken, JobIdTaken, JobNotFound, JobNotPending
from .jobfile import ClaimedFile, spec_if_valid, submitted_by
from .layout import (
    CANCEL_PREFIX,
    JOB_SUFFIXES,
    SIDECAR_SUFFIX,
    QueueLayout,
    check_job_id,
    is_ignored_name,
    is_kept_name_of,
    job_id_problem,
    kept_name,
    numbered_job_id,
    readable_name,
    sanitize_job_id,
    split_job_name,
)
from .logline import event_line
from .models import JobInfo, JobKind, JobRecord, JobResult, JobSpec, JobState, JobStatus, SidecarRecord, WorkerInfo
from .schedule import peek

if TYPE_CHECKING:  # watchdog, psutil and logging are imported where they are used: a client that submits needs none
    import logging

    from watchdog.observers.api import BaseObserver

FINISHED_STATES = (JobState.COMPLETED, JobState.FAILED)
_GET_PASSES = 8
"""Most lookups of one job in get(); each further pass means it moved while being looked up."""
_EMPTY_PASS_PAUSES_S = (0.0, 0.001, 0.005, 0.02)
"""The pauses in get() after each pass that found a job nowhere; after the last, it is missing (see get())."""


def _not_observer_stop(record: logging.LogRecord) -> bool:
    return "called when the thread is inactive" not in record.getMessage()


def quiet_observer_stop() -> None:
    """Drop watchdog's "queue_events() called when the thread is inactive": an ERROR it logs
    when an observer is stopped while its emitter is mid-read. Harmless, but with no logging
    configured Python prints it on the user's terminal. Called before an observer is made;
    calling it again changes nothing."""
    import logging

    logging.getLogger("watchdog.observers.inotify").addFilter(_not_observer_stop)


POLL_S = 0.5
"""How often a client looks at the queue when its folders cannot be watched (seconds)."""


@contextmanager
def folder_changes(
    folders: Sequence[Path], what: str, *, name_prefix: str = ""
) -> Iterator[Callable[[float | None], None]]:
    """Watch ``folders``; inside, ``changed(timeout_s)`` blocks until a file event in them names a
    file or folder whose name starts with ``name_prefix`` (``""``: any), or ``timeout_s`` seconds
    pass (``None``: no limit). Events while nobody waits are kept for the next call.

    Where the folders cannot be watched (no inotify instance left: EMFILE; a folder that
    refuses a watch) ``changed`` returns at least every :data:`POLL_S` seconds instead, and a
    warning of the ``execsvc`` logger says so once, naming ``what`` was to be watched for.
    The watch starts before the body runs, so a change right after entering is not missed.
    """
    import logging

    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    event = threading.Event()

    class Wake(FileSystemEventHandler):
        def on_any_event(self, seen: FileSystemEvent) -> None:
            paths = (seen.src_path, getattr(seen, "dest_path", ""))
            if not name_prefix or any(os.path.basename(os.fsdecode(path)).startswith(name_prefix) for path in paths):
                event.set()

    quiet_observer_stop()
    observer: BaseObserver | None = None
    try:
        observer = Observer()  # may take an inotify instance already
        for folder in folders:
            observer.schedule(Wake(), str(folder))
        observer.start()
    except OSError as exc:
        if observer is not None:
            observer.stop()  # never started: stops the watches that did start and its inotify reader
        observer = None
        logging.getLogger("execsvc").warning(
            "execsvc: cannot watch the queue for %s (%s); looking every %g s instead", what, exc.strerror or exc, POLL_S
        )

    def changed(timeout_s: float | None) -> None:
        if observer is None:
            timeout_s = POLL_S if timeout_s is None else min(timeout_s, POLL_S)
        event.wait(timeout_s)
        event.clear()

    try:
        yield changed
    finally:
        if observer is not None:
            observer.stop()
            observer.join()


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

    def get(self, job_id: str, *, patient: bool = True) -> JobInfo:
        """The job with this id, wherever it is; raises :class:`JobNotFound` if nowhere.

        The folders are read in the order a job travels (pending, held,
        running, finished), and read again if the job left ``running/`` while
        its record was being looked for. Two moves go back along that order, a
        release (held to pending) and a retry (running to pending), so a job
        moved back between two looks is in none of the folders as they were
        read: a pass that finds the job nowhere is made again after a pause
        growing to 20 ms, and the job is reported missing only after five such
        passes (each miss needs the job to move during that very pass; the
        pauses keep one slow moment of this process from spoiling them all).
        So a missing job costs about 26 ms, a job that exists none of that;
        ``patient=False`` makes the passes without pausing (for a caller that
        must not block and confirms a miss itself later, as the worker's
        scheduler does).
        A finished record wins over a copy still in ``running/`` (the moment
        between the record becoming durable and the job leaving).
        """
        check_job_id(job_id)
        empty_passes = 0
        for _pass in range(_GET_PASSES + len(_EMPTY_PASS_PAUSES_S)):
            pending = self._pending_path(job_id)
            if pending is not None:
                return self._entry_info(JobState.PENDING, pending)
            running = self._find_entry(self.layout.running, job_id)
            for state in FINISHED_STATES:
                info = self._finished_info(state, job_id)
                if info is not None:
                    return info
            if running is None:
                if empty_passes == len(_EMPTY_PASS_PAUSES_S):
                    break
                if patient:
                    time.sleep(_EMPTY_PASS_PAUSES_S[empty_passes])
                empty_passes += 1
            elif os.path.lexists(running):
                return self._entry_info(JobState.RUNNING, running)
            # Moved back to pending/ meanwhile, or finished after its record was looked for: look again.
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
        loop). Where they cannot be watched (the user's inotify instances used
        up, a folder that refuses a watch) it looks every :data:`POLL_S` seconds
        instead, saying so once in a warning of the ``execsvc`` logger.
        Raises :class:`JobNotFound` if the job is in no folder.
        """
        check_job_id(job_id)
        finished = [self.layout.folder(state) for state in FINISHED_STATES]
        with folder_changes(finished, "a job's end", name_prefix=job_id) as changed:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while True:
                info = self.get(job_id)
                if info.state in FINISHED_STATES:
                    return info
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return info
                changed(remaining)

    def worker_info(self) -> WorkerInfo | None:
        """The worker serving this queue (from ``worker.json``), or ``None`` if none is alive."""
        try:
            data = read_regular_file(self.layout.worker_file, _SPEC_MAX_BYTES)  # a FIFO there: no wait
            if data is None:
                return None
            info = WorkerInfo.model_validate_json(data)
        except (OSError, ValidationError):
            return None
        import psutil

        try:
            proc = psutil.Process(info.pid)
            if abs(proc.create_time() - info.started_at.timestamp()) > 5:
                return None  # the pid was reused by another process
        except psutil.Error:
            return None
        return info

    # ----- cancelling -----------------------------------------------------------------

    def cancel(self, job_id: str, *, requested_by: str = "a client") -> Cancellation:
        """Cancel a job (docs/protocol.md, "Timeouts and cancelling"); see :class:`Cancellation`.

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
            self.unshare(claimed, Path(info.path).name)  # what is kept, and may be retried, is the queue's own
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
            with contextlib.suppress(OSError):  # one O_APPEND line; never interleaves with the worker's
                append_line(self.layout.daemon_log, event_line("WARNING", "cancelled", claimed.job_id, reason=error))
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
        :class:`~execsvc.errors.JobNotPending` (a :class:`ValueError`) when the
        job has already started or finished, and
        :class:`~execsvc.errors.JobFileNameTaken` (a :class:`FileExistsError`)
        when a held file already has its name.
        """
        check_job_id(job_id)
        info = self.get(job_id)
        if info.held:
            return info
        if info.state is not JobState.PENDING:
            raise JobNotPending(f"job {job_id!r} is {info.state.value}; only a pending job can be held")
        source = Path(info.path)
        target = self.layout.ensure_held() / source.name
        if os.path.lexists(target):
            raise JobFileNameTaken(errno.EEXIST, "a held job already has this name", str(target))
        try:
            os.rename(source, target)
        except FileNotFoundError:
            now = self.get(job_id)
            raise JobNotPending(f"job {job_id!r} is {now.state.value}; it started before it could be held") from None
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
        a durable private copy (:func:`~execsvc.durable.copy_over`, same
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

    def claim_folders(self) -> builtins.list[Path]:
        """The folders a claim changes, in the order they must be flushed (see :meth:`flush_claims`)."""
        return [self.layout.running, self.layout.pending]

    def finish(self, job: ClaimedJob, result: JobResult, spec: JobSpec | None) -> Path:
        """Record a claimed job's result and move it out of ``running/``; return the record's path.

        ``completed/`` when ``result.status`` is ``completed``, else ``failed/``.
        A JSON job with a valid ``spec`` becomes its own record (the job's
        fields plus ``result``); anything else keeps its file untouched with an
        ``<id>.result.json`` record beside it. The record is durable before
        the job leaves ``running/``. No name collision refuses a record: when
        another file already has the job file's name beside the record (or
        ``<id>.json``, for a JSON job), the job file is kept under a free
        hidden name (:func:`~execsvc.layout.kept_name`), named by the
        sidecar record's ``job_file`` and said in ``result.note``; a stray file
        with the record's own name, ``<id>.result.json``, is moved aside to a
        hidden name first (:meth:`_move_stray_aside`). Raises
        :class:`OSError` when the folders cannot be written.
        """
        folder = self.layout.completed if result.status is JobStatus.COMPLETED else self.layout.failed
        if spec is not None and job.kind == "json":
            record = JobRecord.model_validate({**spec.model_dump(exclude_unset=True), "result": result})
            path = folder / f"{job.job_id}.json"
            try:
                written = write_durable(path, record.model_dump_json(exclude_unset=True, indent=2).encode("utf-8"))
            except FileExistsError:  # another file has the record's name: keep the job beside a sidecar record
                return self._finish_beside(job, result, folder)
            self._index(folder, job.job_id, written)
            unlink_if_exists(job.path)
            return path
        return self._finish_beside(job, result, folder)

    def _finish_beside(self, job: ClaimedJob, result: JobResult, folder: Path) -> Path:
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
                written = write_durable(path, self._sidecar(job, result, folder, name))
            except FileExistsError:  # a stray took the record's own name while the job ran
                self._move_stray_aside(folder, path.name, result)
                written = write_durable(path, self._sidecar(job, result, folder, name))
        except BaseException:
            unlink_if_exists(folder / name)
            raise
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

    def running_jobs(self) -> builtins.list[tuple[str, Path]]:
        """(job id, path) of every entry in ``running/``."""
        return [(split_job_name(entry.name)[0], Path(entry.path)) for entry in _visible_entries(self.layout.running)]

    def settle_running(self, job_id: str, path: Path) -> str | None:
        """Tidy a ``running/`` entry left by a worker that stopped; say what was done.

        Returns ``"retried"`` when the job's next attempt is already pending
        (a :meth:`requeue` cut short: the ``running/`` copy is removed),
        ``"unclaimed"`` when the claim never completed (the same file is
        still in ``pending/`` under the name it was claimed from, and the job
        has no output log, so it never started: the ``running/`` name is
        removed and the job stays pending; a file with another name there is
        another job, see :meth:`unshare`), ``"finished"`` when its
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
            if not os.path.lexists(self.layout.stdout_log(job_id)):  # made before its process starts
                for entry in _visible_entries(self.layout.pending):
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

    # ----- helpers ------------------------------------------------------------------

    def _unique_id(self, stem: str) -> str:
        """``stem`` if it is a valid id not in use, else the first of ``<id>-2``, ``<id>-3``... that
        is free (:func:`~execsvc.layout.numbered_job_id`: valid too), ``<id>`` being ``stem`` made valid."""
        base = _id_base(stem)
        candidate, n = base, 1
        while self.layout.id_in_use(candidate):
            n += 1
            candidate = numbered_job_id(base, n)
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


def _id_base(stem: str) -> str:
    """The id a claim gives the file ``<stem><suffix>`` when that id is free (see ``_unique_id``)."""
    return stem if job_id_problem(stem) is None else sanitize_job_id(stem)


def _claimed_as(pending_name: str, running_name: str) -> bool:
    """Whether a claim of ``pending/<pending_name>`` may have named the job ``running/<running_name>``:
    the same ending, and its id, or that id with ``-<n>`` (``_unique_id``)."""
    stem, suffix, _kind = split_job_name(pending_name)
    running_id, running_suffix, _kind = split_job_name(running_name)
    if suffix != running_suffix:
        return False
    base = _id_base(stem)
    number = running_id[len(base) + 1 :]
    return running_id == base or (running_id.startswith(f"{base}-") and number.isdigit())


def _free_name(folder: Path, name: str, first: int = 1) -> str:
    """``name`` if nothing in ``folder`` has it (tried when ``first`` is 1), else the first free
    :func:`~execsvc.layout.kept_name` from number ``max(first, 2)`` on."""
    if first <= 1 and not os.path.lexists(folder / name):
        return name
    for n in itertools.count(max(first, 2)):
        kept = kept_name(name, n)
        if not os.path.lexists(folder / kept):
            return kept
    raise AssertionError("unreachable")


def _twins(folder: Path, name: str) -> builtins.list[Path]:
    """``folder/<name>`` and every :func:`~execsvc.layout.kept_name` of it there (a finish may
    have linked the job file under either); the folder is read only when ``name`` is taken."""
    twins = [folder / name]
    if os.path.lexists(twins[0]):
        twins += [Path(entry.path) for entry in os.scandir(folder) if is_kept_name_of(entry.name, name)]
    return twins


def _sidecar_job_file(record: Path) -> str | None:
    """The ``job_file`` a sidecar record names, if it can be read and is a plain name."""
    try:
        name = SidecarRecord.model_validate_json(_read_record(record)).job_file
    except (OSError, ValueError):
        return None
    return name if name and "/" not in name and name not in (".", "..") else None


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
