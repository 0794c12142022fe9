"""execsvc.spawn: the C library's posix_spawn through ctypes starts a job as os.posix_spawn
(setsid, setsigdef) does, with real processes: its own session and group, the descriptors
given, the signals Python ignores back at their defaults, the C library's errors."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from execsvc import spawn

pytestmark = pytest.mark.skipif(not spawn.AVAILABLE, reason="execsvc.spawn needs Linux with glibc >= 2.26")


def _run(argv: list[str], tmp_path: Path, stdin_fd: int | None = None) -> tuple[int, int, str, str]:
    """Spawn ``argv``; its pid, exit code, stdout and stderr."""
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        pid = spawn.spawn_in_session(
            argv[0],
            argv,
            {"PATH": os.environ["PATH"], "GREETING": "hello there"},
            stdin_fd=stdin_fd,
            stdout_fd=stdout.fileno(),
            stderr_fd=stderr.fileno(),
            reset_signals=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    _pid, status = os.waitpid(pid, 0)
    return pid, os.waitstatus_to_exitcode(status), out.read_text(), err.read_text()


def test_the_job_gets_its_own_session_its_environment_and_its_descriptors(tmp_path: Path) -> None:
    script = 'read -r line; echo "$GREETING/$line"; cut -d" " -f5,6 /proc/$$/stat; echo oops >&2; exit 3'
    stdin = tmp_path / "in"
    stdin.write_text("from stdin\n")
    with open(stdin, "rb") as handle:
        pid, code, out, err = _run(["sh", "-c", script], tmp_path, stdin_fd=handle.fileno())
    greeting, ids = out.splitlines()
    assert greeting == "hello there/from stdin"
    assert ids == f"{pid} {pid}"  # process group and session: its own
    assert (code, err) == (3, "oops\n")


def test_stdin_is_dev_null_and_ignored_signals_are_reset(tmp_path: Path) -> None:
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # Python's own, inherited without the reset
    _pid, code, out, _err = _run(["sh", "-c", "cat; grep SigIgn /proc/$$/status"], tmp_path)
    ignored = int(out.split()[-1], 16)
    assert code == 0
    assert not ignored & (1 << (signal.SIGPIPE - 1))
    assert not ignored & (1 << (signal.SIGXFSZ - 1))


def test_a_program_that_cannot_run_raises_the_c_librarys_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        _run(["no-such-program-here"], tmp_path)
    with pytest.raises(PermissionError):
        _run([str(tmp_path)], tmp_path)  # a folder: EACCES


def test_the_spawn_raises_the_audit_event_of_os_posix_spawn(tmp_path: Path) -> None:
    seen: list[str] = []
    thread = threading.get_ident()

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "os.posix_spawn" and threading.get_ident() == thread:
            seen.append(str(args[0]))

    sys.addaudithook(hook)  # (stays for the process: it only records this thread's spawns here)
    _run(["true"], tmp_path)
    assert "true" in seen
