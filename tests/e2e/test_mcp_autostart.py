"""A worker that is always there: ``execsvc mcp`` starts one when none serves the queue (issue 19,
item 3). Real servers over stdio, real workers; every worker a server started is stopped by the
pid in ``worker.json`` (and any other serving the queue) when the test ends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from conftest import wait_until
from mcp_calls import structured
from mcp_stdio import mcp_over_stdio, stop_started_workers, workers_of

from execsvc import JobQueue


@pytest.fixture
def stopped_queue(queue_root: Path) -> Iterator[Path]:
    """A queue no worker serves; whatever worker the test causes is stopped at the end."""
    JobQueue(queue_root)
    yield queue_root
    stop_started_workers(queue_root)


def test_a_job_on_a_queue_with_no_worker_completes_in_the_same_call(stopped_queue: Path, tmp_path: Path) -> None:
    async def session() -> None:
        async with mcp_over_stdio(stopped_queue, tmp_path) as client:
            done = structured(
                (await client.call("enqueue_job", {"command": "python3 -c 'print(6*7)'", "wait_s": 10})).result
            )
            assert done["status"] == "completed" and done["stdout"]["text"] == "42\n"
            assert "one was started" in done["note"] and "detached" in done["note"]
            again = structured((await client.call("enqueue_job", {"command": "pwd", "wait_s": 10})).result)
            assert "note" not in again  # said once
            assert again["stdout"]["text"] == f"{tmp_path}\n"  # jobs run where the client started the server

    anyio.run(session)
    info = JobQueue(stopped_queue).worker_info()
    assert info is not None  # the worker stays when the server goes: it serves the queue
    assert (stopped_queue / "server.log").exists() and (stopped_queue / "server.error.log").exists()


def test_two_servers_starting_at_once_leave_one_worker(stopped_queue: Path, tmp_path: Path) -> None:
    answers: list[dict[str, object]] = []

    async def one(name: str) -> None:
        async with mcp_over_stdio(stopped_queue, tmp_path, name=name) as client:
            answers.append(structured((await client.call("enqueue_job", {"command": "echo hi", "wait_s": 10})).result))

    async def both() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(one, "a")
            group.start_soon(one, "b")

    anyio.run(both)
    assert [answer["status"] for answer in answers] == ["completed", "completed"]
    wait_until(lambda: len(workers_of(stopped_queue)) == 1, timeout_s=15, what="the refused worker to exit")
    info = JobQueue(stopped_queue).worker_info()
    assert info is not None and [process.pid for process in workers_of(stopped_queue)] == [info.pid]


def test_with_auto_start_off_a_wait_returns_at_once_saying_what_to_do(stopped_queue: Path, tmp_path: Path) -> None:
    async def session() -> None:
        async with mcp_over_stdio(stopped_queue, tmp_path, "--no-auto-start") as client:
            started = time.monotonic()
            queued = structured((await client.call("enqueue_job", {"command": "true", "wait_s": 10})).result)
            waited = structured((await client.call("wait_for_job", {"job_id": queued["job_id"]})).result)
            assert time.monotonic() - started < 8  # not the 10 s + 30 s asked for: there is nobody to wait for
            for answer in (queued, waited):
                assert answer["status"] == "pending" and answer["note"].startswith("no_worker: ")
                assert "execsvc run" in answer["note"]

    anyio.run(session)
    assert workers_of(stopped_queue) == []
