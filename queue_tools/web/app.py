"""The dashboard's Starlette application: the pages, their fragments (for htmx), the push
channel (:mod:`.live`), log downloads and the static files, behind :class:`~.guard.Guard`.

Routes (every one needs the access token; see :mod:`.guard`):

- ``GET /``: the overview and the table of jobs; ``?state=`` (pending, running, completed,
  failed), ``?q=`` (text in the id, command or description), ``?cursor=`` (the next page).
- ``GET /rows``, ``GET /overview``: those two parts alone, for htmx and the slow refresh.
- ``GET /events``: the pages' event stream; ``GET /jobs/<id>/output``: a job's logs'.
- ``GET /jobs/<id>``: one job; ``GET /jobs/<id>/log/<stream>``: its whole log, as a download.
- ``GET /schedules``: the recurring jobs (:func:`queue_tools.api.list_schedules`), a table.
- ``POST /submit``, ``POST /jobs/<id>/{cancel,hold,release,retry}``: :mod:`.actions`.

Answers are HTML rendered by Jinja2 with autoescaping on, so anything a job wrote is text.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from execsvc.protocol import __version__
from execsvc.protocol.durable import NotRegularFile
from execsvc.protocol.errors import InvalidJobId, JobNotFound
from execsvc.protocol.models import JobState
from execsvc.protocol.queue import JobQueue
from queue_tools.api import JobDetail, Stream, get_job, list_schedules, open_for_reading

from . import actions
from .guard import Access, Guard
from .hub import FileEventHub
from .live import OVERVIEW_EVERY_S, STREAMS, Broadcaster, output_response, parse_offsets
from .views import DURATION_BUCKETS, Listings, Overview, OverviewReader, Row, command_of, page_of

HERE = Path(__file__).parent
DOWNLOAD_CHUNK_BYTES = 256 * 1024


@dataclass
class Web:
    """What the routes share: the queue, who may use it, the templates, the hub and the overview."""

    queue: JobQueue
    access: Access
    templates: jinja2.Environment
    hub: FileEventHub = field(init=False)
    broadcaster: Broadcaster = field(init=False)
    listings: Listings = field(init=False)
    overview_reader: OverviewReader = field(init=False)
    _overview: Overview | None = None
    _overview_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.hub = FileEventHub(self.queue.layout)
        self.listings = Listings(self.queue)
        self.overview_reader = OverviewReader(self.queue, self.listings)
        self.broadcaster = Broadcaster(
            self.hub, self.queue, lambda row: self.render("_row.html", row=row), lambda: self.overview_html(fresh=True)
        )

    def render(self, name: str, **context: Any) -> str:
        """Template ``name`` with ``context`` and what every template uses."""
        return self.templates.get_template(name).render(
            read_only=self.access.read_only, queue_dir=str(self.queue.root), version=__version__, **context
        )

    def overview(self, *, fresh: bool = False) -> Overview:
        """The overview; a page load gets the last one read if it is younger than
        :data:`OVERVIEW_EVERY_S` (shared by all pages), a push after a change (``fresh``) a new one."""
        with self._overview_lock:
            if fresh or self._overview is None or time.time() - self._overview.made_at >= OVERVIEW_EVERY_S:
                self._overview = self.overview_reader.read()
            return self._overview

    def overview_html(self, *, fresh: bool = False) -> str:
        """The overview as HTML (see :meth:`overview`)."""
        return self.render("_overview.html", overview=self.overview(fresh=fresh), buckets=DURATION_BUCKETS)


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    if value < 60:
        return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {seconds:02d}s"


def _iso(value: datetime | None) -> str:
    return value.astimezone().isoformat(timespec="seconds") if value is not None else ""


def _short_time(value: datetime | None) -> str:
    """``12:38:43`` for a time of today (local time), ``2026-11-30 12:38`` for another day."""
    if value is None:
        return ""
    local = value.astimezone()
    return (
        local.strftime("%H:%M:%S")
        if local.date() == datetime.now().astimezone().date()
        else local.strftime("%Y-%m-%d %H:%M")
    )


def make_templates() -> jinja2.Environment:
    """The Jinja2 environment of the package's ``templates/``: autoescaping on for every template."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["seconds"] = _seconds
    env.filters["iso"] = _iso
    env.filters["short_time"] = _short_time
    env.filters["path"] = lambda text: quote(str(text), safe="")
    return env


class BadRequest(Exception):
    """A query parameter that is not valid; answered 400 with its message."""


def _filters(request: Request) -> tuple[JobState | None, str, str | None]:
    state_text = request.query_params.get("state", "")
    try:
        state = JobState(state_text) if state_text else None
    except ValueError:
        raise BadRequest(f"state must be pending, running, completed or failed, not {state_text!r}") from None
    return state, request.query_params.get("q", "")[:200], request.query_params.get("cursor") or None


async def _page(web: Web, request: Request) -> dict[str, Any]:
    state, text, cursor = _filters(request)
    try:
        page = await asyncio.to_thread(page_of, web.queue, web.listings, state=state, text=text, cursor=cursor)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    return {"page": page, "state": state.value if state else "", "q": text, "cursor": cursor or ""}


def routes(web: Web) -> list[Route | Mount]:
    """The routes of the application (see the module's docstring)."""

    async def index(request: Request) -> Response:
        context = await _page(web, request)
        overview = await asyncio.to_thread(web.overview_html)
        return HTMLResponse(web.render("index.html", overview_html=overview, **context))

    async def rows(request: Request) -> Response:
        context = await _page(web, request)
        return HTMLResponse(web.render("_jobs.html", **context))

    async def overview(request: Request) -> Response:
        return HTMLResponse(await asyncio.to_thread(web.overview_html))

    async def events(request: Request) -> Response:
        return web.broadcaster.response(request)

    async def job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            detail = await asyncio.to_thread(get_job, web.queue, job_id)
        except (JobNotFound, InvalidJobId) as exc:
            return HTMLResponse(web.render("missing.html", job_id=job_id, why=str(exc)), status_code=404)
        return HTMLResponse(web.render("detail.html", **_detail_context(detail)))

    async def output(request: Request) -> Response:
        resume = request.headers.get("last-event-id") or request.query_params.get("offsets") or "0,0"
        try:
            offsets = parse_offsets(resume)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return output_response(web.hub, web.queue, request.path_params["job_id"], offsets)

    async def download(request: Request) -> Response:
        return await _download(web, request.path_params["job_id"], _stream(request))

    async def schedules(request: Request) -> Response:
        found = await asyncio.to_thread(list_schedules, web.queue)
        return HTMLResponse(web.render("schedules.html", schedules=found))

    return [
        Route("/", index),
        Route("/rows", rows),
        Route("/overview", overview),
        Route("/events", events),
        Route("/jobs/{job_id}", job),
        Route("/jobs/{job_id}/output", output),
        Route("/jobs/{job_id}/log/{stream}", download),
        Route("/schedules", schedules),
        *actions.routes(web),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


def _stream(request: Request) -> Stream:
    stream = request.path_params["stream"]
    if stream == "stdout":
        return "stdout"
    if stream == "stderr":
        return "stderr"
    raise BadRequest(f"a stream is stdout or stderr, not {stream!r}")


def _detail_context(detail: JobDetail) -> dict[str, Any]:
    spec = detail.spec or {}
    result = detail.result
    row = Row(
        job_id=detail.job_id,
        state=detail.state,
        status=detail.status,
        held=bool(detail.waiting and detail.waiting.held),
        command=detail.command or "",
        description=str(spec.get("description") or spec.get("purpose") or ""),
        exit_code=result.returncode if result else None,
        when=result.completed_at if result else None,
        duration_s=result.duration_s if result else None,
    )
    record = result.model_dump(mode="json", exclude={"stdout", "stderr"}) if result else None
    return {
        "detail": detail,
        "row": row,
        "command": command_of(spec, result.argv if result else None, detail.path, width=None),
        "settings": json.dumps({k: v for k, v in spec.items() if k != "command"}, indent=2, ensure_ascii=False),
        "record": json.dumps(record, indent=2, ensure_ascii=False) if record else "",
        "streams": STREAMS,
    }


async def _download(web: Web, job_id: str, stream: Stream) -> Response:
    try:
        info = await asyncio.to_thread(web.queue.get, job_id)
        handle = open_for_reading(web.queue.layout.stream_log(info.job_id, stream))
    except (JobNotFound, InvalidJobId, FileNotFoundError):
        return Response(f"404: job {job_id!r} has no {stream} log\n", status_code=404, media_type="text/plain")
    except NotRegularFile as exc:
        return Response(f"409: that log is {exc.what}, not a regular file\n", status_code=409, media_type="text/plain")

    def chunks() -> Iterator[bytes]:
        with handle:
            while data := handle.read(DOWNLOAD_CHUNK_BYTES):
                yield data

    name = quote(f"{info.job_id}.{stream}.txt", safe="")
    headers = {"Content-Disposition": f"attachment; filename*=UTF-8''{name}", "Cache-Control": "no-store"}
    return StreamingResponse(chunks(), media_type="text/plain; charset=utf-8", headers=headers)


def create_app(queue: JobQueue, access: Access) -> Starlette:
    """The dashboard for ``queue``, guarded by ``access``; its lifespan starts and stops the hub."""
    web = Web(queue=queue, access=access, templates=make_templates())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(web.overview)  # lists the folders once (100,000 records: most of a second)
        await web.hub.start()
        await web.broadcaster.start()
        try:
            yield
        finally:
            await web.broadcaster.stop()
            await web.hub.stop()

    async def bad_request(request: Request, exc: Exception) -> Response:
        return Response(f"400: {exc}\n", status_code=400, media_type="text/plain")

    app = Starlette(routes=routes(web), lifespan=lifespan, exception_handlers={BadRequest: bad_request})
    app.state.web = web
    app.add_middleware(Guard, access=access)
    return app
