"""The worker driven step by step in this process (huey-style ``loop()``), with a real observer."""

from __future__ import annotations

import errno
import os
import selectors
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import drop, run_until

from execsvc import JobQueue, JobSpec, JobState, JobStatus, runner
from execsvc.file_events import InotifyFD
from execsvc.protocol.durable import write_durable
from execsvc.protocol.store import JobStore
from execsvc.worker import Worker


def finished(worker: Worker, *job_ids: str) -> Callable[[], bool]:
    """Every job has its record, and the worker has written its log lines too (they follow the record)."""
    queue = JobQueue(worker.layout.root)

    def check() -> bool:
        recorded = all(queue.record_path(job_id) is not None for job_id in job_ids)
        return recorded and not os.listdir(queue.layout.running) and not worker.busy

    return check


def test_daemon_log_rotates_by_size(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker(log_max_bytes=2_000, log_backups=2)
    queue = JobQueue(worker.layout.root)
    ids = [queue.submit(JobSpec(command="true")) for _ in range(30)]
    run_until(worker, finished(worker, *ids))
    logs = sorted(name for name in os.listdir(worker.layout.root) if name.startswith("daemon.log"))
    assert logs == ["daemon.log", "daemon.log.1", "daemon.log.2"]
    assert all((worker.layout.root / name).stat().st_size <= 2_200 for name in logs)


def test_every_log_line_has_an_iso_timestamp_and_the_job(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker()
    queue = JobQueue(worker.layout.root)
    job_id = queue.submit(JobSpec(command="true"))
    run_until(worker, finished(worker, job_id))
    lines = worker.layout.daemon_log.read_text().splitlines()
    for line in lines:
        stamp, level, event, *_ = line.split(" ")
        assert stamp[10] == "T" and (stamp.endswith("Z") or stamp[-6] in "+-"), line
        assert level in ("INFO", "WARNING", "ERROR") and event
    for event in ("claimed", "started", "finished"):
        assert any(line.split(" ")[2] == event and f"job={job_id}" in line for line in lines), event


def test_a_claim_cut_short_by_a_crash_runs_the_job_once(tmp_path: Path, make_worker: Callable[..., Worker]) -> None:
    queue = JobQueue(tmp_path / "q")
    marker = tmp_path / "runs"
    drop(queue.root, "once.json", {"command": f"echo run >> {marker}"})
    os.link(queue.layout.pending / "once.json", queue.layout.running / "once.json")  # killed between link and unlink
    worker = make_worker()
    run_until(worker, finished(worker, "once"))
    assert marker.read_text() == "run\n"
    assert queue.get("once").status is JobStatus.COMPLETED
    assert "claim_undone job=once" in worker.layout.daemon_log.read_text()


def test_a_finish_cut_short_by_a_crash_is_completed_not_rerun(
    tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    queue = JobQueue(tmp_path / "q")
    queue.submit_script("echo should not run again\n", job_id="done")
    claimed = queue.claim("done.sh")
    sidecar = (
        b'{"job_id": "done", "kind": "text", "job_file": "done.sh", "result": {"job_id": "done", '
        b'"status": "completed", "returncode": 0, "completed_at": "2026-11-21T10:00:00Z", "job_file": "done.sh"}}'
    )
    write_durable(queue.layout.completed / "done.result.json", sidecar)
    worker = make_worker()
    run_until(worker, lambda: not os.listdir(queue.layout.running))
    assert claimed.path.name in os.listdir(queue.layout.completed)
    assert queue.get("done").status is JobStatus.COMPLETED
    log = worker.layout.daemon_log.read_text()
    assert "recovered job=done" in log and "started job=done" not in log


def test_loop_returns_false_after_a_stop_request(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker()
    worker.request_stop()
    assert worker.loop() is False


def test_an_invalid_job_does_not_stop_the_next(make_worker: Callable[..., Worker]) -> None:
    worker = make_worker()
    queue = JobQueue(worker.layout.root)
    drop(queue.root, "a-bad.json", "{")
    good = queue.submit(JobSpec(command="true"))
    run_until(worker, finished(worker, "a-bad", good))
    assert queue.get("a-bad").status is JobStatus.INVALID
    assert queue.get(good).state is JobState.COMPLETED


def test_a_job_that_cannot_be_settled_does_not_stop_the_worker(
    tmp_path: Path, make_worker: Callable[..., Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = JobQueue(tmp_path / "q")
    queue.submit_script("echo hi\n", job_id="stuck")
    queue.claim("stuck.sh")  # left in running/ by a dead worker ...
    (queue.layout.failed / "stuck.sh").write_text("a stray file where the script must go")
    settle = JobQueue.settle_running

    def failing(self: JobQueue, job_id: str, path: Path) -> str | None:  # ... and unsettleable (a stray no
        if job_id == "stuck":  # longer makes it so: the script is then kept under a free name)
            raise OSError(errno.EIO, "Input/output error", str(path))
        return settle(self, job_id, path)

    monkeypatch.setattr(JobStore, "settle_running", failing)
    worker = make_worker()
    after = queue.submit(JobSpec(command="true"))
    run_until(worker, lambda: queue.record_path(after) is not None)
    assert queue.get(after).status is JobStatus.COMPLETED, "the worker serves all the same"
    assert os.listdir(queue.layout.running) == ["stuck.sh"], "left where it is, never run, never lost"
    assert (queue.layout.failed / "stuck.sh").read_text() == "a stray file where the script must go"
    log = worker.layout.daemon_log.read_text()
    assert "recovery_failed job=stuck" in log and "started job=stuck" not in log


def start_blocker(worker: Worker, gate: Path) -> str:
    """Submit a job that runs until ``gate`` exists; return its id once it runs."""
    queue = JobQueue(worker.layout.root)
    blocker = queue.submit(JobSpec(command=f"while [ ! -e {gate} ]; do sleep 0.01; done"))
    run_until(worker, lambda: queue.get(blocker).state is JobState.RUNNING)
    return blocker


def order_after_gate(worker: Worker, blocker: str, gate: Path, order: Path) -> list[str]:
    """Drop j0, j1, j2 with file times in the order j1, j2, j0 (no loop step meanwhile), open the
    gate, and return the order they ran in."""
    base = time.time() - 100
    for i, age in enumerate([3, 1, 2]):
        drop(worker.layout.root, f"j{i}.json", {"command": f"echo j{i} >> {order}"}, mtime=base + age)
    gate.touch()
    run_until(worker, finished(worker, blocker, "j0", "j1", "j2"))
    return order.read_text().split()


def test_a_slot_freed_by_a_job_thread_looks_at_pending_itself(
    tmp_path: Path, make_worker: Callable[..., Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where jobs have no pidfd (macOS, Linux before 5.3), a job thread waits for each job, and
    file events read by a thread can lag (or get lost). When such a slot frees, the worker reads
    pending/ itself, so the oldest job runs next, not the one whose event came first. The watch
    is stopped here, as if the events were late, which makes it deterministic."""
    monkeypatch.setattr(runner, "_pidfd_open", lambda pid: None)  # as on a system without pidfds
    worker = make_worker()
    gate = tmp_path / "gate"
    blocker = start_blocker(worker, gate)
    assert worker._active[blocker].process.pidfd is None  # white-box: the job thread's way
    watch = worker._file_events  # white-box: silence the file events
    assert watch is not None
    watch.stop()
    assert order_after_gate(worker, blocker, gate, tmp_path / "order") == ["j1", "j2", "j0"]


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs Linux pidfds")
def test_a_pidfd_the_loop_cannot_wait_on_is_watched_by_a_job_thread(
    make_worker: Callable[..., Worker], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault injected where it was never seen: the selector refuses the job's pidfd. The job
    is then waited for by a job thread (as on a system without pidfds), so its exit frees the
    slot and the next job runs; without the fallback the first job's slot stayed taken."""
    worker = make_worker()
    selector = worker._selector  # white-box: the loop's selector
    real_register = selector.register

    def refuse_pidfds(fileobj: object, events: int, data: object = None) -> selectors.SelectorKey:
        if isinstance(data, str):  # a job's pidfd (the inbox and the watch are registered at start)
            raise OSError(errno.ENOMEM, "injected: cannot add to the epoll set")
        return real_register(fileobj, events, data)

    monkeypatch.setattr(selector, "register", refuse_pidfds)
    queue = JobQueue(worker.layout.root)
    ids = [queue.submit(JobSpec(command="true"), job_id=f"t{n}") for n in range(2)]
    run_until(worker, finished(worker, *ids))
    assert all(queue.get(job_id).status is JobStatus.COMPLETED for job_id in ids)
    assert worker.layout.daemon_log.read_text().count("exit_waited_by_thread") == 2


@pytest.mark.skipif(not hasattr(os, "pidfd_open") or InotifyFD is None, reason="needs Linux pidfds and inotify")
def test_a_slot_freed_in_the_loop_reads_waiting_events_before_it_is_filled(
    tmp_path: Path, make_worker: Callable[..., Worker]
) -> None:
    """With pidfds and the file events read by the loop itself, a job's exit and the events
    that came meanwhile wake the same loop: the events waiting in the kernel are read before the
    freed slot is filled, so the oldest job runs next whatever order the files arrived in."""
    worker = make_worker()
    gate = tmp_path / "gate"
    blocker = start_blocker(worker, gate)
    assert worker._active[blocker].process.pidfd is not None  # white-box: the loop's way
    assert worker._file_events is not None and worker._file_events.fileno() is not None
    assert order_after_gate(worker, blocker, gate, tmp_path / "order") == ["j1", "j2", "j0"]
