"""Hostile review, issue 16 ("Nothing lost, nothing stuck"): the worker's life cycle, locks,
signals and process trees, with real workers, real files and real signals."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from conftest import WorkerProcess, console_script, daemon_log, drop, process_gone, wait_finished, wait_until

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


def _removed(folder: Path) -> bool:
    """One ``rm -rf`` pass over ``folder``; whether it is gone."""
    with contextlib.suppress(OSError):
        shutil.rmtree(folder)
    return not folder.exists()


def test_a_worker_whose_queue_root_is_removed_stops_at_once(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--kill-grace-s", "0.5")
    _gate, job_pid = gated_job(queue_root, worker, "busy")
    # As `rm -rf` run until the folder is gone: until the worker sees the root go, it puts a
    # running job's removed file back in running/ (the job's own file), so one pass can fail.
    wait_until(lambda: _removed(queue_root), what="the queue root to be removed")
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


# ----- 16.16: the worker reaps what it inherits (PID 1, subreaper) ---------------------------------


class Pid1Worker(WorkerProcess):
    """``execsvc run`` as PID 1 of a new PID namespace (``unshare --pid --fork --mount-proc``),
    as in a container started without an init; killed with its namespace at the end."""

    def __init__(self, queue_root: Path, *args: str) -> None:
        self.queue_root = queue_root
        self.proc = subprocess.Popen(
            [
                "unshare",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                console_script("execsvc"),
                "run",
                "--queue-dir",
                str(queue_root),
                "--stderr-level",
                "info",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def inner_pid(self) -> int:
        """The worker's pid as this test sees it (unshare's child; PID 1 inside)."""
        return int(psutil.Process(self.proc.pid).children()[0].pid)

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM to the worker itself (unshare does not pass it on), then the exit code."""
        if self.proc.poll() is None:
            os.kill(self.inner_pid(), signal.SIGTERM)
        return self.wait_exit(timeout_s)


@pytest.fixture
def pid1_worker(queue_root: Path) -> Iterator[Callable[..., WorkerProcess]]:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare and root to make a PID namespace")
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        worker = Pid1Worker(queue_root, *args)
        started.append(worker)
        line = worker.wait_for_line("worker_started")
        if " pid=1 " not in line:
            pytest.skip(f"the worker did not run as PID 1 here: {line}")
        return worker.wait_ready()

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()  # unshare --kill-child: the namespace's PID 1, and with it every process in it


def zombie_children(pid: int) -> list[int]:
    with contextlib.suppress(psutil.Error):
        return [child.pid for child in psutil.Process(pid).children() if child.status() == psutil.STATUS_ZOMBIE]
    return []


def test_a_worker_as_pid_1_reaps_the_orphans_of_its_jobs(
    queue_root: Path, pid1_worker: Callable[..., WorkerProcess]
) -> None:
    worker = pid1_worker("--kill-grace-s", "60")
    drop(queue_root, "background.json", {"command": "sleep 0.1 & exit 0"})
    drop(queue_root, "next.json", {"command": "true"})
    assert wait_finished(queue_root, "background", timeout_s=15).status is JobStatus.COMPLETED
    assert wait_finished(queue_root, "next", timeout_s=15).status is JobStatus.COMPLETED, (
        "the zombie of the backgrounded sleep held the slot for the kill grace"
    )
    drop(queue_root, "daemon.json", {"command": "setsid sleep 0.2 & exit 0"})
    assert wait_finished(queue_root, "daemon", timeout_s=15).status is JobStatus.COMPLETED
    assert isinstance(worker, Pid1Worker)
    inner = worker.inner_pid()
    wait_until(lambda: zombie_children(inner) == [], what="every orphan's zombie to be reaped")
    assert worker.stop() == 0


def test_a_subreaper_worker_leaves_no_zombie_and_frees_the_slot(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--kill-grace-s", "60")
    drop(queue_root, "background.json", {"command": "sleep 0.1 & exit 0"})
    drop(queue_root, "next.json", {"command": "true"})
    assert wait_finished(queue_root, "next", timeout_s=15).status is JobStatus.COMPLETED
    drop(queue_root, "daemon.json", {"command": "setsid sleep 0.2 & exit 0"})
    assert wait_finished(queue_root, "daemon").status is JobStatus.COMPLETED
    wait_until(lambda: zombie_children(worker.proc.pid) == [], what="every orphan's zombie to be reaped")
    assert worker.stop() == 0


# ----- 16.17: a process that left the job's group is reported after every kind of end ------------


LEAVE_GROUP = {
    "setpgid": "import os, subprocess, sys; p = subprocess.Popen(['sleep', '600'], process_group=0)",
    "setsid": "import os, subprocess, sys; p = subprocess.Popen(['sleep', '600'], start_new_session=True)",
}


@pytest.mark.parametrize("how", sorted(LEAVE_GROUP))
def test_a_process_that_left_the_group_is_reported_after_a_normal_exit(
    queue_root: Path, start_worker: Start, tmp_path: Path, how: str
) -> None:
    start_worker("--kill-grace-s", "0.5")
    pidfile = tmp_path / "left.pid"
    code = LEAVE_GROUP[how] + f"; open({str(pidfile)!r}, 'w').write(str(p.pid))"
    drop(queue_root, "leave.json", {"command": sys.executable, "args": ["-c", code]})
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the process that left")
    left = int(pidfile.read_text())
    try:
        result = wait_finished(queue_root, "leave").result
        assert result is not None and result.status is JobStatus.COMPLETED and result.returncode == 0
        assert f"left its process group (setsid or a double fork) and still run, unstopped: PID {left}" in (
            result.error or ""
        )
        assert f"escaped job=leave pids={left}" in daemon_log(queue_root)
    finally:
        os.kill(left, signal.SIGKILL)
