"""Records made durable in groups: one ``fsync`` per folder for many records (docs/reliability.md).

:meth:`~execsvc.protocol.store.JobStore.finish` with a :class:`RecordBatch` writes each record
as it always does (temporary file, ``fsync`` of the file, a rename that never replaces) but
leaves three steps to :meth:`RecordBatch.commit`: the ``fsync`` of ``completed/`` and
``failed/`` (once each for the whole batch), the finish-time index lines (one append per
folder) and the removal of the jobs' files from ``running/``. A job leaves ``running/`` only
once its record's name is on disk, so a crash or a power cut before the commit leaves the job
in ``running/``, which the next start settles from its record (``finished``) or, when the
record's name did not reach the disk, records ``interrupted``: never run again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from . import finish_index
from .durable import MovedAside, fsync_dir


@dataclass
class RecordBatch:
    """What :meth:`~execsvc.protocol.store.JobStore.finish` left to one commit: the folders to
    flush, the index lines per folder, and the ``running/`` files to remove, in order."""

    folders: dict[Path, list[tuple[str, os.stat_result]]] = field(default_factory=dict)
    removals: list[Path] = field(default_factory=list)

    def add(self, folder: Path, job_id: str, record: os.stat_result, running: Path | None) -> None:
        """Note ``job_id``'s record in ``folder`` (its ``stat``) and the job's ``running/`` file to
        remove after the commit (``None``: nothing to remove)."""
        self.folders.setdefault(folder, []).append((job_id, record))
        if running is not None:
            self.removals.append(running)

    def commit(self) -> tuple[list[MovedAside], list[tuple[Path, OSError]]]:
        """Flush each folder once, append its index lines in one write, then remove the jobs' files
        from ``running/``. Returns what the index's opening moved aside and the removals that
        failed (the job then stays in ``running/`` and is settled as ``finished`` at the next start).
        Raises :class:`OSError` when a folder cannot be flushed (nothing removed; the commit may be
        tried again)."""
        for folder in self.folders:
            fsync_dir(folder)
        moved = [
            aside
            for folder, records in self.folders.items()
            if (aside := finish_index.append_many(folder, records)) is not None
        ]
        failed: list[tuple[Path, OSError]] = []
        for path in self.removals:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                failed.append((path, exc))
        self.folders, self.removals = {}, []
        return moved, failed
