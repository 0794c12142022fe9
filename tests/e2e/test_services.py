"""Services (long-lived jobs) with a real worker: ``restart`` after a kill -9 of the service and
across a clean worker restart, never two copies at once (the service holds a ``flock``), ``cancel``
for good, ``on-failure`` after an exit 0, the start limit and the doubling back-off, and
``timeout_s: null`` allowed or refused by the policy (docs/protocol.md, "Services")."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from conftest import EXECSVC, daemon_log, drop, wait_finished, wait_until
from mcp_calls import structured
from mcp_stdio import mcp_over_stdio
from service_support import kill_9, make_service, running

from execsvc import JobQueue, JobState, JobStatus
from execsvc.protocol.models import JobResult


def _restarted_lines(queue_root: Path, job_id: str) -> list[str]:
    return [line for line in daemon_log(queue_root).splitlines() if f" restarted job={job_id} " in line]


def test_a_service_is_restarted_after_kill_9_of_its_process_and_cancel_stops_it_for_good(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    service = make_service(tmp_path)
    worker = start_worker()
    drop(queue_root, "svc.json", service.job(restart="always", timeout_s=None, restart_delay_s=0.1))
    first = service.wait_starts(1)
    kill_9(first)  # the job's process group leader
    second = service.wait_starts(2)
    assert second != first
    (line,) = _restarted_lines(queue_root, "svc")
    assert "status=failed" in line and "signal=SIGKILL" in line and "attempt=2" in line
    assert service.conflicts() == ""
    worker.wait_for_line("started job=svc pid=" + str(second))
    JobQueue(queue_root).cancel("svc")
    info = wait_finished(queue_root, "svc")
    assert info.status is JobStatus.CANCELLED
    assert info.result is not None and info.result.attempt == 2
    wait_until(lambda: not running(second), 10, "the cancelled service's process to end")
    assert not (queue_root / "pending" / "svc.json").exists()
    assert len(service.starts()) == 2 and len(_restarted_lines(queue_root, "svc")) == 1
    first_attempt = JobResult.model_validate_json((queue_root / "logs" / "svc.attempt-1.result.json").read_text())
    assert first_attempt.status is JobStatus.FAILED and first_attempt.signal == "SIGKILL"


def test_a_clean_worker_restart_stops_the_service_and_starts_it_once_more(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    service = make_service(tmp_path)
    worker = start_worker("--drain-timeout-s", "600")
    drop(queue_root, "svc.json", service.job(restart="always", timeout_s=None))
    first = service.wait_starts(1)
    worker.wait_for_line("started job=svc")
    assert worker.stop(timeout_s=30) == 0  # not the 600 s drain: a service never ends by itself
    assert not running(first)
    assert (queue_root / "pending" / "svc.json").exists(), "put back for the next start"
    assert json.loads((queue_root / "pending" / "svc.json").read_text())["attempt"] == 2
    kept = JobResult.model_validate_json((queue_root / "logs" / "svc.attempt-1.result.json").read_text())
    assert kept.status is JobStatus.INTERRUPTED
    assert len(service.starts()) == 1
    start_worker()
    second = service.wait_starts(2)
    assert second != first and running(second)
    assert service.conflicts() == ""
    assert JobQueue(queue_root).get("svc").state is JobState.RUNNING
    JobQueue(queue_root).cancel("svc")
    assert wait_finished(queue_root, "svc").status is JobStatus.CANCELLED
    assert len(service.starts()) == 2


def test_on_failure_restarts_after_a_failure_and_not_after_exit_0(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    counter = tmp_path / "runs"
    once_then_ok = f"echo run >> {counter}; [ $(wc -l < {counter}) -ge 2 ]"
    start_worker()
    drop(queue_root, "flaky.json", {"command": once_then_ok, "restart": "on-failure", "restart_delay_s": 0})
    info = wait_finished(queue_root, "flaky")
    assert info.status is JobStatus.COMPLETED
    assert info.result is not None and info.result.attempt == 2
    assert counter.read_text().count("run") == 2
    (line,) = _restarted_lines(queue_root, "flaky")
    assert "status=failed" in line and "exit_code=1" in line


def test_the_start_limit_ends_in_a_failed_record_after_doubling_delays(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    start_worker()
    drop(queue_root, "crashy.json", {"command": "exit 0", "restart": "always", "restart_delay_s": 0.05})
    info = wait_finished(queue_root, "crashy")
    assert info.state is JobState.FAILED and info.status is JobStatus.FAILED  # even after exit 0
    assert info.result is not None and info.result.returncode == 0
    assert info.result.error is not None
    assert "ended 6 times within 60 s" in info.result.error and "restart_limit_burst = 5" in info.result.error
    assert info.result.attempt == 6
    delays = [float(re.search(r"delay_s=([\d.]+)", line)[1]) for line in _restarted_lines(queue_root, "crashy")]  # type: ignore[index]
    assert delays == [0.05, 0.1, 0.2, 0.4, 0.8]
    attempts = [
        JobResult.model_validate_json((queue_root / "logs" / f"crashy.attempt-{n}.result.json").read_text())
        for n in range(1, 6)
    ] + [info.result]
    for n, delay in enumerate(delays):  # each attempt started no earlier than the delay after the one before
        before, after = attempts[n], attempts[n + 1]
        assert after.started_at is not None
        assert (after.started_at - before.completed_at).total_seconds() >= delay - 0.002
    assert "restart_limit job=crashy" in daemon_log(queue_root)


def test_timeout_s_null_runs_without_a_timeout_where_the_policy_allows_it(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    start_worker("--timeout-s", "0.2")  # the default timeout would stop it
    drop(queue_root, "long.json", {"command": "sleep 1; echo done", "timeout_s": None})
    info = wait_finished(queue_root, "long")
    assert info.status is JobStatus.COMPLETED
    assert info.result is not None and info.result.timeout_s is None and info.result.stdout == "done\n"
    drop(queue_root, "short.json", {"command": "sleep 1"})
    assert wait_finished(queue_root, "short").status is JobStatus.TIMEOUT


def test_timeout_s_null_is_refused_where_the_policy_forbids_it(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[policy]\nallow_no_timeout = false\n")
    start_worker("--config", str(config))
    marker = tmp_path / "ran"
    drop(queue_root, "svc.json", {"command": f"touch {marker}", "timeout_s": None, "restart": "always"})
    info = wait_finished(queue_root, "svc")
    assert info.status is JobStatus.INVALID
    assert info.result is not None and info.result.error is not None
    assert "allow_no_timeout = false in [policy]" in info.result.error and str(config) in info.result.error
    assert not marker.exists()
    assert _restarted_lines(queue_root, "svc") == []


def test_a_service_from_mcp_and_from_execsvc_submit(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    service = make_service(tmp_path)
    start_worker()

    async def session() -> str:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            job = service.job()
            call = {"command": job["command"], "args": job["args"], "timeout_s": "none", "restart": "always"}
            return str(structured((await client.call("enqueue_job", call)).result)["job_id"])

    job_id = anyio.run(session)
    first = service.wait_starts(1)
    spec = JobQueue(queue_root).get(job_id).spec
    assert spec is not None and spec["timeout_s"] is None and spec["restart"] == "always"
    kill_9(first)
    service.wait_starts(2)
    JobQueue(queue_root).cancel(job_id)
    assert wait_finished(queue_root, job_id).status is JobStatus.CANCELLED
    submitted = subprocess.run(
        [
            str(EXECSVC),
            "submit",
            "--queue-dir",
            str(queue_root),
            "--timeout-s",
            "none",
            "--restart",
            "on-failure",
            "--restart-delay-s",
            "0",
            "--",
            "sh",
            "-c",
            "exit 0",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    info = wait_finished(queue_root, submitted.stdout.strip())
    assert info.status is JobStatus.COMPLETED and info.result is not None and info.result.timeout_s is None
    assert info.spec is not None and info.spec["restart"] == "on-failure"


def test_submit_wait_returns_once_a_service_is_ready_by_a_line(queue_root: Path, start_worker: Any) -> None:
    worker = start_worker()
    program = "import time; print('booting'); print('listening on 1234', flush=True); time.sleep(600)"
    submitted = subprocess.run(
        [
            str(EXECSVC),
            "submit",
            "--queue-dir",
            str(queue_root),
            "--id",
            "web",
            "--restart",
            "always",
            "--timeout-s",
            "none",
            "--ready-line",
            r"listening on \d+",
            "--wait",
            "--",
            sys.executable,
            "-c",
            program,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr
    assert "job web is running and ready" in submitted.stderr
    info = JobQueue(queue_root).get("web")
    assert info.state is JobState.RUNNING and info.ready
    worker.wait_for_line("ready job=web")
    JobQueue(queue_root).cancel("web")
    assert wait_finished(queue_root, "web").status is JobStatus.CANCELLED
    assert not (queue_root / "running" / ".ready.web").exists()


def test_wait_for_job_over_mcp_returns_once_a_port_accepts(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    with socket.socket() as probe:  # a free loopback port, for the service to bind
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start_worker()
    server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    drop(
        queue_root,
        "http.json",
        {
            "command": server[0],
            "args": server[1:],
            "cwd": str(tmp_path),
            "timeout_s": None,
            "ready_when": {"port": port},
        },
    )

    async def session() -> dict[str, Any]:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            return structured((await client.call("wait_for_job", {"job_id": "http", "timeout_s": 30})).result)

    answer = anyio.run(session)
    assert answer["status"] == "running" and "running and ready" in answer["note"], answer
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    JobQueue(queue_root).cancel("http")
    assert wait_finished(queue_root, "http").status is JobStatus.CANCELLED
