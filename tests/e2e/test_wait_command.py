"""``execsvc wait ID...`` against a real worker: its exit codes (0; 1 with --status success at a job
that did not complete; 2 for an unknown id; 124 at --timeout-s), waiting for a job still pending;
and shell completion through typer's own mechanism (docs/cli.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import EXECSVC, drop, wait_finished

from execsvc import JobQueue, JobStatus


def execsvc(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXECSVC), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_wait_returns_0_once_every_job_ended_whatever_its_status(queue_root: Path, start_worker: Any) -> None:
    start_worker()
    drop(queue_root, "ok.json", {"command": "true"})
    drop(queue_root, "bad.json", {"command": "exit 3"})
    done = execsvc("wait", "--queue-dir", str(queue_root), "ok", "bad")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["bad: failed (exit code 3)", "ok: completed (exit code 0)"]


def test_wait_with_status_success_exits_1_naming_the_job_that_failed(queue_root: Path, start_worker: Any) -> None:
    start_worker()
    drop(queue_root, "ok.json", {"command": "true"})
    drop(queue_root, "bad.json", {"command": "exit 3"})
    done = execsvc("wait", "--queue-dir", str(queue_root), "--status", "success", "ok", "bad")
    assert done.returncode == 1
    assert "job bad ended failed, not completed" in done.stderr


def test_wait_for_an_unknown_id_exits_2_before_waiting(queue_root: Path, start_worker: Any) -> None:
    start_worker()
    drop(queue_root, "ok.json", {"command": "true"})
    done = execsvc("wait", "--queue-dir", str(queue_root), "ok", "nosuchjob")
    assert done.returncode == 2
    assert "nosuchjob" in done.stderr and done.stdout == ""


def test_wait_waits_for_a_job_still_pending(queue_root: Path) -> None:
    """No worker yet: the job stays pending and wait gives up at --timeout-s (124); then a worker
    runs it while a second wait blocks on the file events, and that wait returns 0."""
    job_id = JobQueue(queue_root).submit_script("#!/bin/sh\necho hi\n")
    early = execsvc("wait", "--queue-dir", str(queue_root), "--timeout-s", "0.3", job_id)
    assert early.returncode == 124 and "1 job(s) still not finished" in early.stderr
    waiting = subprocess.Popen(
        [str(EXECSVC), "wait", "--queue-dir", str(queue_root), job_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = subprocess.Popen(
        [str(EXECSVC), "run", "--queue-dir", str(queue_root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        out, err = waiting.communicate(timeout=30)
        assert waiting.returncode == 0, err
        assert out == f"{job_id}: completed (exit code 0)\n"
        assert wait_finished(queue_root, job_id).status is JobStatus.COMPLETED
    finally:
        waiting.kill()
        worker.terminate()
        worker.wait(30)


def test_wait_rejects_a_status_it_does_not_know(queue_root: Path) -> None:
    done = execsvc("wait", "--queue-dir", str(queue_root), "--status", "failed", "x")
    assert done.returncode == 2 and "--status takes success" in done.stderr


def _completion_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **extra}


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_script_and_its_answers() -> None:
    shown = subprocess.run(
        ["bash", "-c", f"{EXECSVC} --show-completion"], capture_output=True, text=True, timeout=60, check=True
    )
    assert "complete -o default -F _execsvc_completion execsvc" in shown.stdout
    answer = execsvc(
        "", env=_completion_env(_EXECSVC_COMPLETE="complete_bash", COMP_WORDS="execsvc wa", COMP_CWORD="1")
    )
    assert answer.stdout.split() == ["wait"]


@pytest.mark.parametrize(("shell", "marker"), [("zsh", "#compdef execsvc"), ("fish", "complete --command execsvc")])
def test_zsh_and_fish_completion_scripts_and_answers(shell: str, marker: str) -> None:
    """The scripts typer writes for zsh and fish (asked by name, as from inside that shell), and
    the answers the command gives them."""
    shown = execsvc("--show-completion", shell, env=_completion_env(_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1"))
    assert marker in shown.stdout, shown.stdout + shown.stderr
    extra = {"_TYPER_COMPLETE_ARGS": "execsvc wait --st", "_EXECSVC_COMPLETE": f"complete_{shell}"}
    if shell == "fish":
        extra["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    answer = execsvc(env=_completion_env(**extra))
    assert "--status" in answer.stdout
