"""The MCP server: an LLM enqueues jobs, waits for them and reads their results (MCP spec, stdio).

A thin front over :mod:`queue_tools.api`: it enqueues jobs, reads the queue
folders and drops cancel requests; it never runs a job, so an MCP client can
start and stop it at will while the worker goes on. Built on the official
``mcp`` SDK (2.x, :class:`mcp.server.mcpserver.MCPServer`). Tool results are
pydantic models, so clients get an ``outputSchema`` and ``structuredContent``.
Errors a user can act on are raised as :class:`ToolError` (the client sees
``isError`` and the sentence); nothing but JSON-RPC is written to stdout, logs
go to stderr.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field, ValidationError

from execsvc.protocol import __version__
from execsvc.protocol.defaults import default_queue_dir
from execsvc.protocol.durable import NotRegularFile
from execsvc.protocol.errors import (
    ExecsvcError,
    InvalidJobId,
    JobIdTaken,
    JobNotFound,
    UnsafeQueue,
    validation_problems,
)
from execsvc.protocol.models import MAX_DELAY_S, MAX_RETRIES, JobLimits, JobSpec, JobState, JobStatus
from execsvc.protocol.queue import JobQueue

from . import api
from .submit import scheduling_fields

logger = logging.getLogger("execsvc.mcp")

MAX_WAIT_S = 50.0
"""Longest a tool call waits for a job (seconds): under common clients' request timeouts."""
CANCEL_WAIT_S = api.CANCEL_WAIT_S
"""How long ``cancel_job`` waits for a running job to be stopped and recorded (seconds)."""
PROGRESS_EVERY_S = 2.0
"""Seconds between progress notifications while a tool waits for a job."""

JobId = Annotated[str, Field(min_length=1, max_length=256, description="A job id, as enqueue_job or list_jobs gave it")]


class CancelResult(BaseModel):
    """What ``cancel_job`` did: ``cancelled`` (it was pending and never ran), ``stopped`` (it was
    running and is now recorded cancelled), ``requested`` (the worker was asked and has not
    recorded it yet), or ``already_finished``; ``job`` is its state after."""

    outcome: api.CancelOutcome
    message: str
    job: api.JobDetail


_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)


class QueueTools:
    """The tools, resources and prompts, as plain methods over one queue root (testable without MCP)."""

    def __init__(self, root: Path) -> None:
        self.root = root

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

    async def wait_and_report(self, job_id: str, timeout_s: float, ctx: Context) -> api.JobDetail:
        """Wait on file events in a thread, sending a progress notification every few seconds."""
        q = self.queue()
        waited = 0.0
        while True:
            step = min(PROGRESS_EVERY_S, max(0.0, timeout_s - waited))
            with _user_errors(self.root):
                detail = await anyio.to_thread.run_sync(partial(api.wait_for_job, q, job_id, step))
            waited += step
            if detail.finished or waited >= timeout_s:
                return detail
            await ctx.report_progress(waited, timeout_s, f"job {job_id} is {detail.state.value}")

    async def enqueue_job(
        self,
        ctx: Context,
        command: Annotated[str, Field(min_length=1, description="Program to run, or a shell command line")],
        args: Annotated[
            list[str] | None, Field(description="Arguments; when given, command runs directly, without a shell")
        ] = None,
        shell: Annotated[bool | None, Field(description="Force (true) or forbid (false) /bin/sh -c")] = None,
        cwd: Annotated[str | None, Field(description="Working folder (default: the worker's home folder)")] = None,
        env: Annotated[dict[str, str] | None, Field(description="Variables added to the job's environment")] = None,
        stdin: Annotated[str | None, Field(description="Text fed to the job's standard input")] = None,
        timeout_s: Annotated[float | None, Field(gt=0, description="Seconds before the job is stopped")] = None,
        description: Annotated[str | None, Field(description="What the job is for, shown in listings")] = None,
        priority: Annotated[int | None, Field(description="Higher starts first among ready jobs (default 0)")] = None,
        after: Annotated[list[str] | None, Field(description="Job ids that must finish before this one starts")] = None,
        after_mode: Annotated[
            Literal["success", "any"] | None,
            Field(
                description="success (default): all 'after' jobs must complete, else this one is cancelled; "
                "any: they must only have finished"
            ),
        ] = None,
        not_before: Annotated[
            str | None,
            Field(description="ISO 8601 time (years 1970 to 9998; no zone: local) before which the job does not start"),
        ] = None,
        delay_s: Annotated[
            float | None, Field(ge=0, le=MAX_DELAY_S, description="Seconds from now before the job may start")
        ] = None,
        retries: Annotated[
            int | None, Field(ge=0, le=MAX_RETRIES, description="Attempts after a failure or timeout")
        ] = None,
        retry_delay_s: Annotated[
            float | None,
            Field(ge=0, le=MAX_DELAY_S, description="Seconds before the first retry, doubled each time"),
        ] = None,
        limits: Annotated[
            JobLimits | None,
            Field(description="cpu_s, memory_mb, open_files, processes, output_bytes; beyond one the job fails"),
        ] = None,
        on_finish: Annotated[
            str | None, Field(description="Shell line run after the job; $EXECSVC_RECORD is its record's path")
        ] = None,
        webhook: Annotated[str | None, Field(description="http(s) URL that receives the record by POST")] = None,
        wait_s: Annotated[
            float, Field(ge=0, le=MAX_WAIT_S, description="Wait up to this long for the result (0: return at once)")
        ] = 0,
    ) -> api.JobDetail:
        """Put a command in the queue; with wait_s > 0, wait for it and return its result.

        Returns the job id and state, and for a job that finished within wait_s the result
        (status, exit code, stdout and stderr tails). Output beyond the tails: get_job_output.
        Scheduling: priority, after (+ after_mode), not_before or delay_s, retries (+ retry_delay_s),
        limits, on_finish, webhook; a job that waits says why in get_job's 'waiting'.
        """
        fields: dict[str, Any] = {
            "command": command,
            "args": args,
            "shell": shell,
            "cwd": cwd,
            "env": env,
            "stdin": stdin,
            "timeout_s": timeout_s,
            "description": description,
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
            ),
            "limits": limits.model_dump(exclude_none=True) if limits is not None else None,
        }
        spec = {key: value for key, value in fields.items() if value is not None}
        spec["submitted_by"] = "mcp"
        q = self.queue()
        with _user_errors(self.root):
            job_id = q.submit(JobSpec.model_validate(spec))
        logger.info("enqueued job %s", job_id)
        # The job is in the queue now: from here on the answer says so, never isError (a retry would enqueue it twice).
        try:
            if wait_s > 0:
                return await self.wait_and_report(job_id, wait_s, ctx)
            with _user_errors(self.root):
                return api.get_job(q, job_id)  # its note says so when no worker serves the queue
        except Exception as exc:
            logger.warning("enqueued job %s, but reading it back failed: %s", job_id, exc)
            return api.JobDetail(
                job_id=job_id,
                state=JobState.PENDING,
                status=JobStatus.PENDING,
                finished=False,
                path=str(q.layout.pending / f"{job_id}.json"),
                note=f"the job was enqueued as {job_id}, but reading it back failed ({exc}); "
                f"do not enqueue it again: get_job shows where it stands",
            )

    def get_job(self, job_id: JobId) -> api.JobDetail:
        """Where a job stands: pending (with why it waits: behind N jobs, waiting for job X, due at T,
        retry 2 of 3 at T, held), running (with elapsed time), or finished (with the result record:
        status, exit code, output tails, times, error, attempt)."""
        with _user_errors(self.root):
            return api.get_job(self.queue(), job_id)

    def list_jobs(
        self,
        state: Literal["pending", "running", "completed", "failed"] | None = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous page")] = None,
    ) -> api.JobPage:
        """Jobs newest first, a page at a time, with counts per state. Pass next_cursor to get more."""
        states = (JobState(state),) if state else tuple(JobState)
        with _user_errors(self.root):
            return api.list_jobs(self.queue(), states=states, limit=limit, cursor=cursor)

    def get_job_output(
        self,
        job_id: JobId,
        stream: Literal["stdout", "stderr"] = "stdout",
        offset: Annotated[int, Field(ge=0, description="Byte offset to read from (next_offset of a page)")] = 0,
        max_bytes: Annotated[int, Field(ge=1, le=1024 * 1024)] = 64 * 1024,
        tail_lines: Annotated[
            int | None, Field(ge=1, le=100_000, description="Return the last N lines instead of reading at offset")
        ] = None,
    ) -> api.OutputChunk:
        """Page through a job's full output, while it runs or after it ended. Says the total size
        (size_bytes), where to continue (next_offset), and complete=true once nothing more will come."""
        with _user_errors(self.root):
            return api.read_output(
                self.queue(), job_id, stream, offset=offset, max_bytes=max_bytes, tail_lines=tail_lines
            )

    async def wait_for_job(
        self, ctx: Context, job_id: JobId, timeout_s: Annotated[float, Field(ge=0, le=MAX_WAIT_S)] = 30
    ) -> api.JobDetail:
        """Wait until the job finishes (returns at once when it does) or timeout_s passes; returns its
        state either way. Sends progress notifications while waiting if the client asked for them."""
        with _user_errors(self.root):
            api.get_job(self.queue(), job_id)  # an unknown id fails now, not after the wait
        return await self.wait_and_report(job_id, timeout_s, ctx)

    async def cancel_job(self, ctx: Context, job_id: JobId) -> CancelResult:
        """Cancel a job: a pending one is removed (status cancelled, never run); a running one has its
        whole process group stopped by the worker (SIGTERM, then SIGKILL) and is recorded cancelled."""
        q = self.queue()

        def report(waited_s: float, job: api.JobDetail) -> None:  # called in the cancelling thread
            anyio.from_thread.run(ctx.report_progress, waited_s, CANCEL_WAIT_S, f"job {job_id} is {job.state.value}")

        with _user_errors(self.root):
            done = await anyio.to_thread.run_sync(
                partial(api.cancel_job, q, job_id, requested_by="mcp", wait_s=CANCEL_WAIT_S, progress=report)
            )
        return CancelResult(outcome=done.outcome, message=_cancel_message(done), job=done.job)

    def queue_status(self) -> api.QueueStatus:
        """Counts per state, whether a worker serves the queue (PID, slots, uptime), and the queue's root folder."""
        with _user_errors(self.root):
            return api.queue_status(self.queue())

    # ----- resources ----------------------------------------------------------------

    def status_resource(self) -> str:
        """The queue at a glance (same as the queue_status tool)."""
        with _resource_errors(self.root):
            return api.queue_status(self.queue()).model_dump_json(indent=2)

    def job_resource(self, job_id: str) -> str:
        """One job's state and, once finished, its result record."""
        with _resource_errors(self.root):
            return api.get_job(self.queue(), job_id).model_dump_json(indent=2)

    def stdout_resource(self, job_id: str) -> str:
        """The last 200 lines of a job's stdout."""
        with _resource_errors(self.root):
            return _text_of(api.read_output(self.queue(), job_id, "stdout", tail_lines=200))

    def stderr_resource(self, job_id: str) -> str:
        """The last 200 lines of a job's stderr."""
        with _resource_errors(self.root):
            return _text_of(api.read_output(self.queue(), job_id, "stderr", tail_lines=200))

    def log_resource(self) -> str:
        """The last 100 lines of daemon.log: one timestamped line per worker event."""
        with _resource_errors(self.root):
            return "\n".join(api.daemon_log_tail(self.queue(), 100)) + "\n"

    # ----- prompts ------------------------------------------------------------------

    def diagnose_failed_job(self, job_id: str) -> str:
        """Ask for a diagnosis of a failed job, with its record, command and stderr tail."""
        with _user_errors(self.root):
            detail = api.get_job(self.queue(), job_id)
            chunk = api.read_output(self.queue(), job_id, "stderr", tail_lines=80)
            stderr = chunk.text if chunk.problem is None else f"({chunk.problem})"
        record = detail.result.model_dump_json(indent=2, exclude={"stdout", "stderr"}) if detail.result else "none yet"
        return (
            f"The job {detail.job_id} ran through the execsvc queue and ended as {detail.status.value}.\n\n"
            f"Command: {detail.command}\nWorking folder: {(detail.spec or {}).get('cwd', '(default)')}\n\n"
            f"Result record (without output):\n```json\n{record}\n```\n\n"
            f"Last lines of stderr:\n```\n{stderr or '(empty)'}\n```\n\n"
            "Explain why it failed, citing the lines that show it, and propose a fix. If the fix is a "
            "corrected command, say it exactly so it can be enqueued again."
        )

    def summarize_queue(self) -> str:
        """Ask for a summary of the queue: what is waiting, running, and what recently failed."""
        with _user_errors(self.root):
            status = api.queue_status(self.queue())
            recent = api.list_jobs(self.queue(), limit=30)
        jobs = json.dumps([job.model_dump(mode="json", exclude_none=True) for job in recent.jobs], indent=1)
        return (
            f"Summarize the state of the execsvc job queue at {status.queue_dir}.\n\n"
            f"Status:\n```json\n{status.model_dump_json(indent=2)}\n```\n\n"
            f"The 30 most recent jobs, newest first:\n```json\n{jobs}\n```\n\n"
            "Say whether a worker is serving, what is waiting or running, which recent jobs failed and "
            "why (from their error), and anything that needs attention."
        )


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def build_server(queue_dir: Path | None = None, *, log_level: LogLevel = "WARNING") -> MCPServer:
    """An MCP server for the queue at ``queue_dir`` (default: :func:`execsvc.default_queue_dir`).

    ``log_level`` applies to the server's log on stderr.
    """
    tools = QueueTools(Path(queue_dir) if queue_dir is not None else default_queue_dir())
    server = MCPServer(
        name="execsvc",
        version=__version__,
        log_level=log_level,
        instructions=(
            "Runs shell commands on this machine through the execsvc job queue. enqueue_job with wait_s "
            "returns the result of a quick job in one call; for slow jobs use wait_for_job (it returns as "
            "soon as the job ends) and get_job_output to page through the full output."
        ),
    )
    server.add_tool(tools.enqueue_job, annotations=ToolAnnotations(destructive_hint=False, open_world_hint=True))
    server.add_tool(tools.get_job, annotations=_READ_ONLY)
    server.add_tool(tools.list_jobs, annotations=_READ_ONLY)
    server.add_tool(tools.get_job_output, annotations=_READ_ONLY)
    server.add_tool(tools.wait_for_job, annotations=_READ_ONLY)
    server.add_tool(
        tools.cancel_job,
        annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False),
    )
    server.add_tool(tools.queue_status, annotations=_READ_ONLY)
    server.resource("queue://status", name="status", mime_type="application/json")(tools.status_resource)
    server.resource("queue://jobs/{job_id}", name="job", mime_type="application/json")(tools.job_resource)
    server.resource("queue://jobs/{job_id}/stdout", name="job_stdout", mime_type="text/plain")(tools.stdout_resource)
    server.resource("queue://jobs/{job_id}/stderr", name="job_stderr", mime_type="text/plain")(tools.stderr_resource)
    server.resource("queue://log", name="daemon_log", mime_type="text/plain")(tools.log_resource)
    server.prompt()(tools.diagnose_failed_job)
    server.prompt()(tools.summarize_queue)
    return server


def _cancel_message(done: api.Cancelled) -> str:
    """The sentence ``cancel_job`` gives for what :func:`api.cancel_job` did."""
    status = done.job.status.value
    if done.outcome is api.CancelOutcome.CANCELLED:
        return "the job was pending; it was removed and will never run"
    if done.outcome is api.CancelOutcome.STOPPED:
        return "the job's process group was stopped; it is recorded as cancelled"
    if done.outcome is api.CancelOutcome.ALREADY_FINISHED:
        if done.serving is None:
            return f"the job had already finished ({status}); nothing was done"
        return f"the job finished ({status}) before the cancel took effect"
    if not done.serving:
        return "no worker is serving the queue; the job will be recorded when one starts"
    return f"the worker was asked to stop the job; it was still stopping after {done.waited_s:g} s"


@contextmanager
def _user_errors(root: Path) -> Iterator[None]:
    """Turn errors a user can act on into :class:`ToolError` sentences (never a traceback)."""
    try:
        yield
    except ToolError:
        raise
    except JobNotFound as exc:
        raise ToolError(f"{exc}. It may have been cleaned up; list_jobs shows the jobs there are.") from exc
    except InvalidJobId as exc:
        raise ToolError(f"not a valid job id: {exc}") from exc
    except JobIdTaken as exc:
        raise ToolError(str(exc)) from exc
    except ValidationError as exc:
        raise ToolError(f"the job is not valid: {validation_problems(exc)}") from exc
    except ValueError as exc:
        raise ToolError(str(exc)) from exc
    except ExecsvcError as exc:
        raise ToolError(str(exc)) from exc
    except NotRegularFile as exc:  # a FIFO or a link at a file of the queue: named, never read
        raise ToolError(f"{exc}; it is not read") from exc
    except OSError as exc:
        raise ToolError(
            f"the queue at {root} could not be read or written ({exc.strerror or exc}); "
            "check that the folder exists and belongs to you"
        ) from exc


def _text_of(chunk: api.OutputChunk) -> str:
    """A log's text; a log that is not a regular file is a :class:`ToolError` saying so."""
    if chunk.problem is not None:
        raise ToolError(chunk.problem)
    return chunk.text


@contextmanager
def _resource_errors(root: Path) -> Iterator[None]:
    try:
        with _user_errors(root):
            yield
    except ToolError as exc:
        raise ResourceError(str(exc)) from exc


def serve(queue_dir: Path | None = None, *, log_level: LogLevel = "WARNING") -> None:
    """Run the server over stdio until the client closes stdin (``execsvc mcp``); logs go to stderr."""
    build_server(queue_dir, log_level=log_level).run("stdio")
