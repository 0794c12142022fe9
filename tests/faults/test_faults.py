"""Faults, CI-sized: a crash loop with producers, and concurrent producers with slots 1 and 4.

The long forms run by hand (``python -m tests.chaos --cycles 300``, and
``EXECSVC_PRODUCER_JOBS=500 pytest tests/faults/test_faults.py -k producers``); the
docs/reliability.md holds their figures.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import WorkerProcess, daemon_log, drop, process_gone, wait_finished, wait_until

from execsvc import JobQueue, JobState, JobStatus

Start = Callable[..., WorkerProcess]


def test_crash_loop_loses_nothing_and_runs_nothing_twice() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--cycles", "12", "--producers", "3", "--seed", "3"],
        check=False,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = dict(part.split("=") for part in done.stdout.split() if "=" in part)
    assert int(figures["jobs"]) > 100
    assert figures["lost"] == "0" and figures["duplicated"] == "0" and figures["unsettled"] == "0"


def _producer(root: Path, producer: int, count: int, log: Path) -> None:
    """Drop ``count`` jobs, one way per producer: submit helper, in-place write, or ``mv`` of a temp file."""
    queue = JobQueue(root)
    pending = queue.layout.pending
    for n in range(count):
        job_id = f"p{producer}-{n:04d}"
        command = f"echo {job_id} >> {log}"
        if producer % 3 == 0:
            queue.submit({"command": command}, job_id=job_id)
        elif producer % 3 == 1:
            (pending / f"{job_id}.json").write_text(json.dumps({"command": command}))
        else:
            tmp = pending / f".{job_id}.tmp"
            tmp.write_text(command + "\n")
            subprocess.run(["mv", str(tmp), str(pending / f"{job_id}.sh")], check=True)


@pytest.mark.parametrize("slots", [1, 4])
def test_concurrent_producers_every_job_once_and_fifo_per_producer(
    slots: int, queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    producers, each = 8, int(os.environ.get("EXECSVC_PRODUCER_JOBS", "60"))  # the long form: 500
    log = tmp_path / "runs.log"
    start_worker("--slots", str(slots))
    procs = [multiprocessing.Process(target=_producer, args=(queue_root, p, each, log)) for p in range(producers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    queue = JobQueue(queue_root)
    for p in range(producers):
        for n in range(each):
            assert queue.wait(f"p{p}-{n:04d}", 60).status is JobStatus.COMPLETED
    runs = log.read_text().split()
    assert len(runs) == len(set(runs)) == producers * each
    assert not os.listdir(queue_root / "pending")
    wait_until(lambda: not os.listdir(queue_root / "running"), what="running/ to empty")  # left just after the record
    assert len(queue.jobs(JobState.COMPLETED)) == producers * each
    if slots == 1:  # one at a time: the start order is the order each producer dropped its jobs
        for p in range(producers):
            mine = [job for job in runs if job.startswith(f"p{p}-")]
            assert mine == sorted(mine), f"producer {p}'s jobs ran out of order"


def test_an_unwritable_completed_folder_pauses_claims_until_it_is_fixed(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    worker = start_worker()
    completed = queue_root / "completed"
    aside = tmp_path / "completed-aside"
    os.rename(completed, aside)
    completed.write_text("not a folder")  # records cannot be written there (root ignores chmod, so not chmod)
    drop(queue_root, "first.json", {"command": "echo first"})
    line = worker.wait_for_line("claims_paused")
    assert "the record of job first cannot be written" in line
    drop(queue_root, "second.json", {"command": "echo second"})
    worker.wait_for_line("claimed job=first")
    assert (queue_root / "running" / "first.json").exists()  # kept, not lost
    assert (queue_root / "pending" / "second.json").exists()  # not claimed while records fail
    completed.unlink()
    os.rename(aside, completed)
    worker.wait_for_line("claims_resumed", timeout_s=60)
    assert wait_finished(queue_root, "first").result.stdout == "first\n"  # type: ignore[union-attr]
    assert wait_finished(queue_root, "second").result.stdout == "second\n"  # type: ignore[union-attr]
    assert "ERROR claims_paused" in daemon_log(queue_root)


def _tree_pids(pidfile: Path) -> list[int]:
    wait_until(lambda: pidfile.exists() and len(pidfile.read_text().split()) >= 3, what="the job's tree to start")
    return [int(pid) for pid in pidfile.read_text().split()]


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_timeouts_and_cancels_leave_no_process_of_the_group(
    how: str, queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    start_worker("--kill-grace-s", "0.5")
    pidfile = tmp_path / "pids"
    # a child, a grandchild, and a child that ignores SIGTERM, all in the job's process group
    script = (
        f"sleep 600 & echo $! >> {pidfile}; "
        f"sh -c 'sleep 600 & echo $! >> {pidfile}; wait' & "
        f"sh -c 'trap \"\" TERM; echo $$ >> {pidfile}; while :; do sleep 0.1; done' & "
        "wait"
    )
    timeout_s = 1 if how == "timeout" else 600
    drop(queue_root, "tree.json", {"command": script, "timeout_s": timeout_s})
    pids = _tree_pids(pidfile)
    if how == "cancel":
        JobQueue(queue_root).cancel("tree")
    result = wait_finished(queue_root, "tree").result
    assert result is not None and result.status.value == ("timeout" if how == "timeout" else "cancelled")
    for pid in pids:
        wait_until(lambda pid=pid: process_gone(pid), what=f"process {pid} of the job to be gone")  # type: ignore[misc]


def test_a_process_that_left_the_group_is_reported(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    start_worker("--kill-grace-s", "0.5")
    pidfile = tmp_path / "escaped.pid"
    drop(
        queue_root,
        "escape.json",
        {"command": f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 600' & sleep 600", "timeout_s": 1},
    )
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the escaped process")
    escaped = int(pidfile.read_text())
    try:
        result = wait_finished(queue_root, "escape").result
        assert result is not None and result.status.value == "timeout"
        assert f"left its process group (setsid or a double fork) and still run, unstopped: PID {escaped}" in (
            result.error or ""
        )
        assert f"escaped job=escape pids={escaped}" in daemon_log(queue_root)
    finally:
        os.kill(escaped, signal.SIGKILL)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs, so a job can fill the disk the queue is on (needs root: skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)], check=False)
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_pauses_claims_and_loses_nothing(small_disk: Path, start_worker: Start) -> None:
    root = small_disk / "queue"
    filler = small_disk / "filler"
    drop(root, "fills.json", {"command": f"head -c 8M /dev/zero > {filler}; echo filled"}, mtime=1_000_000)
    drop(root, "next.json", {"command": "echo next"}, mtime=1_000_001)
    drop(root, "late.json", {"command": "echo late"}, mtime=1_000_002)
    worker = start_worker(root=root)
    paused = worker.wait_for_line("claims_paused", timeout_s=60)
    # The record of "fills" is written after the next job has started (see Worker._on_exit), and
    # "next" is quick: either record may be the first to fail.
    assert re.search(r"the record of job (fills|next|late) cannot be written", paused), paused
    assert "No space left on device" in paused

    def started_pids() -> list[int]:
        return [int(line.split(" pid=")[1].split()[0]) for line in list(worker.lines) if " started job=" in line]

    # "next" (and "late") may have been claimed as slots freed, before the first record failed; let them end too
    wait_until(lambda: all(process_gone(pid) for pid in started_pids()), what="the started jobs to end")
    assert (root / "running" / "fills.json").exists()  # kept, not lost
    filler.unlink()
    resumed = worker.wait_for_line("claims_resumed", timeout_s=60)
    filled = wait_finished(root, "fills").result  # its own writes failed on the full disk: it failed
    assert filled is not None and filled.returncode != 0
    assert wait_finished(root, "next").result is not None  # ran on the full disk or after: recorded either way
    late = wait_finished(root, "late").result
    assert late is not None and late.stdout == "late\n"
    between = worker.lines[worker.lines.index(paused) : worker.lines.index(resumed)]
    assert not [line for line in between if " claimed job=" in line], "a job was claimed while records failed"
    assert worker.stop() == 0


def test_a_backlog_at_start_runs_in_fifo_order(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    log = tmp_path / "order.log"
    count = 1000
    for n in range(count):  # names run backwards, so only the modification times give the order
        drop(queue_root, f"b{count - n:05d}.json", {"command": f"echo {n} >> {log}"}, mtime=1_000_000 + n)
    start_worker()
    JobQueue(queue_root).wait(f"b{1:05d}", 120)
    assert [int(n) for n in log.read_text().split()] == list(range(count))
