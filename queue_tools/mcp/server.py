"""The MCP server: an LLM enqueues jobs, waits for them and reads their results (MCP spec, stdio).

A thin front over :mod:`queue_tools.api`: it enqueues jobs, reads the queue folders
and drops cancel requests; it never runs a job, so an MCP client can start and stop
it at will while the worker goes on (``execsvc mcp`` starts a worker when none
serves the queue: :mod:`.autostart`). Built on the official ``mcp`` SDK (2.x,
``MCPServer``). Every tool answer is ``structuredContent`` without null fields and
the same JSON, compact, as its text; output schemas and input schemas are sent
without titles or null alternatives. Argument errors are sentences saying what to do.
Nothing but JSON-RPC is written to stdout; logs go to stderr.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import ValidationError

from execsvc.protocol import __version__
from execsvc.protocol.defaults import DEFAULT_TIMEOUT_S, default_queue_dir
from execsvc.protocol.queue import JobQueue

from .answers import _prune
from .describe import Facts, descriptions, instructions
from .errors import argument_problems
from .notify import publishing_lifespan
from .resources import register_resources
from .tools import QueueTools, default_job_cwd

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

_READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_CHANGES_QUEUE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
ANNOTATIONS = {
    "enqueue_job": ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True),
    "get_job": _READ_ONLY,
    "get_job_output": _READ_ONLY,
    "search_output": _READ_ONLY,
    "wait_for_job": _READ_ONLY,
    "list_jobs": _READ_ONLY,
    "queue_status": _READ_ONLY,
    "list_schedules": _READ_ONLY,
    "cancel_job": ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False),
    "hold_job": ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True),
    "release_job": ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True),
    "retry_job": ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=True),
}
"""Each tool's hints (MCP spec, ToolAnnotations): enqueue and retry run any command."""


class QueueServer(MCPServer):
    """``MCPServer`` whose tool answers are compact and whose argument errors are sentences."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None) -> Any:
        unknown = _unknown_arguments(self, name, arguments)
        if unknown:
            raise ToolError(unknown)
        try:
            result = await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(argument_problems(name, exc.__cause__)) from None
            raise
        if isinstance(result, CallToolResult) and result.structured_content is not None and not result.is_error:
            data = _prune(result.structured_content)
            text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data)
        return result


def _unknown_arguments(server: MCPServer, name: str, arguments: dict[str, Any]) -> str | None:
    """The sentence for arguments the tool does not take (the SDK would drop them silently)."""
    tool = server._tool_manager.get_tool(name)
    if tool is None:
        return None
    known = tool.parameters.get("properties", {})
    unknown = sorted(key for key in arguments if key not in known)
    if not unknown:
        return None
    what = "is not an argument" if len(unknown) == 1 else "are not arguments"
    return f"{name}: {', '.join(unknown)} {what}; it takes {', '.join(known)}"


def build_server(
    queue_dir: Path | None = None,
    *,
    log_level: LogLevel = "WARNING",
    auto_start: bool = False,
    job_cwd: Path | None = None,
) -> MCPServer:
    """An MCP server for the queue at ``queue_dir`` (default: :func:`execsvc.default_queue_dir`).

    ``auto_start``: start a worker when none serves the queue (at once, and before a
    job is enqueued, retried or released). ``job_cwd``: the folder jobs run in unless
    they name one (``None``: the worker's home folder). ``log_level`` applies to the
    server's log on stderr. The tool descriptions state the facts read now: where jobs
    run, the default timeout, the slots and the command policy.
    """
    tools = QueueTools(
        Path(queue_dir) if queue_dir is not None else default_queue_dir(), job_cwd=job_cwd, auto_start=auto_start
    )
    tools.start_worker_if_needed()
    facts = _facts(tools)
    bus = InMemorySubscriptionBus()
    server = QueueServer(
        name="execsvc",
        version=__version__,
        log_level=log_level,
        instructions=instructions(facts),
        subscriptions=bus,
        lifespan=publishing_lifespan(tools.root, bus),
    )
    for name, text in descriptions(facts).items():
        server.add_tool(getattr(tools, name), name=name, description=text, annotations=ANNOTATIONS[name])
    _slim_schemas(server)
    register_resources(server, tools)
    return server


def _facts(tools: QueueTools) -> Facts:
    """What the descriptions state, from ``worker.json`` when a worker serves the queue."""
    try:
        worker = JobQueue(tools.root).worker_info()
    except OSError:
        worker = None
    if worker is None:
        return Facts(job_cwd=tools.job_cwd, default_timeout_s=DEFAULT_TIMEOUT_S, serving=False)
    return Facts(
        job_cwd=tools.job_cwd,
        default_timeout_s=worker.default_timeout_s or DEFAULT_TIMEOUT_S,
        max_timeout_s=worker.max_timeout_s,
        slots=worker.slots,
        allowed_commands=worker.allowed_commands,
        allow_shell=worker.allow_shell,
        serving=True,
        groups=worker.groups,
    )


def _slim_schemas(server: MCPServer) -> None:
    """Send every tool's schemas without titles, ``null`` alternatives or ``null`` defaults (the
    server leaves nulls out of its answers; an argument left out is the same as null)."""
    for tool in server._tool_manager.list_tools():  # the SDK has no public setter for the published schemas
        tool.parameters = slim_schema(tool.parameters)
        for model in tool.parameters.get("$defs", {}).values():
            model.pop("description", None)  # a model's docstring is written for Python readers
        if tool.fn_metadata.output_schema is not None:
            tool.fn_metadata.output_schema = slim_schema(tool.fn_metadata.output_schema, descriptions=False)


def slim_schema(schema: Any, *, descriptions: bool = True) -> Any:
    """A JSON schema without ``title``, without ``{"type": "null"}`` in ``anyOf``, without
    ``"default": null`` and ``"additionalProperties": true`` (the default); ``descriptions=False``
    (for output schemas) drops descriptions and defaults too."""
    if isinstance(schema, list):
        return [slim_schema(item, descriptions=descriptions) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "description" and not descriptions and isinstance(value, str):
            continue
        if key == "default" and (value is None or not descriptions):
            continue  # an output's defaults say nothing: every field sent has its value
        if key == "additionalProperties" and value is True:
            continue  # JSON Schema's default
        out[key] = slim_schema(value, descriptions=descriptions)  # a property named "title" is a dict: kept
    options = out.get("anyOf")
    if isinstance(options, list):
        kept = [option for option in options if option != {"type": "null"}]
        if len(kept) == 1 and isinstance(kept[0], dict):
            del out["anyOf"]
            out = {**kept[0], **out}
        else:
            out["anyOf"] = kept
    return out


def serve(
    queue_dir: Path | None = None,
    *,
    log_level: LogLevel = "WARNING",
    auto_start: bool = True,
    job_cwd: Path | None = None,
) -> None:
    """Run the server over stdio until the client closes stdin (``execsvc mcp``); logs go to stderr.

    ``job_cwd`` defaults to the folder the server was started in (the home folder when that is ``/``).
    """
    cwd = job_cwd if job_cwd is not None else default_job_cwd(os.getcwd())
    build_server(queue_dir, log_level=log_level, auto_start=auto_start, job_cwd=cwd).run("stdio")
