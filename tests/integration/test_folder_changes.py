"""``execsvc.protocol.changes.folder_changes``, the waiter of ``JobQueue.wait`` and ``queue-view``'s
live views, on real folders with a real watchdog observer: a change wakes it, a read does not
(a view that reads the jobs it shows would otherwise wake itself and redraw without end)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from execsvc.protocol.changes import folder_changes

QUIET_S = 1.0
"""How long a waiter must stay asleep when nothing in its folders changed (seconds)."""


def test_reading_a_file_in_a_watched_folder_does_not_wake_the_waiter(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text('{"command": "true"}')
    with folder_changes([tmp_path], "a test") as changed:
        (tmp_path / "job.json").read_text()  # open, read, close without writing: no change
        started = time.monotonic()
        changed(QUIET_S)
        assert time.monotonic() - started >= QUIET_S * 0.9, "a read of a file woke the waiter"


def test_a_file_renamed_into_a_watched_folder_wakes_the_waiter(tmp_path: Path) -> None:
    folder = tmp_path / "pending"
    folder.mkdir()
    hidden = tmp_path / ".job.tmp"
    hidden.write_text('{"command": "true"}')
    with folder_changes([folder], "a test") as changed:
        timer = threading.Timer(0.2, hidden.rename, (folder / "job.json",))
        timer.start()
        started = time.monotonic()
        changed(30.0)
        timer.join()
        assert time.monotonic() - started < 30.0 and (folder / "job.json").exists()
