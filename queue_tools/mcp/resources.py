"""The MCP server's resources (the queue, a job, its output, ``daemon.log``) and prompts."""

from __future__ import annotations

import json

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from .. import api
from ..api.lines import read_page
from .answers import dump, job_answer
from .errors import resource_errors, user_errors
from .tools import QueueTools

RESOURCE_TAIL_LINES = 200
"""Lines of a job's stream its resource holds (the last ones)."""


def register_resources(server: MCPServer, tools: QueueTools) -> None:
    """Add the resources (and the prompts) over ``tools``' queue to ``server``."""
    root = tools.root

    def status_resource() -> str:
        """The queue at a glance (same as the queue_status tool)."""
        with resource_errors(root):
            return json.dumps(dump(api.queue_status(tools.queue())))

    def job_resource(job_id: str) -> str:
        """One job's answer, as get_job gives it with verbose."""
        with resource_errors(root):
            q = tools.queue()
            return json.dumps(dump(job_answer(q, api.get_job(q, job_id), verbose=True)))

    def stdout_resource(job_id: str) -> str:
        """The last 200 lines of a job's stdout."""
        return _tail_text(tools, job_id, "stdout")

    def stderr_resource(job_id: str) -> str:
        """The last 200 lines of a job's stderr."""
        return _tail_text(tools, job_id, "stderr")

    def log_resource() -> str:
        """The last 100 lines of daemon.log: one timestamped line per worker event."""
        with resource_errors(root):
            return "\n".join(api.daemon_log_tail(tools.queue(), 100)) + "\n"

    server.resource("queue://status", name="status", mime_type="application/json")(status_resource)
    server.resource("queue://jobs/{job_id}", name="job", mime_type="application/json")(job_resource)
    server.resource("queue://jobs/{job_id}/stdout", name="job_stdout", mime_type="text/plain")(stdout_resource)
    server.resource("queue://jobs/{job_id}/stderr", name="job_stderr", mime_type="text/plain")(stderr_resource)
    server.resource("queue://log", name="daemon_log", mime_type="text/plain")(log_resource)
    register_prompts(server, tools)


def register_prompts(server: MCPServer, tools: QueueTools) -> None:
    """Add the prompts over ``tools``' queue to ``server``."""
    root = tools.root

    def diagnose_failed_job(job_id: str) -> str:
        """Ask for a diagnosis of a failed job, with its record, command and stderr tail."""
        with user_errors(root):
            q = tools.queue()
            detail = api.get_job(q, job_id)
            page = read_page(q, job_id, "stderr", tail=80)
            stderr = page.text if page.problem is None else f"({page.problem})"
        record = detail.result.model_dump_json(indent=2, exclude={"stdout", "stderr"}) if detail.result else "none yet"
        return (
            f"The job {detail.job_id} ran through the execsvc queue and ended as {detail.status.value}.\n\n"
            f"Command: {detail.command}\nWorking folder: {(detail.spec or {}).get('cwd', '(default)')}\n\n"
            f"Result record (without output):\n```json\n{record}\n```\n\n"
            f"Last lines of stderr:\n```\n{stderr or '(empty)'}\n```\n\n"
            "Explain why it failed, citing the lines that show it, and propose a fix. If the fix is a "
            "corrected command, say it exactly so it can be enqueued again."
        )

    def summarize_queue() -> str:
        """Ask for a summary of the queue: what is waiting, running, and what recently failed."""
        with user_errors(root):
            status = api.queue_status(tools.queue())
            recent = api.list_jobs(tools.queue(), limit=30)
        jobs = json.dumps([job.model_dump(mode="json", exclude_none=True) for job in recent.jobs], indent=1)
        return (
            f"Summarize the state of the execsvc job queue at {status.queue_dir}.\n\n"
            f"Status:\n```json\n{status.model_dump_json(indent=2)}\n```\n\n"
            f"The 30 most recent jobs, newest first:\n```json\n{jobs}\n```\n\n"
            "Say whether a worker is serving, what is waiting or running, which recent jobs failed and "
            "why (from their error), and anything that needs attention."
        )

    server.prompt(name="diagnose_failed_job")(diagnose_failed_job)
    server.prompt(name="summarize_queue")(summarize_queue)


def _tail_text(tools: QueueTools, job_id: str, stream: api.Stream) -> str:
    """A stream's last lines; a log that is not a regular file is a resource error saying so."""
    with resource_errors(tools.root):
        page = read_page(tools.queue(), job_id, stream, tail=RESOURCE_TAIL_LINES, max_bytes=64 * 1024)
        if page.problem is not None:
            raise ToolError(page.problem)
        return page.text
