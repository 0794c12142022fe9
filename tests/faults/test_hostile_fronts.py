"""Hostile input against the viewers and the fronts: field values out of range, terminal escapes and
rich markup in a job's text, ids that spoof their name, and a `submit --wait` that cannot watch.

Each test drives the installed commands (``queue-view``, ``execsvc``) as real processes, a real
worker where a job must run, and the MCP server through the SDK's client.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from conftest import WorkerProcess, console_script, daemon_log, drop, wait_finished
from mcp import Client
from mcp.types import CallToolResult

from execsvc import InvalidJobId, JobQueue, JobState, JobStatus
from execsvc.protocol.layout import job_id_problem, sanitize_job_id
from execsvc.protocol.models import WorkerInfo
from queue_tools.mcp.server import build_server

Start = Callable[..., WorkerProcess]


def run(queue_root: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """An installed console script on the test's queue, its output as bytes (every byte checked)."""
    program, *rest = argv
    return subprocess.run(
        [console_script(program), *rest[:1], "--queue-dir", str(queue_root), *rest[1:]]
        if program == "execsvc"
        else [console_script(program), "--queue-dir", str(queue_root), *rest],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def mcp_session(queue_root: Path, session: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        async with Client(build_server(queue_root)) as client:
            await session(client)

    anyio.run(main)


def text_of(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


def pending_names(queue_root: Path) -> list[str]:
    return sorted(name for name in os.listdir(queue_root / "pending") if not name.startswith("."))


def record(job_id: str, **result: Any) -> dict[str, Any]:
    """A finished JSON job's record as the worker writes it (fields given override)."""
    base: dict[str, Any] = {
        "job_id": job_id,
        "status": "failed",
        "returncode": 1,
        "completed_at": "2026-11-21T10:00:01+00:00",
        "started_at": "2026-11-21T10:00:00+00:00",
        "duration_s": 1.0,
        "job_file": f"{job_id}.json",
    }
    return {"command": "false", "result": {**base, **result}}


# ----- 16.15: field values out of range --------------------------------------------------


OUT_OF_RANGE = {
    "huge-delay": ({"command": "echo", "delay_s": 1e300}, "delay_s"),
    "delay-past-9999": ({"command": "echo", "delay_s": 1e12}, "delay_s"),
    "year-one": ({"command": "echo", "not_before": "0001-01-01T00:00:00"}, "not_before"),
    "year-9999": ({"command": "echo", "not_before": "9999-12-31T23:59:59-12:00"}, "not_before"),
    "huge-retry-delay": ({"command": "echo", "retries": 1, "retry_delay_s": 1e300}, "retry_delay_s"),
    "attempt-2000": ({"command": "echo", "retries": 1, "attempt": 2000}, "attempt"),
    "huge-cpu": ({"command": "echo", "limits": {"cpu_s": 1e300}}, "cpu_s"),
    "huge-memory": ({"command": "echo", "limits": {"memory_mb": 10**30}}, "memory_mb"),
}


def test_out_of_range_fields_make_a_job_invalid_with_a_sentence(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker()
    for job_id, (spec, _field) in OUT_OF_RANGE.items():
        drop(queue_root, f"{job_id}.json", spec)
    drop(queue_root, "fine.json", {"command": "echo", "args": ["fine"], "delay_s": 0.01, "limits": {"cpu_s": 60}})
    assert wait_finished(queue_root, "fine", timeout_s=10).status is JobStatus.COMPLETED
    for job_id, (_spec, field) in OUT_OF_RANGE.items():
        info = wait_finished(queue_root, job_id, timeout_s=10)
        assert info.status is JobStatus.INVALID, (job_id, info)
        assert info.result is not None and info.result.error is not None
        assert field in info.result.error and "out of range" not in info.result.error, info.result.error
    assert worker.proc.poll() is None


def test_fronts_refuse_out_of_range_fields_before_writing_the_job(queue_root: Path) -> None:
    JobQueue(queue_root)
    too_late = run(queue_root, "execsvc", "submit", "--delay-s", "1e12", "--", "echo", "x")
    assert too_late.returncode == 2, too_late
    assert b"delay_s" in too_late.stderr and b"Traceback" not in too_late.stderr
    year_one = run(queue_root, "execsvc", "submit", "--not-before", "0001-01-01T00:00:00", "--", "echo", "x")
    assert year_one.returncode == 2 and b"1970" in year_one.stderr, year_one
    assert pending_names(queue_root) == []

    async def session(client: Client) -> None:
        for fields in ({"delay_s": 1e300}, {"delay_s": 1e12}, {"not_before": "0001-01-01T00:00:00"}):
            refused = await client.call_tool("enqueue_job", {"command": "echo x", **fields})
            assert refused.is_error, refused
            assert next(iter(fields)) in text_of(refused) and "Traceback" not in text_of(refused)
            assert pending_names(queue_root) == []  # refused means not written: a retry enqueues it once
        later = await client.call_tool("enqueue_job", {"command": "echo x", "delay_s": 86_400})
        assert not later.is_error, later.content
        assert later.structured_content is not None and "due at" in later.structured_content["waiting"]
        assert len(pending_names(queue_root)) == 1

    mcp_session(queue_root, session)


def test_an_enqueue_that_wrote_the_job_says_so_whatever_happens_next(queue_root: Path) -> None:
    """A job that cannot be read back once written (here a foreign worker leaves a damaged record
    for it): enqueue_job still answers with the job's id, so a client does not enqueue it again."""
    JobQueue(queue_root)
    pending, completed = queue_root / "pending", queue_root / "completed"
    moved: list[str] = []
    started = datetime.fromtimestamp(psutil.Process().create_time(), UTC)  # the foreign worker says it serves
    foreign = WorkerInfo(pid=os.getpid(), slots=1, started_at=started, queue_dir=str(queue_root), version="0")
    (queue_root / "worker.json").write_text(foreign.model_dump_json())

    def foreign_worker() -> None:
        deadline = time.monotonic() + 20
        while not moved and time.monotonic() < deadline:
            for name in pending_names(queue_root):
                os.rename(pending / name, completed / name)
                (completed / name).write_text(json.dumps({"command": "echo", "result": {"job_id": 1}}))
                moved.append(name)
            time.sleep(0.01)

    async def session(client: Client) -> None:
        done = await client.call_tool("enqueue_job", {"command": "echo x", "wait_s": 5})
        assert not done.is_error, done.content
        assert done.structured_content is not None
        assert f"{done.structured_content['job_id']}.json" in moved
        assert "do not enqueue it again" in done.structured_content["note"]

    worker = threading.Thread(target=foreign_worker)
    worker.start()
    try:
        mcp_session(queue_root, session)
    finally:
        worker.join()


def test_listings_show_entries_whose_fields_are_out_of_range(queue_root: Path) -> None:
    """Files written by hand (the protocol lets anyone write them) with values no front accepts:
    every listing shows them, one by one, and goes on."""
    queue = JobQueue(queue_root)
    drop(queue_root, "huge-delay.json", {"command": "echo", "delay_s": 1e300})
    drop(queue_root, "delay-past-9999.json", {"command": "echo", "delay_s": 1e12})
    drop(queue_root, "markup.json", {"command": "echo [/bold] done"})
    failed = queue.layout.failed
    (failed / "year-one.json").write_text(json.dumps(record("year-one", started_at="0001-01-01T00:00:00+00:00")))
    (failed / "year-9999.json").write_text(
        json.dumps(record("year-9999", completed_at="9999-12-31T23:59:59+00:00", duration_s=1e300))
    )
    ids = ["huge-delay", "delay-past-9999", "markup", "year-one", "year-9999"]
    for tz in ("America/New_York", "Asia/Tokyo"):  # year 1 and year 9999 each leave the range in one zone
        for argv in ([], ["list"], ["list", "--state", "waiting"], ["--json"]):
            done = run(queue_root, "queue-view", *argv, env={"TZ": tz, "COLUMNS": "250"})
            assert done.returncode == 0 and b"Traceback" not in done.stderr, (argv, done.stderr.decode())
            shown = done.stdout.decode()
            for job_id in ids if argv != ["list", "--state", "waiting"] else []:  # refused when claimed: not waiting
                assert job_id in shown, (argv, job_id, shown)
            if argv == ["--json"]:
                assert "not valid, a worker refuses it: 'delay_s': a delay is at most" in shown
        for job_id in ids:
            done = run(queue_root, "queue-view", "show", job_id, env={"TZ": tz})
            assert done.returncode == 0 and b"Traceback" not in done.stderr, (job_id, done.stderr.decode())
            assert job_id in done.stdout.decode()

    async def session(client: Client) -> None:
        page = await client.call_tool("list_jobs", {"limit": 50})
        assert not page.is_error, page.content
        assert page.structured_content is not None
        assert sorted(job["job_id"] for job in page.structured_content["jobs"]) == sorted(ids)
        for job_id in ids:
            one = await client.call_tool("get_job", {"job_id": job_id})
            assert not one.is_error, (job_id, one.content)

    mcp_session(queue_root, session)


# ----- 16.18: a missing folder, a watch that cannot start -------------------------------


def test_queue_view_says_which_folder_is_missing(queue_root: Path) -> None:
    JobQueue(queue_root)
    (queue_root / "running").rmdir()
    for argv in ([], ["list"], ["show", "nosuch"]):
        done = run(queue_root, "queue-view", *argv)
        assert done.returncode == 1, done
        assert b"Traceback" not in done.stderr and b"running" in done.stderr, done.stderr.decode()


def _user_namespaces() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run(
        [unshare, "--user", "--map-root-user", "sh", "-c", "echo 0 > /proc/sys/user/max_inotify_instances"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _user_namespaces(), reason="needs user namespaces")
def test_submit_wait_without_inotify_still_waits_and_prints(queue_root: Path, start_worker: Start) -> None:
    """`execsvc submit --wait` in a user namespace whose inotify instance limit is 0 (inotify_init
    fails with EMFILE there, as when a user's 128 instances are used up; the rest of the machine
    keeps its limit): it still waits for the job and prints its output."""
    start_worker()
    script = (
        'echo 0 > /proc/sys/user/max_inotify_instances && exec "$0" submit --queue-dir "$1" --wait '
        "--shell 'sleep 0.3; echo ran'"
    )
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c", script, console_script("execsvc"), str(queue_root)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert b"Traceback" not in done.stderr, done.stderr.decode()
    assert done.returncode == 0 and done.stdout == b"ran\n", done
    assert b"cannot watch the queue" in done.stderr  # it says why it looks every half second
    JobQueue(queue_root).submit({"command": "echo a; sleep 0.5; echo b"}, job_id="slow")
    follow = 'echo 0 > /proc/sys/user/max_inotify_instances && exec "$0" --queue-dir "$1" logs slow --follow'
    followed = subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c", follow, console_script("queue-view"), str(queue_root)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert followed.returncode == 0 and followed.stdout == b"a\nb\n", followed
    assert b"Traceback" not in followed.stderr


# ----- 17.8: terminal escapes and rich markup in a job's text ----------------------------

ESCAPES = {
    "title": "\x1b]0;pwned\x07",
    "clear": "\x1b[2J\x1b[H",
    "colour": "\x1b[45;97m",
    "link": "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",
    "c1": "\x9b2J",
}
MARKUP = "[link=https://evil.example/]click me[/link] [/bold]"


def _assert_inert(output: bytes, what: object) -> None:
    """No byte sequence of the job's text reached the terminal as a control; rich's own styles may."""
    text = output.decode("utf-8", errors="replace")
    assert "\x1b]" not in text, (what, text)  # no OSC at all: no title, no hyperlink (rich makes none here)
    assert "\x07" not in text and "\x9b" not in text, (what, text)
    assert "\x1b[2J" not in text and "\x1b[H" not in text and "\x1b[45;97m" not in text, (what, text)
    assert "evil.example" not in text or "[link=https://evil.example/]" in text, (what, text)


def test_queue_view_shows_a_jobs_text_as_text(queue_root: Path, start_worker: Start) -> None:
    start_worker()
    nasty = "".join(ESCAPES.values())
    printer = "import sys; sys.stdout.write(sys.argv[1]); sys.stderr.write(sys.argv[1])"
    drop(
        queue_root,
        "loud.json",
        {"command": sys.executable, "args": ["-c", printer, nasty + MARKUP], "description": nasty + MARKUP},
    )
    drop(queue_root, "marked.json", {"command": f"echo {MARKUP}", "description": MARKUP})
    wait_finished(queue_root, "loud")
    wait_finished(queue_root, "marked")
    (queue_root / "failed" / "forged.json").write_text(json.dumps(record("forged", error=nasty + MARKUP)))
    drop(queue_root, "waiting.json", {"command": nasty, "args": [nasty], "delay_s": 3600, "description": nasty})
    env = {"TERM": "xterm-256color", "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "400"}
    for argv in ([], ["list"], ["list", "--state", "waiting"], *(["show", job] for job in ("loud", "forged"))):
        done = run(queue_root, "queue-view", *argv, env=env)
        assert done.returncode == 0 and b"Traceback" not in done.stderr, (argv, done.stderr.decode())
        assert b"\x1b[" in done.stdout, "rich was not forced to style its output: the test would prove nothing"
        _assert_inert(done.stdout, argv)
    shown = run(queue_root, "queue-view", "show", "marked", env=env).stdout.decode()
    assert "[link=https://evil.example/]click me[/link]" in shown  # markup shown as the text it is
    loud = run(queue_root, "queue-view", "show", "loud", env=env).stdout.decode()
    assert "\\x1b]0;pwned\\x07" in loud  # made visible, not dropped
    assert "\\x1b[2J" in loud and "\\x9b2J" in loud
    log = run(queue_root, "queue-view", "daemon-log", "-n", "100", env=env)
    assert log.returncode == 0 and b"started job=loud" in log.stdout
    _assert_inert(log.stdout, "daemon-log")
    assert "\x9b" not in daemon_log(queue_root)  # daemon.log holds the C1 control escaped too


def test_queue_view_watch_on_a_terminal_shows_a_jobs_text_as_text(queue_root: Path) -> None:
    """`watch` draws on a real terminal (a pty): markup and escapes in a pending job stay text."""
    queue = JobQueue(queue_root)
    queue.submit({"command": MARKUP + "".join(ESCAPES.values()), "delay_s": 3600}, job_id="watched")
    main, side = pty.openpty()
    proc = subprocess.Popen(
        [console_script("queue-view"), "--queue-dir", str(queue_root), "watch"],
        stdin=side,
        stdout=side,
        stderr=side,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "300", "LINES": "40"},
        start_new_session=True,
    )
    os.close(side)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"click me" not in seen and proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([main], [], [], 0.5)
            if ready:
                with contextlib.suppress(OSError):
                    seen += os.read(main, 65536)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        os.close(main)
    assert b"Traceback" not in seen and b"MarkupError" not in seen, seen.decode(errors="replace")
    assert b"[link=https://evil.example/]click me[/link]" in seen, seen.decode(errors="replace")
    _assert_inert(seen.replace(b"\x1b[?1049h", b"").replace(b"\x1b[?1049l", b""), "watch")


# ----- 17.9: ids that spoof their name ----------------------------------------------------

SPOOFING = {
    "rlo": "invoice\u202efdp.exe",  # shown as "invoiceexe.pdf"
    "zero-width": "dep\u200bloy",
    "line-separator": "a\u2028b",
    "private-use": "x\ue000y",
    "soft-hyphen": "ab\u00adc",
}


@pytest.mark.parametrize("job_id", SPOOFING.values(), ids=SPOOFING.keys())
def test_an_id_with_invisible_or_format_characters_is_not_valid(job_id: str, queue_root: Path) -> None:
    assert job_id_problem(job_id) is not None
    clean = sanitize_job_id(job_id)
    assert job_id_problem(clean) is None and clean.isprintable() and clean != job_id
    with pytest.raises(InvalidJobId):
        JobQueue(queue_root).submit({"command": "echo"}, job_id=job_id)


def test_the_worker_renames_a_job_whose_name_spoofs_another(queue_root: Path, start_worker: Start) -> None:
    worker = start_worker()
    drop(queue_root, "invoice\u202efdp.exe.json", {"command": "echo", "args": ["ran"]})
    line = worker.wait_for_line("renamed job=")
    new_id = line.split("renamed job=", 1)[1].split()[0]
    assert "\u202e" not in new_id and new_id == sanitize_job_id("invoice\u202efdp.exe")
    info = wait_finished(queue_root, new_id)
    assert info.status is JobStatus.COMPLETED and info.state is JobState.COMPLETED
    listing = run(queue_root, "queue-view", "list")
    assert "\u202e" not in listing.stdout.decode() and new_id in listing.stdout.decode()
