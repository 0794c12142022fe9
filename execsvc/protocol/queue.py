"""The queue protocol as a client's Python API: submit, wait, cancel, hold, release, pause and
resume a group (docs/protocol.md), over :class:`~execsvc.protocol.listing.QueueReader`'s reads and
:class:`~execsvc.protocol.store.JobStore`'s claim and finish.

Pure file operations on one queue root; nothing here knows about MCP, the CLI or how
jobs are run. submit: the job appears in ``pending/`` whole or not at all (hidden temp
file, fsync, a rename to the final name that never replaces, folder fsync:
:func:`~execsvc.protocol.durable.write_durable`); an existing file is never replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from . import pauses
from .changes import folder_changes
from .durable import (
    append_line,
    move_no_replace,
    temp_path_for,
    write_durable,
)
from .errors import JobFileNameTaken, JobIdTaken, JobNotPending
from .jobfile import spec_if_valid, submitted_by
from .layout import (
    JOB_SUFFIXES,
    check_job_id,
)
from .listing import FINISHED_STATES, GET_PASSES
from .logline import event_line
from .models import CancelRequest, CancelSignal, JobInfo, JobResult, JobSpec, JobState, JobStatus
from .store import JobStore


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


def new_job_id() -> str:
    """A fresh, time-ordered job id: ``20261121-101400-3f9a1c2b`` (UTC time + random hex)."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


class JobQueue(JobStore):
    """One queue root and the operations of the protocol on it.

    ``JobQueue(root)`` creates the folders (mode 0700) if missing. Every
    method that takes a ``job_id`` raises :class:`~execsvc.protocol.errors.InvalidJobId`
    for ids the protocol does not allow.
    """

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

    def wait(self, job_id: str, timeout_s: float | None = None, *, until_ready: bool = False) -> JobInfo:
        """Block until the job is finished or ``timeout_s`` passes; return its latest state.

        With ``until_ready``, a running job that is ready (its ``ready_when`` met: a service
        up) also ends the wait. Woken by file events on ``completed/`` and ``failed/`` (and
        ``running/`` with ``until_ready``; no polling loop). Where they cannot be watched (the
        user's inotify instances used up, a folder that refuses a watch) it looks every
        :data:`POLL_S` seconds instead, saying so once in a warning of the ``execsvc`` logger.
        Raises :class:`JobNotFound` if the job is in no folder.
        """
        check_job_id(job_id)
        folders = [self.layout.folder(state) for state in FINISHED_STATES]
        if until_ready:
            folders.append(self.layout.running)
        with folder_changes(folders, "a job's end", name_prefix="" if until_ready else job_id) as changed:
            deadline = None if timeout_s is None else time.monotonic() + timeout_s
            while True:
                info = self.get(job_id)
                if info.state in FINISHED_STATES or (until_ready and info.ready):
                    return info
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return info
                changed(remaining)

    def cancel(
        self, job_id: str, *, requested_by: str = "a client", signal: CancelSignal = "SIGTERM", force: bool = False
    ) -> Cancellation:
        """Cancel a job (docs/protocol.md, "Timeouts and cancelling"); see :class:`Cancellation`.

        A pending job is claimed exactly as a worker claims it (so it can never
        also start) and finished at once with status ``cancelled``; the line
        ``cancelled`` is appended to ``daemon.log``. For a running job a request
        file ``running/.cancel.<id>`` is written, which the serving worker acts on
        by stopping the job's process group: ``signal`` (default SIGTERM; SIGKILL at
        once with ``force``), then SIGKILL after its grace period. Raises :class:`JobNotFound` for an unknown id and
        :class:`OSError` when the queue cannot be written.
        """
        check_job_id(job_id)
        for _pass in range(GET_PASSES):
            info = self.get(job_id)
            if info.state in FINISHED_STATES:
                return Cancellation("finished", info)
            if info.state is JobState.RUNNING:
                request = CancelRequest(
                    job_id=job_id,
                    requested_by=requested_by,
                    requested_at=_now_iso(),
                    signal="SIGKILL" if force else signal,
                    force=force,
                )
                with contextlib.suppress(FileExistsError):  # asked already: the worker acts on the first request
                    _create_note(self.layout.cancel_request(job_id), request.model_dump_json().encode())
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

    def pause_group(self, group: str, *, paused_by: str = "a client") -> bool:
        """Stop claims of ``group``'s jobs (docs/protocol.md, "Groups"); False if it was paused.
        Raises :class:`ValueError` for a name that is no group name, :class:`OSError` on a write."""
        return pauses.pause_group(self.layout, group, paused_by=paused_by)

    def resume_group(self, group: str) -> bool:
        """Let ``group``'s jobs be claimed again; False if it was not paused (see :meth:`pause_group`)."""
        return pauses.resume_group(self.layout, group)

    def paused_groups(self) -> frozenset[str]:
        """The groups paused now (``pending/.paused.<group>`` files)."""
        return pauses.paused_groups(self.layout)

    def hold(self, job_id: str) -> JobInfo:
        """Put a pending job on hold: it stays pending (in ``pending/.held/``) but is not started.

        One ``rename``, atomic even against a crash, so it races safely with a
        worker's claim: exactly one of the two wins. Holding a held job does
        nothing. Raises :class:`JobNotFound` for an unknown id,
        :class:`~execsvc.protocol.errors.JobNotPending` (a :class:`ValueError`) when the
        job has already started or finished, and
        :class:`~execsvc.protocol.errors.JobFileNameTaken` (a :class:`FileExistsError`)
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

        Moved with :func:`~execsvc.protocol.durable.move_no_replace`, so a new pending
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


def _now_iso() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="milliseconds")


def _create_note(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data``, whole; :class:`FileExistsError` if it exists.

    For a cancel request: the worker watches ``running/`` for names created
    there (not renamed into it: every claim is such a rename) and reads the
    request's signal, so the note is written to a hidden temporary name first
    and hard-linked into place (a link is a creation, and never replaces a name):
    the worker never sees it half-written.
    """
    tmp = temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
