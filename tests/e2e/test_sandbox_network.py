"""A sandboxed job has no network but its own loopback; ``network: true`` gives it the host's.

Real worker, real bwrap. The only socket is one this test listens on at 127.0.0.1, and the jobs
only try to connect to it: nothing is sent anywhere, even if the sandbox failed.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_support import Place, Workers, make_place, needs_bwrap, record_of, run_job, workers_at

from execsvc import JobStatus

pytestmark = needs_bwrap

CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5).close()\n"
    "except OSError as exc:\n"
    "    sys.exit(f'cannot connect: {exc}')\n"
    "print('connected')\n"
)


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return make_place(tmp_path)


@pytest.fixture
def workers(place: Place) -> Iterator[Workers]:
    with workers_at(place) as started:
        yield started


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on a free loopback port, opened by the test."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def test_a_sandboxed_job_cannot_reach_a_loopback_port_outside(
    place: Place, workers: Workers, listener: socket.socket
) -> None:
    workers.start()
    port = str(listener.getsockname()[1])
    info = run_job(place, "cut-off", {"command": sys.executable, "args": ["-c", CONNECT, port], "sandbox": True})
    assert info.result is not None and info.status is JobStatus.FAILED, info.result
    assert "cannot connect" in info.result.stderr and "connected\n" not in info.result.stdout
    assert record_of(info)["result"]["sandbox"]["network"] is False


def test_a_sandboxed_job_sees_no_interface_but_its_loopback(place: Place, workers: Workers) -> None:
    workers.start()
    line = "ls /sys/class/net; echo --; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"
    info = run_job(place, "interfaces", {"command": line, "sandbox": True})
    assert info.result is not None and info.status is JobStatus.COMPLETED, info.result
    in_sys, _, in_proc = info.result.stdout.partition("--\n")
    assert in_sys.split() == ["lo"]
    assert in_proc.split() == ["lo"]


def test_with_network_true_the_job_reaches_the_loopback_port(
    place: Place, workers: Workers, listener: socket.socket
) -> None:
    workers.start()
    port = str(listener.getsockname()[1])
    job = {"command": sys.executable, "args": ["-c", CONNECT, port], "sandbox": {"network": True}}
    info = run_job(place, "connected", job)
    assert info.result is not None and info.status is JobStatus.COMPLETED, info.result
    assert info.result.stdout == "connected\n"
    sandbox = record_of(info)["result"]["sandbox"]
    assert sandbox["network"] is True and sandbox["profile"] == "job" and sandbox["reason"] == "asked"
