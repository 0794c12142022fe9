"""Hostile files where the worker opens its own, log files that cannot be created, and deadlines.

Each test drives a real ``execsvc run`` process on a ``tmp_path`` queue: a FIFO or a symbolic
link left where the worker creates a log, the index or ``daemon.log``; a worker with too few
file descriptors to open a job's logs; a retried job whose first attempt set a timeout.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable
from pathlib import Path

from conftest import WorkerProcess, daemon_log, drop, wait_finished

from execsvc import JobQueue, JobSpec, JobStatus, WorkerConfig
from execsvc.runner import JobProcess
from execsvc.worker import Worker

Start = Callable[..., WorkerProcess]


def _aside(folder: Path, name: str) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.name.startswith(f"{name}.aside-"))


# ----- a deadline belongs to the attempt that set it (16.8) -------------------------------


def test_a_retried_job_is_not_stopped_by_its_first_attempts_timeout(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--slots", "2")
    # A deadline of another job sits before the retried job's first timeout in the heap, so
    # that timeout is still there when the second attempt runs (under the same job id).
    drop(queue_root, "blocker.json", {"command": "sleep 30", "timeout_s": 4})
    worker.wait_for_line("started job=blocker")
    marker = queue_root.parent / "first-attempt-done"
    command = f"if [ -e {marker} ]; then sleep 3.5; echo second; else touch {marker}; exit 1; fi"
    drop(queue_root, "twice.json", {"command": command, "timeout_s": 5, "retries": 1, "retry_delay_s": 2})
    info = wait_finished(queue_root, "twice", timeout_s=30)
    assert info.result is not None and info.result.attempt == 2
    assert info.status is JobStatus.COMPLETED, info.result.error  # its own timeout is 5 s from its own start
    assert info.result.stdout == "second\n"
    assert wait_finished(queue_root, "blocker").status is JobStatus.TIMEOUT
    assert worker.stop() == 0


def test_deadlines_neither_grow_nor_keep_finished_jobs(tmp_path: Path) -> None:
    """In-process: after many short jobs the deadline heap stays small and holds no job."""
    worker = Worker(tmp_path / "q", WorkerConfig(slots=4), stderr_level=None)
    worker.initialize()
    try:
        queue = JobQueue(worker.layout.root)
        for _round in range(3):
            ids = [queue.submit(JobSpec(command="true", timeout_s=600)) for _ in range(150)]
            deadline = time.monotonic() + 60
            while not (all(queue.record_path(job_id) for job_id in ids) and not worker.busy):
                assert time.monotonic() < deadline, "the jobs did not finish in time"
                worker.loop()
            assert len(worker._deadlines) <= 4 * (64 + 4 + 150)  # compacted: bounded by the backlog, not the total
        gc.collect()
        assert not [obj for obj in gc.get_objects() if type(obj).__name__ == "_ActiveJob"]
        assert not [obj for obj in gc.get_objects() if isinstance(obj, JobProcess)]
    finally:
        worker.request_stop()
        while worker.loop():
            pass
        worker.shutdown()


# ----- smaller worker defects (16.18) -------------------------------------------------------


def test_a_cancelled_pending_jobs_record_says_returncode_null(queue_root: Path) -> None:
    queue = JobQueue(queue_root)
    queue.submit({"command": "true"}, job_id="never")
    assert queue.cancel("never").outcome == "cancelled"
    record = json.loads((queue_root / "failed" / "never.json").read_text())
    assert "returncode" in record["result"] and record["result"]["returncode"] is None


def test_an_unstarted_jobs_record_says_returncode_null(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    drop(queue_root, "nocommand.json", {"command": "true", "cwd": "/nonexistent/folder"})
    assert wait_finished(queue_root, "nocommand").status is JobStatus.FAILED
    record = json.loads((queue_root / "failed" / "nocommand.json").read_text())
    assert "returncode" in record["result"] and record["result"]["returncode"] is None


def test_a_cancel_of_a_running_job_is_not_followed_by_cancel_ignored(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker()
    drop(queue_root, "long.json", {"command": "sleep 30"})
    worker.wait_for_line("started job=long")
    assert JobQueue(queue_root).cancel("long").outcome == "requested"
    assert wait_finished(queue_root, "long").status is JobStatus.CANCELLED
    drop(queue_root, "later.json", {"command": "true"})  # the removal's file event came before this one
    worker.wait_for_line("finished job=later")
    assert "cancel_ignored" not in daemon_log(queue_root)
    assert worker.stop() == 0
