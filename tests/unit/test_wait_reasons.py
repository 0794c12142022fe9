"""Why a pending job waits: the fronts (queue_tools.api) and the worker's scheduler give one answer.

The answer comes from one function, :func:`execsvc.protocol.readiness.wait_reason`, which the
worker's :class:`~execsvc.scheduler.Scheduler` and ``queue_tools.api`` both call; its
cases are tested directly here (the front against a real worker: tests/e2e/test_wait_reasons_worker.py).
"""

from __future__ import annotations

import time
from typing import Any

from execsvc import JobState, JobStatus
from execsvc.protocol.readiness import count_ahead, find_cycle, order_key, wait_reason
from execsvc.protocol.scheduling import SchedulingFields

MISSING = "it runs after job 'no-such-job', which is not in this queue"


# ----- the pure function, case by case ------------------------------------------------------------

NOW = 1_000_000.0


def where(**jobs: tuple[JobState, JobStatus]) -> Any:
    return jobs.get


def test_unknown_after_id_dooms_it_invalid() -> None:
    reason = wait_reason(SchedulingFields(after=("no-such-job",)), where(), NOW)
    assert reason.doomed is not None and reason.doomed.status is JobStatus.INVALID
    assert reason.doomed.reason == MISSING and reason.missing == "no-such-job"
    assert reason.blocked and reason.waiting_for == ()


def test_after_a_failed_job_with_after_mode_success_dooms_it_cancelled_but_any_runs() -> None:
    failed = where(build=(JobState.FAILED, JobStatus.FAILED))
    strict = wait_reason(SchedulingFields(after=("build",)), failed, NOW)
    assert strict.doomed is not None and strict.doomed.status is JobStatus.CANCELLED
    assert "job 'build', which it runs after, ended failed" in strict.doomed.reason and strict.missing is None
    tolerant = wait_reason(SchedulingFields(after=("build",), after_mode="any"), failed, NOW)
    assert tolerant.doomed is None and not tolerant.blocked


def test_an_unfinished_dependency_is_waited_for() -> None:
    running = where(a=(JobState.RUNNING, JobStatus.RUNNING), b=(JobState.COMPLETED, JobStatus.COMPLETED))
    reason = wait_reason(SchedulingFields(after=("a", "b")), running, NOW)
    assert reason.waiting_for == ("a",) and reason.doomed is None and reason.blocked


def test_a_cycle_dooms_it_invalid() -> None:
    afters = {"x": ("y",), "y": ("z",), "z": ("x",)}
    assert find_cycle("x", afters.get) == ["x", "y", "z"]
    assert find_cycle("x", {"x": ("y",), "y": ()}.get) == []
    pending = where(y=(JobState.PENDING, JobStatus.PENDING))
    reason = wait_reason(SchedulingFields(after=("y",)), pending, NOW, job_id="x", after_of=afters.get)
    assert reason.doomed is not None and reason.doomed.status is JobStatus.INVALID
    assert reason.doomed.reason == "its 'after' list closes a dependency cycle: x → y → z → x"


def test_not_before_in_the_future_is_due_later_and_in_the_past_is_ready() -> None:
    later = wait_reason(SchedulingFields(due_at=NOW + 60), where(), NOW)
    assert later.due_at == NOW + 60 and later.blocked
    past = wait_reason(SchedulingFields(due_at=NOW - 60), where(), NOW)
    assert past.due_at is None and not past.blocked


def test_held_waits_for_release() -> None:
    reason = wait_reason(SchedulingFields(), where(), NOW, held=True)
    assert reason.held and reason.blocked and reason.doomed is None


def test_ready_jobs_are_behind_higher_priority_then_older_ones() -> None:
    mine = order_key(SchedulingFields(priority=1), 500, "mine.json")
    keys = [
        mine,
        order_key(SchedulingFields(priority=2), 900, "urgent.json"),  # higher priority, newer: ahead
        order_key(SchedulingFields(priority=1), 100, "older.json"),  # same priority, older: ahead
        order_key(SchedulingFields(priority=1), 900, "newer.json"),  # same priority, newer: behind
        order_key(SchedulingFields(), 1, "low.json"),  # lower priority, oldest: behind
    ]
    assert count_ahead(mine, keys) == 2
    assert wait_reason(SchedulingFields(priority=1), where(), time.time()).blocked is False
