"""What happens at the claim when a job file is not what the worker saw (hostile review, issues 16 and 17).

A job file with a second hard link, one rewritten in place or replaced by a
rename after the worker looked at it, one held open for writing when it is
claimed: the claim must act on the inode it took, and the start-up recovery
must never delete a job file that may have run. Real workers (a process, or
driven step by step in this process where the moment of the claim matters),
real files, kill -9.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import WorkerProcess, daemon_log, drop, run_until, silent_event_log, wait_finished, wait_until

from execsvc import JobQueue, JobSpec, JobState, JobStatus
from execsvc.recovery import settle_running
from execsvc.results import unstarted_result
from execsvc.worker import Worker

Start = Callable[..., WorkerProcess]


def waiting_job(go: Path, then: str = "true") -> dict[str, Any]:
    """A job that waits (at most 30 s) until ``go`` exists, then runs ``then``."""
    return {"command": f"n=0; while [ ! -e {go} ] && [ $n -lt 1500 ]; do sleep 0.02; n=$((n+1)); done; {then}"}


def first_line(worker: WorkerProcess, *needles: str, timeout_s: float = 20.0) -> str:
    """The first stderr line of ``worker`` containing any of ``needles``; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    with worker._changed:
        while True:
            for line in worker.lines:
                if any(needle in line for needle in needles):
                    return line
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"worker never logged any of {needles}; its output:\n" + "\n".join(worker.lines))
            worker._changed.wait(remaining)


# ----- 16.3 / 17.6: a job file with more than one name -------------------------------------


def test_a_hard_linked_job_killed_while_running_keeps_its_record_and_its_twin_runs_once(
    queue_root: Path, tmp_path: Path, start_worker: Start
) -> None:
    """pending/a.json and pending/b.json are one inode; a runs, the worker is killed with kill -9:
    the next start records a (interrupted), and b runs once, as its own job."""
    queue = JobQueue(queue_root)
    runs, go = tmp_path / "runs", tmp_path / "go"
    job = {"command": f"echo $EXECSVC_JOB_ID >> {runs}; {waiting_job(go)['command']}"}
    first = drop(queue_root, "a.json", job)
    os.link(first, queue.layout.pending / "b.json")
    worker = start_worker()  # slots 1: a (same file time, first name) starts, b waits
    worker.wait_for_line("started job=a")
    wait_until(lambda: runs.exists() and runs.read_text() == "a\n", what="job a to run")
    worker.kill()
    go.touch()  # a's process, left running, may end now; b will not wait
    second = start_worker()
    assert wait_finished(queue_root, "b").status is JobStatus.COMPLETED
    a = wait_finished(queue_root, "a")
    assert a.status is JobStatus.INTERRUPTED, "job a ran: it keeps a record"
    assert "claim_undone" not in daemon_log(queue_root)
    second.stop()
    assert runs.read_text().split() == ["a", "b"], "each name ran once"


def test_the_next_start_records_a_job_that_ran_though_its_inode_is_pending_under_another_name(
    queue_root: Path, tmp_path: Path, start_worker: Start
) -> None:
    """What a worker that did not copy a linked job left: running/a.json, the same inode as
    pending/b.json, and a's output log (it ran). a is recorded, never deleted; b runs."""
    queue = JobQueue(queue_root)
    runs = tmp_path / "runs"
    scratch = tmp_path / "x.json"
    scratch.write_text(json.dumps({"command": f"echo $EXECSVC_JOB_ID >> {runs}"}))
    os.link(scratch, queue.layout.running / "a.json")
    os.link(scratch, queue.layout.pending / "b.json")
    queue.layout.stdout_log("a").write_text("")  # a was started
    worker = start_worker()
    assert wait_finished(queue_root, "a").status is JobStatus.INTERRUPTED
    assert wait_finished(queue_root, "b").status is JobStatus.COMPLETED
    worker.stop()
    assert runs.read_text().split() == ["b"]


def test_settle_running_undoes_a_claim_cut_short_only_from_the_file_it_was_claimed_from(tmp_path: Path) -> None:
    """A claim by link + unlink cut short between the two: undone (the job stays pending), also
    when the claim gave it a new id; an inode that is pending under an unrelated name, or whose
    job has an output log, is a job that may have run: not undone."""
    queue = JobQueue(tmp_path / "q")
    running, pending = queue.layout.running, queue.layout.pending
    queue.submit(JobSpec(command="true"), job_id="a")
    done = queue.claim("a.json")
    queue.finish(done, unstarted_result(done, JobStatus.COMPLETED, "", None), JobSpec(command="true"))  # id a taken
    drop(queue.root, "a.json", {"command": "true"})  # a foreign file: its claim makes it a-2
    os.link(pending / "a.json", running / "a-2.json")  # the claim of pending/a.json, as a-2, cut short
    assert queue.settle_running("a-2", running / "a-2.json") == "unclaimed"
    assert os.listdir(running) == [] and (pending / "a.json").exists()

    queue.submit(JobSpec(command="true"), job_id="b")
    os.link(pending / "b.json", running / "c.json")  # c is not a name a claim of b.json gives
    assert queue.settle_running("c", running / "c.json") is None, "c needs its interrupted record"

    queue.submit(JobSpec(command="true"), job_id="d")
    os.link(pending / "d.json", running / "d.json")
    queue.layout.stdout_log("d").write_text("")  # its process was started
    assert queue.settle_running("d", running / "d.json") is None


def test_a_script_linked_in_from_outside_cannot_be_changed_from_outside(
    queue_root: Path, tmp_path: Path, start_worker: Start
) -> None:
    """``ln outside.sh pending/a.sh``: what runs, and what is kept in completed/ (which
    ``execsvc retry`` runs), is the queue's own copy; writing to outside.sh changes neither."""
    go = tmp_path / "go"
    outside = tmp_path / "outside.sh"
    wait_then_show_itself = waiting_job(go, 'cat "$0"')["command"]
    original = f"#!/bin/sh\n{wait_then_show_itself}\n"
    outside.write_text(original)
    worker = start_worker()
    os.link(outside, queue_root / "pending" / "a.sh")
    worker.wait_for_line("started job=a")
    outside.write_text("#!/bin/sh\necho CHANGED FROM OUTSIDE\n")  # in place: the same inode
    go.touch()
    info = wait_finished(queue_root, "a")
    assert info.status is JobStatus.COMPLETED
    assert (queue_root / "logs" / "a.stdout").read_text() == original, "the script ran as it was claimed"
    kept = queue_root / "completed" / "a.sh"
    outside.write_text("#!/bin/sh\necho CHANGED AGAIN\n")
    assert kept.read_text() == original and not os.path.samefile(kept, outside)
    worker.stop()


def test_a_linked_script_cancelled_or_settled_is_kept_as_a_copy_of_its_own(tmp_path: Path) -> None:
    """The other ways a job file is recorded without the worker's claim: a pending job
    cancelled by a client, and a job a dead worker left in running/ (settled at the next
    start). The script kept beside the record (``execsvc retry`` runs it) is the queue's own."""
    queue = JobQueue(tmp_path / "q")
    outside = tmp_path / "outside.sh"
    outside.write_text("echo original\n")
    os.link(outside, queue.layout.pending / "c.sh")
    assert queue.cancel("c").outcome == "cancelled"
    os.link(outside, queue.layout.running / "s.sh")
    settle_running(queue, silent_event_log(), previous=None, kill_grace_s=0.1, tail_bytes=100)
    assert queue.get("s").status is JobStatus.INTERRUPTED
    outside.write_text("echo changed from outside\n")
    for job_id in ("c", "s"):
        kept = queue.layout.failed / f"{job_id}.sh"
        assert kept.read_text() == "echo original\n" and not os.path.samefile(kept, outside), job_id
    assert outside.stat().st_nlink == 1


# ----- 16.4: written in place after the worker saw the file -----------------------------


def _busy_queue(queue_root: Path, tmp_path: Path, a: dict[str, Any]) -> Path:
    """A blocker job (older) and job ``a`` in pending/ before the worker starts, so that its
    start-up scan sees both; the blocker holds the one slot until ``go`` exists (returned)."""
    go = tmp_path / "go"
    base = time.time() - 100
    drop(queue_root, "blocker.json", waiting_job(go), mtime=base)
    drop(queue_root, "a.json", a, mtime=base + 1)
    return go


def test_a_job_rewritten_in_place_after_it_was_seen_is_claimed_whole(
    queue_root: Path, tmp_path: Path, start_worker: Start
) -> None:
    """Seen complete, then rewritten in place (open, truncate, write slowly) while the slot is
    busy: the claim finds it being written and gives it back; it runs once written."""
    marker = tmp_path / "marker"
    go = _busy_queue(queue_root, tmp_path, {"command": f"echo first > {marker}"})
    worker = start_worker()  # its start-up scan has seen a.json complete ("watching")
    second = json.dumps({"command": f"echo second > {marker}"}).encode()
    with open(queue_root / "pending" / "a.json", "wb", buffering=0) as writer:
        writer.write(second[:10])
        go.touch()  # the slot frees while a.json is half written
        first_line(worker, "claim_returned file=a.json", "job=a ")
        writer.write(second[10:])
    info = wait_finished(queue_root, "a")
    assert info.status is JobStatus.COMPLETED, info.result
    assert marker.read_text() == "second\n"
    worker.stop()


def test_a_job_held_open_for_writing_at_the_claim_waits_for_its_writer(
    queue_root: Path, tmp_path: Path, start_worker: Start
) -> None:
    """Opened for writing (nothing written yet) after the worker saw it: the claim asks the
    kernel about the inode it took, gives the job back, and runs what the writer leaves."""
    marker = tmp_path / "marker"
    go = _busy_queue(queue_root, tmp_path, {"command": f"echo first > {marker}"})
    worker = start_worker()
    fd = os.open(queue_root / "pending" / "a.json", os.O_WRONLY)
    try:
        go.touch()
        first_line(worker, "claim_returned file=a.json", "job=a ")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"command": f"echo second > {marker}"}).encode())
    finally:
        os.close(fd)
    assert wait_finished(queue_root, "a").status is JobStatus.COMPLETED
    assert marker.read_text() == "second\n"
    worker.stop()


# ----- 16.9: replaced by a rename after the worker saw the file -------------------------


@pytest.mark.parametrize("new_fields", ["not_before", "after_held"])
def test_a_job_replaced_by_rename_after_it_was_seen_runs_on_the_new_schedule(
    queue_root: Path, tmp_path: Path, start_worker: Start, new_fields: str
) -> None:
    """a.json seen ready, then replaced by a rename with a file that is not due (``not_before``
    in 2100, or ``after`` a held job with ``delay_s`` 3600): it must not start. A later job
    that runs after the slot frees shows the worker has passed a's turn."""
    marker = tmp_path / "marker"
    queue = JobQueue(queue_root)
    go = _busy_queue(queue_root, tmp_path, {"command": f"echo ran > {marker}"})
    worker = start_worker()
    replacement: dict[str, Any] = {"command": f"echo ran > {marker}"}
    if new_fields == "not_before":
        replacement["not_before"] = "2100-01-01T00:00:00Z"
    else:
        queue.submit(JobSpec(command="true"), job_id="h", held=True)
        replacement.update(after=["h"], delay_s=3600)
    drop(queue_root, "a.json", replacement)  # a temp file renamed over a.json: a new inode
    go.touch()
    drop(queue_root, "z.json", {"command": "true"})
    assert wait_finished(queue_root, "z").status is JobStatus.COMPLETED
    assert not marker.exists(), "a started on the schedule of the file it replaced"
    assert queue.get("a").state is JobState.PENDING
    worker.stop()


# ----- the claim itself, driven step by step ---------------------------------------------


def test_the_claim_gives_back_a_file_replaced_since_it_was_seen(
    tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    """The worker's first step claims what its start-up scan saw; the file was replaced by a
    rename since (its event not read yet): the claim sees another inode and gives it back."""
    queue = JobQueue(tmp_path / "q")
    marker = tmp_path / "marker"
    drop(queue.root, "a.json", {"command": f"echo ran > {marker}"})
    worker = make_worker()
    drop(queue.root, "a.json", {"command": f"echo ran > {marker}", "not_before": "2100-01-01T00:00:00Z"})
    worker.loop()  # claims before it reads the events waiting
    log = worker.layout.daemon_log
    assert "claim_returned file=a.json" in log.read_text()
    queue.submit(JobSpec(command="true"), job_id="z")
    run_until(worker, lambda: queue.record_path("z") is not None and not worker.busy)
    assert not marker.exists() and queue.get("a").state is JobState.PENDING


def test_the_claim_gives_back_a_file_open_for_writing(tmp_path: Path, make_worker: Callable[..., Worker]) -> None:
    """Opened for writing after the start-up scan saw it complete: the claim's read lease is
    refused, the job goes back to pending/ and runs when its writer closes it."""
    queue = JobQueue(tmp_path / "q")
    marker = tmp_path / "marker"
    path = drop(queue.root, "a.json", {"command": f"echo first > {marker}"})
    worker = make_worker()
    fd = os.open(path, os.O_WRONLY)
    try:
        worker.loop()
        assert "claim_returned file=a.json" in worker.layout.daemon_log.read_text()
        assert os.listdir(queue.layout.running) == [] and path.exists()
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"command": f"echo second > {marker}"}).encode())
    finally:
        os.close(fd)
    run_until(worker, lambda: queue.record_path("a") is not None and not worker.busy)
    assert queue.get("a").status is JobStatus.COMPLETED and marker.read_text() == "second\n"
