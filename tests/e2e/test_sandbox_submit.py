"""``execsvc submit --sandbox`` (and ``--sandbox-network``, ``--sandbox-writable``), a text job's
``# execsvc: sandbox=`` header, and the worker's refusal of a sandbox policy that cannot hold.

Real ``execsvc`` commands, a real worker, real bwrap.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EXECSVC, WorkerProcess, drop, wait_finished
from sandbox_support import Place, Workers, make_place, needs_bwrap, workers_at

from execsvc import JobQueue, JobStatus

pytestmark = needs_bwrap


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return make_place(tmp_path)


@pytest.fixture
def workers(place: Place) -> Iterator[Workers]:
    with workers_at(place) as started:
        yield started


def _submit(place: Place, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(EXECSVC), "submit", "--queue-dir", str(place.queue), *args]
    return subprocess.run(command, cwd=place.work, capture_output=True, text=True, timeout=60, check=False)


def test_submit_sandbox_runs_the_command_in_the_default_sandbox(place: Place, workers: Workers) -> None:
    workers.start()
    done = _submit(place, "--sandbox", "--wait", "--shell", "echo made > here.txt; ls /sys/class/net")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "lo\n" and (place.work / "here.txt").read_text() == "made\n"
    job_id = done.stderr.split("job ")[1].split()[0]
    spec = JobQueue(place.queue).get(job_id).spec
    assert spec is not None and spec["sandbox"] is True


def test_submit_sandbox_writable_and_network_write_the_profile(place: Place, workers: Workers) -> None:
    workers.start()
    (place.work / "cache").mkdir()
    done = _submit(place, "--sandbox-writable", "cache", "--sandbox-network", "--id", "wide", "--", "true")
    assert done.returncode == 0, done.stderr
    info = wait_finished(place.queue, "wide")
    assert info.spec is not None and info.spec["sandbox"] == {"network": True, "writable": [str(place.work / "cache")]}
    assert info.result is not None and info.result.sandbox is not None
    assert info.result.sandbox.network and str((place.work / "cache").resolve()) in info.result.sandbox.writable


def test_submit_refuses_a_sandbox_path_that_is_not_absolute_or_under_home(place: Place) -> None:
    done = _submit(place, "--sandbox-writable", "~someone/x", "--", "true")
    assert done.returncode == 2 and "not a path a sandbox can take" in done.stderr


def test_a_text_jobs_header_asks_for_a_sandbox_and_a_wrong_value_is_invalid(place: Place, workers: Workers) -> None:
    workers.start()
    drop(place.queue, "boxed.sh", "#!/bin/sh\n# execsvc: sandbox=true\nls /sys/class/net\n")
    drop(place.queue, "wrong.sh", "#!/bin/sh\n# execsvc: sandbox=yes\ntrue\n")
    boxed, wrong = wait_finished(place.queue, "boxed"), wait_finished(place.queue, "wrong")
    assert boxed.status is JobStatus.COMPLETED and boxed.result is not None and boxed.result.stdout == "lo\n"
    record = json.loads((place.queue / "completed" / "boxed.result.json").read_text())
    assert record["result"]["sandbox"]["profile"] == "default"
    assert wrong.status is JobStatus.INVALID and wrong.result is not None
    assert "sandbox= in the '# execsvc:' header is true, false or a JSON object" in (wrong.result.error or "")


def test_the_worker_refuses_sandbox_for_with_sandbox_off(place: Place) -> None:
    place.config.write_text('[policy]\nsandbox = "off"\nsandbox_for = ["mcp"]\n')
    worker = WorkerProcess(place.queue, "--config", str(place.config))
    try:
        assert worker.wait_exit() != 0
    finally:
        if worker.proc.poll() is None:
            worker.kill()
    assert any('sandbox_for needs sandbox = "on-request" or "required"' in line for line in worker.lines)
