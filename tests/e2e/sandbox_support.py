"""What the sandbox tests share: a real worker with a home directory and a config file of its own, real bwrap.

Each test gets a :class:`Place` under ``tmp_path``: ``home`` (the worker's ``HOME``, so the
secrets a test plants are its own), ``work`` (the jobs' project folder, their ``cwd``) and the
queue. :class:`Workers` starts ``execsvc run`` there and kills whatever is left at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import WorkerProcess, drop, kill_orphaned_jobs, wait_finished

from execsvc import JobInfo

PYTHON = os.path.realpath(sys.executable)
"""The interpreter a sandboxed test job runs: the virtual environment's, its link resolved. A
checkout (and its .venv) under /tmp is hidden inside a sandbox, whose /tmp is a private tmpfs;
the jobs need only the standard library."""

needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None,
    reason="bwrap is not installed (Debian package bubblewrap; .ci/run installs it)",
)


def bwrap_help() -> str:
    """``bwrap --help``, to tell which options this bwrap has; empty without bwrap."""
    if shutil.which("bwrap") is None:
        return ""
    return subprocess.run(["bwrap", "--help"], capture_output=True, text=True, check=False, timeout=30).stdout


@dataclass
class Place:
    """The folders of one test: the worker's home, the jobs' project folder, the queue."""

    home: Path
    work: Path
    queue: Path
    config: Path


@dataclass
class Workers:
    """Starts ``execsvc run`` on the place's queue with its HOME and config; stops them all at the end."""

    place: Place
    started: list[WorkerProcess] = field(default_factory=list)

    def start(self, policy: str = "", *, env: tuple[str, ...] = ()) -> WorkerProcess:
        """A ready worker whose config file's ``[policy]`` table holds the TOML lines ``policy``."""
        worker_table = "[worker]\nkill_grace_s = 1.0\ndrain_timeout_s = 1.0\n"
        self.place.config.write_text(worker_table + "\n[policy]\n" + policy + "\n")
        prefix = ("env", f"HOME={self.place.home}", *env)
        worker = WorkerProcess(self.place.queue, "--config", str(self.place.config), prefix=prefix)
        self.started.append(worker)
        return worker.wait_ready()

    def close(self) -> None:
        for worker in self.started:
            if worker.proc.poll() is None:
                worker.kill()
        kill_orphaned_jobs(self.place.queue)


def make_place(tmp_path: Path) -> Place:
    place = Place(tmp_path / "home", tmp_path / "home" / "project", tmp_path / "queue", tmp_path / "config.toml")
    place.work.mkdir(parents=True)
    return place


@contextlib.contextmanager
def workers_at(place: Place) -> Iterator[Workers]:
    workers = Workers(place)
    try:
        yield workers
    finally:
        workers.close()


def run_job(place: Place, job_id: str, job: dict[str, Any]) -> JobInfo:
    """Drop a JSON job (``cwd`` defaults to the project folder) and wait for its record."""
    drop(place.queue, f"{job_id}.json", {"cwd": str(place.work), **job})
    return wait_finished(place.queue, job_id)


def record_of(info: JobInfo) -> dict[str, Any]:
    """The finished job's whole record, as the worker wrote it."""
    data: dict[str, Any] = json.loads(Path(info.path).read_text())
    return data


def processes_left(place: Place, job_id: str) -> list[int]:
    """Pids of processes still running for the job, seen from outside its sandbox: by the
    EXECSVC_JOB_ID and EXECSVC_QUEUE_DIR of their environment, as the worker's recovery finds them."""
    alive = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            env = proc.environ()
            ours = env.get("EXECSVC_JOB_ID") == job_id and env.get("EXECSVC_QUEUE_DIR") == str(place.queue)
            if ours and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
    return alive
