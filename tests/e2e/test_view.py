"""queue-view against a real worker: the installed console script, and typer's CliRunner."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conftest import WorkerProcess, console_script, drop, wait_finished
from typer.testing import CliRunner

from execsvc import JobQueue
from queue_tools import api
from queue_tools.view import app

Start = Callable[..., WorkerProcess]


def view(queue_root: Path, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("queue-view"), "--queue-dir", str(queue_root), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def queue_in_every_state(queue_root: Path, start_worker: Start) -> WorkerProcess:
    worker = start_worker()
    drop(queue_root, "ok.json", {"command": "echo", "args": ["fine"], "description": "a good one"})
    drop(queue_root, "bad.json", {"command": "echo broken >&2; exit 3"})
    wait_finished(queue_root, "ok")
    wait_finished(queue_root, "bad")
    drop(queue_root, "busy.json", {"command": "sleep 600"})
    worker.wait_for_line("started job=busy")
    drop(queue_root, "later.json", {"command": "echo later"})
    return worker


def test_overview_shows_every_state_and_the_worker(queue_root: Path, start_worker: Start) -> None:
    worker = queue_in_every_state(queue_root, start_worker)
    shown = view(queue_root)
    assert shown.returncode == 0, shown.stderr
    assert f"serving  pid {worker.proc.pid}, 1 slot(s)" in shown.stdout
    assert "1 pending  1 running  1 completed  1 failed" in shown.stdout
    rows = {line.split()[0]: line.split()[1] for line in shown.stdout.splitlines()[4:] if line.strip()}
    assert rows == {"later": "pending", "busy": "running", "bad": "failed", "ok": "completed"}
    data = json.loads(view(queue_root, "--json").stdout)
    assert data["status"]["worker"]["serving"] and data["status"]["counts"]["failed"] == 1
    assert [job["job_id"] for job in data["jobs"]][:2] == ["later", "busy"]  # newest first


def test_list_json_filters_and_show_prints_record_and_tails(queue_root: Path, start_worker: Start) -> None:
    queue_in_every_state(queue_root, start_worker)
    listed = json.loads(view(queue_root, "list", "--state", "failed", "--json").stdout)
    assert [job["job_id"] for job in listed["jobs"]] == ["bad"] and listed["jobs"][0]["exit_code"] == 3
    assert json.loads(view(queue_root, "list", "--since", "1h", "--limit", "2", "--json").stdout)["more"] is True
    assert json.loads(view(queue_root, "list", "--since", "0s", "--json").stdout)["jobs"] == []
    shown = view(queue_root, "show", "bad")
    assert shown.returncode == 0 and "exit code  3" in shown.stdout and "broken" in shown.stdout
    detail = json.loads(view(queue_root, "show", "ok", "--json").stdout)
    assert detail["result"]["returncode"] == 0 and detail["stdout_tail"] == "fine\n"
    assert json.loads(view(queue_root, "show", "later", "--json").stdout)["position"] == 1


def test_exit_codes_for_scripts(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    assert view(queue_root, "show", "nope").returncode == 1
    assert "no job with id 'nope'" in view(queue_root, "show", "nope").stderr
    assert view(queue_root, "show", "../x").returncode == 1
    assert view(queue_root, "list", "--state", "bogus").returncode == 2
    assert view(queue_root, "list", "--since", "yesterday").returncode == 2
    assert view(queue_root, "--no-such-option").returncode == 2
    assert view(queue_root.parent / "missing").returncode == 1


def test_logs_follow_streams_a_running_job_until_it_ends(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker()
    gate = queue_root.parent / "gate"
    script = f"echo first; while [ ! -e {gate} ]; do sleep 0.02; done; echo second; echo oops >&2"
    drop(queue_root, "talk.json", {"command": script})
    worker.wait_for_line("started job=talk")
    proc = subprocess.Popen(
        [console_script("queue-view"), "--queue-dir", str(queue_root), "logs", "talk", "--follow"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "first\n"  # printed while the job still runs
    gate.touch()
    rest = proc.stdout.read()  # ends by itself when the job ends
    assert proc.wait(30) == 0 and rest == "second\n"
    assert view(queue_root, "logs", "talk", "--stderr").stdout == "oops\n"


def test_daemon_log_and_follow_with_cli_runner(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker()
    drop(queue_root, "one.json", {"command": "true"})
    wait_finished(queue_root, "one")
    worker.wait_for_line("finished job=one")
    runner = CliRunner()
    result = runner.invoke(app, ["--queue-dir", str(queue_root), "daemon-log", "-n", "2"])
    assert result.exit_code == 0 and "finished job=one" in result.output
    assert len(result.output.splitlines()) == 2
    follower = subprocess.Popen(
        [console_script("queue-view"), "--queue-dir", str(queue_root), "daemon-log", "-n", "1", "--follow"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None
    follower.stdout.readline()
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(follower.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    drop(queue_root, "two.json", {"command": "true"})
    deadline = time.monotonic() + 20
    while not any("finished job=two" in line for line in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    follower.terminate()
    follower.wait(10)
    reader.join(10)
    assert any("finished job=two" in line for line in lines)


def test_pages_of_a_listing_follow_each_other_newest_first(queue_root: Path) -> None:
    queue = JobQueue(queue_root)
    for n in range(12):
        path = queue_root / "completed" / f"job{n:02d}.json"
        path.write_text(json.dumps({"command": "true", "result": _result(f"job{n:02d}")}))
        os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))
    seen: list[str] = []
    cursor = None
    while True:
        page = api.list_jobs(queue, limit=5, cursor=cursor)
        seen.extend(job.job_id for job in page.jobs)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"job{n:02d}" for n in reversed(range(12))]
    listed = json.loads(view(queue_root, "list", "--limit", "5", "--json").stdout)
    assert [job["job_id"] for job in listed["jobs"]] == seen[:5] and listed["more"]


def _result(job_id: str) -> dict[str, object]:
    return {
        "job_id": job_id,
        "status": "completed",
        "returncode": 0,
        "completed_at": "2026-11-21T10:00:00+00:00",
        "job_file": f"{job_id}.json",
    }
