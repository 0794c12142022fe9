"""Groups without a worker (docs/protocol.md, "Groups"): the scheduler's line per group driven by
:class:`execsvc.groups.GroupSlots` as the worker drives it, the shared rule
:func:`execsvc.protocol.readiness.group_wait`, the ``group`` field and the config's tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from execsvc.config import ConfigError, WorkerConfig, load_config
from execsvc.groups import GroupSlots
from execsvc.protocol.models import JobOptions, JobState, JobStatus
from execsvc.protocol.pauses import pause_file_group, paused_in
from execsvc.protocol.readiness import GroupLoad, group_wait
from execsvc.protocol.scheduling import SchedulingFields, fields_from_head
from execsvc.scheduler import Scheduler

NOW = 1_000_000.0


class Worker:
    """The loop's part in a few lines: a scheduler, the group slots, the jobs holding a slot."""

    def __init__(self, config: WorkerConfig) -> None:
        self.where: dict[str, tuple[JobState, JobStatus]] = {}
        self.scheduler = Scheduler(self.where.get)
        self.created: list[tuple[str, int]] = []
        self.groups = GroupSlots(config, lambda group, slots: self.created.append((group, slots)))
        self.running: dict[str, tuple[str, int]] = {}

    def offer(self, job_id: str, mtime_ns: int, group: str = "default", priority: int = 0) -> None:
        fields = SchedulingFields(priority=priority, group=group)
        self.scheduler.offer(job_id, job_id, fields, mtime_ns, NOW)
        self.where[job_id] = (JobState.PENDING, JobStatus.PENDING)

    def start_all(self) -> list[str]:
        """What ``Launch._dispatch`` starts now, in order (each takes its group's lowest free slot)."""
        started = []
        while (name := self.scheduler.take_ready(self.groups.may_start)) is not None:
            group = name.split("-")[0] if "-" in name else "default"
            self.running[name] = (group, self.groups.acquire(group))
            started.append(name)
        return started

    def finish(self, job_id: str) -> None:
        self.groups.release(*self.running.pop(job_id))


def test_each_group_keeps_its_own_line_and_a_full_one_blocks_no_other() -> None:
    worker = Worker(WorkerConfig(slots=1, groups={"build": 1, "quick": 2}))
    for n, job_id in enumerate(["build-1", "build-2", "quick-1", "quick-2", "quick-3", "plain"]):
        worker.offer(job_id, mtime_ns=n, group=job_id.split("-")[0] if "-" in job_id else "default")
    assert worker.start_all() == ["build-1", "quick-1", "quick-2", "plain"]  # oldest first across groups
    assert worker.groups.wait("build") == "1/1 slots of group build busy"
    assert worker.groups.wait("quick") == "2/2 slots of group quick busy"
    worker.finish("quick-1")
    assert worker.start_all() == ["quick-3"]  # build is still full: its line waits, quick's goes on
    assert worker.running["quick-3"] == ("quick", 0)  # the lowest free slot index
    worker.finish("build-1")
    assert worker.start_all() == ["build-2"]


def test_priority_orders_the_heads_of_the_groups_with_a_free_slot() -> None:
    worker = Worker(WorkerConfig(slots=1, groups={"b": 1}, total_slots=1))
    worker.offer("default-old", mtime_ns=1)
    worker.offer("b-urgent", mtime_ns=9, group="b", priority=5)
    assert worker.start_all() == ["b-urgent"]  # total_slots = 1: one start in all
    assert worker.groups.wait("default") == "1/1 slots of the worker busy (total_slots, all groups)"
    worker.finish("b-urgent")
    assert worker.start_all() == ["default-old"]


def test_a_paused_group_keeps_its_jobs_and_others_go_on() -> None:
    worker = Worker(WorkerConfig(slots=2, groups={"gpu": 2}))
    worker.groups.paused = frozenset({"gpu"})
    worker.offer("gpu-1", mtime_ns=1, group="gpu")
    worker.offer("cpu", mtime_ns=2)
    assert worker.start_all() == ["cpu"]
    assert worker.groups.wait("gpu") == "group gpu is paused (execsvc group resume gpu)"
    worker.groups.paused = frozenset()
    assert worker.start_all() == ["gpu-1"]


def test_slot_indexes_are_the_lowest_free_and_distinct() -> None:
    groups = GroupSlots(WorkerConfig(groups={"gpu": 3}), lambda group, slots: None)
    assert [groups.acquire("gpu") for _ in range(3)] == [0, 1, 2]
    groups.release("gpu", 1)
    assert groups.acquire("gpu") == 1 and groups.running == 3
    groups.release("gpu", 7)  # not held: nothing changes
    assert groups.running == 3


def test_an_unknown_group_is_made_once_with_the_default_slots_or_refused() -> None:
    worker = Worker(WorkerConfig(slots=2))
    worker.offer("adhoc-1", mtime_ns=1, group="adhoc")
    worker.offer("adhoc-2", mtime_ns=2, group="adhoc")
    worker.offer("adhoc-3", mtime_ns=3, group="adhoc")
    assert worker.start_all() == ["adhoc-1", "adhoc-2"]
    assert worker.created == [("adhoc", 2)]
    strict = GroupSlots(WorkerConfig(groups={"build": 1}, unknown_groups="refuse"), lambda group, slots: None)
    assert strict.refusal("build") is None and strict.refusal("default") is None
    reason = strict.refusal("nope")
    assert reason is not None and "names the group 'nope'" in reason and "declared: build, default" in reason
    assert strict.may_start("nope")  # claimed to be recorded invalid: it needs no slot


def test_group_wait_says_paused_then_the_group_then_the_worker() -> None:
    assert group_wait("g", GroupLoad(2, 1)) is None
    assert group_wait("g", GroupLoad(2, 2)) == "2/2 slots of group g busy"
    assert group_wait("g", GroupLoad(2, 2, paused=True)) == "group g is paused (execsvc group resume g)"
    assert group_wait("g", GroupLoad(2, 0), total_running=4, total_slots=4) is not None


def test_the_group_field_from_json_and_text_headers() -> None:
    assert fields_from_head(b'{"command": "x", "group": "build"}', "json", NOW).group == "build"
    assert fields_from_head(b"#!/bin/sh\n# execsvc: group=gpu.a\ntrue\n", "text", NOW).group == "gpu.a"
    assert fields_from_head(b'{"command": "x"}', "json", NOW).group == "default"
    bad = fields_from_head(b'{"command": "x", "group": "../up"}', "json", NOW)
    assert bad.group == "default" and bad.problem is not None and "is not a group name" in bad.problem
    for name in ("", ".hidden", "-dash", "a/b", "x" * 65, "sp ace"):
        with pytest.raises(ValueError, match="is not a group name"):
            JobOptions(group=name)


def test_pause_file_names() -> None:
    assert pause_file_group(".paused.build") == "build"
    assert pause_file_group(".paused.") is None and pause_file_group("build.json") is None
    assert paused_in([".paused.a", "a.json", ".paused.b", ".paused..x"]) == {"a", "b"}


def test_the_config_tables_of_groups(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[worker]\ntotal_slots = 3\nunknown_groups = "refuse"\n[groups.default]\nslots = 2\n[groups.gpu]\nslots = 1\n'
    )
    config = load_config(path)
    assert config.slots == 2 and config.groups == {"gpu": 1} and config.total_slots == 3
    assert config.group_slots == {"default": 2, "gpu": 1} and config.capacity == 3
    for text, said in (
        ("[worker]\nslots = 1\n[groups.default]\nslots = 2\n", "differ"),
        ("[groups.gpu]\nslot = 1\n", "takes one key"),
        ("[groups.gpu]\nslots = 0\n", "at least 1"),
        ("[groups.'a/b']\nslots = 1\n", "not a group name"),
        ("[worker]\nunknown_groups = 'maybe'\n", "unknown_groups"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=said):
            load_config(path)
