"""Review of groups, services, schedules and RQ dispatch (task h6): each test here is a defect
reproduced with real workers, real files and a real redis-server; each FAILS on main's code."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from conftest import daemon_log, drop, wait_finished, wait_until
from redis_support import redis_server, start_remote

from execsvc import JobQueue

__all__ = ["redis_server", "start_remote"]


def test_a_remote_job_is_recorded_while_groups_made_on_the_fly_hold_long_remote_jobs(
    queue_root: Path, start_worker, redis_server, start_remote
) -> None:
    """The dispatcher's job threads are sized by the *declared* groups' slots
    (``capacity + 2 * capacity``, execsvc/worker/state.py), but every running remote job holds one
    (``_follow_remote``) and groups made on the fly add slots beyond ``capacity``. With ``slots = 1``
    (capacity 1: three threads), three long jobs in groups a, b, c hold all three threads: a quick
    job of ``default`` runs remotely and ends, but nothing follows it: no output, no record, its
    slot stays busy, until a long one ends (forever, with services)."""
    url = redis_server.url()
    for n in range(4):
        start_remote(url, f"w{n}", "--queue", "a", "--queue", "b", "--queue", "c", "--queue", "default")
    start_worker("--executor", "rq", "--redis-url", url, "--slots", "1")
    for group in ("a", "b", "c"):
        drop(queue_root, f"long-{group}.json", {"command": "sleep", "args": ["60"], "group": group})
    drop(queue_root, "quick.json", {"command": "echo", "args": ["hi"]})
    record = wait_finished(queue_root, "quick", timeout_s=20).result
    assert record is not None and record.status.value == "completed", record
    assert record.stdout == "hi\n"


def _slot_printed(queue_root: Path, job_id: str) -> str:
    out = queue_root / "logs" / f"{job_id}.stdout"
    wait_until(lambda: out.exists() and out.read_text().endswith("\n"), 15, f"{job_id}'s slot in its output")
    return out.read_text().split()[0]


def test_a_job_adopted_after_a_dispatcher_restart_keeps_its_slot(
    queue_root: Path, tmp_path: Path, start_worker, redis_server, start_remote
) -> None:
    """A remote job adopted at the dispatcher's start (``_adopt_remote_jobs``,
    execsvc/worker/remote_jobs.py) is given the lowest free slot of its group
    (``self._groups.acquire(group)``), not the slot it was dispatched with (its ``EXECSVC_SLOT``).
    Here the long job holds slot 1; after a kill -9 and restart of the dispatcher it is counted
    in slot 0, so the next job of the group gets ``EXECSVC_SLOT=1`` too: two jobs of one group
    run at once with the same slot (a GPU or a port pinned per slot is shared)."""
    url = redis_server.url()
    start_remote(url, "w0", "--queue", "build")
    start_remote(url, "w1", "--queue", "build")
    cfg = tmp_path / "config.toml"
    cfg.write_text("[groups.build]\nslots = 2\n")
    args = ("--executor", "rq", "--redis-url", url, "--config", str(cfg))
    dispatcher = start_worker(*args)
    show = 'echo "$EXECSVC_SLOT"; sleep '
    drop(queue_root, "short.json", {"command": "sh", "args": ["-c", show + "1"], "group": "build"})
    drop(queue_root, "long.json", {"command": "sh", "args": ["-c", show + "20"], "group": "build"})
    assert _slot_printed(queue_root, "short") == "0"
    assert _slot_printed(queue_root, "long") == "1"
    wait_finished(queue_root, "short")
    dispatcher.kill()
    start_worker(*args).wait_for_line("adopted")
    drop(queue_root, "next.json", {"command": "sh", "args": ["-c", show + "0"], "group": "build"})
    record = wait_finished(queue_root, "next").result
    assert record is not None and record.status.value == "completed", record
    assert record.stdout.split()[0] != "1", "two jobs of group build run at once with EXECSVC_SLOT=1"


def test_a_schedules_due_time_is_never_run_twice_when_retention_removed_its_record(
    queue_root: Path, tmp_path: Path, start_worker
) -> None:
    """``catch_up`` finds a schedule's last run from the job ids the queue holds
    (``last_run_id``, execsvc/protocol/schedules.py; ``Schedules._catch_up``,
    execsvc/worker/schedules.py). Once the worker's own retention (``retention_days``) has
    removed the record of the run for a due time, a restart enqueues that due time again,
    under the same id: it runs twice. (Here an hourly schedule and a retention of under a second;
    in life a weekly cron with ``retention_days = 3`` and a restart on Thursday re-runs Sunday's.)"""
    runs = tmp_path / "runs.txt"
    schedules = queue_root / "schedules"
    schedules.mkdir(parents=True, mode=0o700)
    schedule = schedules / "hourly.json"
    job = {"command": "sh", "args": ["-c", f'echo "$EXECSVC_JOB_ID" >> {runs}']}
    schedule.write_text(json.dumps({"every_s": 3600, "catch_up": True, "job": job}))
    three_hours_ago = time.time() - 3 * 3600
    os.utime(schedule, (three_hours_ago, three_hours_ago))
    cfg = tmp_path / "config.toml"
    cfg.write_text("[worker]\nretention_days = 0.00001\n")  # 0.864 s
    first = start_worker("--config", str(cfg))
    first.wait_for_line("schedule_loaded")
    wait_until(lambda: runs.exists() and runs.read_text().count("\n") == 1, 15, "the catch-up run")
    first.stop()
    record = next((queue_root / "completed").glob("hourly-*.json"))
    wait_until(lambda: time.time() - record.stat().st_mtime > 1.0, 5, "the record older than the retention")
    second = start_worker("--config", str(cfg))
    second.wait_for_line("retention")
    second.stop()
    third = start_worker("--config", str(cfg))
    third.wait_for_line("schedule_loaded")  # written after the catch-up runs are enqueued
    third.stop()
    ids = runs.read_text().split()
    assert not list((queue_root / "pending").glob("hourly-*.json")) and len(ids) == len(set(ids)), ids


def test_a_remote_service_whose_remote_worker_is_killed_is_started_again(
    queue_root: Path, start_worker, redis_server, start_remote
) -> None:
    """A service (``restart: always``) is started again after any end but a cancel, an
    ``interrupted`` one at once (execsvc/restart.py). Run remotely, when its remote worker is
    killed with kill -9 the dispatcher's follower returns a lost outcome (no exit info) and
    ``_follow_remote`` hands it to ``_record_not_run`` (execsvc/worker/remote_jobs.py), which
    records it ``interrupted`` through ``record_unstarted``: the restart (``Recorder._restart``)
    is never asked, and the service stays down although another remote worker serves its group."""
    url = redis_server.url()
    doomed = start_remote(url, "doomed")
    start_worker("--executor", "rq", "--redis-url", url)
    service = {"command": "sh", "args": ["-c", "echo up; sleep 622"], "restart": "always", "timeout_s": None}
    drop(queue_root, "svc.json", service)
    log = queue_root / "logs" / "svc.stdout"
    wait_until(lambda: log.exists() and log.read_text() == "up\n", 20, "the service to start remotely")
    start_remote(url, "spare")
    doomed.kill9()
    wait_until(
        lambda: "attempt=2" in daemon_log(queue_root) or JobQueue(queue_root).get("svc").result is not None,
        30,
        "the service restarted, or recorded",
    )
    info = JobQueue(queue_root).get("svc")
    assert info.result is None, f"the service was recorded {info.result.status.value}, not started again"


def test_a_ready_when_line_that_backtracks_does_not_stop_the_queue(queue_root: Path, start_worker) -> None:
    """``ready_when.line`` is any Python ``re`` pattern of up to 1,000 characters, matched by
    :meth:`execsvc.ready.ReadyWatch.ready` in the worker's loop thread against each line the job
    prints. A pattern with catastrophic backtracking and a line that nearly matches it hold the
    loop for as long as the match runs (here 2**40 steps): no other job is claimed, none recorded,
    not even SIGTERM is served. One job stops the queue."""
    start_worker("--slots", "2")
    slow = {
        "command": "sh",
        "args": ["-c", "sleep 0.2; printf '%040d!\\n' 0 | tr 0 a; sleep 30"],
        "ready_when": {"line": "^(a+)+$"},
    }
    drop(queue_root, "slow-ready.json", slow)
    # due 2 s from now: the worker has looked at the slow job's line (every 0.1 s) long before
    drop(queue_root, "quick.json", {"command": "echo", "args": ["hi"], "delay_s": 2})
    record = wait_finished(queue_root, "quick", timeout_s=15).result
    assert record is not None and record.status.value == "completed", record
