"""Smaller defects found by the review of groups and schedules (issue 23), each with the
behaviour a person should see: a waiting job's note names who holds its group's slots once,
and a duration too long for any clock is a clear error, not a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from conftest import EXECSVC, drop

from execsvc import JobQueue
from queue_tools import api


def test_a_waiting_jobs_note_names_its_groups_busy_slots_once(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[groups.g1]\nslots = 1\n")
    worker = start_worker("--config", str(cfg))
    gate = tmp_path / "gate"
    drop(
        queue_root,
        "long.json",
        {"command": "sh", "args": ["-c", f"until [ -e {gate} ]; do sleep 0.05; done"], "group": "g1"},
    )
    worker.wait_for_line("started job=long")
    drop(queue_root, "next.json", {"command": "true", "group": "g1"})
    try:
        note = api.get_job(JobQueue(queue_root), "next").note or ""
        assert note.count("slots of group g1 busy") == 1, note
        assert "job long" in note, note
    finally:
        gate.touch()


def test_a_duration_longer_than_any_clock_is_a_clear_error(queue_root: Path) -> None:
    too_long = "99999999999999999999d"
    for args in (
        ["schedule", "add", "x", "--every", too_long, "--queue-dir", str(queue_root), "--", "echo"],
        ["clean", "--older-than", too_long, "--queue-dir", str(queue_root)],
    ):
        done = subprocess.run([EXECSVC, *args], check=False, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (args, done.stderr)
        assert "longer than any duration" in done.stderr and "Traceback" not in done.stderr, done.stderr
