"""Hostile files where the worker opens its own, log files that cannot be created, and deadlines.

Each test drives a real ``execsvc run`` process on a ``tmp_path`` queue: a FIFO or a symbolic
link left where the worker creates a log, the index or ``daemon.log``; a worker with too few
file descriptors to open a job's logs; a retried job whose first attempt set a timeout.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import WorkerProcess, daemon_log, drop, wait_finished

from execsvc import JobQueue, JobSpec, JobState, JobStatus, WorkerConfig
from execsvc.runner import JobProcess
from execsvc.worker import Worker

Start = Callable[..., WorkerProcess]


def _aside(folder: Path, name: str) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.name.startswith(f"{name}.aside-"))


# ----- FIFOs and links where the worker opens its own files (16.12 / 17.7) ---------------


def test_a_fifo_at_a_jobs_stdout_log_is_moved_aside_and_the_job_runs(queue_root: Path, start_worker: Start) -> None:
    JobQueue(queue_root)
    os.mkfifo(queue_root / "logs" / "piped.stdout")
    worker = start_worker()
    drop(queue_root, "piped.json", {"command": "echo through"})
    info = wait_finished(queue_root, "piped", timeout_s=15)
    assert info.result is not None and info.result.status is JobStatus.COMPLETED
    assert info.result.stdout == "through\n"
    assert (queue_root / "logs" / "piped.stdout").read_text() == "through\n"
    [moved] = _aside(queue_root / "logs", "piped.stdout")
    assert moved.is_fifo()  # kept for a person to look at, not removed
    line = worker.wait_for_line("moved_aside job=piped")
    assert "FIFO" in line and "piped.stdout" in line
    drop(queue_root, "after.json", {"command": "true"})  # the loop goes on
    wait_finished(queue_root, "after", timeout_s=15)
    assert worker.stop() == 0


def test_a_symlink_at_a_jobs_log_is_not_followed(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    JobQueue(queue_root)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    (queue_root / "logs" / "linked.stderr").symlink_to(precious)
    (queue_root / "logs" / "linked.stdout").symlink_to(precious)
    worker = start_worker()
    drop(queue_root, "linked.json", {"command": "echo out; echo err >&2"})
    info = wait_finished(queue_root, "linked", timeout_s=15)
    assert info.result is not None and info.result.status is JobStatus.COMPLETED
    assert precious.read_text() == "keep me\n"  # neither truncated nor written
    assert (queue_root / "logs" / "linked.stdout").read_text() == "out\n"
    assert (queue_root / "logs" / "linked.stderr").read_text() == "err\n"
    assert not (queue_root / "logs" / "linked.stdout").is_symlink()
    assert len(_aside(queue_root / "logs", "linked.stdout")) == len(_aside(queue_root / "logs", "linked.stderr")) == 1
    assert "symbolic link" in worker.wait_for_line("moved_aside job=linked")
    assert worker.stop() == 0


def test_a_hard_link_at_a_jobs_log_is_not_truncated(queue_root: Path, start_worker: Start) -> None:
    JobQueue(queue_root)
    precious = queue_root / "precious.txt"  # a hard link needs the same file system
    precious.write_text("keep me\n")
    os.link(precious, queue_root / "logs" / "hard.stdout")
    start_worker()
    drop(queue_root, "hard.json", {"command": "echo out"})
    assert wait_finished(queue_root, "hard", timeout_s=15).result.stdout == "out\n"  # type: ignore[union-attr]
    assert precious.read_text() == "keep me\n"


def test_a_fifo_at_the_finish_index_does_not_block_records(queue_root: Path, start_worker: Start) -> None:
    JobQueue(queue_root)
    os.mkfifo(queue_root / "completed" / ".index")
    worker = start_worker()
    drop(queue_root, "indexed.json", {"command": "true"})
    worker.wait_for_line("finished job=indexed", timeout_s=15)
    assert not (queue_root / "running" / "indexed.json").exists()
    assert (queue_root / "completed" / ".index").is_file()
    assert len(_aside(queue_root / "completed", ".index")) == 1
    assert JobQueue(queue_root).get("indexed").state is JobState.COMPLETED
    assert worker.stop() == 0


def test_a_fifo_at_the_finish_index_does_not_block_a_listing(queue_root: Path) -> None:
    queue = JobQueue(queue_root)
    queue.submit({"command": "true"}, job_id="x")
    os.mkfifo(queue_root / "completed" / ".index")
    assert queue.jobs("completed") == []  # answers at once (a plain open would wait for a writer)


def test_a_fifo_at_daemon_log_or_worker_json_does_not_stop_the_start(queue_root: Path, start_worker: Start) -> None:
    JobQueue(queue_root)
    os.mkfifo(queue_root / "daemon.log")
    os.mkfifo(queue_root / "worker.json")
    worker = start_worker(ready=False)
    worker.wait_for_line("watching", timeout_s=15)
    assert (queue_root / "daemon.log").is_file()
    assert len(_aside(queue_root, "daemon.log")) == 1
    assert "moved_aside" in daemon_log(queue_root)
    drop(queue_root, "logged.json", {"command": "true"})
    worker.wait_for_line("finished job=logged", timeout_s=15)
    assert "finished job=logged" in daemon_log(queue_root)
    assert worker.stop() == 0


def test_a_symlink_at_an_on_finish_log_is_not_followed(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    JobQueue(queue_root)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    (queue_root / "logs" / "hooked.on_finish.stdout").symlink_to(precious)
    worker = start_worker()
    drop(queue_root, "hooked.json", {"command": "true", "on_finish": "echo hook"})
    worker.wait_for_line("on_finish_done job=hooked", timeout_s=15)
    assert precious.read_text() == "keep me\n"
    assert (queue_root / "logs" / "hooked.on_finish.stdout").read_text() == "hook\n"


def test_result_file_is_not_copied_through_a_link_the_job_put_at_its_log(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the job\n")
    log = queue_root / "logs" / "swap.stdout"
    result = queue_root / "result.txt"  # a result_file the policy allows: under the queue root
    start_worker()
    drop(queue_root, "swap.json", {"command": f"echo mine; rm {log}; ln -s {secret} {log}", "result_file": str(result)})
    info = wait_finished(queue_root, "swap", timeout_s=15)
    assert not result.exists() or "not for the job" not in result.read_text()
    assert info.result is not None and "not for the job" not in info.result.stdout
    assert info.status is JobStatus.FAILED and "result_file" in (info.result.error or "")


def test_a_fifo_as_result_file_does_not_block_the_record(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    result = queue_root / "result.fifo"  # a result_file the policy allows: under the queue root
    worker = start_worker()
    os.mkfifo(result)
    drop(queue_root, "tofifo.json", {"command": "echo x", "result_file": str(result)})
    info = wait_finished(queue_root, "tofifo", timeout_s=15)
    # The result file is written beside and renamed into place (docs/security.md): the FIFO is
    # replaced, never opened, so nothing waits on it.
    assert info.status is JobStatus.COMPLETED, info.result
    assert result.is_file() and result.read_text() == "x\n"
    assert worker.stop() == 0


# ----- a job whose log files cannot be created (16.2) -------------------------------------


def test_logs_that_cannot_be_created_pause_claims_and_strand_no_job(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    worker = start_worker()
    logs, aside = queue_root / "logs", tmp_path / "logs-aside"
    os.rename(logs, aside)
    logs.write_text("not a folder")  # no log can be created in it (root ignores chmod, so not chmod)
    drop(queue_root, "first.json", {"command": "echo first"})
    paused = worker.wait_for_line("claims_paused", timeout_s=15)
    assert "first.stdout" in paused and "cannot be created" in paused
    assert "it is back in pending/" in worker.wait_for_line("unclaimed job=first")
    drop(queue_root, "second.json", {"command": "echo second"})
    assert not (queue_root / "running" / "first.json").exists()  # not stranded: it never ran
    assert (queue_root / "pending" / "first.json").exists()
    logs.unlink()
    os.rename(aside, logs)
    worker.wait_for_line("claims_resumed", timeout_s=60)  # by itself: no signal, no restart
    assert wait_finished(queue_root, "first").result.stdout == "first\n"  # type: ignore[union-attr]
    assert wait_finished(queue_root, "second").result.stdout == "second\n"  # type: ignore[union-attr]
    log = daemon_log(queue_root)
    assert "internal_error" not in log and "ERROR claims_paused" in log
    assert log.count("started job=first") == 1  # started once, when it could be
    assert worker.stop() == 0


def test_too_few_file_descriptors_defer_jobs_until_some_are_free(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    worker = start_worker("--slots", "8")
    pid = worker.proc.pid
    used = psutil.Process(pid).num_fds()
    try:  # 4 descriptors left: 3 jobs run (a pidfd each), the 4th cannot open its two logs
        hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (used + 4, hard))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot lower the worker's RLIMIT_NOFILE: {exc}")
    gate = tmp_path / "gate"
    for n in range(6):
        drop(queue_root, f"g{n}.json", {"command": f"while [ ! -e {gate} ]; do sleep 0.02; done; echo {n}"})
    assert "Too many open files" in worker.wait_for_line("claims_paused", timeout_s=15)
    worker.wait_for_line("unclaimed job=")
    started = {line.split("job=")[1].split()[0] for line in worker.lines if " started job=" in line}
    running = {name.removesuffix(".json") for name in os.listdir(queue_root / "running") if not name.startswith(".")}
    assert running <= started  # nothing claimed without a process, a timeout and a record to come
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, hard))  # the cause is gone
    gate.touch()
    for n in range(6):
        info = wait_finished(queue_root, f"g{n}")
        assert info.status is JobStatus.COMPLETED, daemon_log(queue_root)
        assert info.result is not None and info.result.stdout == f"{n}\n"
    worker.wait_for_line("claims_resumed")
    assert "internal_error" not in daemon_log(queue_root)
    assert worker.stop() == 0


def test_a_job_file_that_cannot_be_read_for_want_of_descriptors_is_deferred_not_invalid(
    queue_root: Path, start_worker: Start
) -> None:
    """No descriptor left at the claim: the job file itself cannot be opened. That is the worker's
    want, not the job's: the claim is undone and the job runs once descriptors are free again."""
    worker = start_worker()
    pid = worker.proc.pid
    try:
        hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (psutil.Process(pid).num_fds(), hard))  # none left
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot lower the worker's RLIMIT_NOFILE: {exc}")
    drop(queue_root, "starved.json", {"command": "echo fed"})
    line = worker.wait_for_line("claims_paused", timeout_s=15)
    assert "Too many open files" in line, line
    worker.wait_for_line("unclaimed job=starved")
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, hard))  # the cause is gone
    info = wait_finished(queue_root, "starved")
    assert info.status is JobStatus.COMPLETED, info.result
    assert info.result is not None and info.result.stdout == "fed\n"
    assert worker.stop() == 0


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_link_or_fifo_at_worker_lock_is_moved_aside_not_followed(
    kind: str, queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    """The lock library opens worker.lock with O_TRUNC, following a link: a link there would
    have the worker empty the file it names, a FIFO would block its start."""
    JobQueue(queue_root)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    lock = queue_root / "worker.lock"
    if kind == "symlink":
        lock.symlink_to(precious)
    else:
        os.mkfifo(lock)
    worker = start_worker()
    assert "moved_aside" in worker.wait_for_line("moved_aside")
    assert precious.read_text() == "keep me\n"
    drop(queue_root, "after.json", {"command": "echo ok"})
    assert wait_finished(queue_root, "after").status is JobStatus.COMPLETED
    assert lock.is_file() and not lock.is_symlink()
    assert worker.stop() == 0


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
