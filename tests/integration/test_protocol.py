"""The queue protocol's contract, on real files: submit, read, claim, finish, settle."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import silent_event_log
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from execsvc import (
    InvalidJobId,
    JobIdTaken,
    JobNotFound,
    JobQueue,
    JobResult,
    JobSpec,
    JobState,
    JobStatus,
)
from execsvc.protocol import durable, finish_index
from execsvc.protocol.durable import move_no_replace, write_durable
from execsvc.protocol.errors import UnsafeQueue
from execsvc.protocol.finish_index import INDEX_NAME
from execsvc.protocol.layout import QueueLayout, check_job_id, job_id_problem, sanitize_job_id, split_job_name
from execsvc.recovery import settle_running
from execsvc.runner import now


def visible(folder: Path) -> list[str]:
    """Every name in ``folder`` but the finish-time index (hidden temporary files included)."""
    return sorted(name for name in os.listdir(folder) if name != INDEX_NAME)


def result_for(job_id: str, status: JobStatus = JobStatus.COMPLETED) -> JobResult:
    return JobResult(
        job_id=job_id,
        status=status,
        returncode=0 if status is JobStatus.COMPLETED else 1,
        completed_at=now(),
        job_file=f"{job_id}.json",
    )


@pytest.fixture
def queue(tmp_path: Path) -> JobQueue:
    return JobQueue(tmp_path / "q")


def test_submit_writes_one_whole_file_and_get_reads_it(queue: JobQueue) -> None:
    job_id = queue.submit(JobSpec(command="echo", args=["hi"], description="greeting"))
    assert visible(queue.layout.pending) == [f"{job_id}.json"], "no temporary file may be left"
    assert json.loads((queue.layout.pending / f"{job_id}.json").read_text()) == {
        "command": "echo",
        "args": ["hi"],
        "description": "greeting",
        "submitted_by": "api",
    }
    info = queue.get(job_id)
    assert (info.state, info.status, info.kind) == (JobState.PENDING, JobStatus.PENDING, "json")
    assert info.spec == {"command": "echo", "args": ["hi"], "description": "greeting", "submitted_by": "api"}


def test_submit_accepts_a_dict_and_keeps_unknown_fields(queue: JobQueue) -> None:
    job_id = queue.submit({"command": "true", "ticket": 42}, submitted_by="my-tool")
    assert queue.get(job_id).spec == {"command": "true", "ticket": 42, "submitted_by": "my-tool"}
    own = queue.submit({"command": "true", "submitted_by": "its own"})
    assert queue.get(own).spec == {"command": "true", "submitted_by": "its own"}


def test_submit_refuses_a_taken_or_invalid_id(queue: JobQueue) -> None:
    queue.submit(JobSpec(command="true"), job_id="mine")
    with pytest.raises(JobIdTaken):
        queue.submit(JobSpec(command="true"), job_id="mine")
    with pytest.raises(JobIdTaken):
        queue.submit_script("true\n", job_id="mine")
    for bad in ("../escape", "a/b", ".hidden", "x\x00y", "line\nbreak", "x.result", "", "é" * 101):
        with pytest.raises(InvalidJobId):
            queue.submit(JobSpec(command="true"), job_id=bad)


def test_generated_ids_are_unique_and_time_ordered(queue: JobQueue) -> None:
    ids = [queue.submit(JobSpec(command="true")) for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(check_job_id(job_id) == job_id for job_id in ids)
    assert [job_id[:15] for job_id in ids] == sorted(job_id[:15] for job_id in ids)


def test_get_unknown_job_raises(queue: JobQueue) -> None:
    with pytest.raises(JobNotFound):
        queue.get("nobody")
    with pytest.raises(InvalidJobId):
        queue.get("../etc/passwd")


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "link-unlink"])
def test_write_durable_never_overwrites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, renameat2: bool) -> None:
    if not renameat2:  # the way systems without renameat2(RENAME_NOREPLACE) take
        monkeypatch.setattr(durable, "_RENAME_NOREPLACE", None)
    target = tmp_path / "record.json"
    write_durable(target, b"first")
    with pytest.raises(FileExistsError):
        write_durable(target, b"second")
    assert target.read_bytes() == b"first"
    assert visible(tmp_path) == ["record.json"], "the temporary file must be cleaned up"
    write_durable(target, b"replaced", replace=True)
    assert target.read_bytes() == b"replaced"


def test_move_no_replace_refuses_and_moves_links_not_targets(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    with pytest.raises(FileExistsError):
        move_no_replace(tmp_path / "a", tmp_path / "b")
    assert (tmp_path / "a").read_text() == "a" and (tmp_path / "b").read_text() == "b"
    os.symlink(tmp_path / "a", tmp_path / "link")
    move_no_replace(tmp_path / "link", tmp_path / "moved")
    assert (tmp_path / "moved").is_symlink() and (tmp_path / "a").read_text() == "a"
    with pytest.raises(FileNotFoundError):
        move_no_replace(tmp_path / "gone", tmp_path / "c")
    assert not (tmp_path / "c").exists()
    (tmp_path / "d").mkdir()
    move_no_replace(tmp_path / "d", tmp_path / "e")
    assert (tmp_path / "e").is_dir()


def test_claim_moves_into_running_and_renames_a_used_id(queue: JobQueue) -> None:
    queue.submit(JobSpec(command="true"), job_id="build")
    claimed = queue.claim("build.json")
    assert (claimed.job_id, claimed.kind, claimed.renamed_from) == ("build", "json", None)
    assert visible(queue.layout.pending) == [] and visible(queue.layout.running) == ["build.json"]
    assert queue.get("build").state is JobState.RUNNING
    queue.finish(claimed, result_for("build"), JobSpec(command="true"))
    queue.submit_script("echo again\n", job_id="build-x")
    (queue.layout.pending / "build-x.sh").rename(queue.layout.pending / "build.sh")
    again = queue.claim("build.sh")
    assert (again.job_id, again.renamed_from, again.job_file) == ("build-2", "build", "build.sh")
    with pytest.raises(FileNotFoundError):
        queue.claim("build.sh")


def test_claim_gives_unusable_names_a_valid_id(queue: JobQueue) -> None:
    (queue.layout.pending / "two\nlines.json").write_text('{"command": "true"}')
    claimed = queue.claim("two\nlines.json")
    assert claimed.job_id == "two_lines" and claimed.renamed_from == "two\nlines"


def test_finish_json_job_embeds_result_and_keeps_fields(queue: JobQueue) -> None:
    queue.submit({"command": "true", "extra": {"k": [1, 2]}}, job_id="j")
    claimed = queue.claim("j.json")
    spec = JobSpec.model_validate(json.loads(claimed.path.read_text()))
    path = queue.finish(claimed, result_for("j"), spec)
    assert path == queue.layout.completed / "j.json"
    record = json.loads(path.read_text())
    assert record["extra"] == {"k": [1, 2]} and record["result"]["status"] == "completed"
    assert visible(queue.layout.running) == []
    info = queue.get("j")
    assert info.state is JobState.COMPLETED and info.result is not None and info.spec is not None
    assert "result" not in info.spec


def test_finish_text_job_writes_a_sidecar_and_moves_the_script(queue: JobQueue) -> None:
    queue.submit_script("exit 1\n", job_id="s")
    claimed = queue.claim("s.sh")
    queue.finish(claimed, result_for("s", JobStatus.FAILED), None)
    assert visible(queue.layout.failed) == ["s.result.json", "s.sh"]
    info = queue.get("s")
    assert (info.state, info.status, info.kind) == (JobState.FAILED, JobStatus.FAILED, "text")


def test_finish_never_overwrites_a_record(queue: JobQueue) -> None:
    queue.submit(JobSpec(command="true"), job_id="j")
    claimed = queue.claim("j.json")
    (queue.layout.completed / "j.json").write_text("someone else's")
    record = queue.finish(claimed, result_for("j"), JobSpec(command="true"))
    assert (queue.layout.completed / "j.json").read_text() == "someone else's"
    # never refused either (issue 16.7): the job is kept under a free name beside a sidecar record
    assert record.name == "j.result.json" and visible(queue.layout.running) == []
    info = queue.get("j")
    assert info.spec is not None and info.spec["command"] == "true" and "already taken" in (info.result.note or "")  # type: ignore[union-attr]


def test_settle_running_undoes_a_half_done_claim(queue: JobQueue) -> None:
    queue.submit(JobSpec(command="true"), job_id="half")
    os.link(queue.layout.pending / "half.json", queue.layout.running / "half.json")  # crash between link and unlink
    assert queue.settle_running("half", queue.layout.running / "half.json") == "unclaimed"
    assert visible(queue.layout.running) == [] and visible(queue.layout.pending) == ["half.json"]


def test_settle_running_completes_a_finish_cut_short(queue: JobQueue) -> None:
    queue.submit_script("true\n", job_id="t")
    claimed = queue.claim("t.sh")
    write_durable(queue.layout.completed / "t.result.json", b"{}")  # record durable, script not yet moved
    assert queue.settle_running("t", claimed.path) == "finished"
    assert visible(queue.layout.completed) == ["t.result.json", "t.sh"] and visible(queue.layout.running) == []
    queue.submit(JobSpec(command="true"), job_id="u")
    running = queue.claim("u.json").path
    assert queue.settle_running("u", running) is None, "no record: the job really was cut short"


def test_settle_running_after_a_finish_cut_short_between_its_steps(queue: JobQueue) -> None:
    """finish() for a script: link it beside the record, write the record, unlink running/."""
    queue.submit_script("true\n", job_id="early")
    early = queue.claim("early.sh")
    os.link(early.path, queue.layout.completed / "early.sh")  # crash before the record appeared
    assert queue.settle_running("early", early.path) is None, "no record: it still needs one"
    assert visible(queue.layout.completed) == [], "the half-made link is removed"
    queue.finish(early, result_for("early", JobStatus.INTERRUPTED), None)
    assert visible(queue.layout.failed) == ["early.result.json", "early.sh"]

    queue.submit_script("true\n", job_id="late")
    late = queue.claim("late.sh")
    os.link(late.path, queue.layout.completed / "late.sh")
    write_durable(queue.layout.completed / "late.result.json", b"{}")  # crash before running/ was left
    assert queue.settle_running("late", late.path) == "finished"
    assert visible(queue.layout.completed) == ["late.result.json", "late.sh"] and visible(queue.layout.running) == []
    assert (queue.layout.completed / "late.sh").read_text() == "true\n"


def test_a_script_is_beside_its_record_when_the_record_appears(queue: JobQueue) -> None:
    """Whoever sees a finished record finds the job file too: a real observer sees the names
    appear in completed/ in that order (inotify reports them in the order they were made; the
    script by a link, the record by a rename from its temporary name)."""
    appeared: list[str] = []
    both = threading.Event()

    class Appearing(FileSystemEventHandler):
        def on_created(self, event: FileSystemEvent) -> None:
            self.appear(str(event.src_path))

        def on_moved(self, event: FileSystemEvent) -> None:
            self.appear(str(event.dest_path))

        def appear(self, path: str) -> None:
            name = os.path.basename(path)
            if not name.startswith("."):
                appeared.append(name)
            if len(appeared) == 2:
                both.set()

    observer = Observer()
    observer.schedule(Appearing(), str(queue.layout.completed))
    observer.start()
    try:
        queue.submit_script("true\n", job_id="s")
        queue.finish(queue.claim("s.sh"), result_for("s"), None)
        assert both.wait(5), f"only {appeared} appeared"
    finally:
        observer.stop()
        observer.join()
    assert appeared == ["s.sh", "s.result.json"]


def test_list_pairs_sidecars_and_sorts_oldest_first(queue: JobQueue) -> None:
    for job_id in ("c", "a", "b"):
        queue.submit(JobSpec(command="true"), job_id=job_id)
    for age, job_id in enumerate(("c", "a", "b")):
        os.utime(queue.layout.pending / f"{job_id}.json", (1_000_000 + age, 1_000_000 + age))
    assert [info.job_id for info in queue.jobs("pending")] == ["c", "a", "b"]
    queue.submit_script("true\n", job_id="s")
    queue.finish(queue.claim("s.sh"), result_for("s"), None)
    queue.finish(queue.claim("a.json"), result_for("a"), JobSpec(command="true"))
    listed = queue.jobs(JobState.COMPLETED)
    assert sorted(info.job_id for info in listed) == ["a", "s"]
    assert all(info.result is not None for info in listed)


def test_wait_returns_the_current_state_at_its_timeout(queue: JobQueue) -> None:
    job_id = queue.submit(JobSpec(command="true"))
    assert queue.wait(job_id, timeout_s=0.05).state is JobState.PENDING
    queue.finish(queue.claim(f"{job_id}.json"), result_for(job_id), JobSpec(command="true"))
    assert queue.wait(job_id, timeout_s=5).state is JobState.COMPLETED


def test_worker_info_is_none_without_a_live_worker(queue: JobQueue) -> None:
    assert queue.worker_info() is None
    queue.layout.worker_file.write_text(
        json.dumps(
            {
                "pid": 999_999_999,
                "slots": 1,
                "started_at": "2026-01-01T00:00:00Z",
                "queue_dir": str(queue.root),
                "version": "0",
            }
        )
    )
    assert queue.worker_info() is None


def test_layout_is_private_and_refuses_shared_folders(tmp_path: Path) -> None:
    layout = QueueLayout.at(tmp_path / "q")
    layout.ensure()
    assert all(
        (layout.root / name).stat().st_mode & 0o777 == 0o700
        for name in ("", "pending", "running", "completed", "failed", "logs")
    )
    layout.root.chmod(0o770)
    with pytest.raises(UnsafeQueue, match="can be written by other users"):
        layout.ensure()
    layout.root.chmod(0o700)
    layout.pending.rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    os.symlink(tmp_path / "elsewhere", layout.pending)
    with pytest.raises(UnsafeQueue, match="symbolic link"):
        layout.ensure()
    layout.pending.unlink()
    layout.pending.mkdir(mode=0o700)
    layout.failed.rmdir()
    layout.failed.write_text("")
    with pytest.raises(UnsafeQueue, match="is not a directory"):
        layout.ensure()


def test_a_symlinked_root_is_resolved(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    assert JobQueue(tmp_path / "alias").root == tmp_path / "real"


def test_job_names_and_ids() -> None:
    assert split_job_name("build.json") == ("build", ".json", "json")
    assert split_job_name("deploy.sh") == ("deploy", ".sh", "text")
    assert split_job_name("notes.txt") == ("notes", ".txt", "text")
    assert split_job_name("photo.jpg") == ("photo.jpg", "", "other")
    assert split_job_name(".json") == (".json", "", "other")
    assert job_id_problem("ok id with spaces") is None
    assert job_id_problem("ünïcode-✓") is None
    assert "'/'" in (job_id_problem("a/b") or "")
    assert sanitize_job_id("bad\x00name\n") == "bad_name_"
    assert sanitize_job_id("...x.result") == "x.result-job"
    assert sanitize_job_id("\udcff") == "_"
    assert len(sanitize_job_id("x" * 500).encode()) <= 200
    for stem in ("a/b", "\x07", "x" * 300, ".dot", "y.result", "\udce9"):
        assert job_id_problem(sanitize_job_id(stem)) is None, stem


def test_stale_temp_files_of_a_dead_writer_are_removed(queue: JobQueue) -> None:
    exited = subprocess.Popen(["true"])
    exited.wait()
    dead_pid = exited.pid  # a pid whose process has certainly exited
    live_pid = os.getppid()  # the test runner's parent: alive, and not this process
    for state in ("pending", "running", "completed", "failed"):
        (queue.layout.root / state / f".execsvc-x.json-{dead_pid}-abcd.tmp").write_text("half a record")
    (queue.layout.failed / f".execsvc-y.json-{live_pid}-abcd.tmp").write_text("being written")
    (queue.layout.pending / ".execsvc-old-style.tmp").write_text("names no pid")
    (queue.layout.pending / ".a-producers-own.tmp").write_text("not ours")
    assert queue.remove_stale_temp_files(unnamed_older_than_s=60) == 4
    assert (queue.layout.failed / f".execsvc-y.json-{live_pid}-abcd.tmp").exists(), "its writer is alive"
    assert (queue.layout.pending / ".execsvc-old-style.tmp").exists(), "too young to judge"
    old = time.time() - 120
    os.utime(queue.layout.pending / ".execsvc-old-style.tmp", (old, old))
    assert queue.remove_stale_temp_files(unnamed_older_than_s=60) == 1
    assert (queue.layout.pending / ".a-producers-own.tmp").exists(), "only execsvc's own temporary files"


def test_a_damaged_record_does_not_break_reading_the_others(queue: JobQueue) -> None:
    queue.submit(JobSpec(command="true"), job_id="good")
    queue.finish(queue.claim("good.json"), result_for("good"), JobSpec(command="true"))
    (queue.layout.completed / "bad.json").write_text(json.dumps({"command": "true", "result": {"status": "nonsense"}}))
    (queue.layout.completed / "garbage.json").write_text("{not json")
    assert [info.job_id for info in queue.jobs("completed")] == ["good"]
    with pytest.raises(JobNotFound):
        queue.get("bad")


def test_get_finds_a_job_while_it_moves_through_every_folder(queue: JobQueue) -> None:
    """A reader racing the worker's claim and finish always finds the job (never JobNotFound)."""
    ids = [queue.submit(JobSpec(command="true")) for _ in range(60)]
    ids += [queue.submit_script("true\n") for _ in range(60)]
    seen: dict[str, set[JobState]] = {job_id: set() for job_id in ids}
    current: list[str] = []
    done = threading.Event()

    def worker() -> None:
        try:
            for job_id in ids:
                current.append(job_id)
                info = queue.get(job_id)
                claimed = queue.claim(os.path.basename(info.path))
                queue.finish(claimed, result_for(job_id), None if info.spec is None else JobSpec(**info.spec))
        finally:
            done.set()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        while not done.is_set():
            if current:
                job_id = current[-1]
                seen[job_id].add(queue.get(job_id).state)
    finally:
        thread.join()
    assert all(queue.get(job_id).state is JobState.COMPLETED for job_id in ids)
    assert len(set().union(*seen.values())) >= 2, "the reader must really have raced the moves"


def test_records_made_without_the_worker_keep_submitted_by(queue: JobQueue) -> None:
    """A cancelled pending job and a job settled after a crash say who submitted them, as worker records do."""

    queue.submit({"command": "true"}, job_id="to-cancel", submitted_by="my-tool")
    assert queue.cancel("to-cancel").info.result.submitted_by == "my-tool"  # type: ignore[union-attr]
    queue.submit({"command": "true"}, job_id="crashed", submitted_by="mcp")
    queue.claim("crashed.json")  # then the worker dies
    settle_running(queue, silent_event_log(), previous=None, kill_grace_s=0.1, tail_bytes=100)
    settled = queue.get("crashed")
    assert settled.status is JobStatus.INTERRUPTED
    assert settled.result is not None and settled.result.submitted_by == "mcp"


def test_finished_listings_take_their_times_from_the_index_only_while_it_is_right(queue: JobQueue) -> None:
    for job_id in ("a", "b"):
        queue.submit(JobSpec(command="true"), job_id=job_id)
        queue.finish(queue.claim(f"{job_id}.json"), result_for(job_id), JobSpec(command="true"))
    queue.submit_script("true\n", job_id="s")
    queue.finish(queue.claim("s.sh"), result_for("s"), None)
    completed = queue.layout.completed
    by_stat = {e.job_id: e.mtime_ns for e in queue.entries("completed", use_index=False)}
    assert {e.job_id: e.mtime_ns for e in queue.entries("completed")} == by_stat, "the index holds each record's mtime"
    assert set(finish_index.read(completed)) == {"a", "b", "s"}
    index = completed / INDEX_NAME
    inode, other = os.lstat(completed / "a.json").st_ino, os.lstat(completed / "b.json").st_ino + 1
    with open(index, "a") as handle:  # a later line wins: the listing believes the index...
        handle.write(f"5 {inode} a\n7 {other} b\nnot a line\n")
    listed = {e.job_id: e.mtime_ns for e in queue.entries("completed")}
    assert listed == {**by_stat, "a": 5}, "...but only for the same inode: b's line names another file"
    index.unlink()  # no index: every time from stat
    assert {e.job_id: e.mtime_ns for e in queue.entries("completed")} == by_stat
    assert [info.job_id for info in queue.jobs("completed")] == sorted(by_stat, key=lambda job_id: by_stat[job_id])
