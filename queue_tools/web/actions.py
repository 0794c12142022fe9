"""The dashboard's actions, each a POST that :class:`~.guard.Guard` lets through only with the
token, from the page's own origin, and never with ``--read-only``.

``POST /submit`` (form fields ``command`` with ``args``, one per line, or ``script``; ``cwd``,
``timeout_s``, ``priority``, ``group``) enqueues a JSON job with ``submitted_by: "web"``
(docs/protocol.md, "JSON jobs"): a command with args runs directly, a command without them or a
script runs as a ``/bin/sh -c`` line. ``POST /jobs/<id>/cancel`` and ``/force-cancel``
(SIGKILL to the process group at once; :func:`queue_tools.api.cancel_job`), ``hold``,
``release`` (:meth:`JobQueue.hold`, :meth:`JobQueue.release`) and ``retry``
(:func:`queue_tools.api.retry_job`). Each answers with a short HTML message for the page's
message area: 200 when done, 4xx with the reason when not (nothing changed then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from execsvc.protocol.errors import InvalidJobId, JobNotFound
from queue_tools.api import CancelOutcome, cancel_job, retry_job

if TYPE_CHECKING:
    from .app import Web

SUBMITTED_BY = "web"
"""The ``submitted_by`` of every job the page submits (a policy's ``sandbox_for`` can name it)."""
CANCEL_WAIT_S = 5.0
"""How long a cancel of a running job waits for the worker to record it (seconds)."""
MAX_FIELD_CHARS = 1_000_000

_OUTCOME_TEXT = {
    CancelOutcome.CANCELLED: "was pending and is now cancelled; it never ran",
    CancelOutcome.STOPPED: "was stopped (its process group) and recorded cancelled",
    CancelOutcome.REQUESTED: "has a cancel request; the worker acts on it when it can",
    CancelOutcome.ALREADY_FINISHED: "had already finished; nothing was changed",
}


class Refused(Exception):
    """An action that cannot be done, with the reason a person reads and the HTTP status."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def spec_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The JSON job the submit form describes (see the module's docstring). Raises :class:`Refused`
    (400) for a form with neither a command nor a script, or a number that is not one."""
    command, script = form.get("command", "").strip(), form.get("script", "")
    if form.get("kind", "command") == "script":
        if not script.strip():
            raise Refused("the script is empty", 400)
        spec: dict[str, Any] = {"command": script.replace("\r\n", "\n")}
    else:
        if not command:
            raise Refused("a command is needed", 400)
        spec = {"command": command}
        args = [line for line in form.get("args", "").replace("\r\n", "\n").split("\n") if line != ""]
        if args:
            spec["args"] = args
    if form.get("cwd", "").strip():
        spec["cwd"] = form["cwd"].strip()
    if form.get("description", "").strip():
        spec["description"] = form["description"].strip()
    if form.get("group", "").strip():
        spec["group"] = form["group"].strip()
    for name, kind in (("timeout_s", float), ("priority", int)):
        text = form.get(name, "").strip()
        if text:
            try:
                spec[name] = kind(text)
            except ValueError:
                raise Refused(f"{name} must be a number, not {text!r}", 400) from None
    return spec


def routes(web: Web) -> list[Route]:
    """The POST routes of the actions."""

    def action(work: Callable[[Request], Awaitable[str]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                message = await work(request)
            except Refused as exc:
                return _message(web, str(exc), ok=False, status=exc.status)
            except (JobNotFound, InvalidJobId) as exc:
                return _message(web, str(exc), ok=False, status=404)
            return _message(web, message, ok=True, status=200)

        return endpoint

    async def submit(request: Request) -> str:
        form = {key: value for key, value in (await request.form()).items() if isinstance(value, str)}
        if any(len(value) > MAX_FIELD_CHARS for value in form.values()):
            raise Refused(f"a field is longer than {MAX_FIELD_CHARS} characters", 400)
        spec = spec_from_form(form)
        try:
            job_id = await asyncio.to_thread(web.queue.submit, spec, submitted_by=SUBMITTED_BY)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'job'}: {e['msg']}" for e in exc.errors())
            raise Refused(f"not a valid job: {problems}", 400) from None
        return f"submitted job {job_id}"

    async def cancel(request: Request) -> str:
        return await _cancel(request, force=False)

    async def force_cancel(request: Request) -> str:
        return await _cancel(request, force=True)

    async def _cancel(request: Request, *, force: bool) -> str:
        job_id = request.path_params["job_id"]
        done = await asyncio.to_thread(
            cancel_job, web.queue, job_id, requested_by="execsvc web", force=force, wait_s=CANCEL_WAIT_S
        )
        return f"job {done.job.job_id} {_OUTCOME_TEXT[done.outcome]}"

    async def hold(request: Request) -> str:
        info = await asyncio.to_thread(_or_refused, web.queue.hold, request.path_params["job_id"])
        return f"job {info.job_id} is held: it does not start until released"

    async def release(request: Request) -> str:
        info = await asyncio.to_thread(_or_refused, web.queue.release, request.path_params["job_id"])
        return f"job {info.job_id} is released: it waits for its turn again"

    async def retry(request: Request) -> str:
        new_id = await asyncio.to_thread(_or_refused, retry_job, web.queue, request.path_params["job_id"])
        return f"submitted job {new_id} as a retry of {request.path_params['job_id']}"

    return [
        Route("/submit", action(submit), methods=["POST"]),
        Route("/jobs/{job_id}/cancel", action(cancel), methods=["POST"]),
        Route("/jobs/{job_id}/force-cancel", action(force_cancel), methods=["POST"]),
        Route("/jobs/{job_id}/hold", action(hold), methods=["POST"]),
        Route("/jobs/{job_id}/release", action(release), methods=["POST"]),
        Route("/jobs/{job_id}/retry", action(retry), methods=["POST"]),
    ]


def _or_refused(work: Callable[..., Any], *args: Any) -> Any:
    """``work(*args)``; a :class:`ValueError` (not pending, not finished) or :class:`FileExistsError`
    (a name taken) becomes :class:`Refused` with its message."""
    try:
        return work(*args)
    except (JobNotFound, InvalidJobId):
        raise
    except (ValueError, FileExistsError) as exc:
        raise Refused(str(exc)) from None


def _message(web: Web, text: str, *, ok: bool, status: int) -> Response:
    job_id = text.split()[2] if ok and text.startswith("submitted job ") else None
    html = web.render("_message.html", text=text, ok=ok, job_id=job_id)
    return HTMLResponse(html, status_code=status)
