"""Change notifications: a job's resource (``queue://jobs/<id>``) and ``queue://status`` are
published as updated when the job enters, moves through or leaves ``pending/`` and ``running/``.

The MCP SDK (2.x) delivers them to clients on ``subscriptions/listen`` streams (protocol
2026-07-28; the server advertises ``resources.subscribe`` for it); the 2025-era
``resources/subscribe`` request is not served, and not advertised to 2025-era clients.
A thread waits on file events in the two folders (:func:`execsvc.protocol.changes.folder_changes`)
and hands the changed ids to the event loop, which publishes them on the server's bus.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.shared.subscriptions import ResourceUpdated

from execsvc.protocol.changes import folder_changes
from execsvc.protocol.models import JobState
from execsvc.protocol.queue import JobQueue

logger = logging.getLogger("execsvc.mcp")

STOP_CHECK_S = 1.0
"""How often the watching thread looks whether the server is closing (seconds)."""

READY_WAIT_S = 10.0
"""The longest the server waits at its start for the watch of the queue's folders (seconds)."""


def _live_ids(queue: JobQueue) -> dict[str, JobState]:
    """The ids in ``pending/`` (held ones too) and ``running/``, with their state."""
    return {
        entry.job_id: entry.state for state in (JobState.PENDING, JobState.RUNNING) for entry in queue.entries(state)
    }


def watch_jobs(root: Path, publish: Callable[[set[str]], None], stop: threading.Event, ready: threading.Event) -> None:
    """Call ``publish(ids)`` with the ids whose state changed, until ``stop`` is set (in a thread).
    ``ready`` is set once the folders are watched and their jobs read (or the watch failed).

    Never raises: a queue that cannot be watched or read ends the notifications (logged),
    never the server."""
    try:
        _watch(root, publish, stop, ready)
    except Exception as exc:
        logger.warning("job change notifications stopped: %s", exc)
    finally:
        ready.set()


def _watch(root: Path, publish: Callable[[set[str]], None], stop: threading.Event, ready: threading.Event) -> None:
    queue = JobQueue(root)
    layout = queue.layout
    layout.ensure_held()
    with folder_changes([layout.pending, layout.held, layout.running], "job changes to publish") as changed:
        before = _live_ids(queue)  # read once the watch is in place: no change falls between the two
        ready.set()
        while not stop.is_set():
            changed(STOP_CHECK_S)
            after = _live_ids(queue)
            ids = {job_id for job_id in before.keys() | after.keys() if before.get(job_id) != after.get(job_id)}
            before = after
            if ids and not stop.is_set():
                publish(ids)


def publishing_lifespan(root: Path, bus: InMemorySubscriptionBus) -> Callable[[Any], Any]:
    """A server lifespan that publishes job changes on ``bus`` while the server runs."""

    @asynccontextmanager
    async def lifespan(_server: Any) -> AsyncIterator[dict[str, Any]]:
        stop = threading.Event()

        async def send(ids: set[str]) -> None:
            for job_id in sorted(ids):
                await bus.publish(ResourceUpdated(uri=f"queue://jobs/{job_id}"))
            await bus.publish(ResourceUpdated(uri="queue://status"))

        def publish(ids: set[str]) -> None:
            try:
                anyio.from_thread.run(send, ids)
            except RuntimeError:  # the event loop is closing
                stop.set()

        ready = threading.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.to_thread.run_sync, watch_jobs, root, publish, stop, ready)
            # Serve no request before the watch is in place: a job enqueued by the first call is seen.
            await anyio.to_thread.run_sync(ready.wait, READY_WAIT_S)
            try:
                yield {}
            finally:
                stop.set()
                group.cancel_scope.cancel()

    return lifespan
