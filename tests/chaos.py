"""Crash loop, runnable by hand: SIGKILL the worker at random moments while jobs keep coming.

    .venv/bin/python -m tests.chaos --cycles 40 --seed 1

Each cycle starts ``execsvc run`` (slots 2), drops 5 to 30 jobs (through the
submit API, plain in-place JSON writes, and in-place scripts), waits a random
0 to 0.3 s and kills the worker with SIGKILL: idle, mid-claim, mid-run or
mid-record. A last worker then drains the queue. Every job appends its id to
one file when it runs, so a job run twice shows. Prints the figures and exits
1 if any job was lost, ran twice, or left a temporary file behind.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from execsvc import JobNotFound, JobQueue, JobStatus

EXECSVC = str(Path(sys.executable).parent / "execsvc")


def start_worker(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [EXECSVC, "run", "--queue-dir", str(root), "--slots", "2", "--kill-grace-s", "0.2"], stderr=subprocess.DEVNULL
    )


def drop_jobs(queue: JobQueue, cycle: int, runs_log: Path, rng: random.Random) -> list[str]:
    ids = []
    for i in range(rng.randint(5, 30)):
        job_id = f"c{cycle:04d}-{i:02d}"
        line = f"echo {job_id} >> {runs_log}"
        how = rng.random()
        if how < 0.5:
            queue.submit({"command": f"{line}; sleep {rng.choice([0, 0, 0.01, 0.05])}"}, job_id=job_id)
        elif how < 0.8:
            (queue.layout.pending / f"{job_id}.sh").write_text(line + "\n")
        else:
            (queue.layout.pending / f"{job_id}.json").write_text(json.dumps({"command": "sh", "args": ["-c", line]}))
        ids.append(job_id)
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root, runs_log = Path(tmp) / "queue", Path(tmp) / "runs.log"
        queue = JobQueue(root)
        submitted: list[str] = []
        for cycle in range(args.cycles):
            worker = start_worker(root)
            submitted += drop_jobs(queue, cycle, runs_log, rng)
            time.sleep(rng.uniform(0, 0.3))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        worker = start_worker(root)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (os.listdir(queue.layout.pending) or os.listdir(queue.layout.running)):
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        worker.wait()

        runs = collections.Counter(runs_log.read_text().split()) if runs_log.exists() else collections.Counter()
        statuses: collections.Counter[str] = collections.Counter()
        lost = []
        for job_id in submitted:
            try:
                statuses[queue.get(job_id).status.value] += 1
            except JobNotFound:
                lost.append(job_id)
        twice = sorted(job_id for job_id, n in runs.items() if n > 1)
        unsettled = statuses[JobStatus.PENDING.value] + statuses[JobStatus.RUNNING.value]
        temps = [
            name
            for state in ("pending", "running", "completed", "failed")
            for name in os.listdir(root / state)
            if name.startswith(".") or name.endswith(".tmp")
        ]
        started_then_interrupted = sum(
            1
            for job_id in submitted
            if job_id not in lost and runs[job_id] and queue.get(job_id).status is JobStatus.INTERRUPTED
        )
    print(
        f"cycles={args.cycles} jobs={len(submitted)} lost={len(lost)} duplicated={len(twice)} "
        f"interrupted={statuses['interrupted']} (of which had started: {started_then_interrupted}) "
        f"completed={statuses['completed']} unsettled={unsettled} temp_files={len(temps)} "
        f"last_worker_exit={worker.returncode}"
    )
    return 1 if lost or twice or unsettled or temps or worker.returncode != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
