"""The systems measured side by side: execsvc, task-spooler (``tsp``), ``nq``, a bare inotify loop, the floor.

Every system is driven the way its users drive it: execsvc by job files
written into ``pending/`` the way a foreign tool writes them (hidden temp
name, then rename), ``tsp`` and ``nq`` by calling their command per job, each
with a private socket or folder so nothing on the machine is shared.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

import psutil

EXECSVC = str(Path(sys.executable).parent / "execsvc")
DEBIAN_PEERS = {"tsp": "task-spooler", "nq": "nq", "inotifywait": "inotify-tools"}


def install_missing_peers() -> list[str]:
    """Install the Debian packages of missing peers with apt-get; return the peers still missing.

    Needs root (or passwordless sudo) and a reachable Debian mirror; without
    them the missing peers are left out of the table, which says so.
    """
    missing = [tool for tool in DEBIAN_PEERS if shutil.which(tool) is None]
    if missing and shutil.which("apt-get"):
        sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
        if sudo is not None:
            packages = [DEBIAN_PEERS[tool] for tool in missing]
            print(f"installing {' '.join(packages)} with apt-get ...", file=sys.stderr)
            quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
            subprocess.run([*sudo, "apt-get", "update", "-q"], check=False, **quiet)  # type: ignore[call-overload]
            subprocess.run(
                [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                check=False,
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                **quiet,  # type: ignore[call-overload]
            )
    return [tool for tool in DEBIAN_PEERS if shutil.which(tool) is None]


class System(Protocol):
    """One queue under test: started on a private folder, fed jobs, waited for, stopped."""

    name: str
    slots: int

    def start(self) -> None: ...

    def enqueue(self, index: int, argv: list[str]) -> float:
        """Hand one job over; return the wall-clock time (``time.time()``) of the hand-over."""
        ...

    def wait_all(self, count: int) -> None:
        """Block until ``count`` jobs handed over since :meth:`start` have finished."""
        ...

    def stop(self) -> None: ...


def _wait_until(condition: object, timeout_s: float, what: str, step_s: float = 0.002) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout_s:g} s")
        time.sleep(step_s)


class Execsvc:
    """A real ``execsvc run`` worker on a fresh queue; jobs written as a foreign tool writes them."""

    def __init__(
        self, slots: int, root: Path | None = None, prefix: str = "j", env: dict[str, str] | None = None
    ) -> None:
        self.name = f"execsvc slots={slots}"
        self.slots = slots
        self.prefix = prefix
        self.env = env  # the worker's environment (None: this process's)
        self._baseline = 0
        self._own_tmp = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="bench-execsvc-")) / "q"
        self.proc: subprocess.Popen[str] | None = None

    @property
    def pending(self) -> Path:
        return self.root / "pending"

    def start(self) -> None:
        self._baseline = self.finished() if (self.root / "completed").is_dir() else 0
        log = self.root / "daemon.log"
        seen = log.stat().st_size if log.exists() else 0
        # The default a service gets: stderr not a terminal, so only warnings there; events in daemon.log.
        self.proc = subprocess.Popen(
            [EXECSVC, "run", "--queue-dir", str(self.root), "--slots", str(self.slots)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=self.env,
        )
        assert self.proc.stderr is not None
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep the pipe drained
        while not (log.exists() and b" watching " in log.read_bytes()[seen:]):  # start-up only
            if self.proc.poll() is not None:
                raise RuntimeError(f"the worker did not start: exit code {self.proc.returncode}")
            time.sleep(0.005)

    def enqueue(self, index: int, argv: list[str]) -> float:
        body = '{"command": %s, "args": [%s]}' % (  # noqa: UP031 - cheaper than json.dumps per job
            _json_str(argv[0]),
            ", ".join(_json_str(a) for a in argv[1:]),
        )
        tmp = self.pending / f".j{index}.tmp"
        with open(tmp, "w") as handle:
            handle.write(body)
        dropped = time.time()
        os.rename(tmp, self.pending / f"{self.prefix}{index:06d}.json")
        return dropped

    def finished(self) -> int:
        folders = (self.root / "completed", self.root / "failed")  # hidden: the finish-time index
        return sum(1 for folder in folders for name in os.listdir(folder) if not name.startswith("."))

    def wait_all(self, count: int) -> None:
        last = f"{self.prefix}{count - 1:06d}.json"
        _wait_until(lambda: os.path.exists(self.root / "completed" / last), 600, f"job {last}")
        _wait_until(lambda: self.finished() - self._baseline >= count, 60, f"{count} records")

    def rss_bytes(self) -> int:
        assert self.proc is not None
        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def peak_rss_bytes(self) -> int:
        """The worker's high-water mark of resident memory (``VmHWM``), in bytes."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/<pid>/status (not Linux?)")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
            self.proc = None
        if self._own_tmp:
            shutil.rmtree(self.root.parent, ignore_errors=True)


class TaskSpooler:
    """task-spooler with a private ``TS_SOCKET`` and output folder (``TMPDIR``)."""

    def __init__(self, slots: int) -> None:
        self.name = f"tsp slots={slots}"
        self.slots = slots
        self.dir = Path(tempfile.mkdtemp(prefix="bench-tsp-"))
        self.env = {
            **os.environ,
            "TS_SOCKET": str(self.dir / "socket"),
            "TMPDIR": str(self.dir),
            "TS_SLOTS": str(slots),
            "TS_MAXFINISHED": "100000",
        }
        self.last_id = ""

    def _tsp(self, *args: str) -> str:
        return subprocess.run(["tsp", *args], env=self.env, capture_output=True, text=True, check=True).stdout

    def start(self) -> None:
        self._tsp("-S", str(self.slots))  # starts the server
        self._tsp("true")
        self._tsp("-w")
        self._tsp("-C")

    def enqueue(self, index: int, argv: list[str]) -> float:
        handed = time.time()
        self.last_id = self._tsp(*argv).strip()
        return handed

    def wait_all(self, count: int) -> None:
        subprocess.run(["tsp", "-w", self.last_id], env=self.env, capture_output=True, check=False)
        _wait_until(lambda: not any(s in self._tsp("-l") for s in (" running ", " queued ")), 60, "tsp's queue")

    def stop(self) -> None:
        subprocess.run(["tsp", "-K"], env=self.env, capture_output=True, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class Nq:
    """nq with a private ``NQDIR`` (nq runs one job at a time)."""

    def __init__(self) -> None:
        self.name = "nq"
        self.slots = 1
        self.dir = Path(tempfile.mkdtemp(prefix="bench-nq-"))
        self.env = {**os.environ, "NQDIR": str(self.dir)}

    def start(self) -> None:
        pass

    def enqueue(self, index: int, argv: list[str]) -> float:
        handed = time.time()
        subprocess.run(["nq", "-q", *argv], env=self.env, check=True)
        return handed

    def wait_all(self, count: int) -> None:
        subprocess.run(["nq", "-w"], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class InotifyLoop:
    """The least a file queue can be: ``inotifywait -m`` piped into a shell loop that runs each script.

    No claim, no record, no log, no FIFO by age: a reference for what an
    event-driven start costs on this machine, not a peer.
    """

    def __init__(self) -> None:
        self.name = "inotifywait | sh"
        self.slots = 1
        self.dir = Path(tempfile.mkdtemp(prefix="bench-inotify-"))
        self.pending = self.dir / "pending"
        self.pending.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        script = (
            'inotifywait -m -q -e moved_to --format %f "$1" 2>"$1/../ready" | '
            'while read -r f; do /bin/sh "$1/$f"; rm -f "$1/$f"; done'
        )
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", script, "sh", str(self.pending)], start_new_session=True, stdout=subprocess.DEVNULL
        )
        time.sleep(0.3)  # inotifywait -q prints nothing when its watch is set; give it the time

    def enqueue(self, index: int, argv: list[str]) -> float:
        tmp = self.dir / f"j{index}.tmp"
        tmp.write_text((argv[2] if argv[:2] == ["/bin/sh", "-c"] else shlex.join(argv)) + "\n")
        handed = time.time()
        os.rename(tmp, self.pending / f"j{index}.sh")
        return handed

    def wait_all(self, count: int) -> None:
        _wait_until(lambda: not os.listdir(self.pending), 600, "the inotify loop")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _json_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
