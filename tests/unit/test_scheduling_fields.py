"""A pending job's scheduling fields read from its file and explained by the fronts, no worker (the
worker acting on them: tests/e2e/test_scheduling.py)."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import drop

from execsvc import JobQueue
from queue_tools import api


def test_get_job_explains_waiting(queue_root: Path, tmp_path: Path) -> None:
    queue = JobQueue(queue_root)
    drop(queue_root, "first.json", {"command": "true"}, mtime=time.time() - 10)
    drop(queue_root, "urgent.json", {"command": "true", "priority": 9})
    drop(queue_root, "dep.json", {"command": "true", "after": ["first"]})
    drop(queue_root, "soon.json", {"command": "true", "delay_s": 3600})
    drop(queue_root, "again.json", {"command": "true", "retries": 3, "attempt": 2, "retry_at": "2999-01-01T00:00:00Z"})
    assert "behind 1 job(s)" in (api.get_job(queue, "first").note or "")  # urgent goes first
    assert "behind 0 job(s)" in (api.get_job(queue, "urgent").note or "")
    assert "waiting for job(s) first" in (api.get_job(queue, "dep").note or "")
    assert "due at" in (api.get_job(queue, "soon").note or "")
    assert "retry 1 of 3 at 2999-01-01" in (api.get_job(queue, "again").note or "")


def test_peek_reads_scheduling_keys_however_they_are_written(tmp_path: Path) -> None:
    """The worker skips parsing jobs that cannot name a scheduling field; an escaped key still counts."""
    from execsvc.protocol.scheduling import PLAIN, peek

    plain, escaped = tmp_path / "plain.json", tmp_path / "escaped.json"
    plain.write_text('{"command": "true", "description": "priority 9"}')
    escaped.write_bytes(rb'{"command": "true", "\u0070riority": 9}')
    assert peek(plain, "json", 0) == PLAIN
    assert peek(escaped, "json", 0).priority == 9
