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


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """A folder of allowed programs: a copy of ``true`` (dynamically linked), a bash script, and
    a script that runs ``helper`` by its bare name."""
    folder = tmp_path / "allowed"
    folder.mkdir()
    shutil.copy("/bin/true", folder / "true")
    (folder / "bashy").write_text("#!/bin/bash\necho bashy\n")
    (folder / "calls-helper").write_text("#!/bin/sh\nhelper\n")
    for name in ("bashy", "calls-helper"):
        (folder / name).chmod(0o755)
    return folder


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
            await client.call_tool("enqueue_job", {"command": "/bin/true", "args": [], "on_finish": hook, "wait_s": 10})
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


# ----- 2. the loader and interpreters run no code the policy never saw --------------------


def test_variables_that_load_other_code_are_refused(
    queue_root: Path, start_worker: Start, tmp_path: Path, tools: Path
) -> None:
    marker = tmp_path / "pwned"
    source = tmp_path / "evil.c"
    source.write_text(
        "#include <stdio.h>\n__attribute__((constructor)) static void evil(void) "
        f'{{ FILE *f = fopen("{marker}.so", "w"); if (f) fclose(f); }}\n'
    )
    evil_so = tmp_path / "evil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(evil_so), str(source)], check=True)
    evil_sh = tmp_path / "evil.sh"
    evil_sh.write_text(f"touch {marker}.sh\n")
    evil_bin = tmp_path / "evil-bin"
    evil_bin.mkdir()
    (evil_bin / "helper").write_text(f"#!/bin/sh\n/usr/bin/touch {marker}.path\n")
    (evil_bin / "helper").chmod(0o755)
    config = write_config(tmp_path / "config.toml", {"allowed_commands": [str(tools)], "allow_shell": False})
    start_worker("--config", str(config))
    true = str(tools / "true")
    refused = {
        "preload": (true, {"LD_PRELOAD": str(evil_so)}),
        "library-path": (true, {"LD_LIBRARY_PATH": str(tmp_path)}),
        "audit": (true, {"LD_AUDIT": str(evil_so)}),
        "dyld": (true, {"DYLD_INSERT_LIBRARIES": str(evil_so)}),
        "bash-env": (str(tools / "bashy"), {"BASH_ENV": str(evil_sh)}),
        "env": (true, {"ENV": str(evil_sh)}),
        "python": (true, {"PYTHONSTARTUP": str(evil_sh)}),
        "perl": (true, {"PERL5OPT": "-Mevil"}),
        "node": (true, {"NODE_OPTIONS": "--require /tmp/evil.js"}),
        "bash-func": (true, {"BASH_FUNC_helper%%": "() { id; }"}),
        "path": ("calls-helper", {"PATH": f"{tools}:{evil_bin}"}),
        "path-relative": ("calls-helper", {"PATH": f"{tools}:bin"}),
    }
    for job_id, (command, env) in refused.items():
        drop(queue_root, f"{job_id}.json", {"command": command, "args": [], "env": env})
    drop(queue_root, "harmless.json", {"command": true, "args": [], "env": {"GREETING": "hi", "PATH": str(tools)}})

    over_mcp: dict[str, object] = {}

    async def session(client: Client) -> None:
        arguments = {"command": true, "args": [], "env": {"LD_PRELOAD": str(evil_so)}, "wait_s": 10}
        over_mcp.update(structured(await client.call_tool("enqueue_job", arguments))["result"])

    results = {job_id: wait_finished(queue_root, job_id).result for job_id in [*refused, "harmless"]}
    run(session, queue_root)
    assert sorted(path.name for path in tmp_path.glob("pwned*")) == []
    assert over_mcp["status"] == "invalid" and "LD_PRELOAD" in str(over_mcp["error"])
    harmless = results.pop("harmless")
    assert harmless is not None and harmless.status is JobStatus.COMPLETED
    for job_id, result in results.items():
        assert result is not None and result.status is JobStatus.INVALID, job_id
        name = next(iter(refused[job_id][1]))
        assert f"refused by the worker's policy (allowed_commands): the job sets {name}" in (result.error or ""), (
            result.error
        )


# ----- 3. result_file writes only where the policy allows -----------------------------------


def test_result_file_is_confined_to_the_queue_and_allowed_folders(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f"[policy]\nresult_file_folders = [{json.dumps(str(results_dir))}]\n")
    worker = start_worker("--config", str(config))
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (queue_root / "out").mkdir()
    (queue_root / "link").symlink_to(outside)
    (queue_root / "out" / "keys").symlink_to(ssh / "authorized_keys")
    key = {"command": "echo", "args": ["ssh-ed25519 AAAA attacker"]}
    refused = {
        "keys": str(ssh / "authorized_keys"),
        "dotdot": "../outside/keys",
        "through-link": "link/keys",
        "final-link": "out/keys",
        "records": "completed/forged.json",
        "jobs": "pending/evil.json",
    }
    for job_id, target in refused.items():
        drop(queue_root, f"{job_id}.json", {**key, "result_file": target})
    drop(queue_root, "in-queue.json", {**key, "result_file": "out/r.txt"})
    drop(queue_root, "allowed.json", {**key, "result_file": str(results_dir / "r.txt")})
    # The job itself swaps its result folder for a link out while it runs: the copy follows no link.
    swap = f"mv {queue_root}/out {queue_root}/out.old && ln -s {outside} {queue_root}/out && echo swapped"
    drop(queue_root, "swap.json", {"command": swap, "result_file": "out/swapped.txt"})
    results = {job_id: wait_finished(queue_root, job_id).result for job_id in [*refused, "in-queue", "allowed", "swap"]}
    stopped(worker)
    assert sorted(path.name for path in [*ssh.iterdir(), *outside.iterdir()]) == []
    assert (queue_root / "out.old" / "r.txt").read_text() == "ssh-ed25519 AAAA attacker\n"
    assert (results_dir / "r.txt").read_text() == "ssh-ed25519 AAAA attacker\n"
    assert list((queue_root / "pending").glob("*.json")) == []
    for job_id in refused:
        result = results[job_id]
        assert result is not None and result.status is JobStatus.INVALID, (job_id, result)
        assert "refused by the worker's policy (result_file)" in (result.error or ""), result.error
    swapped = results["swap"]
    assert swapped is not None and swapped.status is JobStatus.FAILED
    assert "symbolic link" in (swapped.error or ""), swapped.error
