"""The command policy from the worker's config file: enforced at claim time, shown, never lifted by a job."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import WorkerProcess, console_script, daemon_log, drop, wait_finished
from mcp import Client
from mcp_calls import run, structured

from execsvc import JobQueue, JobStatus

Start = Callable[..., WorkerProcess]


def write_config(path: Path, policy: dict[str, object]) -> Path:
    lines = ["[worker]", "kill_grace_s = 0.5", "[policy]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in policy.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """A folder of allowed programs: a copy of ``echo``, and a link inside it that points outside it."""
    folder = tmp_path / "allowed"
    folder.mkdir()
    (folder / "say").write_text('#!/bin/sh\necho said "$@"\n')
    (folder / "say").chmod(0o755)
    os.symlink("/usr/bin/touch", folder / "escape")
    return folder


def test_allowed_commands_and_no_shell(queue_root: Path, start_worker: Start, tmp_path: Path, tools: Path) -> None:
    config = write_config(tmp_path / "config.toml", {"allowed_commands": [str(tools)], "allow_shell": False})
    start_worker("--config", str(config))
    marker = tmp_path / "escaped"
    jobs = {
        "direct": {"command": str(tools / "say"), "args": ["hi"]},
        "by-path": {"command": "say", "args": ["via PATH"], "env": {"PATH": str(tools)}},
        "outside": {"command": "/bin/echo", "args": ["no"]},
        "link-out": {"command": str(tools / "escape"), "args": [str(marker)]},
        "path-trick": {"command": "touch", "args": [str(marker)], "env": {"PATH": "/usr/bin"}},
        "shell-line": {"command": f"{tools}/say hi"},
    }
    for job_id, spec in jobs.items():
        drop(queue_root, f"{job_id}.json", spec)
    drop(queue_root, "script.sh", f"{tools}/say from a script\n")
    results = {job_id: wait_finished(queue_root, job_id).result for job_id in [*jobs, "script"]}
    assert results["direct"] is not None and results["direct"].stdout == "said hi\n"
    assert results["by-path"] is not None and results["by-path"].stdout == "said via PATH\n"
    for job_id in ("outside", "link-out", "path-trick"):
        result = results[job_id]
        assert result is not None and result.status is JobStatus.INVALID
        assert result.error is not None and "refused by the worker's policy (allowed_commands)" in result.error
        assert str(tools) in result.error and str(config) in result.error
    assert results["link-out"] is not None and "via" in (results["link-out"].error or "")
    for job_id in ("shell-line", "script"):
        result = results[job_id]
        assert result is not None and result.status is JobStatus.INVALID
        assert "allow_shell = false" in (result.error or "")
    assert not marker.exists()
    assert "invalid job=outside" in daemon_log(queue_root)


def test_the_policy_is_shown_by_worker_json_queue_view_and_mcp(
    queue_root: Path, start_worker: Start, tmp_path: Path, tools: Path
) -> None:
    config = write_config(tmp_path / "config.toml", {"allowed_commands": [str(tools)], "allow_shell": False})
    start_worker("--config", str(config))
    info = JobQueue(queue_root).worker_info()
    assert info is not None and info.allowed_commands == [str(tools)] and info.allow_shell is False
    shown = subprocess.run(
        [console_script("queue-view"), "--json", "--queue-dir", str(queue_root)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)["status"]["worker"]["allowed_commands"] == [str(tools)]
    table = subprocess.run(
        [console_script("queue-view"), "--queue-dir", str(queue_root)], capture_output=True, text=True, check=True
    )
    assert f"no shell jobs; programs under: {tools}" in table.stdout

    async def session(client: Client) -> None:
        status = structured(await client.call_tool("queue_status", {}))
        assert status["worker"]["allowed_commands"] == [str(tools)]
        assert status["worker"]["allow_shell"] is False
        assert status["worker"]["config_file"] == str(config)
        refused = await client.call_tool("enqueue_job", {"command": "echo hi", "wait_s": 10})
        assert refused.is_error and "allow_shell = false" in refused.content[0].text  # type: ignore[union-attr]

    run(session, queue_root)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[worker]\nslots = 'two'\n", "slots"),
        ("[worker]\nslot = 2\n", "unknown key(s) ['slot'] in [worker]"),
        ("[polcy]\n", "unknown table(s) ['polcy']"),
        ("[policy]\nallowed_commands = '/usr/bin'\n", "allowed_commands"),
        ("[worker\n", "cannot read the config file"),
        ("[policy]\nallowed_commands = ['bin']\n", "allowed_commands must be absolute folders"),
        ("[policy]\nwebhook_hosts = ['hooks example']\n", "'hooks example' is neither a host name nor an address"),
        ("[policy]\nresult_file_folders = ['out']\n", "result_file_folders must be absolute folders"),
        ("[worker]\nrefused_env = ['GIT_*']\n", "unknown key(s) ['refused_env'] in [worker]"),
    ],
)
def test_a_bad_config_file_stops_the_worker_saying_why(
    content: str, message: str, queue_root: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(content)
    done = subprocess.run(
        [console_script("execsvc"), "run", "--queue-dir", str(queue_root), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert message in done.stderr and str(config) in done.stderr


def test_config_file_settings_and_options_that_win(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[worker]\nslots = 3\ndefault_timeout_s = 7\n")
    start_worker("--config", str(config), "--slots", "2")
    info = JobQueue(queue_root).worker_info()
    assert info is not None and info.slots == 2 and info.config_file == str(config)
    drop(queue_root, "t.json", {"command": "true"})
    result = wait_finished(queue_root, "t").result
    assert result is not None and result.timeout_s == 7


def test_records_and_the_log_say_who_submitted_each_job(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    queue = JobQueue(queue_root)
    queue.submit({"command": "true"}, job_id="by-api")
    subprocess.run(
        [console_script("execsvc"), "submit", "--queue-dir", str(queue_root), "--id", "by-cli", "--", "true"],
        check=True,
        capture_output=True,
    )
    drop(queue_root, "by-file.json", {"command": "true"})
    drop(queue_root, "by-script.sh", "true\n")
    drop(queue_root, "says-so.json", {"command": "true", "submitted_by": "nightly-cron"})

    async def session(client: Client) -> None:
        arguments = {"command": "true", "wait_s": 10, "verbose": True}
        enqueued = structured(await client.call_tool("enqueue_job", arguments))
        assert enqueued["result"]["submitted_by"] == "mcp"

    run(session, queue_root)
    expected = {
        "by-api": "api",
        "by-cli": "execsvc submit",
        "by-file": "file",
        "by-script": "file",
        "says-so": "nightly-cron",
    }
    for job_id, who in expected.items():
        result = wait_finished(queue_root, job_id).result
        assert result is not None and result.submitted_by == who
        assert f"claimed job={job_id} file=" in daemon_log(queue_root)
        assert f"submitted_by={json.dumps(who) if ' ' in who else who}" in daemon_log(queue_root)
