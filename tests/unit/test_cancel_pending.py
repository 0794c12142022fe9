"""Cancelling a pending job (docs/protocol.md, "Timeouts and cancelling") through the protocol package, no
worker: it is finished at once, never run. A running one, stopped by a worker: tests/e2e/test_cancel.py."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import daemon_log

from execsvc import JobQueue, JobState, JobStatus
from execsvc.protocol.errors import JobNotFound


def test_a_pending_job_is_cancelled_without_a_worker(queue_root: Path) -> None:
    queue = JobQueue(queue_root)
    job_id = queue.submit({"command": "echo", "args": ["never"], "description": "keep me"})
    done = queue.cancel(job_id, requested_by="test")
    assert done.outcome == "cancelled"
    assert done.info.state is JobState.FAILED and done.info.status is JobStatus.CANCELLED
    assert done.info.result is not None and "never ran" in (done.info.result.error or "")
    assert done.info.spec is not None and done.info.spec["description"] == "keep me"  # the record is the job + result
    assert list((queue_root / "pending").iterdir()) == [] and list((queue_root / "running").iterdir()) == []
    assert f"cancelled job={job_id}" in daemon_log(queue_root)
    assert queue.cancel(job_id).outcome == "finished"  # a second cancel changes nothing


def test_a_pending_text_job_keeps_its_script_beside_the_record(queue_root: Path) -> None:
    queue = JobQueue(queue_root)
    job_id = queue.submit_script("echo never\n")
    assert queue.cancel(job_id).outcome == "cancelled"
    assert (queue_root / "failed" / f"{job_id}.sh").read_text() == "echo never\n"
    record = json.loads((queue_root / "failed" / f"{job_id}.result.json").read_text())
    assert record["result"]["status"] == "cancelled"


def test_cancel_of_an_unknown_job_raises(queue_root: Path) -> None:
    try:
        JobQueue(queue_root).cancel("nope")
    except JobNotFound as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("JobNotFound not raised")
