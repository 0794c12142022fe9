"""The worker's daemon.log lines of one step in one append (``EventLog.together``)."""

from __future__ import annotations

from pathlib import Path

from execsvc.daemonlog import open_event_log


def test_lines_of_one_step_are_written_together_at_its_end_in_order(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    log = open_event_log(path, max_bytes=0, backups=0, stderr_level=None)
    try:
        log.info("before", "a")
        with log.together():
            log.info("claimed", "j1", file="j1.json")
            log.warning("moved_aside", "j1", file="x")
            log.info("started", "j1", pid=7)
            assert path.read_text().count("\n") == 1  # nothing of the step yet
        log.info("after", "b")
    finally:
        log.close()
    events = [line.split()[2] for line in path.read_text().splitlines()]
    assert events == ["before", "claimed", "moved_aside", "started", "after"]


def test_an_error_inside_the_step_still_writes_its_lines(tmp_path: Path) -> None:
    path = tmp_path / "daemon.log"
    log = open_event_log(path, max_bytes=0, backups=0, stderr_level=None)
    try:
        try:
            with log.together():
                log.info("claimed", "j1")
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        log.info("next", "j2")
    finally:
        log.close()
    assert [line.split()[2] for line in path.read_text().splitlines()] == ["claimed", "next"]
