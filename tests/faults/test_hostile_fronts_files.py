"""Hostile files under the names the clients read: a FIFO or a symbolic link to a secret at a job's
log, at ``daemon.log``, at a record, at a text job's script, at ``worker.json`` and in ``pending/``.

A job can write into its queue (``$EXECSVC_QUEUE_DIR``), so it can swap its own logs for a FIFO (a
plain ``open`` of it waits forever for a writer) or for a link to a file it may not read (a viewer
that follows it prints that file). Every client (``queue-view``, ``execsvc submit --wait`` and
``retry``, the MCP server over stdio) is run as a real process with a bounded wait, and must answer
with a sentence, never hang, never show the secret, and never move the file (a client only reads).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import WorkerProcess, console_script, drop, wait_finished, wait_until
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextResourceContents

Start = Callable[..., WorkerProcess]
SECRET = "TOPSECRET-b41c9e"
KINDS = ("fifo", "symlink")
BOUND_S = 20  # an old client hangs on a FIFO forever: this bounds the test instead


def run(queue_root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """An installed console script on the test's queue, bounded (a hang is TimeoutExpired)."""
    program, *rest = argv
    command = (
        [console_script(program), *rest[:1], "--queue-dir", str(queue_root), *rest[1:]]
        if program == "execsvc"
        else [console_script(program), "--queue-dir", str(queue_root), *rest]
    )
    return subprocess.run(
        command, capture_output=True, text=True, timeout=BOUND_S, check=False, stdin=subprocess.DEVNULL
    )


def assert_calm(proc: subprocess.CompletedProcess[str]) -> str:
    """No secret, no traceback; returns stdout and stderr together."""
    both = proc.stdout + proc.stderr
    assert SECRET not in both, both
    assert "Traceback" not in both, both
    return both


def plant(path: Path, kind: str, secret: Path) -> None:
    """Put a FIFO, or a symbolic link to ``secret``, at ``path`` (what was there is removed)."""
    if os.path.lexists(path):
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    else:
        path.symlink_to(secret)


def assert_still_there(path: Path, kind: str) -> None:
    """A client moves nothing aside: the FIFO or the link is where it was."""
    mode = os.lstat(path).st_mode
    assert stat.S_ISFIFO(mode) if kind == "fifo" else stat.S_ISLNK(mode), oct(mode)


def secret_file(tmp_path: Path, content: str = f"root:{SECRET}:19000::::::\n") -> Path:
    secret = tmp_path / "secret"
    secret.write_text(content)
    return secret


def swapping_job(kind: str, secret: Path) -> str:
    """A shell line that prints, then swaps its own two logs for a FIFO or a link to ``secret``."""
    make = "mkfifo" if kind == "fifo" else f"ln -s {secret}"
    return (
        'echo printed; echo complained >&2; L="$EXECSVC_QUEUE_DIR/logs/$EXECSVC_JOB_ID"; '
        f'rm -f "$L.stdout" "$L.stderr"; {make} "$L.stdout"; {make} "$L.stderr"'
    )


@pytest.mark.parametrize("kind", KINDS)
def test_submit_wait_on_a_job_that_swaps_its_logs_names_them_and_ends(
    queue_root: Path, start_worker: Start, tmp_path: Path, kind: str
) -> None:
    secret = secret_file(tmp_path)
    start_worker()
    waited = run(queue_root, "execsvc", "submit", "--wait", "--id", "swap", "--shell", swapping_job(kind, secret))
    both = assert_calm(waited)
    assert waited.returncode == 0, both  # the job completed; its logs are not shown
    assert waited.stdout == "" and "swap.stdout is" in waited.stderr and "not a regular file" in waited.stderr, both
    assert_still_there(queue_root / "logs" / "swap.stdout", kind)
    assert_still_there(queue_root / "logs" / "swap.stderr", kind)


@pytest.mark.parametrize("kind", KINDS)
def test_queue_view_shows_a_job_that_swapped_its_logs_without_them(
    queue_root: Path, start_worker: Start, tmp_path: Path, kind: str
) -> None:
    secret = secret_file(tmp_path)
    start_worker()
    drop(queue_root, "swap.json", {"command": swapping_job(kind, secret)})
    assert wait_finished(queue_root, "swap").status.value == "completed"
    shown = run(queue_root, "queue-view", "show", "swap")
    both = assert_calm(shown)
    assert shown.returncode == 0 and "completed" in shown.stdout, both
    assert "not a regular file" in shown.stdout, both
    as_json = run(queue_root, "queue-view", "show", "swap", "--json")
    assert_calm(as_json)
    payload = json.loads(as_json.stdout)
    assert payload["status"] == "completed" and payload["stdout_tail"] == ""
    for argv in (("logs", "swap"), ("logs", "swap", "--stderr"), ("logs", "swap", "--follow")):
        logs = run(queue_root, "queue-view", *argv)
        both = assert_calm(logs)
        assert logs.returncode == 1 and "not a regular file" in logs.stderr, (argv, both)
        assert logs.stdout == "", (argv, both)
    listed = run(queue_root, "queue-view", "list", "--json")
    assert_calm(listed)
    assert [job["job_id"] for job in json.loads(listed.stdout)["jobs"]] == ["swap"]
    overview = run(queue_root, "queue-view")
    both = assert_calm(overview)
    assert overview.returncode == 0 and "swap" in overview.stdout, both
    assert_still_there(queue_root / "logs" / "swap.stdout", kind)
    assert_still_there(queue_root / "logs" / "swap.stderr", kind)


def _swapped(log: Path) -> bool:
    """Whether the job has put something not a regular file at ``log`` (it removes the file first)."""
    try:
        return not stat.S_ISREG(os.lstat(log).st_mode)
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("kind", KINDS)
def test_queue_view_follows_a_running_job_until_its_log_is_no_file(
    queue_root: Path, start_worker: Start, tmp_path: Path, kind: str
) -> None:
    secret = secret_file(tmp_path)
    worker = start_worker()
    drop(queue_root, "busy.json", {"command": swapping_job(kind, secret) + "; sleep 60", "timeout_s": 60})
    worker.wait_for_line("started job=busy")
    log = queue_root / "logs" / "busy.stdout"
    wait_until(lambda: _swapped(log), what="the swapped log")
    followed = run(queue_root, "queue-view", "logs", "busy", "--follow")
    both = assert_calm(followed)
    assert followed.returncode == 1 and "not a regular file" in followed.stderr, both
    assert run(queue_root, "execsvc", "cancel", "busy").returncode == 0
    assert wait_finished(queue_root, "busy").status.value == "cancelled"
    assert_still_there(log, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_daemon_log_that_is_not_a_file_is_named_not_read(
    queue_root: Path, start_worker: Start, tmp_path: Path, kind: str
) -> None:
    secret = secret_file(tmp_path)
    worker = start_worker()
    drop(queue_root, "quiet.json", {"command": "true"})
    wait_finished(queue_root, "quiet")
    worker.stop()
    plant(queue_root / "daemon.log", kind, secret)
    for argv in (("daemon-log",), ("daemon-log", "-n", "5"), ("daemon-log", "--follow")):
        proc = run(queue_root, "queue-view", *argv)
        both = assert_calm(proc)
        assert proc.returncode == 1 and "not a regular file" in proc.stderr, (argv, both)
    overview = run(queue_root, "queue-view")
    both = assert_calm(overview)
    assert overview.returncode == 0 and "quiet" in overview.stdout, both
    assert_still_there(queue_root / "daemon.log", kind)


@pytest.mark.parametrize("kind", KINDS)
def test_a_record_worker_file_and_pending_job_that_are_not_files_cost_their_own_line(
    queue_root: Path, start_worker: Start, tmp_path: Path, kind: str
) -> None:
    worker = start_worker()
    drop(queue_root, "rec.json", {"command": "echo fine"})
    drop(queue_root, "other.json", {"command": "echo other"})
    wait_finished(queue_root, "rec")
    wait_finished(queue_root, "other")
    worker.stop()
    record = queue_root / "completed" / "rec.json"
    forged = json.loads(record.read_text())
    forged["result"]["stdout"] = SECRET + "\n"  # a valid record: a reader that follows the link shows it
    secret = secret_file(tmp_path, json.dumps(forged))
    plant(record, kind, secret)
    plant(queue_root / "worker.json", kind, secret)
    plant(queue_root / "pending" / "waiting.json", kind, secret)

    overview = run(queue_root, "queue-view")
    both = assert_calm(overview)
    assert overview.returncode == 0 and "not running" in overview.stdout and "other" in overview.stdout, both
    listed = run(queue_root, "queue-view", "list", "--json")
    assert_calm(listed)
    jobs = {job["job_id"]: job for job in json.loads(listed.stdout)["jobs"]}
    assert jobs["other"]["status"] == "completed"
    assert "cannot be read" in jobs["rec"]["error"]
    for argv in (("queue-view", "show", "rec"), ("execsvc", "retry", "rec"), ("execsvc", "cancel", "rec")):
        proc = run(queue_root, *argv)
        both = assert_calm(proc)
        assert proc.returncode == 1 and "rec" in proc.stderr, (argv, both)
    shown = run(queue_root, "queue-view", "show", "waiting")
    both = assert_calm(shown)
    assert shown.returncode == 0 and "pending" in shown.stdout, both
    assert not list((queue_root / "pending").glob("rec-r*")), "a record that is no file was retried"
    for path in (record, queue_root / "worker.json", queue_root / "pending" / "waiting.json"):
        assert_still_there(path, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_retry_refuses_a_script_that_is_not_a_file_beside_its_record(
    queue_root: Path, start_worker: Start, tmp_path: Path, kind: str
) -> None:
    secret = secret_file(tmp_path, f"echo {SECRET}\n")
    worker = start_worker()
    drop(queue_root, "scr.sh", "echo from the script\n")
    wait_finished(queue_root, "scr")
    worker.stop()
    script = queue_root / "completed" / "scr.sh"
    assert script.is_file()
    plant(script, kind, secret)
    proc = run(queue_root, "execsvc", "retry", "scr")
    both = assert_calm(proc)
    assert proc.returncode == 1 and "scr" in proc.stderr, both
    resubmitted = [path.read_text() for path in (queue_root / "pending").iterdir() if path.is_file()]
    assert resubmitted == [], "the file the link points at was enqueued as the job's script"
    assert_still_there(script, kind)


@pytest.mark.parametrize("kind", KINDS)
def test_status_sh_names_a_daemon_log_that_is_not_a_file(
    queue_root: Path, start_worker: Start, tmp_path: Path, kind: str
) -> None:
    secret = secret_file(tmp_path)
    start_worker().stop()
    plant(queue_root / "daemon.log", kind, secret)
    script = Path(__file__).resolve().parents[2] / "status.sh"
    proc = subprocess.run([str(script), str(queue_root)], capture_output=True, text=True, timeout=BOUND_S, check=False)
    both = assert_calm(proc)
    assert proc.returncode == 1 and "not running" in proc.stdout, both
    assert "daemon.log is not a regular file" in proc.stdout, both
    assert_still_there(queue_root / "daemon.log", kind)


def mcp_text(result: CallToolResult) -> str:
    return json.dumps(result.structured_content) + "".join(getattr(part, "text", "") for part in result.content)


def stdio_server(queue_root: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=console_script("execsvc"),
        args=["mcp", "--queue-dir", str(queue_root), "--no-auto-start"],  # the test stopped the worker on purpose
        env={**os.environ},
    )


@pytest.mark.parametrize("kind", KINDS)
def test_the_mcp_server_over_stdio_names_files_that_are_not_files(
    queue_root: Path, start_worker: Start, tmp_path: Path, kind: str
) -> None:
    secret = secret_file(tmp_path)
    worker = start_worker()
    drop(queue_root, "swap.json", {"command": swapping_job(kind, secret)})
    drop(queue_root, "rec.json", {"command": "echo fine"})
    wait_finished(queue_root, "swap")
    wait_finished(queue_root, "rec")
    worker.stop()
    record = queue_root / "completed" / "rec.json"
    forged = json.loads(record.read_text())
    forged["result"]["stdout"] = SECRET + "\n"
    forged_record = tmp_path / "forged-record"
    forged_record.write_text(json.dumps(forged))
    plant(record, kind, forged_record)
    plant(queue_root / "daemon.log", kind, secret)
    answers: dict[str, Any] = {}

    async def session() -> None:
        with anyio.fail_after(BOUND_S):
            async with Client(stdio_server(queue_root)) as client:
                detail = await client.call_tool("get_job", {"job_id": "swap"})
                assert not detail.is_error, detail.content
                answers["get_job"] = detail
                for stream in ("stdout", "stderr"):
                    for extra in ({}, {"tail": 5}):
                        output = await client.call_tool("get_job_output", {"job_id": "swap", "stream": stream, **extra})
                        assert not output.is_error, output.content
                        answers[f"get_job_output {stream} {extra}"] = output
                answers["list_jobs"] = await client.call_tool("list_jobs", {})
                answers["queue_status"] = await client.call_tool("queue_status", {})
                answers["get_job rec"] = await client.call_tool("get_job", {"job_id": "rec"})
                for name, uri in (("log", "queue://log"), ("stdout resource", "queue://jobs/swap/stdout")):
                    try:
                        read = await client.read_resource(uri)
                        answers[name] = "".join(
                            part.text for part in read.contents if isinstance(part, TextResourceContents)
                        )
                    except Exception as exc:  # the SDK raises the server's ResourceError as an McpError
                        answers[name] = str(exc)

    anyio.run(session)
    assert answers["get_job"].structured_content["status"] == "completed"
    for name, answer in answers.items():
        text = mcp_text(answer) if isinstance(answer, CallToolResult) else str(answer)
        assert SECRET not in text, (name, text)
        assert "Traceback" not in text, (name, text)
    output = answers["get_job_output stdout {}"].structured_content
    assert output["text"] == "" and "not a regular file" in output["problem"] and output["complete"]
    assert answers["get_job rec"].is_error and "rec" in mcp_text(answers["get_job rec"])
    listed = {job["job_id"]: job for job in answers["list_jobs"].structured_content["jobs"]}
    assert listed["swap"]["status"] == "completed" and "cannot be read" in listed["rec"]["error"]
    assert "not a regular file" in answers["log"], answers["log"]
    assert "not a regular file" in answers["stdout resource"], answers["stdout resource"]
    for path in (queue_root / "logs" / "swap.stdout", record, queue_root / "daemon.log"):
        assert_still_there(path, kind)
