"""status.sh tells the truth about a running and a stopped worker."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import WorkerProcess, drop, wait_finished

STATUS = Path(__file__).resolve().parents[2] / "status.sh"


def status(queue_root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(STATUS), str(queue_root)], capture_output=True, text=True, timeout=30, check=False)


def test_exit_0_only_while_a_worker_serves(queue_root: Path, start_worker: Callable[..., WorkerProcess]) -> None:
    missing = status(queue_root)
    assert missing.returncode == 1 and "no queue here yet" in missing.stdout
    worker = start_worker("--slots", "2")
    drop(queue_root, "ok.json", {"command": "true"})
    drop(queue_root, "bad.json", "{")
    drop(queue_root, "script.sh", "exit 4\n")
    for job_id in ("ok", "bad", "script"):
        wait_finished(queue_root, job_id)
    serving = status(queue_root)
    assert serving.returncode == 0, serving.stdout
    assert f"serving (pid {worker.proc.pid}, 2 slots)" in serving.stdout
    assert "pending 0, running 0, completed 1, failed 2" in serving.stdout
    assert "finished job=script" in serving.stdout
    assert "\nservice: " in serving.stdout  # the launchd agent / systemd unit, as the service manager sees it
    assert worker.stop() == 0
    stopped = status(queue_root)
    assert stopped.returncode == 1 and "not running" in stopped.stdout


def test_a_killed_worker_is_not_reported_as_serving(
    queue_root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker()
    worker.kill()  # worker.json stays behind, naming a dead pid
    assert (queue_root / "worker.json").exists()
    assert status(queue_root).returncode == 1


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)"
)
def test_status_sh_is_shellcheck_clean() -> None:
    result = subprocess.run(["shellcheck", str(STATUS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
