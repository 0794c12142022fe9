"""Removing or archiving old finished jobs: ``execsvc clean`` and the worker's daily retention.

A finished job is its record, the job file beside a sidecar record (the one the record
names; when the record cannot be read, every file named by the job's id), its
two logs, its ``on_finish`` logs and its earlier attempts' records and logs.
They go (or move to an archive folder) logs first and record last,
so a clean cut short leaves a job that can still be listed and cleaned again,
never a log without its record.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .protocol import FINISHED_STATES, JobStore, finish_index
from .protocol.durable import read_regular_file
from .protocol.layout import JOB_SUFFIXES, SIDECAR_SUFFIX, is_kept_name_of
from .protocol.models import JobState, SidecarRecord

_SIDECAR_MAX_BYTES = 64 * 1024 * 1024  # as execsvc.protocol reads records


@dataclass
class CleanReport:
    """What :func:`clean` did (or, with ``dry_run``, would do): job ids per state, bytes freed."""

    removed: dict[str, list[str]] = field(default_factory=dict)
    bytes_freed: int = 0
    archive: str | None = None

    @property
    def count(self) -> int:
        return sum(len(ids) for ids in self.removed.values())


def clean(
    queue: JobStore,
    *,
    older_than_s: float,
    states: tuple[JobState, ...] = FINISHED_STATES,
    archive: Path | None = None,
    dry_run: bool = False,
) -> CleanReport:
    """Remove (or move under ``archive/<state>/``) finished jobs that ended over ``older_than_s`` ago.

    Only ``completed`` and ``failed`` jobs are touched; others in ``states``
    raise :class:`ValueError`. Raises :class:`OSError` when a file cannot be
    removed or moved (what was done before stays done).
    """
    if any(state not in FINISHED_STATES for state in states):
        raise ValueError("only finished jobs (completed, failed) can be cleaned")
    cutoff_ns = time.time_ns() - int(older_than_s * 1e9)
    report = CleanReport(archive=str(archive) if archive else None)
    for state in states:
        ids = report.removed.setdefault(state.value, [])
        for entry in queue.entries(state, use_index=False):  # the files' own times: once a day, exact
            if entry.mtime_ns >= cutoff_ns:
                continue
            files = _files_of(queue, entry.job_id, Path(entry.path))
            report.bytes_freed += sum(_size(path) for path in files)
            ids.append(entry.job_id)
            if dry_run:
                continue
            target = archive / state.value if archive else None
            if target is not None:
                target.mkdir(parents=True, exist_ok=True, mode=0o700)
            for path in files:  # the record is last
                if target is None:
                    path.unlink(missing_ok=True)
                elif path.exists() or path.is_symlink():
                    shutil.move(path, target / path.name)
        if ids and not dry_run:
            _compact_index(queue, state)
    return report


def _compact_index(queue: JobStore, state: JobState) -> None:
    """Rewrite the folder's finish-time index without the jobs no longer there (see
    :mod:`.finish_index`; a line the worker appends meanwhile may be lost, which costs a
    listing one ``stat``)."""
    folder = queue.layout.folder(state)
    present = {entry.job_id for entry in queue.entries(state)}
    kept = [(job_id, mtime_ns, inode) for job_id, (mtime_ns, inode) in finish_index.read(folder).items()]
    finish_index.rewrite(folder, [line for line in kept if line[0] in present])


def _files_of(queue: JobStore, job_id: str, record: Path) -> list[Path]:
    layout = queue.layout
    files = [layout.stdout_log(job_id), layout.stderr_log(job_id)]
    files += [layout.hook_log(job_id, stream) for stream in ("stdout", "stderr")]
    attempt = 1
    while os.path.lexists(layout.attempt_record(job_id, attempt)):  # the records and output of retried attempts
        files += [layout.attempt_log(job_id, attempt, "stdout"), layout.attempt_log(job_id, attempt, "stderr")]
        files.append(layout.attempt_record(job_id, attempt))
        attempt += 1
    if record.name.endswith(SIDECAR_SUFFIX):
        try:
            job_file = _job_file_beside(record)
        except (OSError, ValueError):
            job_file = None
        if job_file is not None:
            files.append(record.parent / job_file)
        else:  # a record that cannot be read: the job's files by name, so none is left without its record
            files += [record.parent / name for name in layout.record_names(job_id)[1:]]
            files += [record.parent / name for name in _kept_names(record.parent, job_id)]
    files.append(record)
    return [path for path in files if os.path.lexists(path)]


def _kept_names(folder: Path, job_id: str) -> list[str]:
    """Names in ``folder`` that :func:`~execsvc.protocol.layout.kept_name` gives a file of job ``job_id``."""
    own = [job_id + suffix for suffix in ("", *JOB_SUFFIXES)]
    with os.scandir(folder) as entries:
        return [entry.name for entry in entries if any(is_kept_name_of(entry.name, name) for name in own)]


def _job_file_beside(record: Path) -> str | None:
    data = read_regular_file(record, _SIDECAR_MAX_BYTES)  # never a FIFO waited on, nor a link followed
    if data is None:
        return None
    name = SidecarRecord.model_validate_json(data).job_file
    return name if name and "/" not in name and name not in (".", "..") else None


def _size(path: Path) -> int:
    try:
        return path.lstat().st_size
    except FileNotFoundError:
        return 0
