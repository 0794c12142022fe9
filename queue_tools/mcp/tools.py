"""The MCP tools as plain methods over one queue root (testable without MCP).

Each tool returns a pydantic model (:mod:`.answers`, :mod:`queue_tools.api.models`);
the server sends it without null fields, as compact JSON text beside the same
``structuredContent``. Errors a user can act on are raised as :class:`ToolError`
sentences (:func:`.errors.user_errors`).
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, ConfigDict, Field

from execsvc.protocol.errors import UnsafeQueue
from execsvc.protocol.models import MAX_DELAY_S, MAX_RETRIES, CancelSignal, JobLimits, JobSpec, JobState, JobStatus
from execsvc.protocol.queue import JobQueue

from .. import api
from ..api import lines as output
from ..api import search as searching
from ..submit import scheduling_fields
from .answers import CancelAnswer, JobAnswer, SchedulesAnswer, job_answer, worker_started_note
from .autostart import Started, ensure_worker
from .errors import cancel_message, user_errors

logger = logging.getLogger("execsvc.mcp")

MAX_WAIT_S = 50.0
"""Longest a tool call waits for a job (seconds): under common clients' request timeouts."""
CANCEL_WAIT_S = api.CANCEL_WAIT_S
"""How long ``cancel_job`` waits for a running job to be stopped and recorded (seconds)."""
PROGRESS_EVERY_S = 2.0
"""Seconds between progress notifications while a tool waits for a job."""
PAGE_BYTES = 16 * 1024
"""Bytes of output ``get_job_output`` returns by default."""
PAGE_MAX_BYTES = 64 * 1024
"""Most bytes of output one ``get_job_output`` answer holds."""

JobId = str  # checked by the protocol (InvalidJobId says what is wrong)
Verbose = Annotated[bool, Field(description="Add the full record")]
StreamName = Literal["stdout", "stderr"]


class SandboxSpec(BaseModel):
    """Where a sandboxed job may reach: network access, and folders writable, hidden or read-only."""

    model_config = ConfigDict(defer_build=True)

    network: bool | None = None
    writable: list[str] | None = None
    hidden: list[str] | None = None
    readable_only: list[str] | None = None


class QueueTools:
    """The tools over the queue at ``root``. ``job_cwd``: the folder jobs run in unless they name
    one; ``auto_start``: start a worker when none serves the queue (:mod:`.autostart`)."""

    def __init__(self, root: Path, *, job_cwd: Path | None = None, auto_start: bool = False) -> None:
        self.root = root
        self.job_cwd = job_cwd
        self.auto_start = auto_start
        self._started: Started | None = None  # told in the next job answer, then forgotten

    def queue(self) -> JobQueue:
        try:
            return JobQueue(self.root)
        except UnsafeQueue as exc:
            raise ToolError(str(exc)) from exc
        except OSError as exc:
            raise ToolError(
                f"the queue folder {self.root} cannot be created or opened ({exc.strerror or exc}); "
                "check its permissions, or point EXECSVC_QUEUE_DIR / --queue-dir at a writable folder"
            ) from exc

    def start_worker_if_needed(self) -> Started | None:
        """With auto-start on, start a worker when none serves the queue (remembered for the next answer)."""
        if not self.auto_start:
            return None
        started = ensure_worker(self.queue())
        if started is not None:
            self._started = started
        return started

    def answer(self, q: JobQueue, detail: api.JobDetail, verbose: bool = False) -> JobAnswer:
        """The job's compact answer, with the note of a worker this server started."""
        answer = job_answer(q, detail, verbose=verbose)
        started, self._started = self._started, None
        if started is not None:
            said = (
                worker_started_note(started.pid, started.how)
                if started.problem is None
                else f"no worker was serving the queue and starting one failed: {started.problem}"
            )
            answer.note = f"{said}; {answer.note}" if answer.note else said
        if not detail.finished and q.worker_info() is None:
            kept = [part for part in (answer.note or "").split("; ") if part and "no worker is serving" not in part]
            answer.note = _no_worker_note("; ".join(kept) or None)
        return answer

    async def wait_and_report(self, job_id: str, timeout_s: float, ctx: Context) -> api.JobDetail:
        """Wait on file events in a thread, sending a progress notification every few seconds.
        Returns at once (``no_worker`` in the note) when no worker serves the queue."""
        q = self.queue()
        waited = 0.0
        while True:
            if q.worker_info() is None:
                with user_errors(self.root):
                    return api.get_job(q, job_id)
            step = min(PROGRESS_EVERY_S, max(0.0, timeout_s - waited))
            with user_errors(self.root):
                detail = await anyio.to_thread.run_sync(partial(api.wait_for_job, q, job_id, step))
            waited += step
            if detail.finished or detail.ready or waited >= timeout_s:
                return detail
            await ctx.report_progress(waited, timeout_s, f"job {job_id} is {detail.state.value}")

    async def enqueue_job(
        self,
        ctx: Context,
        command: Annotated[str, Field(min_length=1, description="Shell command line, or a program when args is given")],
        args: Annotated[list[str] | None, Field(description="Arguments: command then runs without a shell")] = None,
        cwd: Annotated[
            str | None, Field(description="Folder the job runs in (default: see the tool description)")
        ] = None,
        env: Annotated[dict[str, str] | None, Field(description="Variables added to the environment")] = None,
        stdin: Annotated[str | None, Field(description="Text fed to standard input")] = None,
        timeout_s: Annotated[
            float | Literal["none"] | None, Field(description='Seconds before it is stopped; "none": never')
        ] = None,
        wait_s: Annotated[
            float,
            Field(ge=0, le=MAX_WAIT_S, description="Seconds to wait for the result, at most 50; 0: return at once"),
        ] = 0,
        description: Annotated[str | None, Field(description="What the job is for, shown in listings")] = None,
        priority: Annotated[int | None, Field(description="Higher starts first among ready jobs; default 0")] = None,
        after: Annotated[list[str] | None, Field(description="Job ids that must finish first")] = None,
        after_mode: Annotated[
            Literal["success", "any"] | None,
            Field(description="success (default): cancelled unless all after jobs completed; any: just finished"),
        ] = None,
        delay_s: Annotated[float | None, Field(ge=0, le=MAX_DELAY_S, description="Seconds before it may start")] = None,
        not_before: Annotated[str | None, Field(description="ISO 8601 time before which it does not start")] = None,
        retries: Annotated[int | None, Field(ge=0, le=MAX_RETRIES, description="Attempts after a failure")] = None,
        retry_delay_s: Annotated[
            float | None, Field(ge=0, le=MAX_DELAY_S, description="Seconds before the first retry, doubled each time")
        ] = None,
        limits: Annotated[JobLimits | None, Field(description="cpu_s, memory_mb, open_files, processes")] = None,
        on_finish: Annotated[str | None, Field(description="Shell line run after it, $EXECSVC_RECORD set")] = None,
        webhook: Annotated[str | None, Field(description="http(s) URL the record is POSTed to")] = None,
        sandbox: Annotated[
            bool | SandboxSpec | None, Field(description="true, or {network, writable, hidden, readable_only}")
        ] = None,
        shell: Annotated[bool | None, Field(description="Force (true) or forbid (false) /bin/sh -c")] = None,
        restart: Annotated[Literal["on-failure", "always"] | None, Field(description="Restarted when it ends")] = None,
        group: Annotated[str | None, Field(description="Group: its own slots")] = None,
        verbose: Verbose = False,
    ) -> JobAnswer:
        q = self.queue()
        spec = self._spec(
            command=command,
            args=args,
            shell=shell,
            cwd=cwd,
            env=env,
            stdin=stdin,
            timeout_s=timeout_s,
            description=description,
            restart=restart,
            **scheduling_fields(
                priority=priority,
                after=after,
                after_mode=after_mode,
                not_before=not_before,
                delay_s=delay_s,
                retries=retries,
                retry_delay_s=retry_delay_s,
                on_finish=on_finish,
                webhook=webhook,
                group=group,
            ),
            limits=limits.model_dump(exclude_none=True) if limits is not None else None,
            sandbox=sandbox.model_dump(exclude_none=True) if isinstance(sandbox, SandboxSpec) else sandbox,
        )
        with user_errors(self.root):
            api.check_after(q, after)
            checked = JobSpec.model_validate(spec)
            api.check_policy(q, checked)
        await anyio.to_thread.run_sync(self.start_worker_if_needed)
        with user_errors(self.root):
            job_id = q.submit(checked)
        logger.info("enqueued job %s", job_id)
        return await self._enqueued(ctx, q, job_id, wait_s, verbose)

    async def _enqueued(self, ctx: Context, q: JobQueue, job_id: str, wait_s: float, verbose: bool) -> JobAnswer:
        """The answer for a job just enqueued: from here on it says so, never isError (a retry would
        enqueue it twice)."""
        try:
            if wait_s > 0:
                return self.answer(q, await self.wait_and_report(job_id, wait_s, ctx), verbose)
            with user_errors(self.root):
                return self.answer(q, api.get_job(q, job_id), verbose)
        except Exception as exc:
            logger.warning("enqueued job %s, but reading it back failed: %s", job_id, exc)
            return JobAnswer(
                job_id=job_id,
                status=JobStatus.PENDING,
                note=f"the job was enqueued as {job_id}, but reading it back failed ({exc}); "
                f"do not enqueue it again: get_job shows where it stands",
            )

    def _spec(self, **fields: Any) -> dict[str, Any]:
        """The JSON job: the given fields, ``submitted_by: mcp``, and the server's folder as ``cwd``."""
        spec = {key: value for key, value in fields.items() if value is not None}
        if spec.get("timeout_s") == "none":  # no timeout: "timeout_s": null in the job (docs/protocol.md, "Services")
            spec["timeout_s"] = None
        spec["submitted_by"] = "mcp"
        if "cwd" not in spec and self.job_cwd is not None:
            spec["cwd"] = str(self.job_cwd)
        return spec

    def get_job(self, job_id: JobId, verbose: Verbose = False) -> JobAnswer:
        q = self.queue()
        with user_errors(self.root):
            return self.answer(q, api.get_job(q, job_id), verbose)

    def list_jobs(
        self,
        state: Annotated[
            Literal["pending", "running", "completed", "failed"] | None,
            Field(description="Only jobs in this state (failed includes timeout, cancelled, interrupted, invalid)"),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="Jobs per page, at most 200")] = 20,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page")] = None,
    ) -> api.JobPage:
        states = (JobState(state),) if state else tuple(JobState)
        with user_errors(self.root):
            return api.list_jobs(self.queue(), states=states, limit=limit, cursor=cursor)

    def get_job_output(
        self,
        job_id: JobId,
        stream: Annotated[StreamName, Field(description="stdout (default) or stderr")] = "stdout",
        head: Annotated[int | None, Field(ge=1, description="The first N lines")] = None,
        tail: Annotated[int | None, Field(ge=1, description="The last N lines")] = None,
        from_line: Annotated[int | None, Field(ge=1, description="First line to return, numbered from 1")] = None,
        lines: Annotated[int | None, Field(ge=1, description="Lines to return from from_line")] = None,
        offset: Annotated[int | None, Field(ge=0, description="Byte offset to read from (next_offset)")] = None,
        max_bytes: Annotated[
            int, Field(ge=1, le=PAGE_MAX_BYTES, description="Most bytes of text returned, at most 65536")
        ] = PAGE_BYTES,
    ) -> api.OutputPage:
        with user_errors(self.root):
            return output.read_page(
                self.queue(),
                job_id,
                stream,
                head=head,
                tail=tail,
                from_line=from_line,
                lines=lines,
                offset=offset,
                max_bytes=max_bytes,
            )

    def search_output(
        self,
        pattern: Annotated[str, Field(min_length=1, max_length=1000, description="Regular expression, per line")],
        job_id: Annotated[str | None, Field(description="The job to search; default: the most recent jobs")] = None,
        recent: Annotated[int, Field(ge=1, le=50, description="Without job_id: how many recent jobs")] = 5,
        fixed: Annotated[bool, Field(description="Match pattern as plain text, not a regular expression")] = False,
        ignore_case: bool = False,
        context: Annotated[int, Field(ge=0, le=10, description="Lines shown before and after each match")] = 0,
        max_matches: Annotated[int, Field(ge=1, le=200, description="Stop after this many matches")] = 20,
        stream: Annotated[
            Literal["stdout", "stderr", "both"], Field(description="Which output to search; default both")
        ] = "both",
    ) -> api.SearchAnswer:
        q = self.queue()
        with user_errors(self.root):
            ids = [job_id] if job_id else [job.job_id for job in api.list_jobs(q, limit=recent).jobs]
            streams: tuple[api.Stream, ...] = ("stdout", "stderr") if stream == "both" else (stream,)
            return searching.search(
                q,
                ids,
                pattern,
                fixed=fixed,
                ignore_case=ignore_case,
                context=context,
                max_matches=max_matches,
                streams=streams,
            )

    async def wait_for_job(
        self,
        ctx: Context,
        job_id: JobId,
        timeout_s: Annotated[float, Field(ge=0, le=MAX_WAIT_S, description="Seconds to wait, at most 50")] = 30,
        verbose: Verbose = False,
    ) -> JobAnswer:
        q = self.queue()
        with user_errors(self.root):
            api.get_job(q, job_id)  # an unknown id fails now, not after the wait
        return self.answer(q, await self.wait_and_report(job_id, timeout_s, ctx), verbose)

    async def cancel_job(
        self,
        ctx: Context,
        job_id: JobId,
        force: Annotated[bool, Field(description="Send SIGKILL at once instead of SIGTERM")] = False,
        signal: Annotated[
            CancelSignal, Field(description="First signal for a running job; default SIGTERM")
        ] = "SIGTERM",
    ) -> CancelAnswer:
        q = self.queue()

        def report(waited_s: float, job: api.JobDetail) -> None:  # called in the cancelling thread
            anyio.from_thread.run(ctx.report_progress, waited_s, CANCEL_WAIT_S, f"job {job_id} is {job.state.value}")

        cancel = partial(
            api.cancel_job, q, job_id, requested_by="mcp", signal=signal, force=force, wait_s=CANCEL_WAIT_S
        )
        with user_errors(self.root):
            done = await anyio.to_thread.run_sync(partial(cancel, progress=report))
        return CancelAnswer(outcome=done.outcome, message=cancel_message(done), job=self.answer(q, done.job))

    def hold_job(self, job_id: JobId) -> JobAnswer:
        q = self.queue()
        with user_errors(self.root):
            return self.answer(q, api.hold_job(q, job_id))

    def release_job(self, job_id: JobId) -> JobAnswer:
        q = self.queue()
        with user_errors(self.root):
            detail = api.release_job(q, job_id)
        self.start_worker_if_needed()
        return self.answer(q, detail)

    def retry_job(self, job_id: JobId) -> JobAnswer:
        q = self.queue()
        self.start_worker_if_needed()
        with user_errors(self.root):
            new_id = api.retry_job(q, job_id)
            answer = self.answer(q, api.get_job(q, new_id))
        said = f"job {job_id} enqueued again as {new_id}"
        answer.note = f"{said}; {answer.note}" if answer.note else said
        return answer

    def queue_status(self) -> api.QueueStatus:
        with user_errors(self.root):
            return api.queue_status(self.queue())

    def list_schedules(self) -> SchedulesAnswer:
        with user_errors(self.root):
            return SchedulesAnswer(schedules=api.list_schedules(self.queue()))


def _no_worker_note(note: str | None) -> str:
    said = (
        "no_worker: no worker is serving this queue, so the job waits; a person must start one "
        "(execsvc run, or execsvc service install) or restart this server with auto-start on"
    )
    return f"{said}; {note}" if note else said


def default_job_cwd(start_cwd: str | None = None) -> Path:
    """Where MCP jobs run unless they say: the folder the server was started in, or the home
    folder when that is ``/``."""
    here = Path(start_cwd or os.getcwd())
    return Path.home() if here == Path("/") else here
