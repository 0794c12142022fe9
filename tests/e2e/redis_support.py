"""A real ``redis-server`` on a free loopback port with a password, and ``execsvc remote-worker``
processes on it, for the distributed tests (tests/e2e/test_distributed.py,
tests/faults/test_distributed_faults.py; docs/distributed.md).

The tests skip, saying why, where ``redis-server`` is missing (``.ci/run`` installs Debian's).
Redis keeps nothing on disk (``--save '' --appendonly no``), so a restart empties it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from conftest import console_script, wait_until

PASSWORD = "test-pw-9f3a"
REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server; .ci/run does)"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` on 127.0.0.1 with :data:`PASSWORD`; :meth:`restart` keeps the port.
    ``tls``: TLS only (``rediss://``), with a self-signed certificate for 127.0.0.1 made here."""

    def __init__(self, folder: Path, *, tls: bool = False) -> None:
        self.folder = folder
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.cert: Path | None = None
        if tls:
            self.cert, key = folder / "redis.crt", folder / "redis.key"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                 "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(self.cert)],
                check=True, capture_output=True,
            )  # fmt: skip
        self.start()

    def url(self, db: int = 0) -> str:
        if self.cert is not None:
            return f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/{db}?ssl_ca_certs={self.cert}"
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        ports = ["--port", str(self.port)]
        if self.cert is not None:
            key = self.folder / "redis.key"
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.cert)]
            ports += ["--tls-key-file", str(key), "--tls-ca-cert-file", str(self.cert), "--tls-auth-clients", "no"]
        argv = [REDIS_SERVER, *ports, "--bind", "127.0.0.1", "--requirepass", PASSWORD]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url(), socket_connect_timeout=1)

        def answers() -> bool:
            with contextlib.suppress(redis.RedisError):
                return bool(client.ping())
            return False

        wait_until(answers, 10, "redis-server to answer PING")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class RemoteWorker:
    """``execsvc remote-worker`` as a child process (its stderr collected)."""

    def __init__(self, url: str, name: str, folder: Path, *args: str) -> None:
        self.name, self.folder = name, folder
        argv = [console_script("execsvc"), "remote-worker", "--name", name, "--dir", str(folder), *args]
        env = {**os.environ, "EXECSVC_REDIS_URL": url}
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, client: redis.Redis) -> RemoteWorker:
        """Once RQ lists this worker (it then waits for jobs)."""
        wait_until(
            lambda: (
                any(key.decode().startswith(f"rq:worker:{self.name}.") for key in client.smembers("rq:workers"))
                or self.proc.poll() is not None
            ),
            20,
            f"remote worker {self.name} to register",
        )
        assert self.proc.poll() is None, "\n".join(self.lines)
        return self

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (RQ's warm stop), a second one (cold: a job still running is stopped), then SIGKILL."""
        for sig in (signal.SIGTERM, signal.SIGTERM):
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(5)
        if self.proc.poll() is None:
            self.kill9()
        self._reader.join(5)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run does)")
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    yield server
    server.stop()


@pytest.fixture
def start_remote(tmp_path: Path) -> Iterator[Callable[..., RemoteWorker]]:
    """Start ``execsvc remote-worker --name NAME`` on a URL (ready: registered in RQ); stopped at the end."""
    started: list[RemoteWorker] = []

    def start(url: str, name: str, *args: str) -> RemoteWorker:
        worker = RemoteWorker(url, name, tmp_path / f"remote-{name}", *args)
        started.append(worker)
        return worker.wait_ready(redis.Redis.from_url(url))

    yield start
    for worker in started:
        worker.stop()


def processes_with(marker: str) -> list[int]:
    """Pids of this user's processes whose command line contains ``marker`` (a test's unique word)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


def wait_gone(marker: str, timeout_s: float = 10.0) -> None:
    wait_until(lambda: not processes_with(marker), timeout_s, f"no process with {marker!r} left")
