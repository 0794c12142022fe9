"""The installed `execsvc` console script, without a worker: what it refuses and what it says."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from conftest import console_script, daemon_log, drop, wait_finished

from execsvc import JobQueue, JobState


def execsvc(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("execsvc"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_submit_without_a_worker_enqueues_and_says_so(queue_root: Path, tmp_path: Path) -> None:
    done = execsvc(
        "submit",
        "--queue-dir",
        str(queue_root),
        "--env",
        "A=1",
        "--timeout-s",
        "9",
        "--cwd",
        str(tmp_path),
        "--description",
        "d",
        "--",
        "echo",
        "-n",
        "hi",
    )
    assert done.returncode == 0 and "no worker is serving" in done.stderr
    job_id = done.stdout.strip()
    info = JobQueue(queue_root).get(job_id)
    assert info.state is JobState.PENDING
    assert info.spec == {
        "command": "echo",
        "args": ["-n", "hi"],
        "cwd": str(tmp_path),
        "env": {"A": "1"},
        "timeout_s": 9.0,
        "description": "d",
        "submitted_by": "execsvc submit",
    }


def test_submit_checks_a_job_file_before_enqueueing(queue_root: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"args": []}')
    refused = execsvc("submit", "--queue-dir", str(queue_root), "--file", str(bad))
    assert refused.returncode == 2 and "the required field 'command' is missing" in refused.stderr
    assert os.listdir(queue_root / "pending") == []
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"command": "true", "ticket": None}))
    accepted = execsvc("submit", "--queue-dir", str(queue_root), "--file", str(good), "--id", "mine")
    assert (accepted.returncode, accepted.stdout.strip()) == (0, "mine")
    assert JobQueue(queue_root).get("mine").spec == {
        "command": "true",
        "ticket": None,
        "submitted_by": "execsvc submit",
    }
    taken = execsvc("submit", "--queue-dir", str(queue_root), "--id", "mine", "--", "true")
    assert taken.returncode == 2 and "already in the queue" in taken.stderr
    for option, value in (("--timeout-s", "5"), ("--cwd", str(tmp_path)), ("--env", "A=b"), ("--description", "x")):
        ignored = execsvc("submit", "--queue-dir", str(queue_root), "--file", str(good), "--id", "x", option, value)
        assert ignored.returncode == 2 and f"{option} goes with a command" in ignored.stderr, ignored.stderr
    assert sorted(os.listdir(queue_root / "pending")) == ["mine.json"], "nothing enqueued with an option dropped"


def test_submit_usage_errors_exit_2(queue_root: Path) -> None:
    both = execsvc("submit", "--queue-dir", str(queue_root), "--shell", "true", "--", "true")
    assert both.returncode == 2 and "not both" in both.stderr
    bad_env = execsvc("submit", "--queue-dir", str(queue_root), "--env", "NOEQUALS", "--", "true")
    assert bad_env.returncode == 2 and "KEY=VALUE" in bad_env.stderr
    bad_id = execsvc("submit", "--queue-dir", str(queue_root), "--id", "a/b", "--", "true")
    assert bad_id.returncode == 2 and "'/'" in bad_id.stderr


def test_queue_dir_follows_the_environment(tmp_path: Path) -> None:
    env = os.environ | {"EXECSVC_QUEUE_DIR": str(tmp_path / "elsewhere")}
    shown = execsvc("queue-dir", env=env)
    assert shown.stdout.strip() == str(tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists(), "printing the path creates nothing"


def test_stderr_gets_only_warnings_when_it_is_not_a_terminal(queue_root: Path) -> None:
    worker = subprocess.Popen(
        [console_script("execsvc"), "run", "--queue-dir", str(queue_root)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        drop(queue_root, "fine.json", {"command": "true"})
        drop(queue_root, "broken.json", "{")
        wait_finished(queue_root, "fine")
        wait_finished(queue_root, "broken")
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, err = worker.communicate(timeout=30)
    assert "invalid job=broken" in err and "started job=fine" not in err
    assert "started job=fine" in daemon_log(queue_root)
