"""Stopping a sandboxed job stops everything in its sandbox: timeout, cancel, the processes limit,
the worker's own stop (the drain period over), and a worker killed with SIGKILL (then restarted,
it records the job ``interrupted``).

The job starts ``setsid sleep 600`` (a session of its own) and a child that ignores SIGTERM, so
neither its process group nor a polite signal would end them; they carry the job's
EXECSVC_JOB_ID, by which the test finds them from outside. Real worker, real bwrap, real signals.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import drop, wait_finished, wait_until
from sandbox_support import Place, Workers, make_place, needs_bwrap, processes_left, workers_at

from execsvc import JobQueue, JobStatus

pytestmark = needs_bwrap

STUBBORN = "setsid sleep 600 & sh -c 'trap \"\" TERM; sleep 600 & wait' & echo up > ready; wait"


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return make_place(tmp_path)


@pytest.fixture
def workers(place: Place) -> Iterator[Workers]:
    with workers_at(place) as started:
        yield started


def _start_stubborn(place: Place, job_id: str, **fields: object) -> None:
    """Drop the stubborn job and wait until its children run (seen from outside, by their env)."""
    drop(place.queue, f"{job_id}.json", {"command": STUBBORN, "cwd": str(place.work), "sandbox": True, **fields})
    wait_until((place.work / "ready").exists, what="the job's children to start")
    wait_until(lambda: len(processes_left(place, job_id)) >= 4, what="the job's processes to be seen")


def _nothing_left(place: Place, job_id: str) -> None:
    wait_until(lambda: not processes_left(place, job_id), what=f"every process of {job_id} to end")


def test_the_timeout_ends_the_whole_sandbox(place: Place, workers: Workers) -> None:
    workers.start()
    _start_stubborn(place, "slow", timeout_s=2)
    info = wait_finished(place.queue, "slow")
    assert info.status is JobStatus.TIMEOUT and info.result is not None
    _nothing_left(place, "slow")


def test_cancel_ends_the_whole_sandbox(place: Place, workers: Workers) -> None:
    worker = workers.start()
    _start_stubborn(place, "doomed")
    JobQueue(place.queue).cancel("doomed")
    info = wait_finished(place.queue, "doomed")
    assert info.status is JobStatus.CANCELLED and info.result is not None
    worker.wait_for_line("cancelling job=doomed")
    _nothing_left(place, "doomed")


def test_the_processes_limit_counts_what_runs_in_the_sandbox(place: Place, workers: Workers) -> None:
    workers.start()
    line = "for i in 1 2 3 4 5 6; do sleep 600 & done; wait"
    drop(
        place.queue,
        "forks.json",
        {"command": line, "cwd": str(place.work), "sandbox": True, "limits": {"processes": 3}},
    )
    info = wait_finished(place.queue, "forks")
    assert info.status is JobStatus.FAILED and info.result is not None
    assert info.result.limit_exceeded == "processes"
    _nothing_left(place, "forks")


def test_sigkill_of_the_worker_ends_the_sandbox_and_a_restart_records_it_interrupted(
    place: Place, workers: Workers
) -> None:
    worker = workers.start()
    _start_stubborn(place, "orphan")
    worker.kill()
    _nothing_left(place, "orphan")  # bwrap dies with its parent, and the sandbox's PID 1 with bwrap
    again = workers.start()
    again.wait_for_line("interrupted job=orphan")
    info = wait_finished(place.queue, "orphan")
    assert info.status is JobStatus.INTERRUPTED


def test_the_workers_stop_ends_the_sandbox_once_the_drain_period_is_over(place: Place, workers: Workers) -> None:
    worker = workers.start()
    _start_stubborn(place, "drained")
    assert worker.stop() == 0
    info = wait_finished(place.queue, "drained")
    assert info.status is JobStatus.INTERRUPTED
    _nothing_left(place, "drained")


def test_a_child_in_a_session_of_its_own_does_not_outlive_its_sandboxed_job(place: Place, workers: Workers) -> None:
    """Unsandboxed, a `setsid` child may outlive its job (docs/protocol.md); in a sandbox it ends with it."""
    workers.start()
    line = "setsid sleep 600 & until grep -q sleep /proc/$!/cmdline; do :; done; echo up > ready"
    drop(place.queue, "leaver.json", {"command": line, "cwd": str(place.work), "sandbox": True})
    info = wait_finished(place.queue, "leaver")
    assert info.status is JobStatus.COMPLETED and (place.work / "ready").exists()
    _nothing_left(place, "leaver")
