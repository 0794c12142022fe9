"""Hostile jobs against the command policy (issue 17, items 1-5): nothing a job file, a CLI call or
an MCP call says lifts the policy in the worker's config file, and the queue cannot be taken over.

Every webhook that must be refused is tried by a worker in an empty network namespace
(``unshare --net``), where nothing but loopback exists, so that a refusal that fails still
sends nothing off this machine.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import WorkerProcess, console_script, daemon_log, drop, wait_finished
from mcp import Client
from test_mcp import run, structured

from execsvc import JobStatus

Start = Callable[..., WorkerProcess]


def write_config(path: Path, policy: dict[str, object]) -> Path:
    lines = ["[worker]", "kill_grace_s = 0.5", "hook_timeout_s = 10", "webhook_attempts = 1", "[policy]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in policy.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def stopped(worker: WorkerProcess) -> str:
    """Stop the worker (its shutdown waits for every hook thread) and return daemon.log."""
    assert worker.stop() == 0
    return daemon_log(worker.queue_root)


# ----- 1. nothing of a refused job runs ----------------------------------------------------


def test_a_refused_jobs_on_finish_never_runs(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {"allow_shell": False})
    worker = start_worker("--config", str(config))
    pwned = tmp_path / "pwned"
    hook = f"id > {pwned}.$EXECSVC_JOB_ID"
    drop(queue_root, "hook.json", {"command": "/bin/true", "args": [], "on_finish": hook})
    # Refusals that used to come before the policy's: a job whose dependency failed, a missing folder.
    drop(queue_root, "dep.json", {"command": "/bin/false", "args": []})
    wait_finished(queue_root, "dep")
    drop(queue_root, "doomed.json", {"command": "/bin/true", "args": [], "after": ["dep"], "on_finish": hook})
    drop(
        queue_root,
        "no-folder.json",
        {"command": "/bin/true", "args": [], "result_file": "nowhere/out.txt", "on_finish": hook},
    )

    async def session(client: Client) -> None:
        enqueued = structured(
            await client.call_tool(
                "enqueue_job", {"command": "/bin/true", "args": [], "on_finish": hook, "wait_s": 10}
            )
        )
        assert enqueued["result"]["status"] == "invalid"

    run(session, queue_root)
    results = {job_id: wait_finished(queue_root, job_id).result for job_id in ("hook", "doomed", "no-folder")}
    log = stopped(worker)
    assert sorted(path.name for path in tmp_path.glob("pwned*")) == []
    assert "on_finish_done" not in log and "on_finish_failed" not in log
    for job_id, result in results.items():
        assert result is not None and result.status is JobStatus.INVALID, job_id
        assert "on_finish is a shell command line" in (result.error or "")
