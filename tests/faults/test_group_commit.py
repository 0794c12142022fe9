"""Records made durable in groups (docs/reliability.md, "Records in groups"): a kill -9 in the
middle of a stream of short jobs, whose records are being committed many at a time, leaves every
job recorded once (or settled ``interrupted``) and runs none twice; a batch written and not
committed (a crash, or a power cut that kept only what was flushed) is settled at the next start.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable
from pathlib import Path

from conftest import WorkerProcess, drop, wait_until

from execsvc import JobQueue, JobStatus
from execsvc.protocol import JobStore
from execsvc.protocol.finish_index import INDEX_NAME
from execsvc.protocol.finish_index import read as read_index
from execsvc.protocol.flusher import MAX_BATCH
from execsvc.protocol.models import JobResult, JobSpec
from execsvc.protocol.record_batch import RecordBatch
from execsvc.runner import now

Start = Callable[..., WorkerProcess]


def _finished(root: Path) -> int:
    return sum(
        1 for folder in ("completed", "failed") for name in os.listdir(root / folder) if not name.startswith(".")
    )


def test_kill_9_while_records_are_committed_in_groups_loses_none_and_runs_none_twice(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    runs = tmp_path / "runs.log"
    jobs = 300
    worker = start_worker("--slots", "2")
    for index in range(jobs):  # each job appends its id when it runs: a second run would show
        drop(queue_root, f"g{index:04d}.json", {"command": "sh", "args": ["-c", f'echo "$EXECSVC_JOB_ID" >> {runs}']})
    for kill_at in (40, 120, 200):  # mid-stream: jobs running, records in flight and in a batch
        wait_until(lambda at=kill_at: _finished(queue_root) >= at, 60, f"{kill_at} records")  # type: ignore[misc]
        worker.kill()
        worker = start_worker("--slots", "2")
    wait_until(lambda: _finished(queue_root) >= jobs, 120, "every record")
    assert worker.stop() == 0

    queue = JobQueue(queue_root)
    ran = collections.Counter(runs.read_text().split())
    statuses = collections.Counter(queue.get(f"g{index:04d}").status for index in range(jobs))
    assert [job_id for job_id, count in ran.items() if count > 1] == []
    assert statuses[JobStatus.COMPLETED] + statuses[JobStatus.INTERRUPTED] == jobs, statuses
    # Interrupted at each kill: at most the jobs running (2 slots) and those exited but not yet
    # committed (records in flight: at most 2 per slot before claims wait).
    assert statuses[JobStatus.INTERRUPTED] <= 3 * (2 + 2 * 2), statuses
    assert os.listdir(queue_root / "running") == []
    assert [name for name in os.listdir(queue_root / "pending") if not name.startswith(".")] == []
    index = read_index(queue_root / "completed")
    completed_ids = {name.removesuffix(".json") for name in os.listdir(queue_root / "completed") if name != INDEX_NAME}
    assert set(index) <= set(completed_ids) and len(index) >= len(completed_ids) - 3 * MAX_BATCH


def _claimed_batch(root: Path, count: int) -> tuple[JobStore, RecordBatch, list[str]]:
    """``count`` JSON jobs claimed and finished into one batch that is not committed yet."""
    store = JobStore(root)
    store.layout.ensure()
    batch = RecordBatch()
    ids = []
    for index in range(count):
        drop(root, f"b{index}.json", {"command": "true"})
        claimed = store.claim(f"b{index}.json")
        spec = JobSpec.model_validate({"command": "true"})
        result = JobResult(
            job_id=claimed.job_id, job_file=claimed.job_file, status=JobStatus.COMPLETED, completed_at=now()
        )
        store.finish(claimed, result, spec, batch)
        ids.append(claimed.job_id)
    return store, batch, ids


def test_a_batch_leaves_running_only_at_its_commit(tmp_path: Path) -> None:
    root = tmp_path / "queue"
    _store, batch, ids = _claimed_batch(root, 3)
    assert sorted(os.listdir(root / "running")) == [f"{job_id}.json" for job_id in ids]  # records first
    assert sorted(os.listdir(root / "completed")) == [f"{job_id}.json" for job_id in ids]
    assert not (root / "completed" / INDEX_NAME).exists()  # one append per folder, at the commit
    moved, failed = batch.commit()
    assert (moved, failed) == ([], [])
    assert os.listdir(root / "running") == []
    assert set(read_index(root / "completed")) == set(ids)


def test_a_batch_cut_short_is_settled_finished_or_interrupted_never_run(tmp_path: Path) -> None:
    root = tmp_path / "queue"
    store, _batch, ids = _claimed_batch(root, 2)  # a kill -9 before the commit
    first, second = ids
    os.unlink(root / "completed" / f"{second}.json")  # a power cut that kept the first record's name only
    outcomes = {job_id: store.settle_running(job_id, path) for job_id, path in store.running_jobs()}
    assert outcomes == {first: "finished", second: None}  # None: recorded `interrupted` by the worker
    assert [job_id for job_id, _path in store.running_jobs()] == [second]
    assert JobQueue(root).get(first).status is JobStatus.COMPLETED
