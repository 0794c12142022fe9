"""A schedule across kill -9 of the worker at random moments (tests/chaos.py's idea, for recurring
jobs): restarted several times, with ``catch_up`` on so that every start also looks for missed
times, the queue ends with each due time enqueued once, run at most once, and recorded."""

from __future__ import annotations

import collections
import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

from conftest import daemon_log, wait_until

from execsvc import JobQueue, JobState
from execsvc.protocol.schedules import run_ids

ROUNDS = 6


def write_schedule(queue_root: Path, name: str, content: dict[str, Any]) -> None:
    folder = queue_root / "schedules"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    (folder / f".{name}.tmp").write_text(json.dumps(content))
    os.rename(folder / f".{name}.tmp", folder / f"{name}.json")


def enqueued(lines: list[str]) -> int:
    return sum("schedule_enqueued" in line for line in lines)


def test_no_due_time_enqueued_or_run_twice_across_kill_9(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    rng = random.Random(23)
    marks = tmp_path / "marks"
    schedule = {
        "every_s": 2,  # a restart mostly lands in the period of the last run: its catch-up is that run
        "overlap": "queue",
        "catch_up": True,
        "job": {"command": f'echo "$EXECSVC_JOB_ID" >> {marks}'},
    }
    JobQueue(queue_root)
    write_schedule(queue_root, "tick", schedule)
    for _round in range(ROUNDS):
        worker = start_worker("--kill-grace-s", "0.2")
        wanted = rng.randint(1, 2)
        wait_until(lambda w=worker, n=wanted: enqueued(w.lines) >= n, timeout_s=15, what=f"{wanted} runs enqueued")
        time.sleep(rng.uniform(0, 0.4))  # a random moment: idle, mid-enqueue, mid-claim, mid-run, mid-record
        worker.kill()
    write_schedule(queue_root, "tick", {**schedule, "enabled": False})  # the last worker only settles
    queue = JobQueue(queue_root)
    worker = start_worker()
    ids = run_ids(queue.layout, "tick")
    finished = (JobState.COMPLETED, JobState.FAILED)
    wait_until(lambda: all(queue.get(i).state in finished for i in ids), timeout_s=30, what="every run recorded")
    worker.stop()

    log = daemon_log(queue_root)
    assert " renamed " not in log, "a run written twice for one due time is renamed by the worker"
    assert len(ids) >= ROUNDS, ids
    assert all(re.fullmatch(r"tick-[0-9]{8}T[0-9]{5}[02468]", job_id) for job_id in ids), ids
    logged = set(re.findall(r"schedule_enqueued job=(\S+)", log))
    assert logged <= set(ids), "every run the log names is in the queue"
    for job_id in ids:  # one record per due time, in one folder
        records = [f for f in ("completed", "failed") if (queue_root / f / f"{job_id}.json").exists()]
        assert len(records) == 1, (job_id, records)
        info = queue.get(job_id)
        assert info.status.value in ("completed", "interrupted"), (job_id, info.status)
    runs = collections.Counter(marks.read_text().split()) if marks.exists() else collections.Counter()
    assert all(count == 1 for count in runs.values()), f"a due time ran twice: {runs.most_common(3)}"
    assert set(runs) <= set(ids)
    completed = {i for i in ids if queue.get(i).status.value == "completed"}
    assert completed <= set(runs), "each completed run ran"
