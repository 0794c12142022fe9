"""daemon.log's writer on real files: rotation, file modes, a device that refuses writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from execsvc.daemonlog import DaemonLog, open_event_log


def test_rotation_keeps_backups_private_and_drops_the_oldest(tmp_path: Path) -> None:
    log = DaemonLog(tmp_path / "daemon.log", max_bytes=100, backups=2)
    for n in range(10):
        log.write(f"line {n:02d} {'x' * 41}\n".encode())  # 50 bytes: two lines per file
    log.close()
    names = sorted(os.listdir(tmp_path))
    assert names == ["daemon.log", "daemon.log.1", "daemon.log.2"]
    assert all(stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600 for name in names)
    kept = "".join((tmp_path / name).read_text() for name in reversed(names))
    assert [line[:7] for line in kept.splitlines()] == [f"line {n:02d}" for n in range(4, 10)]


def test_no_rotation_without_backups(tmp_path: Path) -> None:
    log = DaemonLog(tmp_path / "daemon.log", max_bytes=100, backups=0)
    for _ in range(10):
        log.write(b"x" * 49 + b"\n")
    log.close()
    assert os.listdir(tmp_path) == ["daemon.log"] and (tmp_path / "daemon.log").stat().st_size == 500


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_a_refused_write_is_told_once_on_stderr_and_never_raises(capsys: pytest.CaptureFixture[str]) -> None:
    log = open_event_log(Path("/dev/full"), max_bytes=0, backups=0, stderr_level=None)
    for _ in range(3):
        log.info("finished", "j", status="completed")
    log.close()
    told = capsys.readouterr().err.splitlines()
    assert len(told) == 1 and "cannot write /dev/full" in told[0] and "No space left" in told[0]


def test_events_at_the_stderr_level_are_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = open_event_log(tmp_path / "daemon.log", max_bytes=0, backups=0, stderr_level=30)  # logging.WARNING
    log.info("started", "a", pid=1)
    log.warning("renamed", "b", reason="the id is taken")
    log.close()
    echoed = capsys.readouterr().err.splitlines()
    assert len(echoed) == 1 and echoed[0].split(" ", 2)[1:] == ["WARNING", 'renamed job=b reason="the id is taken"']
    assert [line.split(" ")[1] for line in (tmp_path / "daemon.log").read_text().splitlines()] == ["INFO", "WARNING"]


def test_a_rotation_that_fails_keeps_writing_to_the_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "daemon.log.1").mkdir()  # a folder where the first backup should go: the rename fails
    (tmp_path / "daemon.log.1" / "x").touch()
    log = DaemonLog(tmp_path / "daemon.log", max_bytes=100, backups=1)
    for n in range(6):
        log.write(f"line {n} {'x' * 42}\n".encode())  # 50 bytes
    log.close()
    assert [line[:6] for line in (tmp_path / "daemon.log").read_text().splitlines()] == [f"line {n}" for n in range(6)]
    told = capsys.readouterr().err.splitlines()
    assert len(told) == 1 and "cannot rotate" in told[0], "told once, not at every rotation"
