"""One job's process group, with real processes and real signals."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil
import pytest
from conftest import process_gone, wait_until

from execsvc.job_logs import read_tail
from execsvc.job_processes import find_job_processes, stop_processes
from execsvc.run_request import RunRequest
from execsvc.runner import JobProcess, SpawnError, signal_name


def request(argv: list[str], tmp_path: Path, **kwargs: object) -> RunRequest:
    env = dict(os.environ) | {"EXECSVC_JOB_ID": "r", "EXECSVC_QUEUE_DIR": str(tmp_path)}
    return RunRequest(argv=argv, cwd=tmp_path, env=env, timeout_s=60, **kwargs)  # type: ignore[arg-type]


def start(argv: list[str], tmp_path: Path, **kwargs: object) -> JobProcess:
    job = JobProcess(request(argv, tmp_path, **kwargs), tmp_path / "out", tmp_path / "err", kill_grace_s=0.5)
    job.start()
    return job


def test_output_goes_to_the_log_files_and_exit_code_is_kept(tmp_path: Path) -> None:
    job = start(["sh", "-c", "echo out; echo err >&2; exit 4"], tmp_path)
    info = job.wait()
    assert info.returncode == 4 and info.duration_s >= 0 and not info.leftovers_stopped
    assert (tmp_path / "out").read_text() == "out\n" and (tmp_path / "err").read_text() == "err\n"


def test_the_job_is_a_process_group_of_its_own(tmp_path: Path) -> None:
    job = start(["sh", "-c", "sleep 60"], tmp_path)
    assert job.pid is not None and os.getpgid(job.pid) == job.pid != os.getpgid(0)
    assert job.signal_group(signal.SIGTERM)
    assert job.wait().returncode == -signal.SIGTERM
    assert not job.signal_group(signal.SIGKILL), "no signal once the job has been reaped"


def test_stdin_is_fed_from_the_job(tmp_path: Path) -> None:
    job = start(["cat"], tmp_path, stdin=b"x" * 1_000_000)
    assert job.wait().returncode == 0
    assert (tmp_path / "out").stat().st_size == 1_000_000


def test_leftovers_are_stopped_when_the_job_ends(tmp_path: Path) -> None:
    job = start(["sh", "-c", "sleep 600 & echo $!"], tmp_path)
    info = job.wait()
    assert info.returncode == 0 and info.leftovers_stopped
    background = int((tmp_path / "out").read_text())
    wait_until(lambda: process_gone(background), what="the background sleep to end")


def test_leftovers_that_ignore_sigterm_are_killed(tmp_path: Path) -> None:
    job = start(["sh", "-c", "(trap '' TERM; exec sleep 600) & echo $!"], tmp_path)
    assert job.wait().leftovers_stopped
    stubborn = int((tmp_path / "out").read_text())
    wait_until(lambda: process_gone(stubborn), what="the stubborn child to be killed")


@pytest.mark.parametrize(
    ("argv", "cwd", "message"),
    [
        (["no-such-program-execsvc"], None, "command not found: 'no-such-program-execsvc' (no such file in PATH)"),
        (["no-such-program-execsvc"], ".", "command not found: 'no-such-program-execsvc' (no such file in PATH)"),
        (["/no/such/prog"], None, "command not found: '/no/such/prog' (no such file)"),
        (["/"], None, "permission denied running '/'"),
        (["true"], "/no/such/dir", "the working directory /no/such/dir does not exist"),
    ],
)
def test_spawn_errors_say_why(tmp_path: Path, argv: list[str], cwd: str | None, message: str) -> None:
    req = request(argv, tmp_path)
    if cwd is not None:  # ".": this process's own folder, where posix_spawnp searches PATH (see _spawn)
        req = RunRequest(argv=argv, cwd=Path.cwd() if cwd == "." else Path(cwd), env=req.env, timeout_s=1)
    job = JobProcess(req, tmp_path / "out", tmp_path / "err", kill_grace_s=0.1)
    with pytest.raises(SpawnError) as caught:
        job.start()
    assert message in str(caught.value)


def test_an_exec_format_error_is_explained(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x00\x01\x02 not a program")
    junk.chmod(0o755)
    with pytest.raises(SpawnError, match="exec format error"):
        start([str(junk)], tmp_path)


def test_read_tail_cuts_at_a_character_boundary(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_bytes("é".encode() * 10)  # 20 bytes, 2 per character
    tail = read_tail(log, 5)
    assert (tail.text, tail.truncated, tail.size_bytes) == ("éé", True, 20)
    assert read_tail(log, 100).text == "é" * 10 and not read_tail(log, 100).truncated
    log.write_bytes(b"ok \xff\xfe bytes")
    assert read_tail(log, 100).text == "ok \ufffd\ufffd bytes"
    assert read_tail(tmp_path / "missing", 10).size_bytes == 0


def test_signal_names() -> None:
    assert signal_name(-9) == "SIGKILL" and signal_name(0) is None and signal_name(3) is None


def test_leftover_job_processes_are_found_by_their_environment(tmp_path: Path) -> None:
    """Recovery's path: find a dead worker's job by its environment markers, SIGTERM it, and
    SIGKILL one that ignores SIGTERM. The processes say themselves which signal reached them:
    psutil reaps its own children while waiting, so a Popen return code would be a race."""
    import subprocess

    env = os.environ | {"EXECSVC_JOB_ID": "ghost", "EXECSVC_QUEUE_DIR": str(tmp_path)}
    marker = tmp_path / "got-sigterm"
    polite = (
        "import os, signal, sys, time\n"
        "def on_term(*_):\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    os._exit(0)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    stubborn = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True, stdout=subprocess.PIPE)
        for code in (polite, stubborn)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        found = find_job_processes(tmp_path, {"ghost"})
        assert sorted(p.pid for p in found["ghost"]) == sorted(p.pid for p in procs)
        assert find_job_processes(tmp_path / "other", {"ghost"}) == {}, "another queue's job is not ours"
        stop_processes(found["ghost"], grace_s=0.5)
        assert marker.exists(), "SIGTERM comes first"
        assert not any(psutil.pid_exists(p.pid) for p in procs), "the one ignoring SIGTERM got SIGKILL"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
