"""A sandboxed job has no network but its own loopback; ``network: true`` gives it the host's.

Real worker, real bwrap. The only socket is one this test listens on at 127.0.0.1, and the jobs
only try to connect to it: nothing is sent anywhere, even if the sandbox failed.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_support import PYTHON, Place, Workers, make_place, needs_bwrap, record_of, run_job, workers_at

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
    info = run_job(place, "cut-off", {"command": PYTHON, "args": ["-c", CONNECT, port], "sandbox": True})
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
    job = {"command": PYTHON, "args": ["-c", CONNECT, port], "sandbox": {"network": True}}
    info = run_job(place, "connected", job)
    assert info.result is not None and info.status is JobStatus.COMPLETED, info.result
    assert info.result.stdout == "connected\n"
    sandbox = record_of(info)["result"]["sandbox"]
    assert sandbox["network"] is True and sandbox["profile"] == "job" and sandbox["reason"] == "asked"


def test_the_sockets_of_the_users_session_are_out_of_reach(place: Place, workers: Workers, tmp_path: Path) -> None:
    """A read-only mount does not stop a connect(): the runtime folder and the agent socket the
    worker's environment names (XDG_RUNTIME_DIR: the D-Bus session bus, systemd --user) are hidden."""
    runtime, agent_folder = place.home / "run", place.home / "agent"
    for folder in (runtime, agent_folder):
        folder.mkdir(mode=0o700)
    env = (f"XDG_RUNTIME_DIR={runtime}", f"SSH_AUTH_SOCK={agent_folder / 'agent.sock'}")
    workers.start(f"sandbox_profile = {{ readable_only = ['{place.home}'] }}", env=env)
    probe = (
        "import os, socket, sys\n"
        "for path in sys.argv[1:]:\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    try:\n"
        "        s.connect(path)\n"
        "        print('reached', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
    )
    with socket.socket(socket.AF_UNIX) as bus, socket.socket(socket.AF_UNIX) as agent:
        bus.bind(str(runtime / "bus"))
        agent.bind(str(agent_folder / "agent.sock"))
        bus.listen(1)
        agent.listen(1)
        job = {"command": PYTHON, "args": ["-c", probe, str(runtime / "bus"), str(agent_folder / "agent.sock")]}
        info = run_job(place, "sockets", {**job, "sandbox": True})
    assert info.result is not None and info.status is JobStatus.COMPLETED, info.result
    said = info.result.stdout.splitlines()
    assert len(said) == 2 and all(line.startswith("refused ") for line in said), said
