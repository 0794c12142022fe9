"""Hostile review, issue 16 ("Nothing lost, nothing stuck"): the worker's life cycle, locks,
signals and process trees, with real workers, real files and real signals."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import WorkerProcess, daemon_log, drop, wait_finished

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
