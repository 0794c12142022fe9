"""A schedule's due times and run ids without a worker (execsvc.protocol.schedules): cron in a zone
across both DST changes of 2026 in Europe/Paris, checked against cronsim itself and against the
times written out by hand; intervals; the id rule; schedule files that are no schedule."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from execsvc.protocol.errors import InvalidSchedule
from execsvc.protocol.schedules import (
    Schedule,
    due_of_run_id,
    last_due,
    next_due,
    parse_schedule,
    read_schedule_file,
    run_id,
)

PARIS = ZoneInfo("Europe/Paris")


def dues(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    found, at = [], start
    for _ in range(count):
        at = next_due(schedule, at)
        found.append(at)
    return found


def paris(expr: str) -> Schedule:
    return Schedule(job={"command": "true"}, cron=expr, timezone="Europe/Paris")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def test_daily_0230_across_spring_forward_runs_at_the_change() -> None:
    # 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 does not exist that day; it is due at 03:00 CEST
    got = dues(paris("30 2 * * *"), utc(2026, 3, 27, 12), 4)
    assert got == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30)]
    library = CronSim("30 2 * * *", datetime(2026, 3, 27, 12, tzinfo=PARIS))
    assert got == [next(library).astimezone(UTC) for _ in range(4)]


def test_daily_0230_across_fall_back_runs_once() -> None:
    # 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice; it is due once (the first)
    got = dues(paris("30 2 * * *"), utc(2026, 10, 23, 12), 4)
    assert got == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
        utc(2026, 10, 27, 1, 30),
    ]
    library = CronSim("30 2 * * *", datetime(2026, 10, 23, 12, tzinfo=PARIS))
    assert got == [next(library).astimezone(UTC) for _ in range(4)]


def test_hourly_across_both_changes() -> None:
    hourly = paris("0 * * * *")
    spring = dues(hourly, utc(2026, 3, 28, 23, 30), 4)  # 00:30 CET
    assert spring == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2), utc(2026, 3, 29, 3)]
    assert [d.astimezone(PARIS).hour for d in spring] == [1, 3, 4, 5]  # no 02:00 that night: 23 runs that day
    fall = dues(hourly, utc(2026, 10, 24, 22, 30), 5)  # 00:30 CEST
    assert fall == [
        utc(2026, 10, 24, 23),
        utc(2026, 10, 25, 0),
        utc(2026, 10, 25, 1),
        utc(2026, 10, 25, 2),
        utc(2026, 10, 25, 3),
    ]
    assert [d.astimezone(PARIS).hour for d in fall] == [1, 2, 2, 3, 4]  # both 02:00 hours: 25 runs that day
    ids = [run_id("h", hourly, d) for d in fall]
    assert len(set(ids)) == 5 and ids == sorted(ids), "UTC ids: the repeated hour gives two ids, in order"
    library = CronSim("0 * * * *", utc(2026, 10, 24, 22, 30).astimezone(PARIS))
    assert fall == [next(library).astimezone(UTC) for _ in range(5)]


def test_last_due_is_at_or_before() -> None:
    daily = paris("30 2 * * *")
    assert last_due(daily, utc(2026, 3, 29, 1, 0)) == utc(2026, 3, 29, 1, 0)  # exactly due: itself
    assert last_due(daily, utc(2026, 3, 29, 0, 59, 59)) == utc(2026, 3, 28, 1, 30)
    every = Schedule(job={"command": "true"}, every_s=600)
    assert last_due(every, utc(2026, 12, 1, 8, 19, 59)) == utc(2026, 12, 1, 8, 10)
    assert next_due(every, utc(2026, 12, 1, 8, 10)) == utc(2026, 12, 1, 8, 20), "strictly after"


def test_interval_due_times_are_multiples_of_it_since_the_epoch() -> None:
    every = Schedule(job={"command": "true"}, every_s=90)
    start = utc(2026, 12, 1, 8, 0, 10)
    got = dues(every, start, 3)
    assert all(int(d.timestamp()) % 90 == 0 for d in got)
    assert [b - a for a, b in itertools.pairwise(got)] == [timedelta(seconds=90)] * 2


def test_run_ids() -> None:
    cron = Schedule(job={"command": "true"}, cron="5 8 * * *", timezone="Europe/Paris")
    assert run_id("nightly", cron, utc(2026, 12, 1, 7, 5)) == "nightly-20261201T0705"
    seconds = Schedule(job={"command": "true"}, every_s=1)
    assert run_id("tick", seconds, utc(2026, 12, 1, 8, 5, 1)) == "tick-20261201T080501"
    minutes = Schedule(job={"command": "true"}, every_s=60)
    assert run_id("m", minutes, utc(2026, 12, 1, 8, 5)) == "m-20261201T0805"
    assert due_of_run_id("tick", "tick-20261201T080501") == utc(2026, 12, 1, 8, 5, 1)
    assert due_of_run_id("nightly", "nightly-20261201T0705") == utc(2026, 12, 1, 7, 5)
    assert due_of_run_id("tick", "tick-2-20261201T080501") is None  # another schedule's run
    assert due_of_run_id("tick", "tick-20261201T080501-2") is None
    assert due_of_run_id("tick", "other") is None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{", "not JSON"),
        (b"[]", "a JSON object"),
        (json.dumps({"job": {"command": "x"}}).encode(), "either 'cron' or 'every_s'"),
        (json.dumps({"job": {"command": "x"}, "cron": "* * *"}).encode(), "5 fields"),
        (json.dumps({"job": {"command": "x"}, "cron": "61 * * * *"}).encode(), "Bad minute"),
        (json.dumps({"job": {"command": "x"}, "every_s": 0}).encode(), "every_s"),
        (json.dumps({"job": {"command": "x"}, "every_s": "5"}).encode(), "every_s"),
        (json.dumps({"job": {"command": "x"}, "every_s": 5, "timezone": "Mars/Olympus"}).encode(), "unknown time zone"),
        (json.dumps({"job": {"command": "x"}, "every_s": 5, "overlap": "pile"}).encode(), "overlap"),
        (json.dumps({"job": {"command": "x"}, "every_s": 5, "evry": 1}).encode(), "evry"),
        (json.dumps({"job": {"args": ["x"]}, "every_s": 5}).encode(), "command"),
        (json.dumps({"job": {"command": "x", "timeout_s": "5"}, "every_s": 5}).encode(), "timeout_s"),
    ],
)
def test_a_file_that_is_no_schedule_says_why(content: bytes, reason: str) -> None:
    with pytest.raises(InvalidSchedule, match=reason):
        parse_schedule(content)


def test_schedule_files_that_are_not_regular_or_badly_named(tmp_path: Path) -> None:
    (tmp_path / "target.json").write_text(json.dumps({"every_s": 5, "job": {"command": "x"}}))
    (tmp_path / "link.json").symlink_to(tmp_path / "target.json")
    assert read_schedule_file(tmp_path / "link.json").error == "not a regular file"
    (tmp_path / "-bad.json").write_text("{}")
    assert "name" in (read_schedule_file(tmp_path / "-bad.json").error or "")
    good = read_schedule_file(tmp_path / "target.json")
    assert good.error is None and good.schedule is not None and good.schedule.every_s == 5


def test_the_nightly_schedule_file_of_the_docs_is_a_schedule() -> None:
    text = (Path(__file__).parents[2] / "docs" / "scheduling.md").read_text()
    section = text[text.index("## Recurring jobs") :]
    block = section.split("<<'SCHEDULE'\n", 1)[1].split("SCHEDULE\n", 1)[0]
    schedule = parse_schedule(block.encode())
    assert schedule.cron == "30 2 * * *" and schedule.catch_up and schedule.timezone == "Europe/Paris"
    due = next_due(schedule, utc(2026, 12, 1, 12))
    assert run_id("nightly", schedule, due) == "nightly-20261202T0130", "the id the page gives"
