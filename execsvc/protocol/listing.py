"""Reading a queue: one job by id, the jobs in a state, listings from folder entries and the
finish-time index (docs/protocol.md, "Layout", "Finishing"). Nothing here writes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from . import finish_index
from .durable import (
    read_regular_file,
)
from .errors import JobNotFound
from .layout import (
    SIDECAR_SUFFIX,
    QueueLayout,
    check_job_id,
    is_ignored_name,
    split_job_name,
)
from .models import JobInfo, JobResult, JobState, JobStatus, SidecarRecord, WorkerInfo

FINISHED_STATES = (JobState.COMPLETED, JobState.FAILED)


GET_PASSES = 8
"""Most lookups of one job in get(); each further pass means it moved while being looked up."""


_EMPTY_PASS_PAUSES_S = (0.0, 0.001, 0.005, 0.02)
"""The pauses in get() after each pass that found a job nowhere; after the last, it is missing (see get())."""


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


class QueueReader:
    """One queue root, read: :meth:`get`, :meth:`jobs`, :meth:`entries`, :meth:`worker_info`.

    ``QueueReader(root)`` creates the folders (mode 0700) if missing (``create=False``: it
    does not). Every method that takes a ``job_id`` raises
    :class:`~execsvc.protocol.errors.InvalidJobId` for ids the protocol does not allow.
    """

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.layout = QueueLayout.at(root)
        if create:
            self.layout.ensure()

    @property
    def root(self) -> Path:
        return self.layout.root

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
        between the record becoming durable and the job leaving). A running job's
        ``ready`` says whether its ``ready_when`` was met (``running/.ready.<id>``).
        """
        check_job_id(job_id)
        empty_passes = 0
        for _pass in range(GET_PASSES + len(_EMPTY_PASS_PAUSES_S)):
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
                info = self._entry_info(JobState.RUNNING, running)
                info.ready = os.path.lexists(self.layout.ready_mark(job_id))
                return info
            # Moved back to pending/ meanwhile, or finished after its record was looked for: look again.
        raise JobNotFound(f"no job with id {job_id!r} in queue {self.root}")

    def jobs(self, state: JobState | str) -> list[JobInfo]:
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

    def entries(self, state: JobState | str, *, use_index: bool = True) -> list[JobEntry]:
        """Every job in one state from names and ``stat`` alone, in no order; no job file is read.

        Scales to large histories: one ``scandir``, then one ``stat`` per
        pending or running job, and per finished job only where the folder's
        finish-time index (:mod:`.finish_index`) does not know its record
        (the index holds the time each record was written: a record touched
        since keeps its place; ``use_index=False`` takes every time from
        ``stat``); read the jobs you show with :meth:`get`. Pending entries with an
        unknown ending (which the worker will refuse) are left out, as in
        :meth:`jobs`.
        """
        state = JobState(state)
        if state in FINISHED_STATES:
            return self._finished_entries(state, use_index)
        with os.scandir(self.layout.folder(state)) as scan:
            dir_entries = [entry for entry in scan if not is_ignored_name(entry.name)]
        if state is JobState.PENDING and os.path.isdir(self.layout.held):
            with os.scandir(self.layout.held) as scan:
                dir_entries += [entry for entry in scan if not is_ignored_name(entry.name)]
        found: list[JobEntry] = []
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

    def _finished_entries(self, state: JobState, use_index: bool) -> list[JobEntry]:
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
        found: list[JobEntry] = []
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

    def record_path(self, job_id: str) -> Path | None:
        """The finished record of ``job_id`` in ``completed/`` or ``failed/``, if there is one."""
        for state in FINISHED_STATES:
            folder = self.layout.folder(state)
            for name in (job_id + SIDECAR_SUFFIX, job_id + ".json"):
                if os.path.lexists(folder / name):
                    return folder / name
        return None

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
                side = SidecarRecord.model_validate_json(read_record(sidecar))
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
            raw = json.loads(read_record(record_path))
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


_SPEC_MAX_BYTES = 1024 * 1024


_RECORD_MAX_BYTES = 64 * 1024 * 1024  # a record holds its job (at most 16 MB by default) and two output tails


def read_record(path: Path) -> bytes:
    """A record's bytes; raises ``ValueError`` for anything but a regular file of sane size."""
    data = read_regular_file(path, _RECORD_MAX_BYTES)
    if data is None:
        raise ValueError(f"{path} is not a record file")
    return data


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


def visible_entries(folder: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        for entry in entries:
            if not is_ignored_name(entry.name):
                yield entry
