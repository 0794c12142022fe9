"""Shared fixtures: a real worker process on a tmp_path queue, and ways to drop jobs.

Every test file lives in one of the layers below; its folder gives it the layer's marker
(``pytest -m unit``), and the inner loop is ``pytest tests/unit tests/integration``
(tests/README.md). ``from conftest import ...`` works from every folder: pyproject's
``pythonpath`` puts tests/ on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from execsvc import JobInfo, JobQueue, JobState, WorkerConfig
from execsvc.daemonlog import EventLog
from execsvc.job_processes import find_job_processes
from execsvc.protocol.layout import split_job_name
from execsvc.worker import Worker

# Workers started by the tests never read the developer's own ~/.config/execsvc/config.toml.
os.environ["EXECSVC_CONFIG"] = "/nonexistent/execsvc-tests/config.toml"

# tests/<layer>/: each folder's name is the marker its tests get (registered in pyproject.toml).
LAYERS = ("unit", "integration", "e2e", "faults")

BIN = Path(sys.executable).parent
EXECSVC = BIN / "execsvc"
START_TIMEOUT_S = 20.0
JOB_TIMEOUT_S = 30.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's layer; a test file outside the layers is a mistake."""
    tests = Path(__file__).resolve().parent
    for item in items:
        folder = item.path.resolve().relative_to(tests).parts[0]
        if folder not in LAYERS:
            raise pytest.UsageError(f"{item.nodeid}: test files live in tests/{{{','.join(LAYERS)}}}/, not {folder}")
        item.add_marker(folder)


def console_script(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"console script {path} is not installed: pip install -e '.[test]' first")
    return str(path)


class WorkerProcess:
    """``execsvc run`` as a real child process; its stderr lines are collected as they come."""

    def __init__(self, queue_root: Path, *args: str, prefix: tuple[str, ...] = ()) -> None:
        """``prefix``: a command the worker runs under (``unshare --net --`` ...)."""
        self.queue_root = queue_root
        execsvc = [console_script("execsvc"), "run", "--queue-dir", str(queue_root), "--stderr-level", "info"]
        self.proc = subprocess.Popen(
            [*prefix, *execsvc, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for_line(self, needle: str, timeout_s: float = START_TIMEOUT_S) -> str:
        """The first stderr line containing ``needle``; fails the test after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    pytest.fail(f"worker never logged {needle!r}; its output:\n" + "\n".join(self.lines))
                self._changed.wait(remaining)

    def wait_ready(self) -> WorkerProcess:
        self.wait_for_line("watching")
        return self

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout_s)
        self._reader.join(5)
        return code

    def wait_exit(self, timeout_s: float = 30.0) -> int:
        """The exit code, without sending anything."""
        code = self.proc.wait(timeout_s)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)


@pytest.fixture
def queue_root(tmp_path: Path) -> Path:
    return tmp_path / "queue"


@pytest.fixture
def start_worker(queue_root: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``execsvc run`` on the test's queue (ready to take jobs); killed at the end if still up."""
    started: list[WorkerProcess] = []

    def start(*args: str, root: Path | None = None, ready: bool = True) -> WorkerProcess:
        worker = WorkerProcess(root or queue_root, *args)
        started.append(worker)
        return worker.wait_ready() if ready else worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()
    for root in {worker.queue_root for worker in started}:
        kill_orphaned_jobs(root)


def kill_orphaned_jobs(queue_root: Path) -> None:
    """Kill the processes of jobs a killed worker left in ``running/`` (they run in sessions of
    their own, so they outlive the worker; the next worker would settle them, but a test ends)."""
    running = queue_root / "running"
    if not running.is_dir():
        return
    ids = {split_job_name(name)[0] for name in os.listdir(running) if not name.startswith(".")}
    for processes in find_job_processes(Path(os.path.realpath(queue_root)), ids).values():
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()


def drop(queue_root: Path, name: str, content: str | bytes | dict[str, Any], *, mtime: float | None = None) -> Path:
    """Submit the way a careful foreign tool does: hidden temp file in pending/, then rename."""
    data = json.dumps(content) if isinstance(content, dict) else content
    raw = data.encode() if isinstance(data, str) else data
    pending = queue_root / "pending"
    pending.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = pending / f".{name}.tmp"
    tmp.write_bytes(raw)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, pending / name)
    return pending / name


def wait_finished(queue_root: Path, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> JobInfo:
    """Wait (on file events) for the job's record; fail the test if it does not come."""
    info = JobQueue(queue_root).wait(job_id, timeout_s)
    assert info.state in (JobState.COMPLETED, JobState.FAILED), f"job {job_id} is still {info.state.value}"
    return info


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie nobody reaped yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """For states no file event announces (a process ending); bounded by a deadline."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def start_job_with_child(queue_root: Path, worker: WorkerProcess, job_id: str) -> int:
    """Drop a job that starts a background ``sleep 600`` and waits; return that child's pid once it runs."""
    pidfile = queue_root.parent / f"{job_id}.child.pid"
    drop(queue_root, f"{job_id}.json", {"command": f"sleep 600 & echo $! > {pidfile}; wait"})
    worker.wait_for_line(f"started job={job_id}")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the child's pid")
    return int(pidfile.read_text())


def silent_event_log() -> EventLog:
    """An :class:`EventLog` whose lines go nowhere, for protocol code run without a worker."""
    return EventLog(None)


def daemon_log(queue_root: Path) -> str:
    return (queue_root / "daemon.log").read_text()


_PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.fork", "os.exec", "os.system", "os.spawn"})
_refuse_processes: list[str] = []  # the unit test running now, while one runs


def _no_process_in_a_unit_test(event: str, _args: tuple[Any, ...]) -> None:
    if _refuse_processes and event in _PROCESS_EVENTS:
        raise RuntimeError(f"{_refuse_processes[0]} is a unit test: it may start no process ({event}); move it")


sys.addaudithook(_no_process_in_a_unit_test)


@pytest.fixture(autouse=True)
def unit_tests_start_no_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """tests/unit/ starts no process: the interpreter's audit events refuse one while a unit test runs."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    _refuse_processes.append(request.node.nodeid)
    try:
        yield
    finally:
        _refuse_processes.clear()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """As watchdog's own tests do: a test may not leave threads running."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not leaked, f"threads leaked: {leaked}"


@pytest.fixture
def make_worker(tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    """In-process workers on ``tmp_path/q`` (``make_worker(**config)``), initialized; stopped at the end."""
    workers: list[Worker] = []

    def make(**settings: object) -> Worker:
        worker = Worker(tmp_path / "q", WorkerConfig(**settings), stderr_level=None)  # type: ignore[arg-type]
        worker.initialize()
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.request_stop()
        while worker.loop():
            pass
        worker.shutdown()


def run_until(worker: Worker, done: Callable[[], bool], timeout_s: float = 30) -> None:
    """Drive an in-process worker's loop step by step until ``done()``; fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the worker did not get there in time"
        worker.loop()


def build_marker_library(folder: Path, marker: Path) -> Path:
    """A shared object whose constructor creates ``marker`` when anything loads it (built with gcc),
    to prove that a loader variable ran code the policy never saw."""
    source = folder / "evil.c"
    source.write_text(
        "#include <stdio.h>\n__attribute__((constructor)) static void evil(void) "
        f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n'
    )
    library = folder / "evil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library
