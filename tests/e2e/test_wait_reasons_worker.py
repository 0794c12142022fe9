"""Why a pending job waits, against a real worker: what the fronts (queue_tools.api) say a job
will be recorded as is what the worker records; status.sh counts what the installed command counts.

The function both call, :func:`execsvc.protocol.readiness.wait_reason`, is tested case by case in
tests/unit/test_wait_reasons.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from conftest import EXECSVC, drop, wait_finished

from execsvc import JobQueue, JobStatus
from queue_tools import api

MISSING = "it runs after job 'no-such-job', which is not in this queue"


def test_the_front_says_a_job_after_an_unknown_id_will_be_recorded_invalid_and_the_worker_does(
    queue_root: Path, start_worker: Any
) -> None:
    drop(queue_root, "orphan.json", {"command": "true", "after": ["no-such-job"]})
    queue = JobQueue(queue_root)
    detail = api.get_job(queue, "orphan")
    assert detail.waiting is not None
    assert f"will be recorded invalid: {MISSING}" in detail.waiting.reason, detail.waiting.reason
    assert "behind" not in detail.waiting.reason and detail.jobs_ahead is None
    assert [job.job_id for job in api.list_jobs(queue, waiting_only=True).jobs] == ["orphan"]
    start_worker()
    orphan = wait_finished(queue_root, "orphan")
    assert orphan.status is JobStatus.INVALID
    assert orphan.result is not None and MISSING in (orphan.result.error or "")


def test_the_front_names_a_cycle_and_a_failed_dependency_as_the_worker_records_them(
    queue_root: Path, start_worker: Any
) -> None:
    drop(queue_root, "x.json", {"command": "true", "after": ["y"]})
    drop(queue_root, "y.json", {"command": "true", "after": ["x"]})
    queue = JobQueue(queue_root)
    said = api.get_job(queue, "x").waiting
    assert said is not None and "will be recorded invalid: its 'after' list closes a dependency cycle" in said.reason
    start_worker()
    x = wait_finished(queue_root, "x")
    assert x.status is JobStatus.INVALID and "closes a dependency cycle" in (x.result.error or "")  # type: ignore[union-attr]


# ----- status.sh counts what the installed command counts ------------------------------------------

STATUS = Path(__file__).resolve().parents[2] / "status.sh"


def test_status_sh_counts_held_jobs_and_leaves_out_files_the_worker_refuses_as_the_api_does(
    queue_root: Path,
) -> None:
    queue = JobQueue(queue_root)
    for job_id in ("a", "b", "c"):
        drop(queue_root, f"{job_id}.json", {"command": "true"})
    for job_id in ("b", "c"):
        subprocess.run([EXECSVC, "hold", job_id, "--queue-dir", str(queue_root)], check=True, capture_output=True)
    drop(queue_root, "notes.md", "not a job\n")  # an unknown ending: a worker refuses it, no front lists it
    counts = api.counts(queue)
    assert (counts.pending, counts.running, counts.completed, counts.failed) == (3, 0, 0, 0)
    result = subprocess.run([str(STATUS), str(queue_root)], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "jobs:    pending 3, running 0, completed 0, failed 0\n" in result.stdout, result.stdout
    assert "worker:  not running" in result.stdout
