"""Crash loop, runnable by hand: SIGKILL the worker at random moments while producers keep dropping jobs.

    .venv/bin/python -m tests.chaos --cycles 200 --producers 3 --seed 1

A supervisor (standing in for launchd's KeepAlive) starts ``execsvc run``
(slots 2) again at once after each kill; a killer sends SIGKILL a random
0 to 0.3 s after the worker has started serving, so it dies idle,
mid-claim, mid-run or mid-record. Meanwhile producer processes drop jobs without pause, each
way a foreign tool does it: the submit API, an in-place write of the final
name, and a hidden temp file renamed with ``mv``. When the cycles are done a
last worker drains the queue.

Every job appends its id to one file when it runs, so a job run twice
shows. Afterwards every submitted id must be in exactly one place: finished
once, or recorded ``interrupted``. Prints the figures and exits 1 if any
job was lost, ran twice, is still unsettled, or left a temporary file
behind in a visible folder.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from execsvc import JobNotFound, JobQueue, JobStatus
from execsvc.protocol.finish_index import INDEX_NAME

EXECSVC = str(Path(sys.executable).parent / "execsvc")


def start_worker(root: Path) -> subprocess.Popen[bytes]:
    """``execsvc run`` (slots 2), returned once it serves (it has settled what the last one left)."""
    worker = subprocess.Popen(
        [EXECSVC, "run", "--queue-dir", str(root), "--slots", "2", "--kill-grace-s", "0.2", "--stderr-level", "info"],
        stderr=subprocess.PIPE,
    )
    assert worker.stderr is not None
    for line in worker.stderr:
        if b" watching " in line:
            break
    threading.Thread(target=worker.stderr.read, daemon=True).start()  # keep the pipe drained
    return worker


def produce(root: Path, runs_log: Path, ledger: Path, producer: int, seed: int, stop_at: float) -> None:
    """Drop jobs until ``stop_at`` (a ``time.time()``); write each id to ``ledger`` once its file is whole."""
    rng = random.Random(seed)
    queue = JobQueue(root)
    pending = queue.layout.pending
    n = 0
    with ledger.open("a") as done:
        while time.time() < stop_at:
            job_id = f"p{producer}-{n:05d}"
            line = f"echo {job_id} >> {runs_log}"
            how = rng.random()
            if how < 0.4:
                queue.submit({"command": f"{line}; sleep {rng.choice([0, 0, 0.01, 0.05, 0.2])}"}, job_id=job_id)
            elif how < 0.7:
                (pending / f"{job_id}.sh").write_text(line + "\n")  # in place: open, write, close
            else:
                tmp = pending / f".{job_id}.json.tmp"
                tmp.write_text(json.dumps({"command": "sh", "args": ["-c", line]}))
                subprocess.run(["mv", str(tmp), str(pending / f"{job_id}.json")], check=True)
            done.write(job_id + "\n")
            done.flush()
            n += 1
            time.sleep(rng.uniform(0, 0.02))


@dataclass
class Figures:
    cycles: int
    jobs: int
    lost: int
    duplicated: int
    interrupted: int
    interrupted_after_start: int
    completed: int
    unsettled: int
    temp_files: int
    last_worker_exit: int | None

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unsettled or self.temp_files or self.last_worker_exit)

    def line(self) -> str:
        return (
            f"cycles={self.cycles} jobs={self.jobs} lost={self.lost} duplicated={self.duplicated} "
            f"interrupted={self.interrupted} (of which had started: {self.interrupted_after_start}) "
            f"completed={self.completed} unsettled={self.unsettled} temp_files={self.temp_files} "
            f"last_worker_exit={self.last_worker_exit}"
        )


def crash_loop(root: Path, *, cycles: int, producers: int, seed: int) -> Figures:
    rng = random.Random(seed)
    runs_log = root.parent / "runs.log"
    queue = JobQueue(root)
    expected_s = cycles * 0.3
    stop_at = time.time() + expected_s
    ledgers = [root.parent / f"ledger-{p}.txt" for p in range(producers)]
    procs = [
        multiprocessing.Process(target=produce, args=(root, runs_log, ledgers[p], p, seed * 100 + p, stop_at))
        for p in range(producers)
    ]
    for proc in procs:
        proc.start()
    for _cycle in range(cycles):
        worker = start_worker(root)
        time.sleep(rng.uniform(0, 0.3))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        time.sleep(rng.uniform(0, 0.02))  # the supervisor's restart delay
    for proc in procs:
        proc.join()
    worker = start_worker(root)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (
        any(not n.startswith(".") for n in os.listdir(queue.layout.pending)) or os.listdir(queue.layout.running)
    ):
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    worker.wait()

    submitted = [job_id for ledger in ledgers for job_id in ledger.read_text().split()]
    runs = collections.Counter(runs_log.read_text().split()) if runs_log.exists() else collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    lost = []
    interrupted_after_start = 0
    for job_id in submitted:
        try:
            status = queue.get(job_id).status
        except JobNotFound:
            lost.append(job_id)
            continue
        statuses[status.value] += 1
        interrupted_after_start += status is JobStatus.INTERRUPTED and runs[job_id] > 0
    temps = [
        name
        for state in ("pending", "running", "completed", "failed")
        for name in os.listdir(root / state)
        if (name.startswith(".") or name.endswith(".tmp")) and name != INDEX_NAME
    ]
    return Figures(
        cycles=cycles,
        jobs=len(submitted),
        lost=len(lost),
        duplicated=sum(1 for n in runs.values() if n > 1),
        interrupted=statuses[JobStatus.INTERRUPTED.value],
        interrupted_after_start=interrupted_after_start,
        completed=statuses[JobStatus.COMPLETED.value],
        unsettled=statuses[JobStatus.PENDING.value] + statuses[JobStatus.RUNNING.value],
        temp_files=len(temps),
        last_worker_exit=worker.returncode,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--producers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        figures = crash_loop(Path(tmp) / "queue", cycles=args.cycles, producers=args.producers, seed=args.seed)
    print(figures.line())
    return 0 if figures.ok else 1


if __name__ == "__main__":
    sys.exit(main())
