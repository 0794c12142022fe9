"""One root exception: what execsvc raises on purpose is an ExecsvcError, so a caller catches it
with one clause; the cases a caller may handle on their own have precise children."""

from __future__ import annotations

from pathlib import Path

import pytest

from execsvc import JobQueue
from execsvc.config import ConfigError, load_config
from execsvc.protocol.errors import ExecsvcError, JobFileNameTaken, JobNotPending
from execsvc.runner import SpawnError, StartDeferred


def test_config_and_spawn_errors_are_execsvc_errors(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[worker]\nslots = 0\n")
    with pytest.raises(ExecsvcError) as caught:
        load_config(config)
    assert isinstance(caught.value, ConfigError) and isinstance(caught.value, ValueError)  # as before
    assert "slots" in str(caught.value)
    assert issubclass(SpawnError, ExecsvcError) and issubclass(StartDeferred, ExecsvcError)


def test_holding_a_job_that_started_says_so_precisely(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "queue")
    job_id = queue.submit({"command": "true"}, job_id="started")
    queue.claim(f"{job_id}.json")
    with pytest.raises(JobNotPending, match="only a pending job can be held") as caught:
        queue.hold(job_id)
    assert isinstance(caught.value, ValueError)  # callers that caught ValueError still do


def test_holding_a_job_whose_held_name_is_taken_moves_nothing(tmp_path: Path) -> None:
    queue = JobQueue(tmp_path / "queue")
    job_id = queue.submit({"command": "true"}, job_id="twin")
    stray = queue.layout.ensure_held() / f"{job_id}.json"
    stray.write_text("a file that is not this job")
    with pytest.raises(JobFileNameTaken, match="a held job already has this name") as caught:
        queue.hold(job_id)
    assert isinstance(caught.value, FileExistsError)  # callers that caught FileExistsError still do
    assert stray.read_text() == "a file that is not this job"
    assert (queue.layout.pending / f"{job_id}.json").exists()
