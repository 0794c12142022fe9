"""execsvc cancel / retry / clean, the worker's retention, and the launchd / systemd service files.
The service files themselves, without a service manager: tests/unit/test_service_files.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import EXECSVC, WorkerProcess, drop, wait_finished

from execsvc import JobQueue, JobStatus
from execsvc.protocol import finish_index
from execsvc.protocol.finish_index import INDEX_NAME

Start = Callable[..., WorkerProcess]


def execsvc(queue_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXECSVC), *args, "--queue-dir", str(queue_root)], capture_output=True, text=True, timeout=60, check=False
    )


def age(path: Path, days: float) -> None:
    stamp = time.time() - days * 86_400
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def test_cancel_command(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--kill-grace-s", "0.5")
    drop(queue_root, "long.json", {"command": "sleep 600"})
    worker.wait_for_line("started job=long")
    drop(queue_root, "next.json", {"command": "echo next"})
    pending = execsvc(queue_root, "cancel", "next")
    assert pending.returncode == 0 and "cancelled (it was pending" in pending.stdout
    running = execsvc(queue_root, "cancel", "long")
    assert running.returncode == 0 and "cancel requested" in running.stdout
    assert wait_finished(queue_root, "long").status is JobStatus.CANCELLED
    assert "already finished (cancelled)" in execsvc(queue_root, "cancel", "long").stdout
    unknown = execsvc(queue_root, "cancel", "nope")
    assert unknown.returncode == 1 and "no job with id 'nope'" in unknown.stderr


def test_retry_links_the_new_job_to_the_old(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    drop(queue_root, "flaky.json", {"command": "exit 1", "description": "try again"})
    drop(queue_root, "script.sh", "echo from a script\n")
    wait_finished(queue_root, "flaky")
    wait_finished(queue_root, "script")
    first = execsvc(queue_root, "retry", "flaky")
    assert first.returncode == 0 and first.stdout.strip() == "flaky-r1"
    record = wait_finished(queue_root, "flaky-r1")
    assert record.spec is not None and record.spec["retry_of"] == "flaky" and record.spec["description"] == "try again"
    assert execsvc(queue_root, "retry", "flaky").stdout.strip() == "flaky-r2"
    assert execsvc(queue_root, "retry", "script").stdout.strip() == "script-r1"
    assert wait_finished(queue_root, "script-r1").result.stdout == "from a script\n"  # type: ignore[union-attr]
    drop(queue_root, "broken.json", "{")
    wait_finished(queue_root, "broken")
    refused = execsvc(queue_root, "retry", "broken")
    assert refused.returncode == 1 and "not a valid job" in refused.stderr


def test_clean_removes_or_archives_old_jobs_with_their_logs(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    worker = start_worker()
    for name in ("old-ok", "old-bad", "new-ok"):
        drop(queue_root, f"{name}.json", {"command": "echo out; exit 1" if "bad" in name else "echo out"})
        wait_finished(queue_root, name)
    drop(queue_root, "old-script.sh", "echo script\n")
    wait_finished(queue_root, "old-script")
    worker.stop()
    for path in [*(queue_root / "completed").iterdir(), *(queue_root / "failed").iterdir()]:
        if path.name.startswith("old"):
            age(path, 40)
    dry = json.loads(execsvc(queue_root, "clean", "--older-than", "30d", "--dry-run", "--json").stdout)
    assert sorted(dry["removed"]["completed"]) == ["old-ok", "old-script"] and dry["removed"]["failed"] == ["old-bad"]
    assert (queue_root / "completed" / "old-ok.json").exists()  # a dry run changes nothing
    archive = tmp_path / "archive"
    done = execsvc(queue_root, "clean", "--older-than", "30d", "--state", "completed", "--archive", str(archive))
    assert done.returncode == 0 and "archived 2 job(s)" in done.stdout
    assert sorted(p.name for p in (archive / "completed").iterdir()) == [
        "old-ok.json", "old-ok.stderr", "old-ok.stdout", "old-script.result.json", "old-script.sh",
        "old-script.stderr", "old-script.stdout",
    ]  # fmt: skip
    assert execsvc(queue_root, "clean", "--older-than", "30d").stdout.startswith("removed 1 job(s)")
    left = {p.name for p in (queue_root / "completed").iterdir()} | {p.name for p in (queue_root / "failed").iterdir()}
    assert left == {"new-ok.json", INDEX_NAME}
    for state in ("completed", "failed"):  # the finish-time index forgets the removed jobs
        assert [*finish_index.read(queue_root / state)] == (["new-ok"] if state == "completed" else [])
    assert sorted(p.name for p in (queue_root / "logs").iterdir()) == ["new-ok.stderr", "new-ok.stdout"]
    assert execsvc(queue_root, "clean", "--older-than", "soon").returncode == 2


def test_the_worker_applies_its_retention_at_start(queue_root: Path, start_worker: Start) -> None:
    queue = JobQueue(queue_root)
    worker = start_worker()
    drop(queue_root, "ancient.json", {"command": "true"})
    wait_finished(queue_root, "ancient")
    worker.stop()
    age(queue_root / "completed" / "ancient.json", 10)
    worker = start_worker("--retention-days", "7")
    worker.wait_for_line("retention removed=1")
    assert queue.jobs("completed") == []


def test_dry_run_prints_a_valid_unit_for_this_platform(queue_root: Path, tmp_path: Path) -> None:
    result = execsvc(queue_root, "service", "install", "--dry-run")
    assert result.returncode == 0, result.stderr
    first, _, body = result.stdout.partition("\n")
    unit = body.split("# then:")[0]
    assert first.endswith("execsvc.service") and "Restart=always" in unit
    assert f"ExecStart={EXECSVC} run --queue-dir {queue_root}" in unit
    path = tmp_path / "execsvc.service"
    path.write_text(unit)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd); the unit was checked by parsing")
    verify = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0 and "execsvc.service" not in verify.stderr, verify.stderr
