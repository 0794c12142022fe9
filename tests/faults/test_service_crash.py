"""A service across a kill -9 of the worker: the next worker stops the leftover process (found by
its environment) and starts the service once more, never two copies at once (the service holds a
``flock``: a second copy would write CONFLICT); docs/protocol.md, "Services"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import daemon_log, drop, wait_finished
from service_support import make_service, running

from execsvc import JobQueue, JobState, JobStatus
from execsvc.protocol.models import JobResult


def test_after_kill_9_of_the_worker_the_leftover_is_stopped_and_the_service_started_once(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    service = make_service(tmp_path)
    worker = start_worker()
    drop(queue_root, "svc.json", service.job(restart="on-failure", timeout_s=None))
    first = service.wait_starts(1)
    worker.wait_for_line("started job=svc")
    worker.kill()
    assert running(first), "the service outlives its worker (a session of its own)"
    start_worker()
    second = service.wait_starts(2)
    assert not running(first)
    assert second != first and running(second)
    assert service.conflicts() == ""
    log = daemon_log(queue_root)
    assert "stopping_leftovers job=svc" in log
    assert "restarted job=svc status=interrupted attempt=2" in log
    assert " interrupted job=svc " not in log
    kept = JobResult.model_validate_json((queue_root / "logs" / "svc.attempt-1.result.json").read_text())
    assert kept.status is JobStatus.INTERRUPTED and kept.error is not None and "starts once more" in kept.error
    assert JobQueue(queue_root).get("svc").state is JobState.RUNNING
    JobQueue(queue_root).cancel("svc")
    assert wait_finished(queue_root, "svc").status is JobStatus.CANCELLED
    assert len(service.starts()) == 2


def test_an_ordinary_job_is_still_interrupted_by_a_crash_and_not_run_again(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    marks = tmp_path / "marks"
    worker = start_worker()
    drop(queue_root, "plain.json", {"command": f"echo run >> {marks}; sleep 600", "restart": "no"})
    worker.wait_for_line("started job=plain")
    worker.kill()
    start_worker()
    info = wait_finished(queue_root, "plain")
    assert info.status is JobStatus.INTERRUPTED
    assert marks.read_text() == "run\n"
