"""Recurring jobs with a real worker: schedule files in ``schedules/`` become runs in ``pending/``
(docs/protocol.md, "Schedules"). The due-time rules without a worker: tests/unit/test_schedule_times.py;
kill -9 of the worker: tests/faults/test_schedule_crash.py."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from conftest import BIN, EXECSVC, daemon_log, wait_finished, wait_until
from mcp_calls import run, structured
from web_server import WebServer

from execsvc import JobQueue
from execsvc.protocol.schedules import due_of_run_id, run_ids

QUEUE_VIEW = BIN / "queue-view"


def write_schedule(queue_root: Path, name: str, content: dict[str, Any] | str, *, mtime: float | None = None) -> Path:
    """Write ``schedules/<name>.json`` as a careful foreign tool does: a hidden temp file, then rename."""
    folder = queue_root / "schedules"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = folder / f".{name}.tmp"
    tmp.write_text(content if isinstance(content, str) else json.dumps(content))
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.rename(tmp, folder / f"{name}.json")
    return folder / f"{name}.json"


def ids_of(queue_root: Path, name: str) -> list[str]:
    return run_ids(JobQueue(queue_root).layout, name)


def test_every_second_enqueues_one_run_per_due_time_in_order(queue_root: Path, start_worker: Any) -> None:
    worker = start_worker()
    write_schedule(queue_root, "tick", {"every_s": 1, "overlap": "queue", "job": {"command": "true"}})
    worker.wait_for_line("schedule_loaded")
    wait_until(lambda: len(ids_of(queue_root, "tick")) >= 4, timeout_s=15, what="four runs of tick")
    ids = ids_of(queue_root, "tick")
    assert all(re.fullmatch(r"tick-[0-9]{8}T[0-9]{6}", job_id) for job_id in ids), ids
    dues = [due_of_run_id("tick", job_id) for job_id in ids]
    assert all(due is not None for due in dues)
    # one run per due time, in order, none twice (a loop woken late under load makes one run of the
    # times it missed: the latest, so a step can be 2 s, never 0 s)
    steps = [(b - a).total_seconds() for a, b in itertools.pairwise(dues) if a and b]
    assert steps and all(step >= 1 and step.is_integer() for step in steps), ids
    for job_id in ids[:3]:
        info = wait_finished(queue_root, job_id)
        assert info.status.value == "completed"
        assert info.spec is not None and info.spec["schedule"]["name"] == "tick"
        assert info.spec["submitted_by"] == "schedule tick"
    assert "renamed" not in daemon_log(queue_root)


def test_overlap_skip_skips_while_a_run_is_still_going(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    release = tmp_path / "release"
    holding = f"while [ ! -e {release} ]; do sleep 0.05; done"
    worker = start_worker("--slots", "2")
    write_schedule(queue_root, "slow", {"every_s": 1, "job": {"command": holding}})
    worker.wait_for_line("started job=slow-")
    skipped = worker.wait_for_line("schedule_skipped", timeout_s=10)
    first = ids_of(queue_root, "slow")[0]
    assert f"run={first}" in skipped and "state=running" in skipped
    worker.wait_for_line("schedule_skipped job=slow-", timeout_s=10)
    assert ids_of(queue_root, "slow") == [first], "no second run while the first still runs"
    release.touch()
    wait_finished(queue_root, first)
    wait_until(lambda: len(ids_of(queue_root, "slow")) >= 2, timeout_s=10, what="the next run after the first ended")


def test_overlap_queue_enqueues_while_a_run_is_still_going(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    release = tmp_path / "release"
    holding = f"while [ ! -e {release} ]; do sleep 0.05; done"
    worker = start_worker()
    write_schedule(queue_root, "piled", {"every_s": 1, "overlap": "queue", "job": {"command": holding}})
    worker.wait_for_line("started job=piled-")
    wait_until(lambda: len(ids_of(queue_root, "piled")) >= 3, timeout_s=10, what="runs queued behind the first")
    assert "schedule_skipped" not in daemon_log(queue_root)
    release.touch()


def _missed_schedule(catch_up: bool) -> dict[str, Any]:
    return {"every_s": 60, "catch_up": catch_up, "job": {"command": "true"}}


def test_catch_up_runs_once_at_start_for_missed_times(queue_root: Path, start_worker: Any) -> None:
    written = time.time() - 600  # ten due times were missed while no worker served the queue
    JobQueue(queue_root)
    write_schedule(queue_root, "nightly", _missed_schedule(True), mtime=written)
    write_schedule(queue_root, "plain", _missed_schedule(False), mtime=written)
    worker = start_worker()
    line = worker.wait_for_line("schedule_enqueued job=nightly-")
    assert "catch_up=true" in line
    ids = ids_of(queue_root, "nightly")
    assert len(ids) == 1, ids
    due = due_of_run_id("nightly", ids[0])
    assert due is not None
    now = datetime.now(UTC)
    assert now - timedelta(seconds=60) < due <= now, "the latest missed due time"
    wait_finished(queue_root, ids[0])
    assert ids_of(queue_root, "plain") == [], "no catch-up without catch_up"
    worker.stop()
    # a restart finds the catch-up run in the queue: that missed time is not run again (a minute
    # that went by since may be: it was missed too)
    worker = start_worker()
    worker.wait_for_line("schedule_loaded schedule=nightly")
    after = ids_of(queue_root, "nightly")
    assert after[0] == ids[0] and len(after) <= 2, after
    assert daemon_log(queue_root).count(f"schedule_enqueued job={ids[0]} ") == 1


def test_malformed_schedule_file_is_logged_and_the_worker_keeps_running(
    queue_root: Path, start_worker: Any, tmp_path: Path
) -> None:
    worker = start_worker()
    write_schedule(queue_root, "broken", "{not json")
    line = worker.wait_for_line("schedule_invalid schedule=broken")
    assert "not JSON" in line
    write_schedule(queue_root, "typo", {"every_s": 1, "cron": "* * * * *", "job": {"command": "true"}})
    assert "either 'cron' or 'every_s'" in worker.wait_for_line("schedule_invalid schedule=typo")
    write_schedule(queue_root, "badjob", {"cron": "* * * * *", "job": {"command": 5}})
    assert "job" in worker.wait_for_line("schedule_invalid schedule=badjob")
    job_id = JobQueue(queue_root).submit({"command": "echo", "args": ["alive"]})
    assert wait_finished(queue_root, job_id).status.value == "completed"
    assert worker.proc.poll() is None
    # mended, it runs
    write_schedule(queue_root, "broken", {"every_s": 1, "job": {"command": "true"}})
    worker.wait_for_line("schedule_enqueued job=broken-", timeout_s=10)


def _cli(queue_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXECSVC_QUEUE_DIR": str(queue_root)}  # the command's own words end at --
    return subprocess.run([str(EXECSVC), *args], capture_output=True, text=True, timeout=30, check=False, env=env)


def test_schedule_commands_add_list_remove_and_the_worker_runs_it(queue_root: Path, start_worker: Any) -> None:
    added = _cli(queue_root, "schedule", "add", "beat", "--every", "1s", "--overlap", "queue", "--", "echo", "hi")
    assert added.returncode == 0, added.stderr
    assert "every 1s" in added.stdout
    saved = json.loads((queue_root / "schedules" / "beat.json").read_text())
    assert saved["every_s"] == 1 and saved["overlap"] == "queue" and saved["job"]["args"] == ["hi"]
    twice = _cli(queue_root, "schedule", "add", "beat", "--every", "1s", "--", "true")
    assert twice.returncode == 1 and "--replace" in twice.stderr
    bad = _cli(queue_root, "schedule", "add", "bad", "--cron", "61 * * * *", "--", "true")
    assert bad.returncode == 2 and "Bad minute" in bad.stderr
    neither = _cli(queue_root, "schedule", "add", "bad", "--", "true")
    assert neither.returncode == 2 and "--cron or --every" in neither.stderr
    added = _cli(
        queue_root,
        "schedule",
        "add",
        "nightly",
        "--cron",
        "30 2 * * *",
        "--timezone",
        "Europe/Paris",
        "--catch-up",
        "--",
        "true",
    )
    assert added.returncode == 0, added.stderr
    worker = start_worker()
    first = worker.wait_for_line("schedule_enqueued job=beat-").split("job=")[1].split()[0]
    assert wait_finished(queue_root, first).result.stdout == "hi\n"  # type: ignore[union-attr]
    listed = _cli(queue_root, "schedule", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    by_name = {item["name"]: item for item in json.loads(listed.stdout)}
    assert by_name["beat"]["when"] == "every 1s" and by_name["beat"]["last_run"].startswith("beat-")
    assert by_name["nightly"]["when"] == "cron 30 2 * * *" and by_name["nightly"]["timezone"] == "Europe/Paris"
    assert datetime.fromisoformat(by_name["nightly"]["next_due"]).astimezone(ZoneInfo("Europe/Paris")).minute == 30
    text = _cli(queue_root, "schedule", "list").stdout
    assert "beat  every 1s" in text and "nightly  cron 30 2 * * *  zone=Europe/Paris" in text
    removed = _cli(queue_root, "schedule", "remove", "beat")
    assert removed.returncode == 0, removed.stderr
    worker.wait_for_line("schedule_removed schedule=beat")
    count = len(ids_of(queue_root, "beat"))
    assert _cli(queue_root, "schedule", "remove", "beat").returncode == 1
    job_id = JobQueue(queue_root).submit({"command": "sleep 1.5"})  # a job that spans a due time or two
    wait_finished(queue_root, job_id)
    assert len(ids_of(queue_root, "beat")) == count, "no run once the schedule was removed"


def test_queue_view_mcp_and_web_show_schedules(queue_root: Path, start_worker: Any, tmp_path: Path) -> None:
    start_worker()
    write_schedule(queue_root, "tick", {"every_s": 1, "overlap": "queue", "job": {"command": "true"}})
    write_schedule(queue_root, "broken", {"every_s": 1})
    wait_until(lambda: bool(ids_of(queue_root, "tick")), timeout_s=10, what="a run of tick")
    viewed = subprocess.run(
        [str(QUEUE_VIEW), "--queue-dir", str(queue_root), "schedules", "--json"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    by_name = {item["name"]: item for item in json.loads(viewed.stdout)}
    assert by_name["tick"]["last_run"].startswith("tick-") and by_name["tick"]["next_due"]
    assert "job" in by_name["broken"]["error"] and set(by_name["broken"]) == {"name", "error"}
    table = subprocess.run(
        [str(QUEUE_VIEW), "--queue-dir", str(queue_root), "schedules"], capture_output=True, text=True, timeout=30,
        check=True,
    ).stdout  # fmt: skip
    assert "tick" in table and "every 1s" in table and "invalid" in table

    async def session(client: Any) -> None:
        answer = structured(await client.call_tool("list_schedules", {}))
        names = {item["name"]: item for item in answer["schedules"]}
        assert names["tick"]["when"] == "every 1s" and "error" in names["broken"]
        assert "null" not in json.dumps(answer)

    run(session, queue_root)

    server = WebServer(queue_root)
    try:
        status, headers, _ = server.request("GET", f"/schedules?token={server.token}")
        cookie = {"Cookie": headers["set-cookie"].split(";")[0]}
        status, _, page = server.request("GET", "/schedules", headers=cookie)
        assert status == 200
        assert 'id="schedule-tick"' in page and "every 1s" in page and "invalid:" in page
        _, _, home = server.request("GET", "/", headers=cookie)
        assert 'href="/schedules"' in home
    finally:
        server.stop()


def test_a_schedules_folder_others_can_write_runs_nothing(queue_root: Path, start_worker: Any) -> None:
    JobQueue(queue_root)
    write_schedule(queue_root, "tick", {"every_s": 1, "job": {"command": "true"}})
    (queue_root / "schedules").chmod(0o777)  # whoever can write a schedule could run commands as us
    worker = start_worker()
    assert "chmod 700" in worker.wait_for_line("schedules_unsafe")
    job_id = JobQueue(queue_root).submit({"command": "sleep 1.5"})  # the worker serves jobs, past due times
    assert wait_finished(queue_root, job_id).status.value == "completed"
    assert ids_of(queue_root, "tick") == []


def test_a_disabled_schedule_runs_nothing_until_enabled(queue_root: Path, start_worker: Any) -> None:
    worker = start_worker()
    schedule = {"every_s": 1, "enabled": False, "job": {"command": "true"}}
    write_schedule(queue_root, "paused", schedule)
    worker.wait_for_line("schedule_disabled schedule=paused")
    job_id = JobQueue(queue_root).submit({"command": "sleep 1.5"})  # spans a due time or two
    wait_finished(queue_root, job_id)
    assert ids_of(queue_root, "paused") == []
    write_schedule(queue_root, "paused", {**schedule, "enabled": True})
    worker.wait_for_line("schedule_enqueued job=paused-", timeout_s=10)
