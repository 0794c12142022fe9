"""Errors as sentences for the model: tool errors, argument errors, cancel outcomes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import ValidationError

from execsvc.protocol.durable import NotRegularFile
from execsvc.protocol.errors import ExecsvcError, InvalidJobId, JobIdTaken, JobNotFound, validation_problems

from .. import api

HINTS = {
    ("wait_s", "less_than_equal"): "wait_s is at most 50 s; call wait_for_job to wait longer",
    ("timeout_s", "less_than_equal"): "timeout_s is at most 50 s here; call wait_for_job again to wait longer",
    ("max_bytes", "less_than_equal"): "max_bytes is at most 65536; read on with the next call the page gives",
}
"""What to do, for the argument errors a model makes most (field, pydantic error type)."""


def argument_problems(tool: str, exc: ValidationError) -> str:
    """A sentence per bad argument, without pydantic's boilerplate (types, links)."""
    problems = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "arguments"
        hint = HINTS.get((field.split(".")[0], error["type"]))
        if hint is not None and (tool != "enqueue_job" or not field.startswith("timeout_s")):
            problems.append(hint)
        elif error["type"] == "missing":
            problems.append(f"{field} is required")
        elif error["type"] == "extra_forbidden":
            problems.append(f"{field} is not an argument of {tool}")
        else:
            problems.append(f"{field}: {error['msg'][0].lower()}{error['msg'][1:]}")
    return f"{tool}: " + "; ".join(problems)


@contextmanager
def user_errors(root: Path) -> Iterator[None]:
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


@contextmanager
def resource_errors(root: Path) -> Iterator[None]:
    """:func:`user_errors` as :class:`ResourceError` (for ``resources/read``)."""
    try:
        with user_errors(root):
            yield
    except ToolError as exc:
        raise ResourceError(str(exc)) from exc


def cancel_message(done: api.Cancelled) -> str:
    """The sentence ``cancel_job`` gives for what :func:`queue_tools.api.cancel_job` did."""
    status = done.job.status.value
    if done.outcome is api.CancelOutcome.CANCELLED:
        return "the job was pending; it was removed and will never run"
    if done.outcome is api.CancelOutcome.STOPPED:
        return "the job's process group was stopped; it is recorded as cancelled (its error says how)"
    if done.outcome is api.CancelOutcome.ALREADY_FINISHED:
        if done.serving is None:
            return f"the job had already finished ({status}); nothing was done"
        return f"the job finished ({status}) before the cancel took effect"
    if not done.serving:
        return "no worker is serving the queue; the job will be recorded when one starts"
    return (
        f"the worker was asked to stop the job; it was still stopping after {done.waited_s:g} s "
        "(cancel_job with force=true sends SIGKILL)"
    )
