"""The behaviour layer every front calls: :func:`queue_tools.api.cancel_job` (``execsvc cancel``
and the MCP ``cancel_job``) and :func:`queue_tools.submit.option_problem` (``execsvc submit``'s
option checks), on real queues under ``tmp_path`` with no worker (with one:
tests/e2e/test_behaviour_layer.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from execsvc import InvalidJobId, JobNotFound, JobQueue, JobSpec, JobState, JobStatus
from queue_tools import api
from queue_tools.api import CancelOutcome
from queue_tools.submit import option_problem, parse_env

# ----- cancel_job --------------------------------------------------------------------


def test_a_pending_job_is_cancelled_and_never_runs(queue_root: Path) -> None:
    queue = JobQueue(queue_root)
    job_id = queue.submit(JobSpec(command="echo", args=["never"]))
    done = api.cancel_job(queue, job_id, requested_by="test")
    assert done.outcome is CancelOutcome.CANCELLED and done.serving is None and done.waited_s == 0
    assert done.job.job_id == job_id and done.job.finished and done.job.status is JobStatus.CANCELLED
    assert done.job.result is not None and done.job.result.returncode is None  # it never ran
    assert queue.get(job_id).state is JobState.FAILED


def test_an_unknown_or_invalid_id_raises_the_precise_error(queue_root: Path) -> None:
    queue = JobQueue(queue_root)
    with pytest.raises(JobNotFound, match="no job with id 'nope'"):
        api.cancel_job(queue, "nope", requested_by="test")
    with pytest.raises(InvalidJobId):
        api.cancel_job(queue, "../etc/passwd", requested_by="test")


# ----- submit's option checks --------------------------------------------------------


def problem(**given: object) -> str | None:
    fields: dict[str, object] = {"command": None, "shell": None, "file": None, "options": {}}
    fields.update(given)
    return option_problem(**fields)  # type: ignore[arg-type]


def test_command_options_are_refused_with_a_job_file_or_a_script_on_stdin(tmp_path: Path) -> None:
    job_file = tmp_path / "job.json"
    for name, value in (("timeout_s", 5.0), ("cwd", tmp_path), ("env", ["A=1"]), ("description", "x")):
        flag = f"--{name.replace('_', '-')}"
        said = problem(file=job_file, **{name: value})
        assert said is not None and said.startswith(f"{flag} goes with a command"), said
        said = problem(stdin_is_terminal=False, **{name: value})
        assert said is not None and said.startswith(f"{flag} goes with a command"), said
        assert problem(command=["true"], **{name: value}) is None
        assert problem(shell="true", **{name: value}) is None


def test_scheduling_options_go_with_a_command_only(tmp_path: Path) -> None:
    said = problem(file=tmp_path / "job.json", options={"priority": 3, "after": ["a"]})
    assert said is not None and said.startswith("--after and the other scheduling options go with a command")
    said = problem(stdin_is_terminal=False, options={"retry_delay_s": 1.0})
    assert said is not None and said.startswith("--retry-delay-s and the other scheduling options")
    assert problem(command=["true"], options={"priority": 3}) is None


def test_file_goes_alone_and_something_must_be_given(tmp_path: Path) -> None:
    assert problem(file=tmp_path / "job.json", command=["true"]) == "give --file alone, without a command or --shell"
    assert problem(file=tmp_path / "job.json", shell="true") == "give --file alone, without a command or --shell"
    said = problem(stdin_is_terminal=True)
    assert said is not None and said.startswith("nothing to submit")
    assert problem(stdin_is_terminal=False) is None  # a script on stdin
    assert problem(file=tmp_path / "job.json") is None


def test_parse_env_takes_key_value_pairs() -> None:
    assert parse_env(["A=1", "B=x=y", "A=2", "C="]) == {"A": "2", "B": "x=y", "C": ""}
    assert parse_env(None) == {}
    for bad in ("A", "=1"):
        with pytest.raises(ValueError, match="--env takes KEY=VALUE"):
            parse_env([bad])
