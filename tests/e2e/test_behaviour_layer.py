"""The behaviour layer every front calls: :func:`queue_tools.api.cancel_job` (``execsvc cancel``
and the MCP ``cancel_job``) and :func:`queue_tools.submit.option_problem` (``execsvc submit``'s
option checks), on real queues under ``tmp_path`` with real workers (with none:
tests/unit/test_behaviour_layer_queue.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from conftest import EXECSVC, WorkerProcess, drop, process_gone, start_job_with_child, wait_finished, wait_until

from execsvc import JobQueue, JobSpec, JobState, JobStatus
from queue_tools import api
from queue_tools.api import CancelOutcome
from queue_tools.submit import option_problem

Start = Callable[..., WorkerProcess]


def execsvc(queue_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXECSVC), *args, "--queue-dir", str(queue_root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


# ----- cancel_job --------------------------------------------------------------------


def test_a_running_job_is_stopped_with_its_process_group(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--kill-grace-s", "0.5")
    child = start_job_with_child(queue_root, worker, "long")
    done = api.cancel_job(JobQueue(queue_root), "long", requested_by="test")
    assert done.outcome is CancelOutcome.STOPPED and done.serving is True
    assert done.job.finished and done.job.result is not None and done.job.result.status is JobStatus.CANCELLED
    wait_until(lambda: process_gone(child), what="the job's background child to be stopped")


def test_a_running_job_with_no_worker_serving_is_requested(queue_root: Path) -> None:
    queue = JobQueue(queue_root)
    job_id = queue.submit(JobSpec(command="sleep", args=["600"]))
    [entry] = queue.jobs(JobState.PENDING)
    queue.claim(entry.path.rsplit("/", 1)[1])  # running/, as a worker that then died leaves it
    done = api.cancel_job(queue, job_id, requested_by="test")
    assert done.outcome is CancelOutcome.REQUESTED and done.serving is False and done.waited_s == 0
    assert done.job.state is JobState.RUNNING and not done.job.finished
    assert queue.cancel_requests() == [job_id]  # the next worker to start acts on it
    said = execsvc(queue_root, "cancel", job_id)
    assert said.returncode == 0 and "no worker is serving" in said.stdout


def test_a_job_still_stopping_when_the_wait_ends_is_requested_then_stopped(
    queue_root: Path, start_worker: Start
) -> None:
    """A job that ignores SIGTERM is still running after a short wait (``requested``, with
    progress reported while it waited); the worker's SIGKILL then records it cancelled."""
    start_worker("--kill-grace-s", "4")
    drop(queue_root, "stubborn.json", {"command": "trap '' TERM; echo up; sleep 600"})
    queue = JobQueue(queue_root)
    log = queue.layout.stdout_log("stubborn")
    wait_until(lambda: log.exists() and b"up" in log.read_bytes(), what="the job to ignore SIGTERM")
    seen: list[tuple[float, JobState]] = []
    done = api.cancel_job(
        queue, "stubborn", requested_by="test", wait_s=2.5, progress=lambda s, job: seen.append((s, job.state))
    )
    assert done.outcome is CancelOutcome.REQUESTED and done.serving is True and done.waited_s >= 2.5
    assert done.job.state is JobState.RUNNING
    assert seen and all(state is JobState.RUNNING for _, state in seen)
    assert wait_finished(queue_root, "stubborn").status is JobStatus.CANCELLED


def test_a_finished_job_is_already_finished_and_left_as_it_is(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    drop(queue_root, "quick.json", {"command": "echo done"})
    record = Path(wait_finished(queue_root, "quick").path)
    before = record.read_bytes()
    done = api.cancel_job(JobQueue(queue_root), "quick", requested_by="test")
    assert done.outcome is CancelOutcome.ALREADY_FINISHED and done.serving is None
    assert done.job.status is JobStatus.COMPLETED and record.read_bytes() == before
    said = execsvc(queue_root, "cancel", "quick")
    assert said.returncode == 0 and "already finished (completed); nothing to cancel" in said.stdout


def test_execsvc_cancel_waits_and_says_the_job_was_stopped(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--kill-grace-s", "0.5")
    start_job_with_child(queue_root, worker, "long")
    said = execsvc(queue_root, "cancel", "long")
    assert said.returncode == 0 and "stopped its process group and recorded it cancelled" in said.stdout
    assert JobQueue(queue_root).get("long").status is JobStatus.CANCELLED  # recorded before the command returned


# ----- submit's option checks --------------------------------------------------------


def problem(**given: object) -> str | None:
    fields: dict[str, object] = {"command": None, "shell": None, "file": None, "options": {}}
    fields.update(given)
    return option_problem(**fields)  # type: ignore[arg-type]


def test_execsvc_submit_refuses_with_the_checks_sentence_and_queues_nothing(queue_root: Path, tmp_path: Path) -> None:
    job_file = tmp_path / "job.json"
    job_file.write_text('{"command": "true"}')
    said = execsvc(queue_root, "submit", "--file", str(job_file), "--timeout-s", "5")
    assert said.returncode == 2 and problem(file=job_file, timeout_s=5.0) in said.stderr
    said = execsvc(queue_root, "submit", "--file", str(job_file), "--priority", "1")
    assert said.returncode == 2 and problem(file=job_file, options={"priority": 1}) in said.stderr
    assert JobQueue(queue_root).jobs(JobState.PENDING) == []
