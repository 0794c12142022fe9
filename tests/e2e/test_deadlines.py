"""A job's deadlines belong to the attempt that set them (issue 22, "Also found by review").

A real ``execsvc run`` process, real job processes, real time: a retried job whose first
attempt set a timeout, behind another job's deadline. The issue's case (``timeout_s`` 8, the
second attempt killed 6.8 s in) scaled down to a few seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conftest import WorkerProcess, daemon_log, drop, wait_finished

from execsvc import JobStatus

Start = Callable[..., WorkerProcess]

TIMEOUT_S = 3.0  # the retried job's timeout, for each attempt from its own start
RETRY_DELAY_S = 1.0  # the second attempt starts this long after the first one ended
SECOND_ATTEMPT_S = 2.5  # how long the second attempt runs: past the first attempt's start + TIMEOUT_S


def test_the_first_attempts_timeout_does_not_stop_the_second(queue_root: Path, start_worker: Start) -> None:
    """The first attempt fails at once; its timeout (start + 3 s) falls inside the second attempt
    (1 s to 3.5 s), which must run to its end: its own timeout is 3 s from its own start.

    The blocker's timeout (2.5 s) is due before the first attempt's, so that one is still in the
    worker's deadlines when the second attempt runs under the same job id (a deadline of a
    finished attempt at the head of the heap is dropped; one below a live deadline is not)."""
    worker = start_worker("--slots", "2", "--kill-grace-s", "1")
    drop(queue_root, "blocker.json", {"command": "sleep 30", "timeout_s": TIMEOUT_S - 0.5})
    worker.wait_for_line("started job=blocker")
    marker = queue_root.parent / "first-attempt-done"
    command = f"if [ -e {marker} ]; then sleep {SECOND_ATTEMPT_S}; echo second; else touch {marker}; exit 1; fi"
    job = {"command": command, "timeout_s": TIMEOUT_S, "retries": 1, "retry_delay_s": RETRY_DELAY_S}
    drop(queue_root, "twice.json", job)
    info = wait_finished(queue_root, "twice", timeout_s=30)
    assert info.result is not None and info.result.attempt == 2
    assert info.status is JobStatus.COMPLETED, info.result.error
    assert info.result.stdout == "second\n"
    assert wait_finished(queue_root, "blocker").status is JobStatus.TIMEOUT
    assert "retrying job=twice" in daemon_log(queue_root)
    assert worker.stop() == 0
