"""The MCP tools that act on jobs and the words they come back with (issue 19, items 4 and 6):
hold, release, retry, cancel with force or a signal, a running job's figures, the timeout and
exit-127 messages, an unknown ``after`` refused. The installed ``execsvc mcp`` over real stdio
against a real worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from conftest import WorkerProcess
from mcp_calls import error_text, structured
from mcp_stdio import SizedClient, mcp_over_stdio

from execsvc import JobQueue, JobState

Start = Callable[..., WorkerProcess]
IGNORES_TERM = "trap '' TERM; sleep 60"
"""A shell job whose whole process group ignores SIGTERM (sleep inherits the ignored signal)."""


async def call(client: SizedClient, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return structured((await client.call(tool, arguments)).result)


async def running(client: SizedClient, command: str, **fields: Any) -> str:
    """Enqueue ``command`` and return its id once it runs (file events: wait_for_job's progress)."""
    job = await call(client, "enqueue_job", {"command": command, **fields})
    with anyio.fail_after(10):
        while (await call(client, "get_job", {"job_id": job["job_id"]}))["status"] != "running":
            await anyio.sleep(0.05)
    return str(job["job_id"])


def test_hold_release_and_retry_round_trips(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    start_worker()

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            later = await call(client, "enqueue_job", {"command": "echo later", "delay_s": 3600})
            held = await call(client, "hold_job", {"job_id": later["job_id"]})
            assert held["status"] == "pending" and "held" in held["waiting"] and "release_job" in held["waiting"]
            released = await call(client, "release_job", {"job_id": later["job_id"]})
            assert "held" not in released["waiting"] and "due at" in released["waiting"]
            failed = await call(client, "enqueue_job", {"command": "echo once; exit 3", "wait_s": 10})
            assert failed["status"] == "failed" and failed["exit_code"] == 3
            again = await call(client, "retry_job", {"job_id": failed["job_id"]})
            assert (
                again["job_id"] == f"{failed['job_id']}-r1" and f"enqueued again as {again['job_id']}" in again["note"]
            )
            done = await call(client, "wait_for_job", {"job_id": again["job_id"], "timeout_s": 10})
            assert done["exit_code"] == 3 and done["stdout"]["text"] == "once\n"
            refused = await client.client.call_tool("hold_job", {"job_id": failed["job_id"]})
            assert "only a pending job can be held" in error_text(refused)

    anyio.run(session)


def test_force_cancel_kills_a_job_that_ignores_sigterm_at_once(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    start_worker("--kill-grace-s", "60")  # without force, stopping it would take a minute

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            job_id = await running(client, IGNORES_TERM)
            stopped = await call(client, "cancel_job", {"job_id": job_id, "force": True})
            assert stopped["outcome"] == "stopped" and stopped["job"]["status"] == "cancelled"
            assert "cancelled on request (forced)" in stopped["job"]["error"]
            assert "got SIGKILL" in stopped["job"]["error"] and "SIGTERM" not in stopped["job"]["error"]
            request = JobQueue(queue_root).layout.cancel_request(job_id)
            assert not request.exists()  # acted on and removed

    anyio.run(session)


def test_cancel_with_a_signal_and_the_words_of_how_it_ended(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    start_worker("--kill-grace-s", "1")

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            job_id = await running(client, "exec python3 -c 'import time; time.sleep(60)'")
            stopped = await call(client, "cancel_job", {"job_id": job_id, "signal": "SIGINT"})
            assert "its process group got SIGINT, which ended it" in stopped["job"]["error"], stopped
            stubborn = await running(client, IGNORES_TERM)
            stopped = await call(client, "cancel_job", {"job_id": stubborn})
            assert "got SIGTERM, then SIGKILL after 1 s as it was still running" in stopped["job"]["error"]

    anyio.run(session)


def test_timeout_messages_say_whether_sigterm_sufficed(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    start_worker("--kill-grace-s", "1")

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            quiet = await call(client, "enqueue_job", {"command": "sleep 30", "timeout_s": 0.5, "wait_s": 20})
            assert quiet["status"] == "timeout" and quiet["signal"] == "SIGTERM"
            assert "its process group got SIGTERM, which ended it" in quiet["error"], quiet["error"]
            assert "SIGKILL" not in quiet["error"]
            stubborn = await call(client, "enqueue_job", {"command": IGNORES_TERM, "timeout_s": 0.5, "wait_s": 20})
            assert stubborn["status"] == "timeout" and stubborn["signal"] == "SIGKILL"
            assert "got SIGTERM, then SIGKILL after 1 s as it was still running" in stubborn["error"]

    anyio.run(session)


def test_a_command_that_is_not_found_is_named(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    start_worker()

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            done = await call(client, "enqueue_job", {"command": "nosuch-command-19 --help", "wait_s": 10})
            assert done["exit_code"] == 127 and done["error"] == "command not found: nosuch-command-19 (exit code 127)"

    anyio.run(session)


def test_an_unknown_after_is_refused_before_anything_is_written(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    start_worker()

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            refused = await client.client.call_tool("enqueue_job", {"command": "true", "after": ["no-such-job"]})
            assert "after names 'no-such-job', which is no job of this queue" in error_text(refused)
            assert all(JobQueue(queue_root).entries(state) == [] for state in JobState)
            first = await call(client, "enqueue_job", {"command": "true"})
            second = await call(client, "enqueue_job", {"command": "true", "after": [first["job_id"]], "wait_s": 10})
            assert second["status"] == "completed"
            bad = await client.client.call_tool("enqueue_job", {"command": "true", "wait_s": 51})
            assert error_text(bad) == "enqueue_job: wait_s is at most 50 s; call wait_for_job to wait longer"
            typo = await client.client.call_tool("enqueue_job", {"command": "sleep 9", "timeout": 1})
            assert error_text(typo).startswith("enqueue_job: timeout is not an argument; it takes command, args,")
            assert all(JobQueue(queue_root).entries(state) == [] for state in (JobState.PENDING, JobState.RUNNING))

    anyio.run(session)


def test_a_running_job_shows_its_memory_cpu_output_and_who_holds_the_slot(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    start_worker()
    script = "import time; b = b'x' * (150 * 2**20); print('allocated', flush=True); time.sleep(60)"

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            job_id = await running(client, "python3", args=["-c", script], description="holds memory")
            with anyio.fail_after(10):
                while (now := await call(client, "get_job", {"job_id": job_id}))["stdout"]["bytes"] == 0:
                    await anyio.sleep(0.05)
            figures = now["running"]
            assert figures["rss_mb"] >= 150 and figures["processes"] == 1 and figures["cpu_s"] >= 0
            assert figures["timeout_s"] == 300 and figures["elapsed_s"] >= 0
            assert now["stdout"] == {"text": "allocated\n", "lines": 1, "bytes": 10}
            waiting = await call(client, "enqueue_job", {"command": "true"})
            assert waiting["waiting"] == "behind 0 job(s)"
            holder = f"1/1 slots busy: job {job_id} (`{('python3 -c ' + script)[:60]}`, running "
            assert waiting["note"].startswith(holder) and waiting["note"].endswith(" s of 300 s)"), waiting["note"]
            await call(client, "cancel_job", {"job_id": job_id, "force": True})

    anyio.run(session)


def test_a_shell_job_the_policy_refuses_is_refused_at_enqueue(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[policy]\nallow_shell = false\n")
    start_worker("--config", str(config))

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            refused = await client.client.call_tool("enqueue_job", {"command": "echo hi", "wait_s": 10})
            assert "refused by the worker's policy (allow_shell = false)" in error_text(refused)
            assert JobQueue(queue_root).entries(JobState.PENDING) == []  # nothing was written
            direct = await call(client, "enqueue_job", {"command": "/bin/echo", "args": ["hi"], "wait_s": 10})
            assert direct["status"] == "completed" and direct["stdout"]["text"] == "hi\n"
            listed = await client.list_tools()
            enqueue = next(tool for tool in listed.result.tools if tool.name == "enqueue_job")
            assert "shell command lines are refused (pass args)" in (enqueue.description or "")

    anyio.run(session)
