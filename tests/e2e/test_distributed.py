"""Jobs run by ``execsvc remote-worker`` processes through RQ and a real redis-server
(docs/distributed.md): a dispatching ``execsvc run --executor rq`` and two remote workers with
distinct names, all on this machine. The faults (kill -9, Redis restarts) are in
tests/faults/test_distributed_faults.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import redis
from conftest import BIN, daemon_log, drop, wait_finished, wait_until
from redis_support import PASSWORD, REDIS_SERVER, RedisServer, processes_with, redis_server, start_remote, wait_gone

from execsvc import JobQueue
from execsvc.distributed.keys import redacted

__all__ = ["redis_server", "start_remote"]
ROOT = Path(__file__).resolve().parents[2]


def _dispatcher(start_worker, url: str, *args: str):  # type: ignore[no-untyped-def]
    return start_worker("--executor", "rq", "--redis-url", url, *args)


def test_200_jobs_complete_once_spread_over_both_remote_workers(
    queue_root: Path, tmp_path: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    start_remote(url, "w1")
    start_remote(url, "w2")
    _dispatcher(start_worker, url, "--slots", "4")
    ran = tmp_path / "ran.txt"
    ids = [f"job-{n:03d}" for n in range(200)]
    for job_id in ids:
        drop(queue_root, f"{job_id}.json", {"command": "sh", "args": ["-c", f'echo "$EXECSVC_JOB_ID" >> {ran}']})
    hosts = Counter()
    for job_id in ids:
        info = wait_finished(queue_root, job_id)
        assert info.result is not None and info.result.status.value == "completed", info.result
        hosts[info.result.host] += 1
    assert sorted(ran.read_text().split()) == ids  # each exactly once
    assert set(hosts) == {"w1", "w2"}, hosts
    assert sorted(p.name for p in (queue_root / "completed").glob("*.json")) == [f"{i}.json" for i in ids]
    client = redis.Redis.from_url(url)  # each job's keys and in-flight entry go after its record
    wait_until(lambda: not client.keys("execsvc:*"), 10, "no execsvc key left in Redis")
    for text in (
        daemon_log(queue_root),
        (queue_root / "worker.json").read_text() if (queue_root / "worker.json").exists() else "",
    ):
        assert PASSWORD not in text


def test_the_dispatchers_slots_cap_the_jobs_in_flight(
    queue_root: Path, tmp_path: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    start_remote(url, "w1")
    start_remote(url, "w2")
    _dispatcher(start_worker, url, "--slots", "1")
    marks, counts = tmp_path / "marks", tmp_path / "counts.txt"
    marks.mkdir()
    script = f"touch {marks}/$EXECSVC_JOB_ID; ls {marks} | wc -l >> {counts}; sleep 0.3; rm {marks}/$EXECSVC_JOB_ID"
    for n in range(5):
        drop(queue_root, f"cap-{n}.json", {"command": "sh", "args": ["-c", script]})
    for n in range(5):
        assert wait_finished(queue_root, f"cap-{n}").status.value == "completed"
    assert [int(line) for line in counts.read_text().split()] == [1] * 5


def test_a_remote_jobs_output_is_followed_live(
    queue_root: Path, tmp_path: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    start_remote(url, "w1")
    _dispatcher(start_worker, url)
    go = tmp_path / "go"
    drop(
        queue_root,
        "live.json",
        {"command": "sh", "args": ["-c", f"echo first; while [ ! -e {go} ]; do sleep 0.05; done; echo second"]},
    )
    stdout = queue_root / "logs" / "live.stdout"
    wait_until(lambda: stdout.exists() and stdout.read_text() == "first\n", 20, "the first line in logs/")
    assert JobQueue(queue_root).get("live").state.value == "running"
    go.touch()
    info = wait_finished(queue_root, "live")
    assert info.result is not None and info.result.stdout == "first\nsecond\n"
    assert stdout.read_text() == "first\nsecond\n"


def test_cancel_and_timeout_of_remote_jobs_leave_no_process(
    queue_root: Path, tmp_path: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    start_remote(url, "w1")
    start_remote(url, "w2")
    _dispatcher(start_worker, url, "--slots", "2", "--kill-grace-s", "1")
    drop(queue_root, "slow.json", {"command": "sh", "args": ["-c", "sleep 611 & echo started; wait"], "timeout_s": 1.5})
    drop(queue_root, "doomed.json", {"command": "sh", "args": ["-c", "trap '' TERM; sleep 612 & echo started; wait"]})
    doomed_log = queue_root / "logs" / "doomed.stdout"
    wait_until(lambda: doomed_log.exists() and doomed_log.read_text() == "started\n", 20, "the job to start")
    JobQueue(queue_root).cancel("doomed")
    cancelled = wait_finished(queue_root, "doomed")
    timed_out = wait_finished(queue_root, "slow")
    assert cancelled.result is not None and cancelled.result.status.value == "cancelled", cancelled.result
    assert timed_out.result is not None and timed_out.result.status.value == "timeout", timed_out.result
    assert cancelled.result.host in ("w1", "w2") and timed_out.result.host in ("w1", "w2")
    wait_gone("sleep 611")
    wait_gone("sleep 612")


def test_the_remote_machines_policy_refuses_what_it_must(
    queue_root: Path, tmp_path: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    config = tmp_path / "remote.toml"
    config.write_text('[worker]\nmax_shipped_bytes = 1000\n[policy]\nallow_shell = false\nsandbox = "off"\n')
    start_remote(url, "strict", "--config", str(config))
    _dispatcher(start_worker, url)  # the front machine allows anything
    drop(queue_root, "shell.json", {"command": "echo from a shell line"})
    drop(queue_root, "boxed.json", {"command": "echo", "args": ["boxed"], "sandbox": True})
    drop(queue_root, "big.json", {"command": "head", "args": ["-c", "5000", "/dev/zero"]})
    shell = wait_finished(queue_root, "shell").result
    boxed = wait_finished(queue_root, "boxed").result
    big = wait_finished(queue_root, "big").result
    assert shell is not None and shell.status.value == "invalid" and "allow_shell = false" in (shell.error or "")
    assert "on strict" in (shell.error or "") and shell.host == "strict"
    assert boxed is not None and boxed.status.value == "invalid" and "sandbox" in (boxed.error or ""), boxed
    assert big is not None and big.status.value == "completed" and big.host == "strict"
    assert (queue_root / "logs" / "big.stdout").stat().st_size == 1000
    assert big.remote_logs is not None and big.remote_logs[0].startswith("strict:")
    record = json.loads((queue_root / "completed" / "big.json").read_text())
    assert record["result"]["host"] == "strict"
    assert not processes_with("from a shell line")


def test_the_walk_through_in_the_docs_works_as_written(tmp_path: Path, redis_server) -> None:
    """docs/distributed.md's walk-through, run as written (its port and /tmp/ replaced)."""
    page = (ROOT / "docs" / "distributed.md").read_text()
    block = re.search(r"<!-- distributed-walk-through -->\n```sh\n(.*?)```", page, flags=re.DOTALL)
    assert block is not None
    port = str(redis_server.port)
    redis_server.stop()  # the walk-through starts its own, on this (free) port
    script = block.group(1).replace("6399", port).replace("/tmp/", f"{tmp_path}/").replace(".venv/bin/", f"{BIN}/")
    try:
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            check=False,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        for pid in processes_with(str(tmp_path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        subprocess.run(
            ["redis-cli", "-p", port, "-a", PASSWORD, "--no-auth-warning", "shutdown"], check=False, capture_output=True
        )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all done" in run.stdout
    assert '"host": "alpha"' in run.stdout and '"host": "beta"' in run.stdout, run.stdout
    assert len(list((tmp_path / "walk-queue" / "completed").glob("*.json"))) == 6


def test_a_failed_remote_job_is_retried_remotely(
    queue_root: Path, tmp_path: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    start_remote(url, "w1")
    _dispatcher(start_worker, url)
    marker = tmp_path / "failed-once"
    script = f"if [ -e {marker} ]; then echo second; else touch {marker}; echo first; exit 1; fi"
    drop(queue_root, "flaky.json", {"command": "sh", "args": ["-c", script], "retries": 1, "retry_delay_s": 0})
    info = wait_finished(queue_root, "flaky")
    assert info.result is not None and info.result.status.value == "completed", info.result
    assert info.result.attempt == 2 and info.result.stdout == "second\n" and info.result.host == "w1"
    assert info.result.attempt_records == ["logs/flaky.attempt-1.result.json"]
    first = json.loads((queue_root / "logs" / "flaky.attempt-1.result.json").read_text())
    assert first["status"] == "failed" and first["stdout"] == "first\n" and first["host"] == "w1"


def test_redis_over_tls_with_a_password(queue_root: Path, tmp_path: Path, start_worker, start_remote) -> None:
    if REDIS_SERVER is None or shutil.which("openssl") is None:
        pytest.skip("redis-server or openssl is not installed")
    folder = tmp_path / "tls"
    folder.mkdir()
    server = RedisServer(folder, tls=True)
    try:
        url = server.url()
        start_remote(url, "tls-worker")
        _dispatcher(start_worker, url)
        drop(queue_root, "secret.json", {"command": "echo", "args": ["over tls"]})
        info = wait_finished(queue_root, "secret")
        assert info.result is not None and info.result.stdout == "over tls\n" and info.result.host == "tls-worker"
        assert PASSWORD not in daemon_log(queue_root) and "rediss://***@127.0.0.1" in daemon_log(queue_root)
    finally:
        server.stop()


def test_a_redis_url_is_shown_without_its_password() -> None:
    assert redacted("redis://:pw@127.0.0.1:6379/0") == "redis://***@127.0.0.1:6379/0"
    assert (
        redacted("rediss://user:pw@h:6380/2?ssl_ca_certs=/etc/ca.crt")
        == "rediss://***@h:6380/2?ssl_ca_certs=/etc/ca.crt"
    )
    assert redacted("redis://h:1/0?password=pw&db=1") == "redis://h:1/0?password=***&db=1"
    assert redacted("unix:///run/redis.sock?password=pw") == "unix:///run/redis.sock?password=***"
    assert redacted("redis://h:6379") == "redis://h:6379"


def test_a_remote_worker_runs_no_function_but_execsvcs(tmp_path: Path, redis_server, start_remote) -> None:
    from rq import Queue
    from rq.serializers import JSONSerializer

    url = redis_server.url()
    start_remote(url, "w1")
    marker = tmp_path / "ran-os-system"
    queue = Queue("execsvc:default", connection=redis.Redis.from_url(url), serializer=JSONSerializer)
    job = queue.enqueue_call("os.system", args=(f"touch {marker}",))
    wait_until(lambda: job.get_status(refresh=True) == "failed", 20, "RQ to fail the foreign job")
    result = job.latest_result()
    assert result is not None and "runs only execsvc.distributed.remote.run_remote" in (result.exc_string or "")
    assert not marker.exists()


def test_a_job_cancelled_while_it_waits_in_rq_never_runs(
    queue_root: Path, tmp_path: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    worker = _dispatcher(start_worker, url)  # no remote worker yet: the job waits in RQ
    ran = tmp_path / "ran"
    drop(queue_root, "waiting.json", {"command": "touch", "args": [str(ran)]})
    worker.wait_for_line("started job=waiting")
    JobQueue(queue_root).cancel("waiting")
    worker.wait_for_line("cancelling job=waiting")
    start_remote(url, "late")
    info = wait_finished(queue_root, "waiting")
    assert info.result is not None and info.result.status.value == "cancelled", info.result
    assert "never ran" in (info.result.error or "") and info.result.returncode is None
    assert not ran.exists()
