"""Hostile review, issue 16 ("Nothing lost, nothing stuck"): the worker's life cycle, locks,
signals and process trees, with real workers, real files and real signals."""

from __future__ import annotations

import contextlib
import signal
import socket
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
