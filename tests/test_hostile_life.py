"""Hostile review, issue 16 ("Nothing lost, nothing stuck"): the worker's life cycle, locks,
signals and process trees, with real workers, real files and real signals."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import WorkerProcess, daemon_log, drop, process_gone, wait_finished, wait_until

from execsvc import JobQueue, JobState, JobStatus

Start = Callable[..., WorkerProcess]


@contextlib.contextmanager
def signal_default(signum: int) -> Iterator[None]:
    """Start children with ``signum`` at its default action, even if this test run ignores it (nohup)."""
    before = signal.signal(signum, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signum, before)


# ----- 16.13: no common signal ends the worker without the normal stop ------------------------


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT])
def test_sighup_and_sigquit_drain_like_sigterm(queue_root: Path, start_worker: Start, signum: int) -> None:
    with signal_default(signal.SIGHUP):
        worker = start_worker()
    gate = queue_root.parent / "gate"
    drop(queue_root, "draining.json", {"command": f"while [ ! -e {gate} ]; do sleep 0.01; done; echo done"})
    worker.wait_for_line("started job=draining")
    worker.proc.send_signal(signum)
    worker.wait_for_line(f"worker_stopping signal={signal.Signals(signum).name}")
    gate.touch()
    assert worker.wait_exit() == 0
    info = JobQueue(queue_root).get("draining")
    assert info.status is JobStatus.COMPLETED and info.result is not None and info.result.stdout == "done\n"
    assert not (queue_root / "worker.json").exists()
    assert "worker_stopped" in daemon_log(queue_root)


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_sigusr1_and_sigusr2_log_a_status_line_and_serve_on(queue_root: Path, start_worker: Start, signum: int) -> None:
    worker = start_worker()
    gate = queue_root.parent / "gate"
    drop(queue_root, "busy.json", {"command": f"while [ ! -e {gate} ]; do sleep 0.01; done"})
    worker.wait_for_line("started job=busy")
    worker.proc.send_signal(signum)
    line = worker.wait_for_line(f"status signal={signal.Signals(signum).name}")
    assert "running=1" in line
    gate.touch()
    assert wait_finished(queue_root, "busy").status is JobStatus.COMPLETED
    drop(queue_root, "after.json", {"command": "true"})
    assert wait_finished(queue_root, "after").status is JobStatus.COMPLETED
    assert worker.proc.poll() is None
    assert worker.stop() == 0


def test_a_worker_started_with_sighup_ignored_outlives_the_terminal(queue_root: Path, start_worker: Start) -> None:
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts it
    try:
        worker = start_worker()
    finally:
        signal.signal(signal.SIGHUP, before)
    worker.proc.send_signal(signal.SIGHUP)
    drop(queue_root, "after.json", {"command": "true"})
    assert wait_finished(queue_root, "after").status is JobStatus.COMPLETED
    assert worker.proc.poll() is None and "worker_stopping" not in daemon_log(queue_root)
    assert worker.stop() == 0
    assert JobQueue(queue_root).get("after").state is JobState.COMPLETED


# ----- 16.14: hooks and webhooks are bounded by the stop ------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback HTTP address that accepts connections (the kernel completes them) and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    finally:
        server.close()


def slow_hooks_config(tmp_path: Path) -> str:
    config = tmp_path / "config.toml"
    config.write_text("[worker]\nwebhook_timeout_s = 120\nwebhook_attempts = 3\nhook_timeout_s = 120\n")
    return str(config)


def test_sigterm_abandons_webhooks_at_the_end_of_the_drain_period(
    queue_root: Path, start_worker: Start, tmp_path: Path, silent_server: str
) -> None:
    worker = start_worker("--config", slow_hooks_config(tmp_path), "--drain-timeout-s", "0.5")
    ids = [f"hooked-{n}" for n in range(4)]
    for job_id in ids:
        drop(queue_root, f"{job_id}.json", {"command": "true", "webhook": silent_server})
    for job_id in ids:
        wait_finished(queue_root, job_id)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait_exit(timeout_s=20) == 0, "the stop waits for no webhook past the drain period"
    log = daemon_log(queue_root)
    for job_id in ids:
        assert f"webhook_abandoned job={job_id}" in log
    assert "webhook_failed" not in log and "worker_stopped" in log


def test_a_second_signal_abandons_webhooks_and_on_finish_at_once(
    queue_root: Path, start_worker: Start, tmp_path: Path, silent_server: str
) -> None:
    worker = start_worker("--config", slow_hooks_config(tmp_path), "--drain-timeout-s", "600")
    pidfile = tmp_path / "hook.pid"
    drop(queue_root, "slow-hook.json", {"command": "true", "on_finish": f"echo $$ > {pidfile}; exec sleep 600"})
    drop(queue_root, "web.json", {"command": "true", "webhook": silent_server})
    wait_finished(queue_root, "slow-hook")
    wait_finished(queue_root, "web")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the on_finish hook to start")
    hook_pid = int(pidfile.read_text())
    worker.proc.send_signal(signal.SIGTERM)
    worker.wait_for_line("worker_stopping")
    worker.proc.send_signal(signal.SIGINT)
    assert worker.wait_exit(timeout_s=20) == 0
    log = daemon_log(queue_root)
    assert "on_finish_abandoned job=slow-hook" in log and "webhook_abandoned job=web" in log
    assert process_gone(hook_pid), "the on_finish process group got SIGKILL"


# ----- 16.10: two workers never serve one queue, whatever happens to the lock file or the folders --


def gated_job(queue_root: Path, worker: WorkerProcess, job_id: str) -> tuple[Path, int]:
    """A job that runs until its gate file appears; its gate and pid, once it runs."""
    gate = queue_root.parent / f"{job_id}.gate"
    pidfile = queue_root.parent / f"{job_id}.pid"
    drop(queue_root, f"{job_id}.json", {"command": f"echo $$ > {pidfile}; while [ ! -e {gate} ]; do sleep 0.01; done"})
    worker.wait_for_line(f"started job={job_id}")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the job to start")
    return gate, int(pidfile.read_text())


def test_deleting_worker_lock_lets_no_second_worker_in(queue_root: Path, start_worker: Start) -> None:
    first = start_worker()
    gate, job_pid = gated_job(queue_root, first, "busy")
    (queue_root / "worker.lock").unlink()
    second = start_worker(ready=False)
    assert second.wait_exit(timeout_s=20) == 1
    assert f"worker PID {first.proc.pid}" in "\n".join(second.lines)
    assert not process_gone(job_pid), "the first worker's job runs on"
    gate.touch()
    info = wait_finished(queue_root, "busy")
    assert info.status is JobStatus.COMPLETED, "recorded by the worker that runs it"
    assert "interrupted" not in daemon_log(queue_root)
    assert first.stop() == 0


def test_a_worker_whose_queue_root_is_removed_stops_at_once(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--kill-grace-s", "0.5")
    _gate, job_pid = gated_job(queue_root, worker, "busy")
    shutil.rmtree(queue_root)
    assert worker.wait_exit(timeout_s=20) == 75
    assert any("queue_lost" in line and "was removed" in line for line in worker.lines)
    wait_until(lambda: process_gone(job_pid), what="the job of the lost queue to be stopped")
    assert not queue_root.exists(), "the worker re-creates nothing in a queue it no longer serves"


def test_a_replaced_root_is_left_to_the_worker_that_serves_it(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    first = start_worker("--kill-grace-s", "0.5")
    _gate, job_pid = gated_job(queue_root, first, "busy")
    old_root = tmp_path / "old-queue"
    os.rename(queue_root, old_root)
    assert first.wait_exit(timeout_s=20) == 75
    assert any("queue_lost" in line for line in first.lines)
    second = start_worker()  # on a fresh root at the same path
    drop(queue_root, "new.json", {"command": "true"})
    assert wait_finished(queue_root, "new").status is JobStatus.COMPLETED
    assert JobQueue(queue_root).worker_info() is not None, "the new worker's worker.json is left alone"
    assert "busy" not in daemon_log(queue_root)
    wait_until(lambda: process_gone(job_pid), what="the old root's job to be stopped")
    assert second.stop() == 0
    third = start_worker(root=old_root)  # the old root's job was not lost: its next worker settles it
    info = wait_finished(old_root, "busy")
    assert info.status is JobStatus.INTERRUPTED
    assert third.stop() == 0


def test_a_removed_pending_folder_makes_the_worker_drain_and_exit_for_a_restart(
    queue_root: Path, start_worker: Start
) -> None:
    worker = start_worker()
    gate, _job_pid = gated_job(queue_root, worker, "busy")
    shutil.rmtree(queue_root / "pending")
    worker.wait_for_line("watch_lost")
    gate.touch()
    assert worker.wait_exit(timeout_s=20) == 75
    assert wait_finished(queue_root, "busy").status is JobStatus.COMPLETED, "the running job drains and is recorded"


# ----- 16.11: leftovers are found by the queue's identity, not a path string ------------------------


@pytest.fixture
def bind_mounted(queue_root: Path, tmp_path: Path) -> Iterator[Path]:
    """The queue root bind-mounted at a second path (needs root: skipped otherwise)."""
    queue_root.mkdir(mode=0o700)
    other = tmp_path / "other-path"
    other.mkdir(mode=0o700)
    done = subprocess.run(["mount", "--bind", str(queue_root), str(other)], check=False, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.decode().strip()}")
    try:
        yield other
    finally:
        subprocess.run(["umount", "-l", str(other)], check=False)


def test_recovery_through_a_bind_mount_stops_the_leftovers(
    queue_root: Path, start_worker: Start, bind_mounted: Path
) -> None:
    first = start_worker()
    pidfile = queue_root.parent / "job.pid"
    drop(queue_root, "long.json", {"command": f"echo $$ > {pidfile}; sleep 600"})
    first.wait_for_line("started job=long")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the job to start")
    job_pid = int(pidfile.read_text())
    first.kill()
    again = start_worker(root=bind_mounted)
    info = wait_finished(bind_mounted, "long")
    assert info.status is JobStatus.INTERRUPTED
    wait_until(lambda: process_gone(job_pid), what="the leftover found through the other path to be stopped")
    assert "stopping_leftovers job=long" in daemon_log(queue_root)
    assert again.stop() == 0


def test_a_second_worker_through_a_bind_mount_is_refused(
    queue_root: Path, start_worker: Start, bind_mounted: Path
) -> None:
    first = start_worker()
    second = start_worker(root=bind_mounted, ready=False)
    assert second.wait_exit(timeout_s=20) == 1
    assert f"worker PID {first.proc.pid}" in "\n".join(second.lines)
    assert first.stop() == 0
