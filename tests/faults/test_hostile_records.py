"""Hostile review, records and names (issue 16): a job's files never reach another job's, a job
that exists is always found, and a record is always written, whatever the job did to its own file."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import WorkerProcess, console_script, daemon_log, drop, wait_finished, wait_until

from execsvc import JobQueue, JobState, JobStatus
from execsvc.protocol.errors import JobNotFound
from execsvc.protocol.layout import MAX_JOB_ID_BYTES, job_id_problem, sanitize_job_id
from execsvc.protocol.models import JobResult, SidecarRecord
from execsvc.protocol.readiness import CONFIRM_MISSING_AFTER_S
from execsvc.protocol.scheduling import SchedulingFields
from execsvc.retention import clean
from execsvc.scheduler import Scheduler

Start = Callable[..., WorkerProcess]


# ----- 16.5: log names shared between jobs ----------------------------------------------------


def test_an_id_ending_like_another_jobs_logs_never_reaches_them(queue_root: Path, start_worker: Start) -> None:
    """``b.on_finish`` would write into ``b``'s hook logs and ``c.attempt-1`` into ``c``'s first
    attempt's; cleaning ``b`` would delete ``b.on_finish``'s output."""
    worker = start_worker()
    drop(queue_root, "b.json", {"command": "echo job-b", "on_finish": "echo hook-of-b"})
    drop(queue_root, "c.json", {"command": "echo attempt-of-c; exit 3", "retries": 1, "retry_delay_s": 0})
    wait_finished(queue_root, "b")
    wait_finished(queue_root, "c")
    worker.wait_for_line("on_finish_done job=b")
    logs = queue_root / "logs"
    assert (logs / "b.on_finish.stdout").read_text() == "hook-of-b\n"
    assert (logs / "c.attempt-1.stdout").read_text() == "attempt-of-c\n"

    drop(queue_root, "b.on_finish.json", {"command": "echo intruder-1"})
    drop(queue_root, "c.attempt-1.json", {"command": "echo intruder-2"})
    ids = {}
    for intruder in ("b.on_finish", "c.attempt-1"):
        ids[intruder] = _claimed_ids(worker, f"{intruder}.json", 1)[0]
        info = wait_finished(queue_root, ids[intruder])
        assert info.result is not None and info.result.stdout.startswith("intruder-")
        assert info.result.job_file == f"{intruder}.json"
    assert (logs / "b.on_finish.stdout").read_text() == "hook-of-b\n", "b's hook output was overwritten"
    assert (logs / "c.attempt-1.stdout").read_text() == "attempt-of-c\n", "c's first attempt was overwritten"
    for intruder, job_id in ids.items():
        assert job_id != intruder and job_id_problem(intruder) is not None, "an id ending like that must be renamed"
    assert "renamed" in daemon_log(queue_root)

    worker.stop()
    queue = JobQueue(queue_root)
    (queue_root / "completed/b.json").unlink()  # clean b alone: its files, never another job's
    before = set(os.listdir(logs))
    clean(queue, older_than_s=-1)
    gone = before - set(os.listdir(logs))
    assert not [name for name in gone if "intruder" in (logs / name).name], gone


def test_a_numbered_id_is_always_a_valid_one(queue_root: Path, start_worker: Start) -> None:
    """The ``-2`` added to an id in use must not make ``c.attempt`` into ``c.attempt-2`` (job
    ``c``'s second attempt) nor a 200-byte id into one too long to be looked up."""
    queue = JobQueue(queue_root)
    long_id = "x" * MAX_JOB_ID_BYTES
    for job_id in ("c.attempt", long_id):
        queue.submit({"command": "true"}, job_id=job_id)
    worker = start_worker()
    wait_finished(queue_root, "c.attempt")
    wait_finished(queue_root, long_id)
    for job_id in ("c.attempt", long_id):
        drop(queue_root, f"{job_id}.json", {"command": "echo again"})
        new_id = _claimed_ids(worker, f"{job_id}.json", 2)[1]
        assert new_id != job_id and job_id_problem(new_id) is None, new_id
        assert not re.fullmatch(r"c\.attempt-\d+", new_id), "that is the name of c's attempt logs"
        assert wait_finished(queue_root, new_id).status is JobStatus.COMPLETED


def _claimed_ids(worker: WorkerProcess, job_file: str, count: int) -> list[str]:
    """The ids of the first ``count`` jobs claimed from ``job_file`` (from the worker's ``claimed`` lines)."""
    needle = f"file={job_file} submitted_by"

    def lines() -> list[str]:
        return [line for line in list(worker.lines) if " claimed " in f" {line} " and needle in line]

    wait_until(lambda: len(lines()) >= count, what=f"{count} claims of {job_file}")
    return [line.split(" job=", 1)[1].split()[0] for line in lines()[:count]]


def test_sanitized_ids_never_end_in_a_reserved_ending() -> None:
    for stem in ("b.on_finish", "c.attempt-1", "c.attempt-12", "x.result", "\x00y.on_finish"):
        assert job_id_problem(stem) is not None or stem.startswith("\x00")
        assert job_id_problem(sanitize_job_id(stem)) is None, stem
    assert job_id_problem("c.attempt-") is None and job_id_problem("c.attempt-1x") is None
    assert job_id_problem("on_finish") is None and job_id_problem("attempt-1") is None


# ----- 16.6: a false "no such job" while a job is held or released -------------------------------


def _toggle_hold(queue: JobQueue, job_id: str, times: int, stop: threading.Event) -> None:
    """Hold and release the job ``times`` times, or until ``stop`` is set."""
    for _ in range(times):
        if stop.is_set():
            return
        queue.hold(job_id)
        queue.release(job_id)


def test_a_job_held_and_released_is_always_found(queue_root: Path) -> None:
    """``get()`` looked in ``pending/`` then ``pending/.held/``: a release between the two looks
    was missed, and the job was reported missing although it was pending all along."""
    queue = JobQueue(queue_root)
    queue.submit({"command": "true"}, job_id="moving")
    stop = threading.Event()
    toggler = threading.Thread(target=_toggle_hold, args=(JobQueue(queue_root), "moving", 300, stop))
    toggler.start()
    missed = looked = 0
    try:
        while toggler.is_alive():
            looked += 1
            try:
                assert queue.get("moving").state is JobState.PENDING
            except JobNotFound:
                missed += 1
    finally:
        stop.set()
        toggler.join()
    assert missed == 0, f"{missed} of {looked} lookups said the pending job does not exist"


def test_dependents_of_a_job_being_held_and_released_keep_waiting(queue_root: Path, start_worker: Start) -> None:
    """The worker looked its dependency up once; a false "not in this queue" recorded a valid
    dependent ``invalid``."""
    queue = JobQueue(queue_root)
    queue.submit({"command": "true", "delay_s": 3600}, job_id="dep")  # pending, never due during the test
    worker = start_worker()
    stop = threading.Event()
    toggler = threading.Thread(target=_toggle_hold, args=(JobQueue(queue_root), "dep", 100_000, stop))
    toggler.start()
    try:
        for n in range(300):
            queue.submit({"command": "true", "after": ["dep"]}, job_id=f"child-{n}")
    finally:
        stop.set()
        toggler.join()
    queue.submit({"command": "true"}, job_id="last")  # seen after every child: their places are known
    wait_finished(queue_root, "last")
    invalid = [info.job_id for info in queue.jobs(JobState.FAILED)]
    assert invalid == [], f"dependents recorded although 'dep' was pending all along: {invalid}"
    assert "invalid" not in "".join(line for line in worker.lines if "child-" in line)


def test_the_scheduler_never_declares_a_dependency_missing_on_one_look() -> None:
    """Whatever the lookup, one "not found" is confirmed by a second look, a moment later (the
    loop is never paused for it), before a job is doomed."""
    answers: list[tuple[JobState, JobStatus] | None] = [None, (JobState.PENDING, JobStatus.PENDING)]
    looks: list[str] = []

    def lookup(job_id: str) -> tuple[JobState, JobStatus] | None:  # "dep" is missed once, "gone" is gone
        looks.append(job_id)
        return answers.pop(0) if job_id == "dep" else None

    scheduler = Scheduler(lookup)
    now = time.time()
    scheduler.offer("child.json", "child", SchedulingFields(after=("dep",)), 0, now)
    scheduler.offer("orphan.json", "orphan", SchedulingFields(after=("gone",)), 0, now)
    scheduler.offer("later.json", "later", SchedulingFields(after=("gone",), due_at=now + 3600), 0, now)
    assert looks == ["dep", "gone", "gone"] and scheduler.take_doomed() is None and scheduler.take_ready() is None
    assert scheduler.next_due_at() == now + CONFIRM_MISSING_AFTER_S
    scheduler.wake(now + CONFIRM_MISSING_AFTER_S)
    assert looks[3:] == ["dep", "gone", "gone"]
    assert "dep" in scheduler.depended_on_ids, "found at the second look: it waits"
    doomed = [scheduler.take_doomed(), scheduler.take_doomed()]
    assert sorted(d.name for d in doomed if d is not None) == ["later.json", "orphan.json"]
    assert all(d is not None and "not in this queue" in d.reason for d in doomed)
    assert scheduler.take_ready() is None


# ----- 16.1: a job that deletes, moves or replaces its own file ---------------------------------

_OWN_FILE_ACTIONS = {
    "removes": 'rm -f -- "$0"',
    "moves": 'mv -- "$0" "$AWAY"',
    "replaces": 'printf "echo replaced\\n" > "$0.new" && mv -f -- "$0.new" "$0"',
    "changes": 'echo "echo appended" >> "$0"',
    "dir": 'rm -f -- "$0" && mkdir -- "$0" && touch -- "$0/inside"',
}


def test_a_job_that_removes_or_replaces_its_own_script_is_recorded(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    """``rm -f -- "$0"`` made finish() fail; that was taken for a storage failure: claims paused
    for good, the job was never recorded, and no job after it was claimed."""
    start_worker()
    scripts = {}
    for n, (name, action) in enumerate(_OWN_FILE_ACTIONS.items()):
        scripts[name] = f"AWAY={tmp_path}/away-{name}\n{action}\necho ran-{name}\n"
        drop(queue_root, f"{name}.sh", scripts[name], mtime=1_000_000 + n)
    drop(
        queue_root,
        "json-dir.json",
        {"command": 'f="$EXECSVC_QUEUE_DIR/running/$EXECSVC_JOB_ID.json"; rm -f "$f"; mkdir "$f"; echo ran'},
        mtime=1_000_100,
    )
    drop(queue_root, "after.json", {"command": "echo after"}, mtime=1_000_200)
    for name, script in scripts.items():  # (a job whose file is gone is in no folder until it is recorded)
        wait_until(lambda name=name: (queue_root / f"completed/{name}.result.json").exists(), 30, f"{name}'s record")  # type: ignore[misc]
        info = wait_finished(queue_root, name)
        assert info.status is JobStatus.COMPLETED and info.result is not None, name
        assert info.result.stdout.startswith(f"ran-{name}\n")  # sh reads on: "changes" runs its appended line
        assert "its own job file running/" in (info.result.note or ""), (name, info.result.note)
        assert (queue_root / "completed" / f"{name}.sh").read_text() == script, "the script as it was claimed"
    wait_until((queue_root / "completed/json-dir.json").exists, 30, "json-dir's record")
    json_dir = wait_finished(queue_root, "json-dir")
    # "replaced", or "removed or moved" when the worker put it back before the job made its directory
    assert json_dir.status is JobStatus.COMPLETED and "its own job file" in (json_dir.result.note or "")  # type: ignore[union-attr]
    assert wait_finished(queue_root, "after").status is JobStatus.COMPLETED
    wait_until(lambda: not os.listdir(queue_root / "running"), what="running/ to empty")
    log = daemon_log(queue_root)
    assert "claims_paused" not in log and "record_failed" not in log
    assert "job_file_changed job=removes" in log


def test_a_job_that_leaves_its_script_alone_gets_no_note(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    drop(queue_root, "touches.sh", 'touch -- "$0"\necho same\n')
    info = wait_finished(queue_root, "touches")
    assert info.result is not None and info.result.note is None and info.status is JobStatus.COMPLETED


# ----- 16.7: a stray file in completed/ or failed/ with a job file's name ------------------------


def _cli(queue_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script("execsvc"), *args, "--queue-dir", str(queue_root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_clean_never_leaves_a_script_without_its_record(queue_root: Path, start_worker: Start) -> None:
    """``execsvc clean`` removed a sidecar record it could not parse but left the script beside
    it; the next job of that name then ran, could not be recorded, and sat in running/."""
    start_worker()
    drop(queue_root, "x.sh", "echo first; exit 1\n")
    wait_finished(queue_root, "x")
    (queue_root / "failed/x.result.json").write_text("{damaged")
    cleaned = _cli(queue_root, "clean", "--older-than", "0s")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not os.path.lexists(queue_root / "failed/x.sh"), "clean left the script without its record"
    assert not [name for name in os.listdir(queue_root / "logs") if name.startswith("x.")]


def test_a_stray_file_with_a_scripts_name_never_blocks_the_next_job(queue_root: Path, start_worker: Start) -> None:
    """The id check looked only at records: a stray ``failed/y.sh`` let the next ``y.sh`` run as
    ``y``, its record could not be linked (FileExistsError) and it sat in running/ for good."""
    worker = start_worker()
    (queue_root / "failed/y.sh").write_text("echo a stray, not a job\n")  # left by anything else
    drop(queue_root, "y.sh", "echo second; exit 1\n")
    job_id = _claimed_ids(worker, "y.sh", 1)[0]
    info = wait_finished(queue_root, job_id, timeout_s=15)
    assert info.result is not None and info.result.stdout == "second\n" and info.result.returncode == 1
    assert (queue_root / "failed/y.sh").read_text() == "echo a stray, not a job\n", "the stray is never replaced"
    wait_until(lambda: not os.listdir(queue_root / "running"), what="running/ to empty")
    assert "record_failed" not in daemon_log(queue_root)


@pytest.mark.parametrize("kind", ["text", "json"])
def test_a_record_is_never_refused_for_a_name_taken_while_the_job_ran(
    kind: str, queue_root: Path, start_worker: Start
) -> None:
    """A file with the job file's name (or a JSON job's record name) appears in failed/ while the
    job runs: the job is recorded all the same, its file kept under a free name, and the record says so."""
    start_worker()
    name = "z.sh" if kind == "text" else "z.json"
    stray = f'echo stray > "$EXECSVC_QUEUE_DIR/failed/{name}"; echo ran; exit 2'
    drop(queue_root, name, f"{stray}\n" if kind == "text" else {"command": stray})
    info = wait_finished(queue_root, "z", timeout_s=15)
    assert info.result is not None and info.result.stdout == "ran\n" and info.result.returncode == 2
    assert "was already taken by another file" in (info.result.note or ""), info.result.note
    assert (queue_root / f"failed/{name}").read_text() == "stray\n"
    if kind == "json":
        assert info.spec is not None and info.spec["command"] == stray, "the job's fields are still in its record"
    wait_until(lambda: not os.listdir(queue_root / "running"), what="running/ to empty")
    report = clean(JobQueue(queue_root), older_than_s=-1)
    assert report.removed["failed"] == ["z"]
    assert sorted(os.listdir(queue_root / "failed")) == [".index", name], "the kept job file goes with its record"


@pytest.mark.parametrize("kind", ["text", "json"])
def test_a_stray_with_the_records_own_name_is_moved_aside_not_a_reason_to_refuse_the_record(
    kind: str, queue_root: Path, start_worker: Start
) -> None:
    """A file named like the job's record (``<id>.result.json``, and ``<id>.json`` too for a
    JSON job) appears in failed/ while the job runs: the stray is kept under a hidden name, the
    record takes its place, and the job leaves running/."""
    start_worker()
    name = "y.sh" if kind == "text" else "y.json"
    strays = ["y.result.json"] if kind == "text" else ["y.json", "y.result.json"]
    plant = "; ".join(f'echo stray > "$EXECSVC_QUEUE_DIR/failed/{stray}"' for stray in strays)
    command = f"{plant}; echo ran; exit 3"
    drop(queue_root, name, f"{command}\n" if kind == "text" else {"command": command})
    ended = re.compile(r" (finished|record_failed) job=y ")
    wait_until(lambda: bool(ended.search(daemon_log(queue_root))), what="the job's end", timeout_s=15)
    assert " finished job=y " in daemon_log(queue_root), daemon_log(queue_root)
    assert not os.listdir(queue_root / "running")
    record = SidecarRecord.model_validate_json((queue_root / "failed/y.result.json").read_bytes())
    assert record.result.returncode == 3 and record.result.stdout == "ran\n"
    assert "was taken by another file while the job ran" in (record.result.note or ""), record.result.note
    kept = sorted(n for n in os.listdir(queue_root / "failed") if ".stray-" in n)
    assert kept == [".y.result.json.stray-1"]
    assert (queue_root / "failed" / kept[0]).read_text() == "stray\n", "the stray is kept, never overwritten"
    assert JobQueue(queue_root).get("y").status is JobStatus.FAILED


def test_a_finish_cut_short_beside_a_stray_is_settled(queue_root: Path) -> None:
    """The crash points of a finish that keeps the job file under a free name: settled as for any finish."""
    queue = JobQueue(queue_root)
    queue.submit_script("true\n", job_id="s")
    claimed = queue.claim("s.sh")
    (queue_root / "failed/s.sh").write_text("stray\n")
    os.link(claimed.path, queue_root / "failed/.s.kept-2.sh")  # cut short before the record appeared
    assert queue.settle_running("s", claimed.path) is None
    assert sorted(os.listdir(queue_root / "failed")) == ["s.sh"], "the half-made link is removed"

    queue.submit_script("true\n", job_id="t")
    claimed = queue.claim("t.sh")
    (queue_root / "failed/t.sh").write_text("stray\n")
    result = JobResult(job_id="t", status=JobStatus.FAILED, completed_at=datetime.now(UTC), job_file="t.sh")
    os.link(claimed.path, queue_root / "failed/.t.kept-2.sh")
    sidecar = SidecarRecord(job_id="t", kind="text", job_file=".t.kept-2.sh", result=result)
    (queue_root / "failed/t.result.json").write_text(sidecar.model_dump_json())  # cut short after the record
    assert queue.settle_running("t", claimed.path) == "finished"
    assert not os.path.lexists(claimed.path) and (queue_root / "failed/t.sh").read_text() == "stray\n"


def test_a_job_removing_its_script_on_a_broken_queue_still_pauses_claims(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    """Only the storage pauses claims, but it still does when the job also removed its own file."""
    worker = start_worker()
    completed, aside = queue_root / "completed", tmp_path / "completed-aside"
    os.rename(completed, aside)
    completed.write_text("not a folder")  # records cannot be written there
    drop(queue_root, "gone.sh", 'rm -f -- "$0"\necho gone\n')
    assert "the record of job gone cannot be written" in worker.wait_for_line("claims_paused")
    assert (queue_root / "running/gone.sh").read_text() == 'rm -f -- "$0"\necho gone\n', "put back while it waits"
    completed.unlink()
    os.rename(aside, completed)
    worker.wait_for_line("claims_resumed", timeout_s=60)
    info = wait_finished(queue_root, "gone")
    assert info.result is not None and info.result.stdout == "gone\n" and "removed" in (info.result.note or "")


def _waits_for(go: Path) -> str:
    return f"while [ ! -e {go} ]; do sleep 0.02; done\necho went\n"


def test_a_running_job_that_removed_its_script_is_still_found(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    """While it ran, a job that removed its own file was in no folder: get() and cancel said
    "no such job", and its dependents were recorded invalid ("not in this queue")."""
    worker = start_worker("--slots", "2")
    go, removed = tmp_path / "go", tmp_path / "removed"
    drop(queue_root, "dep.sh", f'rm -f -- "$0"; touch {removed}\n' + _waits_for(go))
    wait_until(removed.exists, what="dep to remove its own file")
    wait_until((queue_root / "running/dep.sh").exists, what="dep's file to be back in running/")
    worker.wait_for_line("job_file_changed job=dep")  # (written just after the file is back)
    queue = JobQueue(queue_root)
    assert queue.get("dep").state is JobState.RUNNING
    queue.submit({"command": "echo child", "after": ["dep"]}, job_id="child")
    queue.submit({"command": "true"}, job_id="last")  # seen after the child: its place is known
    wait_finished(queue_root, "last")
    assert queue.get("child").state is JobState.PENDING, "the child waits for dep, which is running"
    go.touch()
    assert "removed" in (wait_finished(queue_root, "dep").result.note or "")  # type: ignore[union-attr]
    assert wait_finished(queue_root, "child").status is JobStatus.COMPLETED


def test_a_job_that_removed_its_script_is_settled_after_a_crash(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    """Killed while such a job ran, the worker left nothing in running/: after a restart the job
    had no record anywhere."""
    worker = start_worker()
    removed = tmp_path / "removed"
    drop(queue_root, "lost.sh", f'rm -f -- "$0"; touch {removed}\n' + _waits_for(tmp_path / "never"))
    wait_until(removed.exists, what="the job to remove its own file")
    wait_until((queue_root / "running/lost.sh").exists, what="its file to be back in running/")
    worker.kill()
    start_worker()
    info = wait_finished(queue_root, "lost")
    assert info.status is JobStatus.INTERRUPTED
    assert (queue_root / "failed/lost.sh").read_text().startswith('rm -f -- "$0"')


def test_retry_runs_the_jobs_own_script_not_a_stray_beside_it(queue_root: Path, start_worker: Start) -> None:
    """``execsvc retry`` took ``<id>.sh`` beside the record: a stray there, the job's own script kept elsewhere."""
    start_worker()
    drop(queue_root, "r.sh", 'echo stray-content > "$EXECSVC_QUEUE_DIR/failed/r.sh"\necho own-script; exit 1\n')
    assert "already taken" in (wait_finished(queue_root, "r", timeout_s=15).result.note or "")  # type: ignore[union-attr]
    retried = _cli(queue_root, "retry", "r")
    assert retried.returncode == 0, retried.stderr
    result = wait_finished(queue_root, retried.stdout.strip()).result
    assert result is not None and result.stdout == "own-script\n"
