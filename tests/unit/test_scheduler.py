"""The worker's order of pending jobs, :class:`execsvc.scheduler.Scheduler`, driven directly: no
files, no worker. Where each dependency is comes from a dict (the ``lookup`` the worker passes),
time is a number the test chooses, so every case is exact (docs/protocol.md, "Order and claiming").
"""

from __future__ import annotations

import pytest

from execsvc.protocol.models import JobState, JobStatus
from execsvc.protocol.readiness import CONFIRM_MISSING_AFTER_S, Doomed, wait_reason
from execsvc.protocol.scheduling import SchedulingFields
from execsvc.scheduler import Scheduler

NOW = 1_000_000.0
PENDING = (JobState.PENDING, JobStatus.PENDING)
RUNNING = (JobState.RUNNING, JobStatus.RUNNING)
COMPLETED = (JobState.COMPLETED, JobStatus.COMPLETED)
FAILED = (JobState.FAILED, JobStatus.FAILED)


class Queue:
    """Where jobs are, as the worker's lookup says it; each offered job is pending until moved."""

    def __init__(self) -> None:
        self.where: dict[str, tuple[JobState, JobStatus]] = {}
        self.scheduler = Scheduler(self.where.get)

    def offer(self, job_id: str, mtime_ns: int = 0, now: float = NOW, **fields: object) -> None:
        self.where[job_id] = PENDING
        self.scheduler.offer(f"{job_id}.json", job_id, SchedulingFields(**fields), mtime_ns, now)  # type: ignore[arg-type]

    def ready(self) -> list[str]:
        """Take every ready job, in the order the worker would start them."""
        taken = []
        while (name := self.scheduler.take_ready()) is not None:
            taken.append(name.removesuffix(".json"))
        return taken

    def doomed(self) -> list[Doomed]:
        taken = []
        while (doomed := self.scheduler.take_doomed()) is not None:
            taken.append(doomed)
        return taken


# ----- priority and FIFO ----------------------------------------------------------------------


def test_higher_priority_first_then_the_older_file_then_the_name() -> None:
    queue = Queue()
    queue.offer("low-old", mtime_ns=1, priority=-5)
    queue.offer("b-tie", mtime_ns=50)
    queue.offer("a-tie", mtime_ns=50)
    queue.offer("newer", mtime_ns=90)
    queue.offer("older", mtime_ns=10)
    queue.offer("urgent-new", mtime_ns=99, priority=3)
    assert queue.ready() == ["urgent-new", "older", "a-tie", "b-tie", "newer", "low-old"]
    assert queue.scheduler.take_ready() is None and not queue.scheduler.has_ready()


def test_an_offer_again_replaces_the_first_and_a_forgotten_job_is_never_taken() -> None:
    queue = Queue()
    queue.offer("a", mtime_ns=1)
    queue.offer("b", mtime_ns=2)
    queue.offer("a", mtime_ns=3, priority=1)  # the file changed: its new fields count, once
    queue.offer("c", mtime_ns=4)
    queue.scheduler.forget("c.json")  # claimed, held or removed meanwhile
    assert queue.ready() == ["a", "b"]


# ----- due times ------------------------------------------------------------------------------


def test_a_job_due_later_waits_until_woken_at_its_due_time() -> None:
    queue = Queue()
    queue.offer("later", due_at=NOW + 60)
    queue.offer("sooner", due_at=NOW + 5)
    queue.offer("past", due_at=NOW - 60)  # a due time gone by is no wait
    assert queue.ready() == ["past"]
    assert queue.scheduler.next_due_at() == NOW + 5
    queue.scheduler.wake(NOW + 4.999)
    assert queue.ready() == []
    queue.scheduler.wake(NOW + 5)
    assert queue.ready() == ["sooner"] and queue.scheduler.next_due_at() == NOW + 60
    queue.scheduler.wake(NOW + 3600)
    assert queue.ready() == ["later"] and queue.scheduler.next_due_at() is None


def test_a_due_job_with_unfinished_dependencies_then_waits_for_them() -> None:
    queue = Queue()
    queue.offer("dep")
    queue.offer("job", due_at=NOW + 10, after=("dep",))
    assert queue.ready() == ["dep"]
    queue.where["dep"] = RUNNING
    queue.scheduler.wake(NOW + 10)
    assert queue.ready() == [] and "dep" in queue.scheduler.depended_on_ids
    queue.where["dep"] = COMPLETED
    queue.scheduler.settled("dep", NOW + 11)
    assert queue.ready() == ["job"] and "dep" not in queue.scheduler.depended_on_ids


def test_a_forgotten_timed_job_is_not_due() -> None:
    queue = Queue()
    queue.offer("gone", due_at=NOW + 5)
    queue.scheduler.forget("gone.json")
    assert queue.scheduler.next_due_at() is None


# ----- dependencies ---------------------------------------------------------------------------


def test_a_job_waits_for_every_unfinished_dependency_and_runs_once_all_completed() -> None:
    queue = Queue()
    queue.offer("a")
    queue.offer("b")
    queue.offer("c", after=("a", "b"))
    assert queue.ready() == ["a", "b"]
    assert set(queue.scheduler.depended_on_ids) == {"a", "b"}
    queue.where.update(a=COMPLETED, b=RUNNING)
    queue.scheduler.settled("a", NOW)
    assert queue.ready() == [] and set(queue.scheduler.depended_on_ids) == {"b"}
    queue.where["b"] = COMPLETED
    queue.scheduler.settled("b", NOW)
    assert queue.ready() == ["c"] and not queue.scheduler.depended_on_ids


def test_a_dependency_that_moved_unseen_is_found_by_a_recheck() -> None:
    queue = Queue()
    queue.where["dep"] = RUNNING
    queue.offer("job", after=("dep",))
    queue.where["dep"] = COMPLETED  # its record landed, and the event was lost
    queue.scheduler.recheck(NOW)
    assert queue.ready() == ["job"]


def test_a_forgotten_dependent_is_dropped_from_what_others_depend_on() -> None:
    queue = Queue()
    queue.where["dep"] = RUNNING
    queue.offer("job", after=("dep",))
    queue.scheduler.forget("job.json")
    assert not queue.scheduler.depended_on_ids


# ----- doomed: jobs that can never run --------------------------------------------------------


def test_a_dependency_that_failed_dooms_its_dependent_cancelled_unless_after_mode_is_any() -> None:
    queue = Queue()
    queue.where["build"] = FAILED
    queue.offer("strict", after=("build",))
    queue.offer("tolerant", after=("build",), after_mode="any")
    [doomed] = queue.doomed()
    assert (doomed.name, doomed.status) == ("strict.json", JobStatus.CANCELLED)
    assert "job 'build', which it runs after, ended failed" in doomed.reason
    assert queue.ready() == ["tolerant"]


def test_dependents_are_doomed_down_a_chain_as_each_one_is_recorded() -> None:
    """c after b after a: a fails, so b is recorded cancelled; then c, whose dependency b ended
    cancelled, is too. Each is doomed when the one before it is recorded (``settled``)."""
    queue = Queue()
    queue.offer("a")
    queue.offer("b", after=("a",))
    queue.offer("c", after=("b",))
    assert queue.ready() == ["a"]
    queue.where["a"] = FAILED
    queue.scheduler.settled("a", NOW)
    [b] = queue.doomed()
    assert (b.name, b.status) == ("b.json", JobStatus.CANCELLED)
    queue.where["b"] = (JobState.FAILED, JobStatus.CANCELLED)
    queue.scheduler.settled("b", NOW)
    [c] = queue.doomed()
    assert (c.name, c.status) == ("c.json", JobStatus.CANCELLED) and "ended cancelled" in c.reason
    assert queue.ready() == [] and not queue.scheduler.depended_on_ids


def test_an_unknown_dependency_dooms_a_job_invalid_only_at_the_second_look() -> None:
    queue = Queue()
    queue.offer("orphan", after=("no-such-job",))
    assert queue.doomed() == [] and queue.ready() == []
    assert queue.scheduler.next_due_at() == NOW + CONFIRM_MISSING_AFTER_S
    queue.scheduler.wake(NOW + CONFIRM_MISSING_AFTER_S)
    [doomed] = queue.doomed()
    assert (doomed.name, doomed.status) == ("orphan.json", JobStatus.INVALID)
    assert doomed.reason == "it runs after job 'no-such-job', which is not in this queue"


def test_a_dependency_found_at_the_second_look_is_waited_for() -> None:
    queue = Queue()
    queue.offer("job", after=("moving",))  # being moved between folders: not seen at the first look
    queue.where["moving"] = RUNNING
    queue.scheduler.wake(NOW + CONFIRM_MISSING_AFTER_S)
    assert queue.doomed() == [] and "moving" in queue.scheduler.depended_on_ids


@pytest.mark.parametrize(
    ("afters", "cycle"),
    [
        ({"x": ("x",)}, "x → x"),
        ({"x": ("y",), "y": ("x",)}, "y → x → y"),
        ({"x": ("y",), "y": ("z",), "z": ("x",)}, "z → x → y → z"),
    ],
)
def test_a_cycle_of_after_lists_dooms_every_job_in_it_invalid(afters: dict[str, tuple[str, ...]], cycle: str) -> None:
    queue = Queue()
    for job_id in afters:
        queue.where[job_id] = PENDING
    for job_id, after in afters.items():
        queue.offer(job_id, after=after)
    doomed = queue.doomed()
    assert sorted(d.name for d in doomed) == sorted(f"{job_id}.json" for job_id in afters)
    assert {d.status for d in doomed} == {JobStatus.INVALID}
    # one reason for all, naming the cycle from the job whose offer closed it (the last one)
    assert {d.reason for d in doomed} == {f"its 'after' list closes a dependency cycle: {cycle}"}
    assert queue.ready() == []


def test_a_job_after_a_cycle_but_outside_it_waits_and_is_doomed_when_the_cycle_is_recorded() -> None:
    queue = Queue()
    queue.offer("x", after=("y",))
    queue.offer("y", after=("x",))
    queue.offer("outside", after=("x",))
    assert sorted(d.name for d in queue.doomed()) == ["x.json", "y.json"]
    assert queue.ready() == [] and "x" in queue.scheduler.depended_on_ids
    queue.where.update(x=(JobState.FAILED, JobStatus.INVALID), y=(JobState.FAILED, JobStatus.INVALID))
    queue.scheduler.settled("x", NOW)
    [outside] = queue.doomed()
    assert (outside.name, outside.status) == ("outside.json", JobStatus.CANCELLED)


def test_a_doomed_job_forgotten_before_it_is_taken_is_not_taken() -> None:
    queue = Queue()
    queue.where["build"] = FAILED
    queue.offer("strict", after=("build",))
    queue.scheduler.forget("strict.json")
    assert queue.doomed() == []


# ----- every wait reason, as the fronts are told it --------------------------------------------

WHERE = {"run": RUNNING, "ok": COMPLETED, "bad": FAILED}


@pytest.mark.parametrize(
    ("fields", "held", "expected", "sentence"),
    [
        (SchedulingFields(), False, {}, None),
        (SchedulingFields(priority=9, after=("ok",)), False, {}, None),
        (SchedulingFields(), True, {"held": True}, None),
        (SchedulingFields(due_at=NOW + 1), False, {"due_at": NOW + 1}, None),
        (SchedulingFields(after=("run", "ok")), False, {"waiting_for": ("run",)}, None),
        (
            SchedulingFields(after=("ok", "gone")),
            False,
            {"missing": "gone"},
            "will be recorded invalid: it runs after job 'gone', which is not in this queue",
        ),
        (SchedulingFields(after=("bad",)), False, {}, "will be recorded cancelled: job 'bad', which it runs after"),
        (SchedulingFields(after=("bad",), after_mode="any"), False, {}, None),
        (
            SchedulingFields(after=("run",), due_at=NOW + 1),
            True,
            {"held": True, "due_at": NOW + 1, "waiting_for": ("run",)},
            None,
        ),
    ],
    ids=[
        "ready",
        "ready-after-completed",
        "held",
        "due-later",
        "waiting-for",
        "missing",
        "failed-dep",
        "failed-dep-any",
        "all-at-once",
    ],
)
def test_every_wait_reason(
    fields: SchedulingFields, held: bool, expected: dict[str, object], sentence: str | None
) -> None:
    reason = wait_reason(fields, WHERE.get, NOW, held=held, job_id="me")
    seen = {
        name: getattr(reason, name)
        for name, empty in (("held", False), ("due_at", None), ("waiting_for", ()), ("missing", None))
        if getattr(reason, name) != empty
    }
    assert seen == expected
    if sentence is None:
        assert reason.doomed is None and reason.doomed_sentence is None
    else:
        assert reason.doomed is not None and reason.doomed.name == "me"
        assert reason.doomed_sentence is not None and reason.doomed_sentence.startswith(sentence)
    assert reason.blocked == bool(expected or sentence)
