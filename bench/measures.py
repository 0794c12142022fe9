"""One function per measure; each returns raw figures (jobs/s, ms, µs or MB) for the table."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from execsvc import JobQueue
from execsvc.protocol import finish_index

from .peers import EXECSVC, Execsvc, System

QUEUE_VIEW = str(Path(sys.executable).parent / "queue-view")


def stamp_argv(stamps: Path) -> list[str]:
    """A job whose first action appends ``<job id or -> <epoch ns>`` to ``stamps``."""
    return ["/bin/sh", "-c", f'echo "${{EXECSVC_JOB_ID:--}} $(date +%s%N)" >> {stamps}']


def read_stamps(stamps: Path) -> list[tuple[str, float]]:
    """(job id, seconds since the epoch) per line written by :func:`stamp_argv` jobs."""
    if not stamps.exists():
        return []
    lines = stamps.read_text().splitlines()
    return [(line.split()[0], int(line.split()[1]) / 1e9) for line in lines if len(line.split()) == 2]


def throughput(system: System, jobs: int, argv: list[str]) -> float:
    """Jobs per second from the first hand-over until all ``jobs`` have finished."""
    return throughput_and_cpu(system, jobs, argv)[0]


def throughput_and_cpu(system: System, jobs: int, argv: list[str]) -> tuple[float, float | None]:
    """Jobs per second from the first hand-over until all ``jobs`` have finished, and for an
    execsvc worker its CPU time per job in ms over the same span (user + system, all its threads,
    from psutil; not its jobs' own CPU); ``None`` for a peer."""
    system.start()
    try:
        worker = psutil.Process(system.proc.pid) if isinstance(system, Execsvc) and system.proc else None
        before = worker.cpu_times() if worker is not None else None
        begun = time.monotonic()
        for index in range(jobs):
            system.enqueue(index, argv)
        system.wait_all(jobs)
        rate = jobs / (time.monotonic() - begun)
        if worker is None or before is None:
            return rate, None
        after = worker.cpu_times()
        cpu_s = (after.user - before.user) + (after.system - before.system)
        return rate, 1000 * cpu_s / jobs
    finally:
        system.stop()


def floor_throughput(jobs: int, argv: list[str], slots: int = 1) -> float:
    """Jobs per second of a plain Python loop of ``subprocess.run(argv)``: no queue, no records."""
    begun = time.monotonic()
    for _ in range(jobs):
        subprocess.run(argv, check=True)
    return jobs / (time.monotonic() - begun)


def drop_to_start(system: System, samples: int) -> list[float]:
    """Milliseconds from each hand-over to the job's first action, on an idle queue, one job at a time.

    The harness sleeps while the job runs (no polling that would compete
    for the cores) and reads the job's own timestamp afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="bench-stamps-") as tmp:
        stamps = Path(tmp) / "stamps"
        argv = stamp_argv(stamps)
        system.start()
        try:
            delays = []
            for index in range(samples):
                handed = system.enqueue(index, argv)
                deadline = time.monotonic() + 10
                time.sleep(0.03)  # the job and its record are done well within this on an idle queue
                while len(found := read_stamps(stamps)) <= index:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{system.name}: job {index} left no timestamp")
                    time.sleep(0.01)
                delays.append((found[index][1] - handed) * 1000)
            return delays
        finally:
            system.stop()


def exec_floor(samples: int) -> list[float]:
    """Milliseconds from ``Popen`` to the first action of the same stamp job: the job's own start cost."""
    with tempfile.TemporaryDirectory(prefix="bench-stamps-") as tmp:
        stamps = Path(tmp) / "stamps"
        argv = stamp_argv(stamps)
        delays = []
        for index in range(samples):
            begun = time.time()
            subprocess.run(argv, check=True)
            delays.append((read_stamps(stamps)[index][1] - begun) * 1000)
            time.sleep(0.005)
        return delays


def enqueue_in_process_us(count: int = 300) -> list[float]:
    """µs per job for ``JobQueue.submit`` (durable: written, fsync'd, linked, folder fsync'd)."""
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        queue = JobQueue(Path(tmp) / "q")
        costs = []
        for _ in range(count):
            begun = time.perf_counter()
            queue.submit({"command": "true"})
            costs.append((time.perf_counter() - begun) * 1e6)
        return costs


def enqueue_cli_ms(count: int = 15) -> list[float]:
    """ms per ``execsvc submit -- true`` run (Python start-up included), no worker serving."""
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        costs = []
        for _ in range(count):
            begun = time.perf_counter()
            subprocess.run(
                [EXECSVC, "submit", "--queue-dir", f"{tmp}/q", "--", "true"], check=True, capture_output=True
            )
            costs.append((time.perf_counter() - begun) * 1000)
        return costs


def peer_enqueue_ms(system: System, count: int = 30) -> list[float]:
    """ms per hand-over of a ``true`` job to a peer (its command run once per job)."""
    system.start()
    try:
        costs = []
        for index in range(count):
            begun = time.perf_counter()
            system.enqueue(index, ["true"])
            costs.append((time.perf_counter() - begun) * 1000)
        system.wait_all(count)
        return costs
    finally:
        system.stop()


def memory_mb(output_bytes: int) -> tuple[float, float]:
    """The worker's RSS idle (after 20 jobs) and its peak while one job prints ``output_bytes``, in MB."""
    worker = Execsvc(1)
    worker.start()
    try:
        for index in range(20):
            worker.enqueue(index, ["true"])
        worker.wait_all(20)
        idle = worker.rss_bytes()
        worker.enqueue(20, ["head", "-c", str(output_bytes), "/dev/zero"])
        worker.wait_all(21)
        peak = worker.peak_rss_bytes()
        return idle / 1e6, peak / 1e6
    finally:
        worker.stop()


def write_fake_jobs(folder: Path, count: int, body: Callable[[int], str], start: int = 0, prefix: str = "j") -> None:
    """Write ``count`` files quickly (no fsync: test data, not records), named ``<prefix><index>.json``."""
    for index in range(start, start + count):
        fd = os.open(folder / f"{prefix}{index:06d}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, body(index).encode())
        os.close(fd)


def first_start_with_backlog(root: Path, stamps: Path) -> tuple[float, str]:
    """Start a worker on ``root`` (a backlog of stamp jobs), return (s until the first job ran, its id).

    The worker is stopped right after (SIGTERM: the running job drains), so the
    same backlog serves the next repetition.
    """
    before = len(read_stamps(stamps))
    worker = Execsvc(1, root=root)
    begun = time.time()
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while len(found := read_stamps(stamps)) <= before:
            if time.monotonic() > deadline:
                raise TimeoutError("no job started within 60 s")
            time.sleep(0.005)
        job_id, at = found[before]
        return at - begun, job_id
    finally:
        worker.stop()


def backlog_queue(parent: Path, pending: int, stamps: Path) -> Path:
    """A queue whose ``pending/`` holds ``pending`` stamp jobs, oldest first by name and mtime."""
    root = parent / "backlog"
    JobQueue(root)
    job = json.dumps({"command": "/bin/sh", "args": stamp_argv(stamps)[1:]})
    write_fake_jobs(root / "pending", pending, lambda _index: job)
    return root


def history_queue(parent: Path, name: str, records: int) -> Path:
    """A queue with ``records`` finished records in ``completed/`` (copies of one real record),
    with the finish-time index a worker writes beside them (:mod:`execsvc.protocol.finish_index`)."""
    root = parent / name
    worker = Execsvc(1, root=root)
    worker.start()
    try:
        worker.enqueue(0, ["true"])
        worker.wait_all(1)
    finally:
        worker.stop()
    template = (root / "completed" / "j000000.json").read_text()
    (root / "completed" / "j000000.json").unlink()
    completed = root / "completed"
    write_fake_jobs(completed, records, lambda index: template.replace("j000000", f"h{index:06d}"), prefix="h")
    with os.scandir(completed) as entries:
        stats = [(entry.name[:-5], entry.stat(follow_symlinks=False)) for entry in entries if entry.name[0] != "."]
    finish_index.rewrite(completed, [(job_id, info.st_mtime_ns, info.st_ino) for job_id, info in stats])
    return root


def queue_view_list_s(root: Path) -> float:
    """Wall seconds of ``queue-view list --json`` on ``root`` (start-up included)."""
    begun = time.perf_counter()
    subprocess.run([QUEUE_VIEW, "--queue-dir", str(root), "list", "--json"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - begun


def summary(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
