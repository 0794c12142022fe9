"""Cancelling (docs/protocol.md, "Timeouts and cancelling"): a pending job is removed, a running one stopped.
Cancelling a pending job without a worker: tests/unit/test_cancel_pending.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from conftest import WorkerProcess, process_gone, start_job_with_child, wait_finished, wait_until

from execsvc import JobQueue, JobState, JobStatus
from execsvc.protocol.finish_index import INDEX_NAME

Start = Callable[..., WorkerProcess]


def test_a_running_job_is_stopped_with_its_whole_process_group(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--kill-grace-s", "0.5")
    child = start_job_with_child(queue_root, worker, "long")
    queue = JobQueue(queue_root)
    asked = queue.cancel("long")
    assert asked.outcome == "requested" and asked.info.state is JobState.RUNNING
    info = wait_finished(queue_root, "long")
    assert info.status is JobStatus.CANCELLED and info.state is JobState.FAILED
    assert info.result is not None and "cancelled on request" in (info.result.error or "")
    assert info.result.signal == "SIGTERM"
    wait_until(lambda: process_gone(child), what="the job's background child to be stopped")
    worker.wait_for_line("cancelling job=long")
    assert queue.cancel_requests() == []  # the request is gone once acted on


def test_a_cancel_request_for_a_job_that_ended_is_dropped(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker()
    queue = JobQueue(queue_root)
    queue.layout.cancel_request("ghost").write_text("{}")
    worker.stop()
    worker = start_worker()  # a new worker drops requests left from before
    assert queue.cancel_requests() == []
    queue.layout.cancel_request("ghost2").write_text("{}")
    worker.wait_for_line("cancel_ignored job=ghost2")
    assert queue.cancel_requests() == []


def test_cancel_races_real_claims_and_every_job_ends_once(queue_root: Path, start_worker: Start) -> None:
    """A canceller and the worker compete for the same pending jobs: each job is either
    cancelled (never ran) or ran, never both, never lost."""
    start_worker("--slots", "2")
    queue = JobQueue(queue_root)
    marks = queue_root.parent / "marks"
    marks.mkdir()
    ids = [queue.submit({"command": f"touch {marks}/$EXECSVC_JOB_ID"}) for _ in range(60)]
    outcomes: dict[str, str] = {}

    def cancel_all() -> None:
        for job_id in reversed(ids):
            outcomes[job_id] = queue.cancel(job_id).outcome

    canceller = threading.Thread(target=cancel_all)
    canceller.start()
    canceller.join(60)
    for job_id in ids:
        info = wait_finished(queue_root, job_id)
        ran = (marks / job_id).exists()
        if info.status is JobStatus.CANCELLED:
            assert outcomes[job_id] in ("cancelled", "requested")
            assert not ran or outcomes[job_id] == "requested", f"{job_id} was cancelled as pending but ran"
        else:
            assert info.status is JobStatus.COMPLETED and ran
    names = [p.name for state in ("failed", "completed") for p in (queue_root / state).iterdir()]
    assert len([name for name in names if name != INDEX_NAME]) == len(ids), "one record per job, nothing else"


def test_cancelling_a_pending_fifo_does_not_hang(queue_root: Path) -> None:
    """A FIFO named like a JSON job is recorded without being read (a read would wait for a writer)."""
    queue = JobQueue(queue_root)
    os.mkfifo(queue.layout.pending / "fifo.json")
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from execsvc import JobQueue; print(JobQueue({str(queue_root)!r}).cancel('fifo').outcome)",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert done.stdout.strip() == "cancelled"
    assert queue.get("fifo").status is JobStatus.CANCELLED
