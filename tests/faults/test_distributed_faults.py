"""Faults of distributed execution (docs/distributed.md, "What is guaranteed"): a remote worker
killed with kill -9 mid-job, the dispatching worker killed with kill -9 mid-flight and started
again, Redis restarted between jobs. Real processes and a real redis-server (tests/e2e/redis_support.py).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from conftest import daemon_log, drop, wait_finished, wait_until
from e2e.redis_support import processes_with, redis_server, start_remote, wait_gone

from execsvc import JobQueue

__all__ = ["redis_server", "start_remote"]


def test_a_remote_worker_killed_mid_job_gives_interrupted_and_leaves_nothing_running(
    queue_root: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    remote = start_remote(url, "doomed")
    start_worker("--executor", "rq", "--redis-url", url)
    drop(queue_root, "victim.json", {"command": "sh", "args": ["-c", "echo started; sleep 621"]})
    log = queue_root / "logs" / "victim.stdout"
    wait_until(lambda: log.exists() and log.read_text() == "started\n", 20, "the job to start remotely")
    remote.kill9()
    wait_gone("sleep 621")  # the keeper stopped the job's process group
    info = wait_finished(queue_root, "victim")
    assert info.result is not None and info.result.status.value == "interrupted", info.result
    assert "not run again" in (info.result.error or "") and info.result.host == "doomed"
    assert info.result.stdout == "started\n"


def test_the_dispatcher_killed_mid_flight_loses_nothing_and_runs_nothing_twice(
    queue_root: Path, tmp_path: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    start_remote(url, "r1")
    start_remote(url, "r2")
    ran, go = tmp_path / "ran.txt", tmp_path / "go"
    script = f'echo "$EXECSVC_JOB_ID" >> {ran}; while [ ! -e {go} ]; do sleep 0.05; done; echo done'
    ids = [f"flight-{n}" for n in range(6)]
    for job_id in ids:
        drop(queue_root, f"{job_id}.json", {"command": "sh", "args": ["-c", script]})
    first = start_worker("--executor", "rq", "--redis-url", url, "--slots", "2")
    wait_until(lambda: ran.exists() and len(ran.read_text().split()) == 2, 20, "two jobs running remotely")
    first.kill()  # kill -9: two jobs in flight on the remote workers, four pending
    second = start_worker("--executor", "rq", "--redis-url", url, "--slots", "2")
    second.wait_for_line("adopted")
    go.touch()
    for job_id in ids:
        info = wait_finished(queue_root, job_id)
        assert info.result is not None and info.result.status.value == "completed", info.result
        assert info.result.stdout == "done\n"
    assert sorted(ran.read_text().split()) == ids  # each ran once
    assert daemon_log(queue_root).count(" adopted ") == 2
    assert "interrupted" not in daemon_log(queue_root)


def test_redis_restarted_between_jobs_loses_nothing(
    queue_root: Path, tmp_path: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    start_remote(url, "r1")
    start_worker("--executor", "rq", "--redis-url", url)
    for n in range(3):
        drop(queue_root, f"before-{n}.json", {"command": "echo", "args": [f"before {n}"]})
    for n in range(3):
        assert wait_finished(queue_root, f"before-{n}").status.value == "completed"
    redis_server.restart()  # empty: it keeps nothing on disk
    for n in range(3):
        drop(queue_root, f"after-{n}.json", {"command": "echo", "args": [f"after {n}"]})
    for n in range(3):
        info = wait_finished(queue_root, f"after-{n}", timeout_s=60)
        assert info.result is not None and info.result.stdout == f"after {n}\n", info.result
    queue = JobQueue(queue_root)
    for n in range(3):
        record = queue.get(f"before-{n}")
        assert record.result is not None and record.result.stdout == f"before {n}\n"
    assert not processes_with("sleep 62")


def test_a_remote_worker_stopped_at_once_records_its_job_interrupted(
    queue_root: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    remote = start_remote(url, "stopped")
    start_worker("--executor", "rq", "--redis-url", url)
    drop(queue_root, "cut.json", {"command": "sh", "args": ["-c", "echo started; sleep 622"]})
    log = queue_root / "logs" / "cut.stdout"
    wait_until(lambda: log.exists() and log.read_text() == "started\n", 20, "the job to start remotely")
    remote.proc.send_signal(signal.SIGTERM)  # RQ's warm stop waits for the job...
    time.sleep(1.2)  # ...and RQ ignores a second signal within 1 s of the first
    remote.proc.send_signal(signal.SIGTERM)  # a cold stop: the job is stopped, its outcome written
    remote.proc.wait(20)  # (RQ exits 0 after a cold stop)
    info = wait_finished(queue_root, "cut")
    assert info.result is not None and info.result.status.value == "interrupted", info.result
    assert "stopped at once" in (info.result.error or "") and info.result.host == "stopped"
    wait_gone("sleep 622")
