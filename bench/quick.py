"""Quick figures for the worker: drop-to-start latency and throughput of `true` jobs.

Runs a real ``execsvc run`` on a fresh queue in a temporary folder, submits
jobs the way a foreign tool does (hidden temp file + rename into pending/),
and prints medians with a baseline measured in the same run:

    .venv/bin/python bench/quick.py [--samples 100] [--jobs 200]

- drop-to-spawn: rename into pending/ -> the worker's ``started_at`` (Popen returned).
- drop-to-first-action: rename -> the job's own first action (``date +%s%N`` in the job).
- floor: the same ``sh -c 'date +%s%N'`` spawned directly from Python, start -> its stamp.
- throughput: first rename -> last record, for N jobs of ``true``, slots 1 and 2, against a
  plain Python loop of ``subprocess.run(["true"])`` (no records, no queue).
- durable write: what one record costs on this disk right now (fsync latency varies a lot
  from run to run on shared machines, and every job makes two such writes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from execsvc import JobQueue
from execsvc.durable import write_durable

EXECSVC = str(Path(sys.executable).parent / "execsvc")
STAMP = ["/bin/sh", "-c", "date +%s%N"]


class RecordCounter(FileSystemEventHandler):
    """Counts records appearing in completed/ and failed/ (file events, no polling)."""

    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()

    def on_created(self, event: FileSystemEvent) -> None:
        name = os.path.basename(os.fsdecode(event.src_path))
        if not name.startswith("."):
            with self.changed:
                self.count += 1
                self.changed.notify_all()

    def wait_for(self, n: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        with self.changed:
            while self.count < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"only {self.count} of {n} records")
                self.changed.wait(remaining)


def start_worker(root: Path, slots: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [EXECSVC, "run", "--queue-dir", str(root), "--slots", str(slots)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if " watching " in line:
            break
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
    return proc


def drop(pending: Path, name: str, job: dict[str, object]) -> float:
    tmp = pending / f".{name}.tmp"
    tmp.write_text(json.dumps(job))
    stamp = time.time()
    os.rename(tmp, pending / f"{name}.json")
    return stamp


def latency(samples: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "q"
        queue = JobQueue(root)
        counter = RecordCounter()
        observer = Observer()  # one observer for the whole run: nothing else competes for the cores
        observer.schedule(counter, str(queue.layout.completed))
        observer.start()
        worker = start_worker(root, 1)
        try:
            spawn, action = [], []
            for i in range(samples):
                dropped = drop(queue.layout.pending, f"lat{i}", {"command": STAMP[0], "args": STAMP[1:]})
                counter.wait_for(i + 1)
                info = queue.get(f"lat{i}")
                assert info.result is not None and info.result.started_at is not None
                spawn.append((info.result.started_at.timestamp() - dropped) * 1000)
                action.append((int(info.result.stdout) / 1e9 - dropped) * 1000)
        finally:
            worker.terminate()
            worker.wait()
            observer.stop()
            observer.join()
    floor = []
    for _ in range(samples):
        begun = time.time()
        out = subprocess.run(STAMP, capture_output=True, text=True, check=True).stdout
        floor.append((int(out) / 1e9 - begun) * 1000)
    return {"drop-to-spawn ms": spawn, "drop-to-first-action ms": action, "floor: spawn-to-first-action ms": floor}


def throughput(jobs: int, slots: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "q"
        queue = JobQueue(root)
        counter = RecordCounter()
        observer = Observer()
        observer.schedule(counter, str(queue.layout.completed))
        observer.schedule(counter, str(queue.layout.failed))
        observer.start()
        worker = start_worker(root, slots)
        try:
            first = time.monotonic()
            for i in range(jobs):
                drop(queue.layout.pending, f"t{i:05d}", {"command": "true", "args": []})
            counter.wait_for(jobs)
            elapsed = time.monotonic() - first
        finally:
            worker.terminate()
            worker.wait()
            observer.stop()
            observer.join()
        assert len(os.listdir(queue.layout.completed)) == jobs
    return jobs / elapsed


def durable_write_us(samples: int = 200) -> float:
    """Median cost of one durable record on this disk: temp file, fsync, link, folder fsync."""
    costs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(samples):
            begun = time.perf_counter()
            write_durable(Path(tmp) / f"r{i}.json", b"x" * 800)
            costs.append((time.perf_counter() - begun) * 1e6)
    return statistics.median(costs)


def floor_throughput(jobs: int) -> float:
    begun = time.monotonic()
    for _ in range(jobs):
        subprocess.run(["true"], check=True)
    return jobs / (time.monotonic() - begun)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}")
    print(f"{'durable write (fsync x2) us':34} median {durable_write_us():7.0f}   (each job makes two of these)")
    for name, values in latency(args.samples).items():
        values.sort()
        p90 = values[int(len(values) * 0.9)]
        print(f"{name:34} p50 {statistics.median(values):7.3f}  p90 {p90:7.3f}  (n={len(values)})")
    floor = [floor_throughput(args.jobs) for _ in range(args.repeats)]
    print(
        f"{'floor: subprocess.run(true) jobs/s':34} median {statistics.median(floor):7.0f}  "
        f"min {min(floor):6.0f}  max {max(floor):6.0f}"
    )
    for slots in (1, 2):
        rates = [throughput(args.jobs, slots) for _ in range(args.repeats)]
        print(
            f"{f'execsvc slots={slots} true jobs/s':34} median {statistics.median(rates):7.0f}  "
            f"min {min(rates):6.0f}  max {max(rates):6.0f}  ratio to floor "
            f"{statistics.median(rates) / statistics.median(floor):.2f}"
        )


if __name__ == "__main__":
    main()
