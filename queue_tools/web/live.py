"""The push channel: server-sent events (the HTML Living Standard's ``text/event-stream``)
for the open pages and for a job's output.

``/events`` (every page) carries ``rows`` (JSON: a list of ``{"id", "state", "html"}``, the
rows of the jobs that changed, rendered once for all pages; ``html`` is ``""`` for a job no
longer in the queue), ``overview`` (the overview's HTML, at most every
:data:`OVERVIEW_EVERY_S` seconds while jobs change), ``resync`` (changes were lost: look at
the table again) and, when the queue cannot be watched, ``unwatched``. A :class:`Broadcaster`
is the hub's one subscriber for all pages, so the work per change does not grow with the
number of pages.

``/jobs/<id>/output`` carries ``stdout`` and ``stderr`` events whose data is JSON
``{"text": ...}`` (escape sequences removed: :func:`~queue_tools.web.views.shown_output`) and
whose ``id`` is the byte offsets reached in both logs, ``"<stdout>,<stderr>"``; a reconnecting
browser sends that back as ``Last-Event-ID`` and the stream resumes there. ``end`` says the job
has finished and everything was sent; ``problem`` that a log cannot be read (it is not a
regular file) or the job is gone.

A browser keeps at most six HTTP/1.1 connections to one host, so every tab shares one
``/events`` stream (``static/live-worker.js``, a SharedWorker), and a job's two logs share one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import TypeVar

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from execsvc.protocol.errors import InvalidJobId, JobNotFound
from execsvc.protocol.queue import JobQueue
from queue_tools.api import Stream, read_output

from .hub import Change, FileEventHub, log
from .views import Row, read_row, shown_output

T = TypeVar("T")

STREAMS: tuple[Stream, ...] = ("stdout", "stderr")
"""A job's two logs, in the order an output stream reads them."""

OVERVIEW_EVERY_S = 1.0
"""Least time between two overviews pushed to the pages (seconds)."""
PING_S = 15.0
"""A comment line this often keeps idle connections open through proxies (seconds)."""
OUTPUT_CHUNK_BYTES = 64 * 1024
"""Most bytes of output in one ``chunk`` event."""
UNWATCHED_LOOK_S = 2.0
"""Where the queue cannot be watched, how often a log stream looks for more output (seconds)."""
STOP_GRACE_S = 1.0
"""When the server stops, how long an event stream has to end by itself (seconds)."""
CLIENT_BACKLOG = 256
"""Messages kept for a page that does not read them; past that it is sent ``resync``."""


class Broadcaster:
    """Renders each :class:`Change` once and hands the messages to every open page.

    ``render_row(row)`` and ``render_overview()`` return HTML; they run in a worker thread,
    as does reading the rows.
    """

    def __init__(
        self,
        hub: FileEventHub,
        queue: JobQueue,
        render_row: Callable[[Row], str],
        render_overview: Callable[[], str],
    ) -> None:
        self.hub = hub
        self.queue = queue
        self.render_row = render_row
        self.render_overview = render_overview
        self._pages: set[asyncio.Queue[ServerSentEvent]] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="execsvc-web-broadcast")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        async with self.hub.subscribe() as changes:
            overview_due: float | None = None
            last_overview = 0.0
            while True:
                timeout = None if overview_due is None else max(0.0, overview_due - time.monotonic())
                change: Change | None = None
                with suppress(TimeoutError):
                    change = await asyncio.wait_for(changes.get(), timeout)
                try:
                    if change is not None and (change.job_ids or change.overflowed):
                        await self._push_rows(change)
                        if overview_due is None:
                            overview_due = max(time.monotonic(), last_overview + OVERVIEW_EVERY_S)
                    if overview_due is not None and time.monotonic() >= overview_due:
                        overview_due, last_overview = None, time.monotonic()
                        if self._pages:
                            html = await asyncio.to_thread(self.render_overview)
                            self._send(ServerSentEvent(data=html, event="overview"))
                except Exception:  # one change that cannot be shown must not end the live updates
                    log.exception("execsvc web: a change could not be shown; the pages look at the queue again")
                    self._send(ServerSentEvent(data="{}", event="resync"))

    async def _push_rows(self, change: Change) -> None:
        if change.overflowed:
            self._send(ServerSentEvent(data="{}", event="resync"))
        elif self._pages:
            rows = await asyncio.to_thread(self._rows, sorted(change.job_ids))
            self._send(ServerSentEvent(data=json.dumps(rows), event="rows"))

    def _rows(self, job_ids: list[str]) -> list[dict[str, str]]:
        rows = []
        for job_id in job_ids:
            row = read_row(self.queue, job_id)
            html = self.render_row(row) if row is not None else ""
            rows.append({"id": job_id, "state": row.state.value if row is not None else "", "html": html})
        return rows

    def _send(self, event: ServerSentEvent) -> None:
        for page in list(self._pages):
            try:
                page.put_nowait(event)
            except asyncio.QueueFull:
                while not page.empty():
                    page.get_nowait()
                page.put_nowait(ServerSentEvent(data="{}", event="resync"))

    def response(self, request: Request) -> EventSourceResponse:
        """The ``/events`` stream of one page."""
        page: asyncio.Queue[ServerSentEvent] = asyncio.Queue(CLIENT_BACKLOG)
        live = self.hub.live

        stopping = anyio.Event()

        async def events() -> AsyncIterator[ServerSentEvent]:
            self._pages.add(page)
            try:
                yield ServerSentEvent(data="{}", event="ready" if live else "unwatched", retry=2000)
                while (event := await _unless_stopping(page.get(), stopping)) is not None:
                    yield event
            finally:
                self._pages.discard(page)

        return _response(events(), stopping)

    @property
    def pages(self) -> int:
        """How many pages are connected now."""
        return len(self._pages)


def output_response(hub: FileEventHub, queue: JobQueue, job_id: str, offsets: dict[Stream, int]) -> EventSourceResponse:
    """The output stream of one job from the byte ``offsets`` of its stdout and stderr (see the
    module's docstring). Woken by the hub's events for the job's logs and files; a job that
    leaves the queue meanwhile ends the stream with a ``problem``."""
    stopping = anyio.Event()

    async def events() -> AsyncIterator[ServerSentEvent]:
        position = dict(offsets)
        async with hub.subscribe() as changes:
            while True:
                complete = True
                for stream in STREAMS:
                    try:
                        chunk = await asyncio.to_thread(
                            read_output, queue, job_id, stream, offset=position[stream], max_bytes=OUTPUT_CHUNK_BYTES
                        )
                    except (JobNotFound, InvalidJobId) as exc:
                        yield ServerSentEvent(data=json.dumps({"text": str(exc)}), event="problem")
                        return
                    if chunk.problem:
                        yield ServerSentEvent(data=json.dumps({"text": chunk.problem}), event="problem")
                        continue
                    if chunk.next_offset > position[stream]:
                        position[stream] = chunk.next_offset
                        event_id = f"{position['stdout']},{position['stderr']}"
                        data = json.dumps({"text": shown_output(chunk.text)})
                        yield ServerSentEvent(data=data, event=stream, id=event_id)
                    complete = complete and chunk.complete
                if complete:
                    yield ServerSentEvent(data="{}", event="end")
                    return
                waited = _next_change_of(changes, job_id, None if hub.live else UNWATCHED_LOOK_S)
                if not await _unless_stopping(waited, stopping):
                    return

    return _response(events(), stopping)


def parse_offsets(text: str) -> dict[Stream, int]:
    """``"<stdout bytes>,<stderr bytes>"`` (an output event's id) as offsets. Raises :class:`ValueError`."""
    first, sep, second = text.partition(",")
    if not first.isdigit() or (sep and not second.isdigit()):
        raise ValueError(f"not the offsets of an output event: {text!r}")
    return {"stdout": int(first), "stderr": int(second or 0)}


def _response(events: AsyncIterator[ServerSentEvent], stopping: anyio.Event) -> EventSourceResponse:
    """An event stream that ends by itself (``stopping`` set) when the server stops."""
    return EventSourceResponse(
        events,
        ping=PING_S,
        headers={"Cache-Control": "no-store"},
        shutdown_event=stopping,
        shutdown_grace_period=STOP_GRACE_S,
    )


async def _unless_stopping(awaitable: Awaitable[T], stopping: anyio.Event) -> T | None:
    """What ``awaitable`` gives, or ``None`` as soon as ``stopping`` is set (it is cancelled then)."""
    work = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        done, _ = await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work, stop):
            task.cancel()
    return work.result() if work in done else None


async def _next_change_of(changes: asyncio.Queue[Change], job_id: str, timeout_s: float | None) -> bool:
    """Wait until a change names ``job_id`` (its log or its files), or changes overflowed; true."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return True
        try:
            change = await asyncio.wait_for(changes.get(), remaining)
        except TimeoutError:
            return True
        if change.overflowed or job_id in change.log_ids or job_id in change.job_ids:
            return True
