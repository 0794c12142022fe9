"""The behaviour layer every front shares (:mod:`queue_tools.api`), called directly on a real queue
under ``tmp_path`` with no worker: jobs are submitted, held, cancelled, and claimed and finished
through the protocol package (:class:`execsvc.protocol.queue.JobQueue`), as a worker would leave
them. What the fronts print of it is tested in tests/e2e/ (with a worker)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from execsvc import JobNotFound, JobQueue, JobState, JobStatus
from execsvc.protocol.models import JobResult
from queue_tools import api
from queue_tools.api import CancelOutcome


@pytest.fixture
def queue(tmp_path: Path) -> JobQueue:
    return JobQueue(tmp_path / "queue")


def aged(queue: JobQueue, job_id: str, seconds_ago: float) -> None:
    """Give a pending job file an older time (FIFO order and listings go by it)."""
    [path] = [entry.path for entry in queue.entries(JobState.PENDING) if entry.job_id == job_id]
    when = time.time() - seconds_ago
    os.utime(path, (when, when))


def completed(queue: JobQueue, job_id: str, stdout: bytes = b"") -> None:
    """Claim and finish a JSON job as a worker does, its output in ``logs/``."""
    queue.submit({"command": "echo", "args": ["hi"]}, job_id=job_id)
    job = queue.claim(f"{job_id}.json")
    queue.layout.stdout_log(job_id).write_bytes(stdout)
    now = datetime.now(UTC)
    result = JobResult(
        job_id=job_id,
        status=JobStatus.COMPLETED,
        returncode=0,
        started_at=now,
        completed_at=now,
        job_file=f"{job_id}.json",
    )
    queue.finish(job, result, None)


# ----- status and counts ----------------------------------------------------------------------


def test_counts_and_status_come_from_the_folders_and_say_no_worker_serves(queue: JobQueue) -> None:
    queue.submit({"command": "true"}, job_id="waits")
    queue.submit({"command": "true"}, job_id="held")
    queue.hold("held")
    queue.submit({"command": "true"}, job_id="claimed")
    queue.claim("claimed.json")
    completed(queue, "done")
    queue.submit({"command": "true"}, job_id="dropped")
    queue.cancel("dropped")
    status = api.queue_status(queue)
    assert status.queue_dir == str(queue.root)
    assert status.counts.model_dump() == {"pending": 2, "running": 1, "completed": 1, "failed": 1}
    assert status.worker.serving is False and status.worker.pid is None


# ----- listings -------------------------------------------------------------------------------


def test_pages_are_newest_first_and_their_cursors_walk_every_job_once(queue: JobQueue) -> None:
    for n in range(7):
        queue.submit({"command": "true"}, job_id=f"job-{n}")
        aged(queue, f"job-{n}", 100 - n)  # job-6 is the newest
    seen: list[str] = []
    cursor = None
    for _page in range(4):
        page = api.list_jobs(queue, limit=3, cursor=cursor)
        seen += [job.job_id for job in page.jobs]
        assert page.counts.pending == 7
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"job-{n}" for n in range(6, -1, -1)]
    with pytest.raises(ValueError):
        api.list_jobs(queue, cursor="not a cursor")


def test_listings_keep_the_states_asked_for_and_the_recent_ones(queue: JobQueue) -> None:
    completed(queue, "done")
    queue.submit({"command": "true"}, job_id="old")
    aged(queue, "old", 3600)
    assert [job.job_id for job in api.list_jobs(queue, states=(JobState.COMPLETED,)).jobs] == ["done"]
    assert [job.job_id for job in api.list_jobs(queue, since=timedelta(minutes=5)).jobs] == ["done"]
    [summary] = api.list_jobs(queue, states=(JobState.COMPLETED,)).jobs
    assert summary.status is JobStatus.COMPLETED and summary.exit_code == 0 and summary.command == "echo hi"


def test_waiting_only_keeps_the_pending_jobs_that_wait_for_more_than_their_turn(queue: JobQueue) -> None:
    queue.submit({"command": "true"}, job_id="turn")
    queue.submit({"command": "true"}, job_id="held")
    queue.hold("held")
    queue.submit({"command": "true", "delay_s": 3600}, job_id="later")
    queue.submit({"command": "true", "after": ["turn"]}, job_id="after")
    waiting = api.list_jobs(queue, waiting_only=True).jobs
    assert sorted(job.job_id for job in waiting) == ["after", "held", "later"]
    assert all(job.waiting for job in waiting)


# ----- one job: why it waits, its place in line -------------------------------------------------


def test_a_pending_job_is_told_its_place_behind_higher_priority_then_older_jobs(queue: JobQueue) -> None:
    queue.submit({"command": "true"}, job_id="oldest")
    aged(queue, "oldest", 30)
    queue.submit({"command": "true", "priority": 5}, job_id="urgent")
    queue.submit({"command": "true"}, job_id="mine")
    aged(queue, "mine", 10)
    queue.submit({"command": "true"}, job_id="newest")
    detail = api.get_job(queue, "mine")
    assert (detail.position, detail.jobs_ahead) == (3, 2)
    assert detail.waiting is not None and detail.waiting.reason == "behind 2 job(s)"
    assert detail.note is not None and "no worker is serving this queue" in detail.note
    assert api.get_job(queue, "urgent").position == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"after": ["dep"]}, "waiting for job(s) dep to finish"),
        ({"delay_s": 3600}, "due at "),
        (
            {"after": ["no-such-job"]},
            "will be recorded invalid: it runs after job 'no-such-job', which is not in this queue",
        ),
        ({"after": ["cycle"]}, "will be recorded invalid: its 'after' list closes a dependency cycle: me → cycle → me"),
        ({"after": ["dropped"]}, "will be recorded cancelled: job 'dropped', which it runs after, ended cancelled"),
        ({"after": ["dropped"], "after_mode": "any"}, "behind 1 job(s)"),  # dep is ready and older; cycle is doomed
    ],
    ids=["dependency", "due-later", "unknown-dependency", "cycle", "failed-dependency", "after-mode-any"],
)
def test_get_job_says_why_a_pending_job_waits_by_the_workers_rules(
    queue: JobQueue, fields: dict[str, object], reason: str
) -> None:
    queue.submit({"command": "true"}, job_id="dep")
    queue.submit({"command": "true", "after": ["me"]}, job_id="cycle")
    queue.submit({"command": "true"}, job_id="dropped")
    queue.cancel("dropped")
    queue.submit({"command": "true", **fields}, job_id="me")
    waiting = api.get_job(queue, "me").waiting
    assert waiting is not None and waiting.reason.startswith(reason), waiting.reason
    assert waiting.blocked is not reason.startswith("behind")


def test_a_held_job_says_so_and_how_to_let_it_go(queue: JobQueue) -> None:
    queue.submit({"command": "true"}, job_id="held")
    queue.hold("held")
    waiting = api.get_job(queue, "held").waiting
    assert waiting is not None and waiting.held
    assert waiting.reason == "held: it does not start until released (release_job, or execsvc release)"


def test_a_finished_job_has_its_result_and_no_place_in_line(queue: JobQueue) -> None:
    completed(queue, "done")
    detail = api.get_job(queue, "done")
    assert detail.finished and detail.state is JobState.COMPLETED and detail.waiting is None
    assert detail.position is None and detail.result is not None and detail.result.returncode == 0
    assert api.wait_for_job(queue, "done", 0).finished  # nothing to wait for
    with pytest.raises(JobNotFound):
        api.get_job(queue, "nope")


# ----- output and daemon.log ------------------------------------------------------------------


def test_output_is_read_in_chunks_from_an_offset_or_as_its_last_lines(queue: JobQueue) -> None:
    completed(queue, "done", stdout=b"one\ntwo\nthree\n")
    first = api.read_output(queue, "done", max_bytes=5)
    assert (first.text, first.offset, first.next_offset, first.size_bytes) == ("one\nt", 0, 5, 14)
    assert first.job_finished and not first.complete
    rest = api.read_output(queue, "done", offset=first.next_offset)
    assert rest.text == "wo\nthree\n" and rest.complete
    assert api.read_output(queue, "done", tail_lines=2).text == "two\nthree\n"
    assert api.read_output(queue, "done", "stderr").text == ""  # no log: empty, not an error
    with pytest.raises(ValueError, match="stream must be"):
        api.read_output(queue, "done", "stdin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="offset must be"):
        api.read_output(queue, "done", offset=-1)


def test_a_running_jobs_chunk_never_ends_inside_a_character(queue: JobQueue) -> None:
    queue.submit({"command": "true"}, job_id="runs")
    queue.claim("runs.json")
    queue.layout.stdout_log("runs").write_bytes("é".encode() * 3)  # 6 bytes
    chunk = api.read_output(queue, "runs", max_bytes=3)
    assert chunk.text == "é" and chunk.next_offset == 2 and not chunk.job_finished and not chunk.complete


def test_a_log_that_is_not_a_regular_file_is_named_not_read(queue: JobQueue) -> None:
    completed(queue, "done", stdout=b"")
    log = queue.layout.stdout_log("done")
    log.unlink()
    os.mkfifo(log)
    chunk = api.read_output(queue, "done")
    assert chunk.text == "" and chunk.problem is not None and "a FIFO, not a regular file" in chunk.problem


def test_daemon_log_tail_gives_the_last_lines_and_nothing_before_the_first(queue: JobQueue) -> None:
    assert api.daemon_log_tail(queue) == []
    queue.layout.daemon_log.write_text("".join(f"line {n}\n" for n in range(10)))
    assert api.daemon_log_tail(queue, lines=2) == ["line 8", "line 9"]


# ----- retry, cancel, durations ---------------------------------------------------------------


def test_retry_enqueues_a_finished_job_under_the_next_free_id(queue: JobQueue) -> None:
    completed(queue, "done")
    assert api.retry_job(queue, "done") == "done-r1"
    assert api.retry_job(queue, "done") == "done-r2"
    again = queue.get("done-r1")
    assert again.state is JobState.PENDING and again.spec is not None and again.spec["retry_of"] == "done"
    with pytest.raises(ValueError, match="still pending; only a finished job can be retried"):
        api.retry_job(queue, "done-r1")


def test_a_finished_job_is_left_as_it_is_by_cancel(queue: JobQueue) -> None:
    completed(queue, "done")
    done = api.cancel_job(queue, "done", requested_by="test")
    assert done.outcome is CancelOutcome.ALREADY_FINISHED and done.job.status is JobStatus.COMPLETED
    assert queue.get("done").state is JobState.COMPLETED


@pytest.mark.parametrize(
    ("text", "seconds"), [("45", 45), ("45s", 45), ("90m", 5400), ("1.5h", 5400), ("2d", 172_800), ("1w", 604_800)]
)
def test_durations_are_read_with_their_unit(text: str, seconds: float) -> None:
    assert api.parse_duration(text) == timedelta(seconds=seconds)


def test_a_duration_without_a_known_unit_is_refused() -> None:
    with pytest.raises(ValueError, match="is not a duration like 30d"):
        api.parse_duration("3 fortnights")
