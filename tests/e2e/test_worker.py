"""The worker end to end: a real ``execsvc run`` process, real job processes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import WorkerProcess, daemon_log, drop, process_gone, wait_finished, wait_until

from execsvc import JobQueue, JobState, JobStatus
from execsvc.protocol.leases import install_lease_guard, look_at_file

PY = sys.executable
Start = Callable[..., WorkerProcess]


def test_seed_examples_run_end_to_end(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    worker = start_worker()
    drop(
        queue_root,
        "echo.json",
        {"command": "echo", "args": ["Hello, World!"], "description": "Test echo command", "owner": {"team": "infra"}},
    )
    drop(
        queue_root,
        "task.json",
        {"task_id": "unique_id", "command": f'{PY} -c "print(6*7)"', "purpose": "Description of the job"},
    )
    (tmp_path / "work").mkdir()
    drop(queue_root, "script.sh", f"cd {tmp_path}/work && echo made > out.txt && ls\n")

    echo = wait_finished(queue_root, "echo")
    assert echo.state is JobState.COMPLETED
    assert echo.result is not None and echo.result.stdout == "Hello, World!\n"
    assert echo.result.returncode == 0 and echo.result.argv == ["echo", "Hello, World!"]
    record = json.loads((queue_root / "completed" / "echo.json").read_text())
    assert record["owner"] == {"team": "infra"}, "unknown fields must be kept untouched"
    assert record["description"] == "Test echo command"

    task = wait_finished(queue_root, "task")
    assert task.result is not None and task.result.stdout == "42\n"
    assert task.result.argv is not None and task.result.argv[:2] == ["/bin/sh", "-c"]
    assert task.spec is not None and task.spec["task_id"] == "unique_id"

    script = wait_finished(queue_root, "script")
    assert script.state is JobState.COMPLETED and script.kind == "text"
    assert (queue_root / "completed" / "script.sh").exists()
    assert (queue_root / "completed" / "script.result.json").exists()
    assert (tmp_path / "work" / "out.txt").read_text() == "made\n"
    assert script.result is not None and script.result.stdout == "out.txt\n"

    for job in ("echo", "task", "script"):
        for event in ("claimed", "started", "finished"):
            worker.wait_for_line(f"{event} job={job}")  # "finished" is logged just after the record
    log = daemon_log(queue_root)
    assert all(f"finished job={job}" in log for job in ("echo", "task", "script")), "daemon.log has them too"
    for state in ("pending", "running"):
        assert os.listdir(queue_root / state) == []


def test_fifo_order_of_twenty_jobs_follows_mtime_not_name(queue_root: Path, start_worker: Start) -> None:
    order = queue_root.parent / "order.txt"
    base = time.time() - 1000
    names = [f"job-{i:02d}" for i in range(20)]
    shuffled = names[7:] + names[:7]  # name order differs from age order
    for age_rank, name in enumerate(shuffled):
        drop(queue_root, f"{name}.json", {"command": f"echo {name} >> {order}"}, mtime=base + age_rank)
    start_worker()
    for name in names:
        wait_finished(queue_root, name)
    assert order.read_text().split() == shuffled


def test_jobs_dropped_while_one_runs_start_oldest_first(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker()
    order = queue_root.parent / "order.txt"
    gate = queue_root.parent / "gate"
    drop(queue_root, "blocker.json", {"command": f"while [ ! -e {gate} ]; do sleep 0.01; done"})
    worker.wait_for_line("started job=blocker")
    base = time.time() - 100
    ages = [5, 1, 9, 3, 7, 0, 8, 2, 6, 4]
    for i, age in enumerate(ages):
        drop(queue_root, f"j{i}.json", {"command": f"echo j{i} >> {order}"}, mtime=base + age)
    gate.touch()
    for i in range(len(ages)):
        wait_finished(queue_root, f"j{i}")
    expected = [f"j{i}" for i, _ in sorted(enumerate(ages), key=lambda pair: pair[1])]
    assert order.read_text().split() == expected


def test_two_slots_run_two_jobs_at_once(queue_root: Path, start_worker: Start) -> None:
    start_worker("--slots", "2")
    marks = queue_root.parent
    # Each job waits (up to 10 s) for the other's mark: both complete only if they overlap.
    for me, other in (("a", "b"), ("b", "a")):
        drop(
            queue_root,
            f"{me}.json",
            {
                "command": f"touch {marks}/{me}; i=0; while [ ! -e {marks}/{other} ]; do "
                f"i=$((i+1)); [ $i -gt 1000 ] && exit 1; sleep 0.01; done"
            },
        )
    assert wait_finished(queue_root, "a").status is JobStatus.COMPLETED
    assert wait_finished(queue_root, "b").status is JobStatus.COMPLETED


def test_one_slot_never_overlaps(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    busy = queue_root.parent / "busy"
    # fails if another job is inside the critical section at the same time
    body = f"[ -e {busy} ] && exit 9; touch {busy}; sleep 0.05; rm {busy}"
    for i in range(4):
        drop(queue_root, f"s{i}.json", {"command": body})
    for i in range(4):
        assert wait_finished(queue_root, f"s{i}").status is JobStatus.COMPLETED


def test_timeout_stops_the_whole_process_group(queue_root: Path, start_worker: Start) -> None:
    start_worker("--kill-grace-s", "0.5")
    pidfile = queue_root.parent / "grandchild.pid"
    drop(queue_root, "slow.json", {"command": f"sleep 600 & echo $! > {pidfile}; sleep 600", "timeout_s": 0.5})
    info = wait_finished(queue_root, "slow")
    assert info.status is JobStatus.TIMEOUT and info.state is JobState.FAILED
    assert info.result is not None and "timeout of 0.5 s" in (info.result.error or "")
    grandchild = int(pidfile.read_text())
    wait_until(lambda: process_gone(grandchild), what="the background grandchild to be stopped")


def test_a_job_that_ignores_sigterm_is_killed(queue_root: Path, start_worker: Start) -> None:
    start_worker("--kill-grace-s", "0.3")
    drop(queue_root, "stubborn.json", {"command": "trap '' TERM; while :; do sleep 0.05; done", "timeout_s": 0.3})
    info = wait_finished(queue_root, "stubborn")
    assert info.status is JobStatus.TIMEOUT
    assert info.result is not None and info.result.signal == "SIGKILL"


def test_exit_codes_and_signals_are_recorded(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    drop(queue_root, "ok.json", {"command": "true"})
    drop(queue_root, "three.json", {"command": "sh", "args": ["-c", "echo oops >&2; exit 3"]})
    drop(queue_root, "killed.json", {"command": "kill -KILL $$"})
    ok = wait_finished(queue_root, "ok")
    assert ok.status is JobStatus.COMPLETED and ok.result is not None and ok.result.error is None
    three = wait_finished(queue_root, "three")
    assert three.state is JobState.FAILED and three.result is not None
    assert (three.result.returncode, three.result.stderr) == (3, "oops\n")
    assert three.result.error == "the job exited with code 3"
    killed = wait_finished(queue_root, "killed")
    assert killed.result is not None and (killed.result.returncode, killed.result.signal) == (-9, "SIGKILL")
    assert killed.status is JobStatus.FAILED


def test_big_output_is_cut_in_the_record_and_whole_in_logs(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    drop(queue_root, "big.json", {"command": PY, "args": ["-c", "print('x' * 199_999 + 'END')"]})
    info = wait_finished(queue_root, "big")
    assert info.result is not None
    assert info.result.stdout_truncated and len(info.result.stdout) == 64 * 1024
    assert info.result.stdout.endswith("END\n") and info.result.stdout_bytes == 200_003
    assert (queue_root / "logs" / "big.stdout").stat().st_size == 200_003
    assert not info.result.stderr_truncated and info.result.stderr == ""


def kernel_reports_writers(folder: Path) -> bool:
    """Whether this file system answers the read-lease question the worker asks (Linux, most local file systems)."""
    install_lease_guard()
    probe = folder / "lease-probe"
    with open(probe, "w"):
        answer = look_at_file(str(probe), 1)[0]
    probe.unlink()
    return answer is True


def test_a_job_written_slowly_in_place_is_not_run_half_written(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    if not kernel_reports_writers(queue_root):
        pytest.skip("this file system cannot tell whether a file is open for writing (no read leases)")
    out = queue_root.parent / "out.txt"
    with open(queue_root / "pending" / "slow.sh", "w") as script:
        script.write(f"echo first >> {out}\n")
        script.flush()
        # The first line is a complete, runnable script on its own: it must still wait.
        job_json = queue_root / "pending" / "slow2.json"
        with open(job_json, "w") as half:
            half.write('{"command": "echo", ')
            half.flush()
            drop(queue_root, "probe.json", {"command": "true"})  # a job after them proves the worker is awake
            wait_finished(queue_root, "probe")
            assert (queue_root / "pending" / "slow.sh").exists() and job_json.exists()
            half.write('"args": ["whole"]}')
        script.write(f"echo second >> {out}\n")
    assert wait_finished(queue_root, "slow").status is JobStatus.COMPLETED
    assert out.read_text() == "first\nsecond\n"
    slow2 = wait_finished(queue_root, "slow2")
    assert slow2.result is not None and slow2.result.stdout == "whole\n"


def test_a_plain_open_write_close_job_runs(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    (queue_root / "pending" / "inplace.json").write_text('{"command": "echo", "args": ["in place"]}')
    info = wait_finished(queue_root, "inplace")
    assert info.result is not None and info.result.stdout == "in place\n"


def test_two_jobs_with_the_same_file_name_both_run(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker()
    drop(queue_root, "dup.json", {"command": "echo", "args": ["one"]})
    first = wait_finished(queue_root, "dup")
    drop(queue_root, "dup.json", {"command": "echo", "args": ["two"]})
    assert "renamed job=dup-2" in worker.wait_for_line("renamed")
    second = wait_finished(queue_root, "dup-2")
    assert first.result is not None and first.result.stdout == "one\n"
    assert second.result is not None and second.result.stdout == "two\n"
    assert second.result.job_file == "dup.json"
    assert JobQueue(queue_root).get("dup").result == first.result, "the first record must survive"


def test_bad_jobs_fail_with_reasons_and_the_worker_keeps_serving(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker()
    drop(queue_root, "garbled.json", '{"command": "echo", "args": ["x"')
    drop(queue_root, "nocommand.json", {"args": ["x"]})
    drop(queue_root, "wrongtype.json", {"command": "echo", "args": "not a list"})
    drop(queue_root, "badenv.json", {"command": "env", "env": {"A": 1}})
    drop(queue_root, "notes.yaml", "command: echo\n")
    drop(queue_root, "empty.sh", "")
    drop(queue_root, "list.json", "[1, 2]")
    drop(queue_root, "missing.json", {"command": "no-such-program-execsvc", "args": []})
    drop(queue_root, "nodir.json", {"command": "true", "cwd": "/no/such/dir"})
    reasons = {
        "garbled": "not valid JSON",
        "nocommand": "the required field 'command' is missing",
        "wrongtype": "'args'",
        "badenv": "'env.A'",
        "notes.yaml": "job files end in .json, .sh or .txt",
        "empty": "the script is empty",
        "list": "but this file holds a list",
        "missing": "command not found: 'no-such-program-execsvc'",
        "nodir": "the working directory /no/such/dir does not exist",
    }
    for job_id, reason in reasons.items():
        info = wait_finished(queue_root, job_id)
        assert info.state is JobState.FAILED
        assert info.result is not None and reason in (info.result.error or ""), (job_id, info.result)
    for job_id in ("garbled", "nocommand", "wrongtype", "badenv", "notes.yaml", "empty", "list"):
        assert JobQueue(queue_root).get(job_id).status is JobStatus.INVALID
    assert (queue_root / "failed" / "notes.yaml").read_text() == "command: echo\n", "kept untouched"
    assert (queue_root / "failed" / "garbled.json").read_text() == '{"command": "echo", "args": ["x"'
    worker.wait_for_line("invalid job=garbled")  # logged just after the record
    worker.wait_for_line("invalid job=notes.yaml")
    drop(queue_root, "after.json", {"command": "echo", "args": ["still serving"]})
    assert wait_finished(queue_root, "after").status is JobStatus.COMPLETED


def test_directories_and_symlinks_in_pending_are_refused(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    start_worker()
    target = tmp_path / "real.json"
    target.write_text('{"command": "touch ' + str(tmp_path / "followed") + '"}')
    os.symlink(target, queue_root / "pending" / "link.json")
    (queue_root / "pending" / "adir.json").mkdir()
    link = wait_finished(queue_root, "link")
    assert link.status is JobStatus.INVALID and "symbolic link" in (link.result.error or "")  # type: ignore[union-attr]
    assert (queue_root / "failed" / "link.json").is_symlink(), "the link itself moves, never its target"
    assert target.exists() and not (tmp_path / "followed").exists()
    adir = wait_finished(queue_root, "adir")
    assert adir.status is JobStatus.INVALID and "directory" in (adir.result.error or "")  # type: ignore[union-attr]


def test_sigkill_mid_job_then_restart_records_interrupted(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker()
    pidfile = queue_root.parent / "job.pid"
    drop(queue_root, "long.json", {"command": f"echo $$ > {pidfile}; echo partial; sleep 600"})
    worker.wait_for_line("started job=long")
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() != "", what="the job to start")
    job_pid = int(pidfile.read_text())
    worker.kill()
    assert not process_gone(job_pid), "the job outlives its killed worker until the next start"
    again = start_worker()
    info = wait_finished(queue_root, "long")
    assert info.status is JobStatus.INTERRUPTED and info.state is JobState.FAILED
    assert info.result is not None and "was not run again" in (info.result.error or "")
    assert info.result.stdout == "partial\n"
    assert process_gone(job_pid), "the leftover job process is stopped at restart"
    assert "interrupted job=long" in again.wait_for_line("interrupted job=long")
    assert os.listdir(queue_root / "running") == []
    assert daemon_log(queue_root).count("started job=long") == 1, "never run twice"


def test_a_second_worker_exits_1_naming_the_first(queue_root: Path, start_worker: Start) -> None:
    first = start_worker()
    second = start_worker(ready=False)
    assert second.proc.wait(20) == 1
    message = "\n".join(second.lines)
    assert f"worker PID {first.proc.pid}" in message and "already serving" in message
    drop(queue_root, "still.json", {"command": "true"})
    assert wait_finished(queue_root, "still").status is JobStatus.COMPLETED


def test_sigterm_lets_the_running_job_finish(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker()
    gate = queue_root.parent / "gate"
    drop(queue_root, "draining.json", {"command": f"while [ ! -e {gate} ]; do sleep 0.01; done; echo done"})
    worker.wait_for_line("started job=draining")
    drop(queue_root, "later.json", {"command": "true"})
    worker.proc.send_signal(signal.SIGTERM)
    worker.wait_for_line("worker_stopping")
    gate.touch()
    assert worker.wait_exit() == 0
    info = JobQueue(queue_root).get("draining")
    assert info.status is JobStatus.COMPLETED and info.result is not None and info.result.stdout == "done\n"
    assert JobQueue(queue_root).get("later").state is JobState.PENDING, "no new job starts while draining"
    assert "worker_stopped" in daemon_log(queue_root)


def test_drain_timeout_then_jobs_are_interrupted(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--drain-timeout-s", "0.2", "--kill-grace-s", "0.2")
    drop(queue_root, "forever.json", {"command": "sleep 600"})
    worker.wait_for_line("started job=forever")
    assert worker.stop() == 0
    info = JobQueue(queue_root).get("forever")
    assert info.status is JobStatus.INTERRUPTED
    assert info.result is not None and "drain period" in (info.result.error or "")


def test_a_second_signal_stops_at_once(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--drain-timeout-s", "600")
    drop(queue_root, "forever.json", {"command": "trap '' TERM; sleep 600"})
    worker.wait_for_line("started job=forever")
    worker.proc.send_signal(signal.SIGINT)
    worker.wait_for_line("worker_stopping")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait_exit(timeout_s=10) == 0
    info = JobQueue(queue_root).get("forever")
    assert info.status is JobStatus.INTERRUPTED and "second stop signal" in (info.result.error or "")  # type: ignore[union-attr]


def test_pending_writable_by_others_is_refused(queue_root: Path, start_worker: Start) -> None:
    JobQueue(queue_root)
    (queue_root / "pending").chmod(0o777)
    worker = start_worker(ready=False)
    assert worker.proc.wait(20) == 1
    message = "\n".join(worker.lines)
    assert "can be written by other users" in message and "chmod 700" in message


def test_folders_are_created_private(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    for name in ("", "pending", "running", "completed", "failed", "logs"):
        assert (queue_root / name).stat().st_mode & 0o777 == 0o700, name


def test_job_environment_cwd_stdin_and_result_file(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    start_worker()
    drop(
        queue_root,
        "env.json",
        {
            "command": 'printf \'%s|%s|%s|\' "$GREETING" "$EXECSVC_JOB_ID" "$(pwd)"; cat',
            "env": {"GREETING": "hi"},
            "cwd": str(tmp_path),
            "stdin": "from stdin",
            "result_file": "out/env.txt",
        },
    )
    (queue_root / "out").mkdir()
    info = wait_finished(queue_root, "env")
    expected = f"hi|env|{tmp_path}|from stdin"
    assert info.result is not None and info.result.stdout == expected
    assert (queue_root / "out" / "env.txt").read_text() == expected


def test_a_job_in_the_default_folder_gets_home_env_and_stdin(queue_root: Path, start_worker: Start) -> None:
    """The default folder is the worker's own (``execsvc run`` moves there), so such jobs are
    started by ``posix_spawn`` rather than ``Popen``: the same environment, stdin and folder."""
    start_worker()
    drop(
        queue_root,
        "home.json",
        {
            "command": 'printf \'%s|%s|%s|\' "$GREETING" "$EXECSVC_JOB_ID" "$(pwd -P)"; cat',
            "env": {"GREETING": "hi"},
            "stdin": "from stdin",
        },
    )
    info = wait_finished(queue_root, "home")
    assert info.result is not None and info.result.stdout == f"hi|home|{os.path.realpath(Path.home())}|from stdin"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads /proc")
@pytest.mark.parametrize("where", ["default folder (posix_spawn)", "own cwd (Popen)"])
def test_a_job_inherits_no_descriptor_of_the_worker_and_default_signals(
    queue_root: Path, start_worker: Start, tmp_path: Path, where: str
) -> None:
    """A job sees only its stdin, stdout and stderr (not the worker's inotify descriptor, log,
    lock or pipes), and SIGPIPE and SIGXFSZ at their defaults although Python ignores them."""
    start_worker()
    job: dict[str, object] = {"command": "sh", "args": ["-c", "ls /proc/$$/fd; grep SigIgn /proc/$$/status"]}
    if where.startswith("own cwd"):
        job["cwd"] = str(tmp_path)
    drop(queue_root, "fds.json", job)
    info = wait_finished(queue_root, "fds")
    assert info.result is not None and info.status is JobStatus.COMPLETED, info.result
    words = info.result.stdout.split()
    assert words[:4] == ["0", "1", "2", "SigIgn:"], info.result.stdout
    mask = int(words[4], 16)
    assert not mask & (1 << (signal.SIGPIPE - 1)) and not mask & (1 << (signal.SIGXFSZ - 1)), words[4]


def test_a_job_without_stdin_reads_end_of_file(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    drop(queue_root, "reader.json", {"command": "cat; echo after", "timeout_s": 20})
    info = wait_finished(queue_root, "reader")
    assert info.status is JobStatus.COMPLETED and info.result is not None and info.result.stdout == "after\n"


def test_a_finished_job_leaves_no_background_process(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--kill-grace-s", "0.5")
    pidfile = queue_root.parent / "bg.pid"
    drop(queue_root, "bg.json", {"command": f"sleep 600 & echo $! > {pidfile}; echo main done"})
    info = wait_finished(queue_root, "bg")
    assert info.status is JobStatus.COMPLETED
    background = int(pidfile.read_text())
    wait_until(lambda: process_gone(background), what="the leftover background process to be stopped")
    assert "job=bg" in worker.wait_for_line("leftovers_stopped=yes")


def test_worker_json_names_the_serving_worker(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker("--slots", "3")
    info = JobQueue(queue_root).worker_info()
    assert info is not None and (info.pid, info.slots) == (worker.proc.pid, 3)
    assert worker.stop() == 0
    assert JobQueue(queue_root).worker_info() is None


def test_execsvc_submit_wait_passes_output_and_exit_code(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    cmd = [str(Path(sys.executable).parent / "execsvc"), "submit", "--queue-dir", str(queue_root), "--wait"]
    done = subprocess.run(
        [*cmd, "--", "sh", "-c", "echo out; echo err >&2; exit 7"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (7, "out\n")
    assert "err\n" in done.stderr and "exited with code 7" in done.stderr
    piped = subprocess.run(
        [*cmd, "--shell", "echo a b | wc -w"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (piped.returncode, piped.stdout.strip()) == (0, "2")
    script = subprocess.run(cmd, input="echo from stdin\n", capture_output=True, text=True, timeout=60, check=False)
    assert (script.returncode, script.stdout) == (0, "from stdin\n")
    timeout = subprocess.run(
        [*cmd, "--timeout-s", "0.2", "--", "sleep", "30"], capture_output=True, text=True, timeout=60, check=False
    )
    assert timeout.returncode == 124 and "timeout" in timeout.stderr
