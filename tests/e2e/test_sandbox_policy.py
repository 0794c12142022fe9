"""The worker's sandbox policy, from its config file: ``sandbox_for`` sandboxes what a front submitted,
``required`` refuses (``invalid``) what it cannot sandbox, ``off`` refuses a job that asks for a sandbox,
a forced job cannot widen its sandbox, and an ``on_finish`` hook runs in its job's sandbox.

The MCP jobs are enqueued by a real MCP client through the server's ``enqueue_job`` (in process,
``mcp.Client(build_server(...))``), which writes ``"submitted_by": "mcp"`` into the job. Real
worker, real bwrap; the one socket is a loopback port the test listens on.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import drop, wait_finished
from mcp import Client
from sandbox_support import PYTHON, Place, Workers, make_place, needs_bwrap, record_of, run_job, workers_at

from execsvc import JobQueue, JobState, JobStatus
from queue_tools.mcp.server import build_server

pytestmark = needs_bwrap


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return make_place(tmp_path)


@pytest.fixture
def workers(place: Place) -> Iterator[Workers]:
    with workers_at(place) as started:
        yield started


def _home_shown(place: Place) -> str:
    """The test's home lies under /tmp (a private tmpfs in a sandbox): show it read-only, as a real home is."""
    return f"sandbox_profile = {{ readable_only = ['{place.home}'] }}"


def _enqueue_over_mcp(place: Place, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call ``enqueue_job`` through a real MCP client and wait for the job; its record."""
    answer: dict[str, Any] = {}

    async def main() -> None:
        async with Client(build_server(place.queue)) as client:
            result = await client.call_tool("enqueue_job", {"wait_s": 30, **arguments})
            assert not result.is_error, result.content
            assert result.structured_content is not None
            answer.update(result.structured_content)

    anyio.run(main)
    info = JobQueue(place.queue).get(answer["job_id"])
    assert info.state in (JobState.COMPLETED, JobState.FAILED), answer  # finished within the call's wait
    record: dict[str, Any] = json.loads(Path(info.path).read_text())
    return record


def test_sandbox_for_mcp_sandboxes_a_job_enqueued_over_mcp_that_asked_for_none(place: Place, workers: Workers) -> None:
    workers.start(f'sandbox_for = ["mcp"]\n{_home_shown(place)}')
    shown = JobQueue(place.queue).worker_info()  # worker.json shows the sandbox policy to every front
    assert shown is not None and shown.sandbox == "on-request" and shown.sandbox_for == ["mcp"]
    line = "echo x > ~/outside.txt || echo refused; echo y > built.txt"
    record = _enqueue_over_mcp(place, {"command": line, "cwd": str(place.work)})
    assert record["submitted_by"] == "mcp" and "sandbox" not in record  # it asked for none
    sandbox = record["result"]["sandbox"]
    assert sandbox["reason"] == "sandbox_for" and sandbox["profile"] == "default" and sandbox["network"] is False
    assert record["result"]["stdout"] == "refused\n" and (place.work / "built.txt").exists()
    assert not (place.home / "outside.txt").exists()
    unconfined = run_job(place, "from-a-file", {"command": "echo x > ~/outside.txt"})  # not from a listed front
    assert unconfined.status is JobStatus.COMPLETED and unconfined.result is not None
    assert unconfined.result.sandbox is None and (place.home / "outside.txt").exists()


def test_done_when_an_llms_attacks_fail_in_the_record_while_its_build_works(place: Place, workers: Workers) -> None:
    """Issue 20's "done when": sandbox = "required", sandbox_for = ["mcp"], a job from MCP."""
    (place.home / ".ssh").mkdir()
    (place.home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (place.home / "important").mkdir()
    (place.home / "important" / "thesis.tex").write_text("years of work\n")
    (place.work / "build.sh").write_text("mkdir -p out && echo built > out/app && cat out/app\n")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        workers.start(f'sandbox = "required"\nsandbox_for = ["mcp"]\n{_home_shown(place)}')
        connect = f"{PYTHON} -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)\""
        steps = [
            f"{connect} || echo 'connect failed'",
            "cat ~/.ssh/id_* || echo 'cat failed'",
            f"echo '{{\"command\": \"id\"}}' > '{place.queue}/pending/x.json' || echo 'enqueue failed'",
            "rm -rf ~/important || echo 'rm failed'",
            "sh build.sh",
        ]
        record = _enqueue_over_mcp(place, {"command": "; ".join(steps), "cwd": str(place.work)})
    result = record["result"]
    assert result["status"] == "completed" and result["sandbox"]["reason"] == "required"
    assert result["stdout"].splitlines()[-4:] == ["cat failed", "enqueue failed", "rm failed", "built"]
    assert "connect failed" in result["stdout"] and "Connection refused" in result["stderr"]
    assert "No such file" in result["stderr"] and "Read-only file system" in result["stderr"]
    assert "PRIVATE KEY" not in result["stdout"] + result["stderr"]
    assert (place.home / "important" / "thesis.tex").read_text() == "years of work\n"
    assert not (place.queue / "pending" / "x.json").exists() and (place.work / "out" / "app").exists()


def test_required_refuses_a_job_as_invalid_when_bwrap_is_not_on_the_workers_path(
    place: Place, workers: Workers, tmp_path: Path
) -> None:
    no_bwrap = tmp_path / "bin-without-bwrap"
    no_bwrap.mkdir()
    workers.start('sandbox = "required"', env=(f"PATH={no_bwrap}",))
    for job_id, job in (("plain", {}), ("asked-none", {"sandbox": False})):
        info = run_job(place, job_id, {"command": "/bin/echo", "args": ["ran"], **job})
        assert info.status is JobStatus.INVALID and info.result is not None
        assert "bwrap is not on the worker's PATH" in (info.result.error or "")
        assert "apt-get install bubblewrap" in (info.result.error or "")
        assert info.result.stdout == "" and info.result.started_at is None  # nothing ran


def test_a_forced_sandbox_cannot_be_widened_by_the_job(place: Place, workers: Workers) -> None:
    """Not with the network, another writable path, nor a webhook (which the worker would send for it)."""
    workers.start(f'sandbox = "required"\n{_home_shown(place)}')
    for job_id, sandbox in (("net", {"network": True}), ("wide", {"writable": ["/"]})):
        info = run_job(place, job_id, {"command": "/bin/echo", "args": ["ran"], "sandbox": sandbox})
        assert info.status is JobStatus.INVALID and info.result is not None
        assert 'refused by the worker\'s policy (sandbox = "required")' in (info.result.error or "")
    with socket.create_server(("127.0.0.1", 0)) as server:  # the test's own port; nothing is sent to it
        url = f"http://127.0.0.1:{server.getsockname()[1]}/record"
        info = run_job(place, "exfiltrates", {"command": "/bin/echo", "args": ["ran"], "webhook": url})
    assert info.status is JobStatus.INVALID and info.result is not None
    assert "set webhook_hosts" in (info.result.error or "")
    (place.home / "private").mkdir()
    (place.home / "private" / "notes.txt").write_text("mine\n")
    narrower = run_job(place, "narrower", {"command": "ls -A ~/private", "sandbox": {"hidden": ["~/private"]}})
    assert narrower.status is JobStatus.COMPLETED and narrower.result is not None
    assert narrower.result.stdout == ""
    assert narrower.result.sandbox is not None and narrower.result.sandbox.profile == "job"


def test_off_refuses_a_job_that_asks_for_a_sandbox_and_a_missing_writable_path_is_refused(
    place: Place, workers: Workers
) -> None:
    workers.start('sandbox = "off"')
    info = run_job(place, "asks", {"command": "/bin/echo", "args": ["ran"], "sandbox": True})
    assert info.status is JobStatus.INVALID and info.result is not None
    assert 'sandbox = "off"' in (info.result.error or "") and "none was run unconfined" in (info.result.error or "")
    workers.started[-1].stop()
    workers.start()
    missing = place.home / "no-such-cache"
    info = run_job(place, "missing", {"command": "/bin/echo", "sandbox": {"writable": [str(missing)]}})
    assert info.status is JobStatus.INVALID and info.result is not None
    assert f"writable path {missing} does not exist" in (info.result.error or "")


def test_an_on_finish_hook_of_a_sandboxed_job_cannot_write_outside(place: Place, workers: Workers) -> None:
    worker = workers.start(_home_shown(place))
    hook = (
        "echo hooked > ~/outside-hook.txt || echo 'outside refused'; "
        'grep -c \'"job_id": "hooked"\' "$EXECSVC_RECORD"; echo in-project > hook.txt'
    )
    drop(place.queue, "hooked.json", {"command": "true", "cwd": str(place.work), "sandbox": True, "on_finish": hook})
    info = wait_finished(place.queue, "hooked")
    assert info.status is JobStatus.COMPLETED
    worker.wait_for_line("on_finish_done job=hooked")
    out = (place.queue / "logs" / "hooked.on_finish.stdout").read_text()
    assert out == "outside refused\n1\n", "the hook reads its record, and cannot write outside the sandbox"
    assert not (place.home / "outside-hook.txt").exists() and (place.work / "hook.txt").read_text() == "in-project\n"
    assert record_of(info)["result"]["sandbox"]["reason"] == "asked"


def test_a_sandboxed_job_cannot_run_inside_the_queue_or_a_hidden_folder(place: Place, workers: Workers) -> None:
    workers.start()
    queue = JobQueue(place.queue)
    job_id = queue.submit({"command": "true", "cwd": str(place.queue / "logs"), "sandbox": True})
    info = wait_finished(place.queue, job_id)
    assert info.status is JobStatus.INVALID and info.result is not None
    assert f"its sandbox hides {place.queue.resolve()}" in (info.result.error or "")
    (place.home / ".ssh").mkdir()
    info = run_job(place, "in-secrets", {"command": "true", "cwd": str(place.home / ".ssh"), "sandbox": True})
    assert info.status is JobStatus.INVALID and info.result is not None
    assert "its sandbox hides" in (info.result.error or "") and ".ssh" in (info.result.error or "")
