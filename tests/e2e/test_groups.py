"""Groups with a real worker and real processes (docs/protocol.md, "Groups"): each group's own slots
and line, pausing a group (across a restart), EXECSVC_GROUP / EXECSVC_SLOT, unknown groups.

Overlap is proven by files the jobs write, never by timing: a job that must run at the same time as
another waits (bounded) for the other's file and fails if it never comes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from conftest import EXECSVC, daemon_log, drop, wait_finished

from execsvc import JobQueue, JobState, JobStatus
from queue_tools import api

PY = sys.executable
WAIT_S = 20  # how long a job waits for another's file before it gives up (fails the test)


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def meet(me: Path, others: list[Path], then: str = "true") -> str:
    """A shell line: write ``me``, wait until every file in ``others`` exists (at most WAIT_S), then ``then``."""
    waits = " && ".join(f"test -e {other}" for other in others) or "true"
    return (
        f"touch {me}; n=0; until {waits}; do n=$((n+1)); [ $n -gt {WAIT_S * 20} ] && exit 9; sleep 0.05; done; {then}"
    )


def marks_of(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_two_groups_of_one_slot_run_at_once_each_in_its_own_fifo_order(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    cfg = config(tmp_path, "[groups.build]\nslots = 1\n[groups.quick]\nslots = 1\n")
    marks = tmp_path / "marks"
    # build-1 and quick-1 each wait for the other's file: they pass only if they run at once.
    base = 1_700_000_000
    jobs = [
        ("build-1", "build", meet(tmp_path / "b1", [tmp_path / "q1"])),
        ("quick-1", "quick", meet(tmp_path / "q1", [tmp_path / "b1"])),
        ("build-2", "build", "true"),
        ("quick-2", "quick", "true"),
        ("build-3", "build", "true"),
        ("quick-3", "quick", "true"),
    ]
    for n, (job_id, group, line) in enumerate(jobs):
        drop(
            queue_root,
            f"{job_id}.json",
            {"command": f"echo {job_id} >> {marks}; {line}", "group": group},
            mtime=base + n,
        )
    start_worker("--config", str(cfg))
    for job_id, group, _line in jobs:
        info = wait_finished(queue_root, job_id)
        assert info.status is JobStatus.COMPLETED, info.result
        assert info.result is not None and info.result.group == group and info.result.slot == 0
    order = marks_of(marks)
    assert [m for m in order if m.startswith("build")] == ["build-1", "build-2", "build-3"]
    assert [m for m in order if m.startswith("quick")] == ["quick-1", "quick-2", "quick-3"]


def test_a_full_group_does_not_block_another(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    cfg = config(tmp_path, "[groups.long]\nslots = 1\n")
    gate = tmp_path / "gate"
    worker = start_worker("--config", str(cfg))
    drop(queue_root, "long-1.json", {"command": meet(tmp_path / "l1", [gate]), "group": "long"})
    worker.wait_for_line("started job=long-1")
    drop(queue_root, "long-2.json", {"command": "true", "group": "long"})
    drop(queue_root, "ls.json", {"command": "true"})  # the default group: free while long is full
    assert wait_finished(queue_root, "ls").status is JobStatus.COMPLETED
    queue = JobQueue(queue_root)
    assert queue.get("long-1").state is JobState.RUNNING and queue.get("long-2").state is JobState.PENDING
    waiting = api.waiting_of(queue, queue.get("long-2"))
    assert "1/1 slots of group long busy" in waiting.reason
    gate.touch()
    assert wait_finished(queue_root, "long-2").status is JobStatus.COMPLETED


def test_pause_keeps_a_groups_jobs_pending_across_a_restart_and_resume_starts_them(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    import subprocess

    cfg = config(tmp_path, "[groups.gpu]\nslots = 2\n")
    queue = JobQueue(queue_root)
    worker = start_worker("--config", str(cfg))
    done = subprocess.run(
        [EXECSVC, "group", "pause", "gpu", "--queue-dir", str(queue_root)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    worker.wait_for_line("group_paused group=gpu")
    drop(queue_root, "train.json", {"command": "true", "group": "gpu"})
    drop(queue_root, "other.json", {"command": "true"})
    assert wait_finished(queue_root, "other").status is JobStatus.COMPLETED  # train was seen before it
    assert queue.get("train").state is JobState.PENDING
    assert "group gpu is paused" in api.waiting_of(queue, queue.get("train")).reason
    assert worker.stop() == 0
    worker = start_worker("--config", str(cfg))  # the pause is a file in the queue: it holds
    drop(queue_root, "other-2.json", {"command": "true"})
    assert wait_finished(queue_root, "other-2").status is JobStatus.COMPLETED
    assert queue.get("train").state is JobState.PENDING and queue.paused_groups() == {"gpu"}
    listed = subprocess.run(
        [EXECSVC, "group", "list", "--queue-dir", str(queue_root)], capture_output=True, text=True, check=True
    ).stdout
    assert "gpu" in listed and "paused" in listed
    resumed = subprocess.run(
        [EXECSVC, "group", "resume", "gpu", "--queue-dir", str(queue_root)], capture_output=True, text=True, check=False
    )
    assert resumed.returncode == 0, resumed.stderr
    info = wait_finished(queue_root, "train")
    assert info.status is JobStatus.COMPLETED and info.result is not None and info.result.group == "gpu"
    assert "group_resumed group=gpu" in daemon_log(queue_root)


def test_a_pause_file_a_foreign_tool_touches_pauses_the_group(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    worker = start_worker()
    (queue_root / "pending" / ".paused.default").touch()
    worker.wait_for_line("group_paused group=default")
    drop(queue_root, "a.json", {"command": "true"})
    drop(queue_root, "b.json", {"command": "true", "group": "other"})  # after a, in a group made for it
    assert wait_finished(queue_root, "b").status is JobStatus.COMPLETED
    assert JobQueue(queue_root).get("a").state is JobState.PENDING  # first in line, but its group is paused
    (queue_root / "pending" / ".paused.default").unlink()
    worker.wait_for_line("group_resumed group=default")
    assert wait_finished(queue_root, "a").status is JobStatus.COMPLETED


def test_slots_of_a_group_are_distinct_among_its_running_jobs(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    cfg = config(tmp_path, "[groups.gpu]\nslots = 3\n")
    names = [f"g{n}" for n in range(3)]
    start_worker("--config", str(cfg))
    for name in names:
        others = [tmp_path / f"{other}.up" for other in names if other != name]
        line = meet(
            tmp_path / f"{name}.up", others, then=f'echo "$EXECSVC_GROUP $EXECSVC_SLOT" > {tmp_path}/{name}.slot'
        )
        drop(queue_root, f"{name}.json", {"command": line, "group": "gpu"})
    records = [wait_finished(queue_root, name) for name in names]
    assert all(info.status is JobStatus.COMPLETED for info in records), [info.result for info in records]
    seen = [(tmp_path / f"{name}.slot").read_text().split() for name in names]
    assert sorted(seen) == [["gpu", "0"], ["gpu", "1"], ["gpu", "2"]]
    assert sorted(info.result.slot for info in records if info.result) == [0, 1, 2]


def test_total_slots_cap_all_groups_together(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    cfg = config(tmp_path, "[worker]\ntotal_slots = 1\n[groups.a]\nslots = 1\n[groups.b]\nslots = 1\n")
    gate = tmp_path / "gate"
    worker = start_worker("--config", str(cfg))
    drop(queue_root, "first.json", {"command": meet(tmp_path / "f", [gate]), "group": "a"})
    worker.wait_for_line("started job=first")
    drop(queue_root, "second.json", {"command": "true", "group": "b"})
    queue = JobQueue(queue_root)
    assert "1/1 slots of the worker busy" in api.waiting_of(queue, queue.get("second")).reason
    gate.touch()
    assert wait_finished(queue_root, "second").status is JobStatus.COMPLETED


def test_an_unknown_group_is_created_with_the_default_slots(queue_root: Path, start_worker: Any) -> None:
    worker = start_worker("--slots", "2")
    drop(queue_root, "x.sh", "#!/bin/sh\n# execsvc: group=adhoc\necho $EXECSVC_GROUP\n")
    info = wait_finished(queue_root, "x")
    assert info.status is JobStatus.COMPLETED and info.result is not None
    assert info.result.stdout == "adhoc\n" and info.result.group == "adhoc"
    assert "group=adhoc slots=2" in worker.wait_for_line("group_created")


def test_an_unknown_group_is_refused_by_the_switch(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    cfg = config(tmp_path, '[worker]\nunknown_groups = "refuse"\n[groups.build]\nslots = 1\n')
    marker = tmp_path / "ran"
    start_worker("--config", str(cfg))
    drop(queue_root, "x.json", {"command": f"touch {marker}", "group": "nope"})
    drop(queue_root, "y.json", {"command": "true", "group": "build"})
    info = wait_finished(queue_root, "x")
    assert info.status is JobStatus.INVALID and info.result is not None and info.result.error is not None
    assert "names the group 'nope', which the worker's config does not declare" in info.result.error
    assert not marker.exists()
    assert wait_finished(queue_root, "y").status is JobStatus.COMPLETED
    queue = JobQueue(queue_root)
    queue.submit({"command": "true", "group": "nope"}, job_id="later", held=True)  # the fronts foretell it
    said = api.waiting_of(queue, queue.get("later")).reason
    assert "will be recorded invalid: the job names the group 'nope'" in said and "declared: build, default" in said


def test_a_group_name_that_is_not_valid_makes_the_job_invalid(queue_root: Path, start_worker: Any) -> None:
    start_worker()
    drop(queue_root, "bad.json", {"command": "true", "group": "../x"})
    info = wait_finished(queue_root, "bad")
    assert info.status is JobStatus.INVALID and info.result is not None
    assert "is not a group name" in (info.result.error or "")


def test_worker_json_publishes_the_groups(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    cfg = config(tmp_path, "[worker]\nslots = 2\ntotal_slots = 4\n[groups.build]\nslots = 3\n")
    start_worker("--config", str(cfg))
    info = json.loads((queue_root / "worker.json").read_text())
    assert info["groups"] == {"default": 2, "build": 3}
    assert info["total_slots"] == 4 and info["unknown_groups"] == "create"


def test_mcp_enqueues_into_a_group_and_explains_its_queue(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    import anyio
    from mcp_calls import structured
    from mcp_stdio import mcp_over_stdio

    cfg = config(tmp_path, "[groups.build]\nslots = 1\n")
    gate = tmp_path / "gate"
    worker = start_worker("--config", str(cfg))
    drop(queue_root, "long.json", {"command": meet(tmp_path / "l", [gate]), "group": "build"})
    worker.wait_for_line("started job=long")

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            listed = await client.list_tools()
            enqueue = next(tool for tool in listed.result.tools if tool.name == "enqueue_job")
            assert "groups with slots of their own (argument group): build 1" in (enqueue.description or "")
            queued = structured((await client.call("enqueue_job", {"command": "true", "group": "build"})).result)
            assert queued["status"] == "pending"
            assert "behind 0 job(s) of group build; 1/1 slots of group build busy" in queued["waiting"]
            quick = structured((await client.call("enqueue_job", {"command": "true", "wait_s": 20})).result)
            assert quick["status"] == "completed"  # the default group is not behind build
            status = structured((await client.call("queue_status", {})).result)
            assert status["groups"]["build"] == "1/1 slots busy, 1 pending"
            assert status["groups"]["default"].endswith("slots busy, 0 pending")  # quick may still leave running/
            refused = await client.call("enqueue_job", {"command": "true", "group": "no/slash"})
            assert refused.result.is_error and "is not a group name" in str(refused.result.content)
            gate.touch()
            done = structured((await client.call("wait_for_job", {"job_id": queued["job_id"], "timeout_s": 20})).result)
            assert done["status"] == "completed"

    anyio.run(session)


def test_the_web_page_shows_the_groups_and_submits_into_one(
    queue_root: Path, tmp_path: Path, start_worker: Any
) -> None:
    from web_server import WebServer

    cfg = config(tmp_path, "[groups.build]\nslots = 2\n")
    start_worker("--config", str(cfg))
    JobQueue(queue_root).pause_group("nightly")
    server = WebServer(queue_root)
    try:
        status, headers, _ = server.request("GET", f"/?token={server.token}")
        cookie = {"Cookie": headers["set-cookie"].split(";")[0]}
        status, _, body = server.request("GET", "/", headers=cookie)
        assert status == 200 and 'id="groups"' in body
        assert "<td>build</td><td>0/2</td>" in body and '<tr class="group paused"><td>nightly</td>' in body
        status, _, body = server.request(
            "POST", "/submit", headers={**cookie, "Origin": server.base}, body="command=true&group=build"
        )
        assert status == 200 and "submitted job" in body, body
        found = re.search(r"submitted job ([\w-]+)", body)
        assert found is not None, body
        job_id = found.group(1)
    finally:
        server.stop()
    info = wait_finished(queue_root, job_id)
    assert info.result is not None and info.result.group == "build"


def test_queue_view_lists_groups_and_a_group_column(queue_root: Path, tmp_path: Path, start_worker: Any) -> None:
    import subprocess

    from conftest import console_script

    cfg = config(tmp_path, "[groups.build]\nslots = 1\n")
    gate = tmp_path / "gate"
    worker = start_worker("--config", str(cfg))
    drop(queue_root, "long.json", {"command": meet(tmp_path / "l", [gate]), "group": "build"})
    worker.wait_for_line("started job=long")
    drop(queue_root, "next.sh", "#!/bin/sh\n# execsvc: group=build\ntrue\n")
    view = [console_script("queue-view"), "--queue-dir", str(queue_root)]
    try:
        shown = subprocess.run([*view, "groups", "--json"], capture_output=True, text=True, check=True).stdout
        groups = {group["name"]: group for group in json.loads(shown)["groups"]}
        assert groups["build"] == {"name": "build", "slots": 1, "running": 1, "pending": 1, "paused": False}
        assert groups["default"]["slots"] == 1 and groups["default"]["running"] == 0
        table = subprocess.run([*view, "groups"], capture_output=True, text=True, check=True).stdout
        assert "build" in table and "claiming" in table
        listed = subprocess.run([*view, "list"], capture_output=True, text=True, check=True).stdout
        header = listed.splitlines()[0].split()
        assert header[:3] == ["id", "group", "state"]
        assert any(line.split()[:3] == ["next", "build", "pending"] for line in listed.splitlines())
        assert "1/1 slots of group build busy" not in listed  # its turn, not a block: shown by show
        detail = subprocess.run([*view, "show", "next"], capture_output=True, text=True, check=True).stdout
        assert "1/1 slots of group build busy" in detail and "group" in detail
    finally:
        gate.touch()
    assert wait_finished(queue_root, "next").status is JobStatus.COMPLETED


def test_execsvc_submit_group_runs_in_it_and_refuses_a_bad_name(queue_root: Path, start_worker: Any) -> None:
    import subprocess

    start_worker()
    submit = [EXECSVC, "submit", "--queue-dir", str(queue_root)]
    done = subprocess.run(
        [*submit, "--group", "quick", "--wait", "--", "sh", "-c", 'echo "$EXECSVC_GROUP/$EXECSVC_SLOT"'],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == "quick/0\n", done.stderr
    bad = subprocess.run([*submit, "--group", "a b", "--", "true"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "is not a group name" in bad.stderr
    assert not any(name.endswith(".json") for name in (queue_root / "pending").iterdir() if name.is_file())
