"""Scheduling with a real worker and real processes: priority, dependencies, due times, retries,
limits, finish hooks, hold/release, and all of it across a kill -9 of the worker. The fields read and
explained without a worker: tests/unit/test_scheduling_fields.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import EXECSVC, WorkerProcess, daemon_log, drop, wait_finished, wait_until

from execsvc import JobQueue, JobState, JobStatus
from execsvc.limits import PRLIMIT
from queue_tools import api

PY = sys.executable


def marker_job(marks: Path, name: str, **fields: Any) -> dict[str, Any]:
    """A job that appends its name to ``marks`` (one line per run), then does ``then`` (a shell line)."""
    then = fields.pop("then", "true")
    return {"command": f"echo {name} >> {marks} && {then}", **fields}


def runs(marks: Path) -> list[str]:
    return marks.read_text().split() if marks.exists() else []


def test_priority_then_fifo_among_ready_jobs(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    marks = tmp_path / "marks"
    base = time.time() - 100
    for n, (name, priority) in enumerate([("a", 0), ("b", 5), ("c", 0), ("d", 10), ("e", 5)]):
        drop(queue_root, f"{name}.json", marker_job(marks, name, priority=priority), mtime=base + n)
    drop(queue_root, "f.sh", f"#!/bin/sh\n# execsvc: priority=7\necho f >> {marks}\n", mtime=base + 10)
    start_worker()
    for job in "abcdef":
        assert wait_finished(queue_root, job).status is JobStatus.COMPLETED
    assert runs(marks) == ["d", "f", "b", "e", "a", "c"]


def test_dependency_chain_fan_in_and_both_modes(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    marks = tmp_path / "marks"
    start_worker("--slots", "3")
    drop(queue_root, "a.json", marker_job(marks, "a", then="sleep 0.4"))
    drop(queue_root, "b.json", marker_job(marks, "b"))
    drop(queue_root, "bad.json", marker_job(marks, "bad", then="exit 3"))
    drop(queue_root, "fan.json", marker_job(marks, "fan", after=["a", "b"]))
    drop(queue_root, "chain.json", marker_job(marks, "chain", after=["fan"]))
    drop(queue_root, "any.json", marker_job(marks, "any", after=["bad", "a"], after_mode="any"))
    drop(queue_root, "strict.json", marker_job(marks, "strict", after=["bad"]))
    drop(queue_root, "cascade.json", marker_job(marks, "cascade", after=["strict"]))
    results = {job: wait_finished(queue_root, job) for job in ("a", "b", "bad", "fan", "chain", "any", "strict")}
    cascade = wait_finished(queue_root, "cascade")

    a, b, fan, chain = (results[j].result for j in ("a", "b", "fan", "chain"))
    assert a and b and fan and chain
    assert fan.started_at and chain.started_at
    assert fan.started_at >= max(a.completed_at, b.completed_at)  # fan-in: after both
    assert chain.started_at >= fan.completed_at
    assert results["any"].status is JobStatus.COMPLETED  # mode any: runs although 'bad' failed
    strict = results["strict"].result
    assert results["strict"].status is JobStatus.CANCELLED and strict is not None
    assert "'bad'" in (strict.error or "") and "ended failed" in (strict.error or "")
    assert cascade.status is JobStatus.CANCELLED and "'strict'" in (cascade.result.error or "")  # type: ignore[union-attr]
    assert sorted(runs(marks)) == ["a", "any", "b", "bad", "chain", "fan"]  # cancelled ones never ran


def test_unknown_dependency_and_cycles_are_refused(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    marks = tmp_path / "marks"
    drop(queue_root, "x.json", marker_job(marks, "x", after=["y"]))
    drop(queue_root, "y.json", marker_job(marks, "y", after=["x"]))
    drop(queue_root, "self.json", marker_job(marks, "self", after=["self"]))
    drop(queue_root, "orphan.json", marker_job(marks, "orphan", after=["no-such-job"]))
    start_worker()
    for job in ("x", "y", "self"):
        info = wait_finished(queue_root, job)
        assert info.status is JobStatus.INVALID
        assert "dependency cycle" in (info.result.error or "")  # type: ignore[union-attr]
    orphan = wait_finished(queue_root, "orphan")
    assert orphan.status is JobStatus.INVALID
    assert "'no-such-job', which is not in this queue" in (orphan.result.error or "")  # type: ignore[union-attr]
    assert runs(marks) == []


def test_delayed_jobs_start_at_their_due_time_not_before(queue_root: Path, start_worker: Any) -> None:
    start_worker()
    due = datetime.now(UTC) + timedelta(seconds=1.0)
    stamp = "date +%s.%N"
    written = drop(queue_root, "later.json", {"command": stamp, "delay_s": 0.8}).stat().st_mtime
    drop(queue_root, "at.json", {"command": stamp, "not_before": due.isoformat()})
    drop(queue_root, "now.json", {"command": "true"})
    assert wait_finished(queue_root, "now").status is JobStatus.COMPLETED
    assert JobQueue(queue_root).get("later").state is JobState.PENDING  # not before: still waiting
    later, at = wait_finished(queue_root, "later"), wait_finished(queue_root, "at")
    started_later = float(later.result.stdout)  # type: ignore[union-attr]
    started_at = float(at.result.stdout)  # type: ignore[union-attr]
    assert started_later >= written + 0.8
    assert started_at >= due.timestamp()
    # Late by how much: printed for the record (the benchmark measures it), bounded only for liveness.
    print(f"late by {started_later - written - 0.8:.4f} s and {started_at - due.timestamp():.4f} s")
    assert started_at - due.timestamp() < 5


def test_retries_back_off_and_keep_every_attempt(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    worker = start_worker()
    count = tmp_path / "count"
    flaky = (
        f"n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}; "
        f'date +%s.%N >> {tmp_path}/starts; echo "attempt $n"; [ $n -ge 3 ]'
    )
    drop(queue_root, "flaky.json", {"command": flaky, "retries": 3, "retry_delay_s": 0.3})
    drop(queue_root, "doomed.sh", "#!/bin/sh\n# execsvc: retries=1 retry_delay_s=0.1\necho no; exit 4\n")
    flaky_info = wait_finished(queue_root, "flaky")
    doomed = wait_finished(queue_root, "doomed")

    result = flaky_info.result
    assert flaky_info.status is JobStatus.COMPLETED and result is not None
    assert result.attempt == 3 and result.stdout == "attempt 3\n"
    assert result.attempt_records == ["logs/flaky.attempt-1.result.json", "logs/flaky.attempt-2.result.json"]
    for n, path in enumerate(result.attempt_records, start=1):
        earlier = json.loads((queue_root / path).read_text())
        assert earlier["status"] == "failed" and earlier["returncode"] == 1
        assert (queue_root / earlier["stdout_log"]).read_text() == f"attempt {n}\n"
    starts = [float(line) for line in (tmp_path / "starts").read_text().split()]
    assert starts[1] - starts[0] >= 0.3 and starts[2] - starts[1] >= 0.6  # doubled back-off
    assert doomed.status is JobStatus.FAILED and doomed.result is not None
    assert doomed.result.attempt == 2 and doomed.result.returncode == 4
    assert (queue_root / "logs/doomed.attempt-1.result.json").exists()
    assert daemon_log(queue_root).count("retrying") == 3
    assert worker.stop() == 0  # it stops when asked: retries leave its count of records in flight right


needs_prlimit = pytest.mark.skipif(PRLIMIT is None, reason="prlimit (util-linux) is not installed")


@needs_prlimit
def test_memory_cpu_and_open_files_limits_fail_the_job_naming_the_limit(queue_root: Path, start_worker: Any) -> None:
    start_worker("--slots", "3")
    drop(
        queue_root, "mem.json", {"command": PY, "args": ["-c", "b = bytearray(1 << 30)"], "limits": {"memory_mb": 100}}
    )
    drop(queue_root, "cpu.json", {"command": PY, "args": ["-c", "while True: pass"], "limits": {"cpu_s": 1}})
    files = "import tempfile\nkeep = [tempfile.TemporaryFile() for _ in range(200)]"
    drop(queue_root, "files.json", {"command": PY, "args": ["-c", files], "limits": {"open_files": 30}})
    for job, limit in (("mem", "memory_mb"), ("cpu", "cpu_s"), ("files", "open_files")):
        info = wait_finished(queue_root, job)
        assert info.status is JobStatus.FAILED and info.result is not None, job
        assert info.result.limit_exceeded == limit
        assert f"limits.{limit}" in (info.result.error or "")
        assert info.result.limits is not None and getattr(info.result.limits, limit) is not None


def test_processes_limit_stops_a_fork_loop(queue_root: Path, start_worker: Any) -> None:
    start_worker()
    loop = {"command": "while :; do sleep 30 & done", "limits": {"processes": 20}, "timeout_s": 60}
    drop(queue_root, "forks.json", loop)
    info = wait_finished(queue_root, "forks")
    assert info.status is JobStatus.FAILED and info.result is not None
    assert info.result.limit_exceeded == "processes" and "limits.processes (20)" in (info.result.error or "")
    assert info.result.duration_s is not None and info.result.duration_s < 30  # stopped, not timed out
    pgid = info.result.pid
    assert pgid is not None
    wait_until(lambda: not _group_alive(pgid), 10, "the fork loop's process group to be gone")


def test_output_bytes_cuts_the_log_and_fails_the_job(queue_root: Path, start_worker: Any) -> None:
    start_worker()
    drop(queue_root, "chatty.json", {"command": "yes", "limits": {"output_bytes": 100_000}})
    info = wait_finished(queue_root, "chatty")
    assert info.status is JobStatus.FAILED and info.result is not None
    assert info.result.limit_exceeded == "output_bytes"
    assert (queue_root / "logs/chatty.stdout").stat().st_size == 100_000
    assert info.result.stdout_bytes == 100_000


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []
    failures_left = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Hook.failures_left > 0:
            _Hook.failures_left -= 1
            self.send_response(503)
        else:
            _Hook.received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[str]:
    _Hook.received, _Hook.failures_left = [], 1  # the first POST fails: the worker tries again
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()
    thread.join()


def test_on_finish_and_webhook_get_the_record(
    queue_root: Path, tmp_path: Path, start_worker: Any, hook_server: str
) -> None:
    start_worker()
    copy = tmp_path / "copy.json"
    drop(
        queue_root,
        "hooked.json",
        {
            "command": "echo hello",
            "on_finish": f'cp "$EXECSVC_RECORD" {copy} && echo "$EXECSVC_STATUS" > {tmp_path}/status',
            "webhook": hook_server,
        },
    )
    info = wait_finished(queue_root, "hooked")
    record = Path(info.path).read_bytes()
    wait_until(lambda: copy.exists() and bool(_Hook.received), 20, "the on_finish copy and the webhook POST")
    assert copy.read_bytes() == record
    assert (tmp_path / "status").read_text() == "completed\n"
    assert json.loads(_Hook.received[0])["result"]["stdout"] == "hello\n"
    log = daemon_log(queue_root)
    assert "on_finish_done" in log and "webhook_sent" in log and "after 2 tries" in log


def test_a_failing_webhook_is_logged_and_the_queue_goes_on(queue_root: Path, start_worker: Any) -> None:
    start_worker()
    drop(queue_root, "hooked.json", {"command": "true", "webhook": "http://127.0.0.1:9/nothing-listens"})
    drop(queue_root, "next.json", {"command": "true"})
    assert wait_finished(queue_root, "next").status is JobStatus.COMPLETED
    wait_until(lambda: "webhook_failed" in daemon_log(queue_root), 30, "webhook_failed in daemon.log")


def _cli(queue_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXECSVC), args[0], "--queue-dir", str(queue_root), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hold_and_release(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    marks = tmp_path / "marks"
    drop(queue_root, "held.json", marker_job(marks, "held"))
    assert _cli(queue_root, "hold", "held").returncode == 0
    start_worker()
    drop(queue_root, "other.json", marker_job(marks, "other"))
    assert wait_finished(queue_root, "other").status is JobStatus.COMPLETED
    queue = JobQueue(queue_root)
    assert queue.get("held").state is JobState.PENDING and queue.get("held").held
    detail = api.get_job(queue, "held")
    assert detail.waiting is not None and detail.waiting.held and "held" in (detail.note or "")
    view = subprocess.run(
        [str(EXECSVC.parent / "queue-view"), "--queue-dir", str(queue_root), "list", "--state", "waiting", "--json"],
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert [job["job_id"] for job in json.loads(view.stdout)["jobs"]] == ["held"]
    assert runs(marks) == ["other"]
    released = _cli(queue_root, "release", "held")
    assert released.returncode == 0, released.stderr
    assert wait_finished(queue_root, "held").status is JobStatus.COMPLETED
    assert runs(marks) == ["other", "held"]
    assert "only a pending job" in _cli(queue_root, "hold", "held").stderr


def test_scheduling_survives_kill_9(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    """kill -9 with a job running, one waiting for it, one delayed, one between retries and one held."""
    marks = tmp_path / "marks"
    worker: WorkerProcess = start_worker("--slots", "2")
    drop(queue_root, "long.json", marker_job(marks, "long", then="sleep 30"))
    drop(queue_root, "dependent.json", marker_job(marks, "dependent", after=["long"]))
    drop(queue_root, "tolerant.json", marker_job(marks, "tolerant", after=["long"], after_mode="any"))
    written = drop(queue_root, "delayed.json", marker_job(marks, "delayed", delay_s=3)).stat().st_mtime
    count = tmp_path / "count"
    flaky = f"n=$(cat {count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {count}; [ $n -ge 2 ]"
    drop(queue_root, "flaky.json", marker_job(marks, "flaky", then=flaky, retries=2, retry_delay_s=2))
    drop(queue_root, "held.json", marker_job(marks, "held", after=["long"], after_mode="any"))
    assert _cli(queue_root, "hold", "held").returncode == 0  # it waits for long: still pending
    queue = JobQueue(queue_root)
    wait_until(lambda: queue.get("long").state is JobState.RUNNING, 10, "long to run")
    wait_until(lambda: "retrying" in daemon_log(queue_root), 10, "flaky's first attempt to fail")
    worker.kill()

    start_worker("--slots", "2")
    assert wait_finished(queue_root, "long").status is JobStatus.INTERRUPTED
    assert wait_finished(queue_root, "dependent").status is JobStatus.CANCELLED
    assert wait_finished(queue_root, "tolerant").status is JobStatus.COMPLETED
    delayed = wait_finished(queue_root, "delayed")
    assert delayed.status is JobStatus.COMPLETED and delayed.result and delayed.result.started_at
    assert delayed.result.started_at.timestamp() >= written + 3
    flaky_info = wait_finished(queue_root, "flaky")
    assert flaky_info.status is JobStatus.COMPLETED and flaky_info.result and flaky_info.result.attempt == 2
    assert queue.get("held").held
    assert _cli(queue_root, "release", "held").returncode == 0
    assert wait_finished(queue_root, "held").status is JobStatus.COMPLETED
    assert sorted(runs(marks)) == ["delayed", "flaky", "flaky", "held", "long", "tolerant"]  # none ran twice


def test_a_retry_cut_short_by_a_crash_runs_once(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    """The crash between writing the next attempt into pending/ and leaving running/ (JobQueue.requeue)."""
    marks = tmp_path / "marks"
    queue = JobQueue(queue_root)
    job = marker_job(marks, "r", retries=1)
    (queue_root / "running" / "r.json").write_text(json.dumps(job))
    drop(queue_root, "r.json", {**job, "attempt": 2, "retry_at": datetime.now(UTC).isoformat()})
    start_worker()
    info = wait_finished(queue_root, "r")
    assert info.status is JobStatus.COMPLETED and info.result and info.result.attempt == 2
    assert runs(marks) == ["r"]
    assert "retry_recovered" in daemon_log(queue_root)
    # The record is durable before the job leaves running/ (docs/protocol.md): the file goes a moment later.
    wait_until(lambda: not list((queue_root / "running").iterdir()), what="running/ to empty")
    assert queue.get("r").state is JobState.COMPLETED


def test_submit_cli_and_policy_for_hooks(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    made = _cli(
        queue_root,
        "submit",
        "--id",
        "cli-job",
        "--priority",
        "4",
        "--retries",
        "1",
        "--memory-mb",
        "512",
        "--delay-s",
        "0.2",
        "--",
        "echo",
        "hi",
    )
    assert made.returncode == 0, made.stderr
    spec = JobQueue(queue_root).get("cli-job").spec
    assert spec is not None
    assert (spec["priority"], spec["retries"], spec["limits"], spec["delay_s"]) == (4, 1, {"memory_mb": 512}, 0.2)
    config = tmp_path / "config.toml"
    config.write_text("[policy]\nallow_shell = false\n")
    start_worker("--config", str(config))
    drop(queue_root, "hook.json", {"command": "true", "args": [], "on_finish": "echo done"})
    info = wait_finished(queue_root, "hook")
    assert info.status is JobStatus.INVALID and "on_finish" in (info.result.error or "")  # type: ignore[union-attr]


def test_config_defaults_and_caps(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "[worker]\ndefault_retries = 1\ndefault_retry_delay_s = 0.1\nmax_limits = { output_bytes = 1000 }\n"
    )
    start_worker("--config", str(config))
    drop(queue_root, "fails.json", {"command": "exit 1"})
    drop(queue_root, "loud.json", {"command": "yes", "limits": {"output_bytes": 10_000_000}})
    fails = wait_finished(queue_root, "fails")
    assert fails.result is not None and fails.result.attempt == 2  # the worker's default retries
    loud = wait_finished(queue_root, "loud")
    assert loud.result is not None and loud.result.limit_exceeded == "output_bytes"
    assert loud.result.limits is not None and loud.result.limits.output_bytes == 1000  # capped
    assert (queue_root / "logs/loud.stdout").stat().st_size == 1000


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_clean_removes_earlier_attempts_and_hook_logs(queue_root: Path, start_worker: Any) -> None:
    start_worker()
    drop(queue_root, "twice.json", {"command": "exit 2", "retries": 1, "retry_delay_s": 0, "on_finish": "echo hook"})
    wait_finished(queue_root, "twice")
    wait_until(lambda: "on_finish_done" in daemon_log(queue_root), 20, "the on_finish hook")
    assert (queue_root / "logs/twice.attempt-1.result.json").exists()
    cleaned = _cli(queue_root, "clean", "--older-than", "0s")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not [name for name in os.listdir(queue_root / "logs") if name.startswith("twice")]


def test_a_release_cut_short_by_a_crash_runs_once(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    """A release stopped between its link into pending/ and its unlink from pending/.held/."""
    marks = tmp_path / "marks"
    queue = JobQueue(queue_root)
    queue.submit(marker_job(marks, "rel"), job_id="rel", held=True)
    os.link(queue_root / "pending/.held/rel.json", queue_root / "pending/rel.json")
    start_worker()
    assert wait_finished(queue_root, "rel").status is JobStatus.COMPLETED
    assert not (queue_root / "pending/.held/rel.json").exists()  # not left to be released (and run) again
    assert runs(marks) == ["rel"]
    assert "release_settled" in daemon_log(queue_root)


def test_submit_refuses_scheduling_options_it_would_drop(queue_root: Path, tmp_path: Path) -> None:
    """A job file carries its own fields: options beside --file would be lost, so they are refused."""
    job = tmp_path / "job.json"
    job.write_text('{"command": "true"}')
    refused = _cli(queue_root, "submit", "--priority", "5", "--file", str(job))
    assert refused.returncode == 2 and "--priority" in refused.stderr and "'# execsvc:' header" in refused.stderr
    assert not list((queue_root / "pending").glob("*.json"))
