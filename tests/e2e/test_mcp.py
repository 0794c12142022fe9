"""The MCP server against a real worker: in-process with ``mcp.Client(server)``, and the installed
``execsvc mcp`` over real stdio with the SDK's stdio client."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
from conftest import WorkerProcess, console_script, drop, process_gone, start_job_with_child, wait_finished, wait_until
from mcp import Client, StdioServerParameters
from mcp_calls import error_text, run, structured

from execsvc import JobQueue, JobStatus

PY = sys.executable
Start = Callable[..., WorkerProcess]
TOOLS = {"enqueue_job", "get_job", "list_jobs", "get_job_output", "wait_for_job", "cancel_job", "queue_status"}
TOOLS |= {"search_output", "hold_job", "release_job", "retry_job"}
TOOLS |= {"list_schedules"}


def test_one_call_runs_a_quick_job_and_returns_its_output(queue_root: Path, start_worker: Start) -> None:
    start_worker()

    async def session(client: Client) -> None:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == TOOLS
        assert all(tool.output_schema for tool in tools.values())  # structured output for every tool
        result = structured(await client.call_tool("enqueue_job", {"command": 'python3 -c "print(6*7)"', "wait_s": 10}))
        assert result["status"] == "completed"
        assert result["stdout"]["text"] == "42\n" and result["exit_code"] == 0
        record = JobQueue(queue_root).get(result["job_id"]).result
        assert record is not None and record.submitted_by == "mcp"  # who submitted is in the record

    run(session, queue_root)


def test_output_pages_through_five_megabytes(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    script = "import sys\nfor i in range(50_000): sys.stdout.write(f'{i:07d} ' + 'é' * 46 + '\\n')\n"

    async def session(client: Client) -> None:
        done = structured(await client.call_tool("enqueue_job", {"command": PY, "args": ["-c", script], "wait_s": 30}))
        job_id = done["job_id"]
        assert done["stdout"]["bytes"] == 50_000 * 101 and done["stdout"]["lines"] == 50_000
        pieces, offset = [], 0
        while True:
            page = structured(
                await client.call_tool("get_job_output", {"job_id": job_id, "offset": offset, "max_bytes": 65_536})
            )
            pieces.append(page["text"])
            assert page["total_bytes"] == 50_000 * 101
            offset = page["next_offset"]
            if page["complete"]:
                break
        assert len(pieces) == 78 and "".join(pieces).encode() == (queue_root / "logs" / f"{job_id}.stdout").read_bytes()
        tail = structured(await client.call_tool("get_job_output", {"job_id": job_id, "tail": 2}))
        assert tail["text"].splitlines() == [f"{i:07d} " + "é" * 46 for i in (49_998, 49_999)]

    run(session, queue_root)


def test_cancel_a_pending_and_a_running_job(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--kill-grace-s", "0.5")
    child = start_job_with_child(queue_root, worker, "long")

    async def session(client: Client) -> None:
        queued = structured(await client.call_tool("enqueue_job", {"command": "echo", "args": ["never"]}))
        assert queued["status"] == "pending" and "behind 0 job(s)" in queued["waiting"]
        assert "1/1 slots busy: job long (" in queued["note"]
        gone = structured(await client.call_tool("cancel_job", {"job_id": queued["job_id"]}))
        assert gone["outcome"] == "cancelled" and gone["job"]["status"] == "cancelled"
        stopped = structured(await client.call_tool("cancel_job", {"job_id": "long"}))
        assert stopped["outcome"] == "stopped" and stopped["job"]["status"] == "cancelled"
        again = structured(await client.call_tool("cancel_job", {"job_id": "long"}))
        assert again["outcome"] == "already_finished"

    run(session, queue_root)
    wait_until(lambda: process_gone(child), what="the job's process group to be gone")


def test_wait_for_job_returns_when_it_ends_and_reports_progress(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    async def session(client: Client) -> None:
        job = structured(await client.call_tool("enqueue_job", {"command": "sleep 2.5; echo done"}))
        result = await client.call_tool(
            "wait_for_job", {"job_id": job["job_id"], "timeout_s": 30}, progress_callback=on_progress
        )
        waited = structured(result)
        assert waited["status"] == "completed" and waited["stdout"]["text"] == "done\n"
        short = structured(await client.call_tool("enqueue_job", {"command": "sleep 5"}))
        still = structured(await client.call_tool("wait_for_job", {"job_id": short["job_id"], "timeout_s": 0.2}))
        assert still["status"] in ("pending", "running")

    run(session, queue_root)
    assert progress, "no progress notification was sent while waiting"


def test_bad_input_gets_a_sentence_and_the_server_keeps_serving(queue_root: Path) -> None:
    async def session(client: Client) -> None:
        for bad in ("../etc/passwd", "a/b", "x\x00y", "z" * 300, ".hidden"):
            text = error_text(await client.call_tool("get_job", {"job_id": bad}))
            assert "job id" in text or "at most 256" in text, text
        assert "no job with id 'missing'" in error_text(await client.call_tool("get_job", {"job_id": "missing"}))
        assert "no job" in error_text(await client.call_tool("cancel_job", {"job_id": "missing"}))
        assert "no job" in error_text(await client.call_tool("wait_for_job", {"job_id": "missing"}))
        assert "command is blank" in error_text(await client.call_tool("enqueue_job", {"command": "   "}))
        assert "wait_s" in error_text(await client.call_tool("enqueue_job", {"command": "true", "wait_s": 51}))
        assert "cursor" in error_text(await client.call_tool("list_jobs", {"cursor": "garbage"}))
        queued = structured(await client.call_tool("enqueue_job", {"command": "true"}))
        assert "no worker is serving" in queued["note"]  # no worker: said, and the job waits
        status = structured(await client.call_tool("queue_status", {}))
        assert status["worker"]["serving"] is False and status["counts"]["pending"] == 1

    run(session, queue_root)


def test_a_vanished_job_and_an_unwritable_queue_are_explained(queue_root: Path) -> None:
    queue = JobQueue(queue_root)
    job_id = queue.submit({"command": "true"})

    async def session(client: Client) -> None:
        assert structured(await client.call_tool("get_job", {"job_id": job_id}))["status"] == "pending"
        os.unlink(queue_root / "pending" / f"{job_id}.json")  # someone removed it
        assert "no job" in error_text(await client.call_tool("get_job_output", {"job_id": job_id}))
        if os.geteuid() == 0:
            return  # root ignores folder permissions; the next test covers an unusable queue
        (queue_root / "pending").chmod(0o500)
        try:
            text = error_text(await client.call_tool("enqueue_job", {"command": "true"}))
        finally:
            (queue_root / "pending").chmod(0o700)
        assert "could not be read or written" in text and "Permission denied" in text
        assert structured(await client.call_tool("queue_status", {}))["counts"]["pending"] == 0

    run(session, queue_root)


def test_resources_and_prompts(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    drop(queue_root, "bad.json", {"command": "echo oops >&2; exit 3"})
    wait_finished(queue_root, "bad")

    async def session(client: Client) -> None:
        status = json.loads((await client.read_resource("queue://status")).contents[0].text)  # type: ignore[union-attr]
        assert status["counts"]["failed"] == 1 and status["worker"]["serving"]
        job = json.loads((await client.read_resource("queue://jobs/bad")).contents[0].text)  # type: ignore[union-attr]
        assert job["exit_code"] == 3 and job["result"]["returncode"] == 3
        err = (await client.read_resource("queue://jobs/bad/stderr")).contents[0]
        assert err.text == "oops\n" and err.mime_type == "text/plain"  # type: ignore[union-attr]
        log = (await client.read_resource("queue://log")).contents[0].text  # type: ignore[union-attr]
        assert "finished job=bad" in log
        prompt = await client.get_prompt("diagnose_failed_job", {"job_id": "bad"})
        text = prompt.messages[0].content.text  # type: ignore[union-attr]
        assert "oops" in text and "echo oops" in text and "failed" in text
        summary = await client.get_prompt("summarize_queue", {})
        assert "bad" in summary.messages[0].content.text  # type: ignore[union-attr]

    run(session, queue_root)


def stdio_params(queue_root: Path, stdout_copy: Path) -> StdioServerParameters:
    """The installed ``execsvc mcp``, its stdout copied to a file so the test can check every byte."""
    command = 'exec "$0" mcp --queue-dir "$1" | tee -a "$2"'
    return StdioServerParameters(
        command="/bin/sh",
        args=["-c", command, console_script("execsvc"), str(queue_root), str(stdout_copy)],
        env={**os.environ},
    )


def test_the_installed_server_over_stdio_survives_a_restart_mid_job(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    start_worker()
    wire = tmp_path / "stdout.jsonl"
    job_ids: list[str] = []

    async def first() -> None:
        async with Client(stdio_params(queue_root, wire)) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
            quick = structured(
                await client.call_tool("enqueue_job", {"command": 'python3 -c "print(6*7)"', "wait_s": 10})
            )
            assert quick["stdout"]["text"] == "42\n"
            slow = structured(await client.call_tool("enqueue_job", {"command": "sleep 1; echo later"}))
            job_ids.append(slow["job_id"])
        # the server is gone now; the job goes on in the worker

    async def second() -> None:
        async with Client(stdio_params(queue_root, wire)) as client:
            done = structured(await client.call_tool("wait_for_job", {"job_id": job_ids[0], "timeout_s": 30}))
            assert done["status"] == "completed" and done["stdout"]["text"] == "later\n"

    anyio.run(first)
    anyio.run(second)
    lines = wire.read_text().splitlines()
    assert len(lines) >= 6
    for line in lines:  # nothing but JSON-RPC on stdout
        message = json.loads(line)
        assert message.get("jsonrpc") == "2.0", line


def test_jobs_stay_queued_for_a_worker_when_none_runs(queue_root: Path, start_worker: Start) -> None:
    job_ids: list[str] = []

    async def session(client: Client) -> None:
        queued = structured(
            await client.call_tool("enqueue_job", {"command": "echo", "args": ["later"], "wait_s": 0.3})
        )
        assert queued["status"] == "pending"
        assert "no worker is serving" in queued["note"]
        job_ids.append(queued["job_id"])

    run(session, queue_root)
    start_worker()
    finished = wait_finished(queue_root, job_ids[0])
    assert finished.status is JobStatus.COMPLETED and finished.result is not None
    assert finished.result.stdout == "later\n"


def test_a_queue_folder_that_cannot_be_created_is_explained(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the queue's parent folder should be")

    async def session(client: Client) -> None:
        text = error_text(await client.call_tool("queue_status", {}))
        assert "cannot be created or opened" in text and str(blocker) in text
        assert "cannot be created" in error_text(await client.call_tool("enqueue_job", {"command": "true"}))

    run(session, blocker / "queue")
