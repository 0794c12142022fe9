"""The dashboard in a real browser (headless Debian Chromium through Playwright) against a real
worker and a real ``execsvc web`` on a free loopback port: live rows, live output, the actions,
and job text that must stay text."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import WorkerProcess, drop, process_gone, start_job_with_child, wait_finished, wait_until
from web_server import CHROMIUM, CHROMIUM_ARGS, WebServer, chromium_missing

from execsvc import JobQueue, JobState

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or "")

if chromium_missing() is None:
    from playwright.sync_api import Browser, Page, expect, sync_playwright

SCREENSHOT = os.environ.get("EXECSVC_SCREENSHOT")
"""Set to a path (docs/images/web.png) to have test_dropped_job_appears_and_completes write the docs' screenshot."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def start_web(queue_root: Path) -> Iterator[Callable[..., WebServer]]:
    started: list[WebServer] = []

    def start(*args: str) -> WebServer:
        JobQueue(queue_root)  # the folders, as a worker would make them
        server = WebServer(queue_root, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


def open_live(page: Page, server: WebServer, path: str = "") -> None:
    """Open the printed URL (it sets the token's cookie), then ``path``; wait until the page is live."""
    page.goto(server.url)
    if path:
        page.goto(server.base + path)
    expect(page.locator("#live-state")).to_have_text("live")


def row(page: Page, job_id: str) -> object:
    return page.locator(f"[id='job-{job_id}']")


def test_dropped_job_appears_and_completes(
    start_worker: Callable[..., WorkerProcess], start_web: Callable[..., WebServer], page: Page, queue_root: Path
) -> None:
    worker = start_worker("--slots", "2")
    server = start_web()
    open_live(page, server)
    gate = queue_root.parent / "gate"
    job = {"command": f"while [ ! -e {gate} ]; do sleep 0.05; done; echo done", "description": "from a shell"}
    # a plain shell drops it: a hidden temp file, then mv into pending/
    subprocess.run(
        [
            "sh",
            "-c",
            'printf "%s" "$1" > "$2/.shell.tmp" && mv "$2/.shell.tmp" "$2/shell.json"',
            "sh",
            json.dumps(job),
            str(queue_root / "pending"),
        ],
        check=True,
    )
    expect(row(page, "shell")).to_be_visible()
    worker.wait_for_line("started job=shell")
    expect(row(page, "shell").locator(".status-badge")).to_have_text("running")
    gate.touch()
    expect(row(page, "shell").locator(".status-badge")).to_have_text("completed")
    expect(page.locator("#count-completed")).to_have_text("1")
    if SCREENSHOT:
        for n in range(4):
            drop(queue_root, f"build-{n}.json", {"command": f"echo step {n}", "description": f"build step {n}"})
        drop(queue_root, "later.json", {"command": "make release", "delay_s": 3600, "description": "tonight"})
        drop(queue_root, "broken.json", {"command": "false", "description": "expected to fail"})
        wait_finished(queue_root, "broken")
        expect(row(page, "later")).to_be_visible()
        expect(row(page, "broken").locator(".status-badge")).to_have_text("failed")
        expect(page.locator("#count-failed")).to_have_text("1")
        # as bytes: screenshot(path=...) writes from a thread that outlives the test
        Path(SCREENSHOT).write_bytes(page.screenshot(full_page=True))
    assert page.reload() is not None  # the same row after a reload: it was the queue's, not the page's
    expect(row(page, "shell").locator(".status-badge")).to_have_text("completed")


def test_output_lines_appear_while_the_job_runs(
    start_worker: Callable[..., WorkerProcess], start_web: Callable[..., WebServer], page: Page, queue_root: Path
) -> None:
    worker = start_worker()
    server = start_web()
    gate = queue_root.parent / "gate"
    drop(
        queue_root,
        "talk.json",
        {
            "command": f"echo first line; printf '\\033[31mred\\033[0m\\n'; while [ ! -e {gate} ]; do sleep 0.05; done;"
            " echo second line; echo to stderr >&2",
        },
    )
    worker.wait_for_line("started job=talk")
    open_live(page, server, "/jobs/talk")
    stdout = page.locator("#stdout")
    expect(stdout).to_contain_text("first line")
    expect(stdout).to_contain_text("red")  # the colour codes are stripped, the text stays
    assert "second line" not in stdout.inner_text()
    gate.touch()
    expect(stdout).to_contain_text("second line")
    expect(page.locator("#output-state")).to_have_text("complete")
    expect(page.locator("#stderr")).to_have_text("to stderr\n")
    assert "\x1b" not in stdout.inner_text() and "[31m" not in stdout.inner_text()
    expect(row(page, "talk").locator(".status-badge")).to_have_text("completed")
    with page.expect_download() as download:
        page.locator("section.output a.download").first.click()
    assert Path(download.value.path()).read_bytes() == (queue_root / "logs" / "talk.stdout").read_bytes()


def test_cancel_button_stops_a_running_job(
    start_worker: Callable[..., WorkerProcess], start_web: Callable[..., WebServer], page: Page, queue_root: Path
) -> None:
    worker = start_worker()
    server = start_web()
    child = start_job_with_child(queue_root, worker, "long")
    open_live(page, server)
    expect(row(page, "long").locator(".status-badge")).to_have_text("running")
    page.once("dialog", lambda dialog: dialog.accept())
    row(page, "long").locator("button.cancel").click()
    expect(row(page, "long").locator(".status-badge")).to_have_text("cancelled")
    expect(page.locator("#message")).to_contain_text("stopped")
    wait_until(lambda: process_gone(child), what="the job's child to be gone")
    info = JobQueue(queue_root).get("long")
    assert info.state is JobState.FAILED and info.result is not None and info.result.status.value == "cancelled"


def test_submit_retry_hold_release_from_the_page(
    start_worker: Callable[..., WorkerProcess], start_web: Callable[..., WebServer], page: Page, queue_root: Path
) -> None:
    start_worker()
    server = start_web()
    open_live(page, server)
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator("#submit-box summary").click()
    page.locator("#submit-command").fill("echo")
    page.locator("#submit-args").fill("hello from\nthe web")
    page.locator("#submit-description").fill("submitted in a browser")
    page.locator("#submit-button").click()
    expect(page.locator("#message")).to_contain_text("submitted job")
    job_id = page.locator("#message").inner_text().split()[2]
    info = wait_finished(queue_root, job_id)
    assert (
        info.spec is not None and info.spec["submitted_by"] == "web" and info.spec["args"] == ["hello from", "the web"]
    )
    assert info.result is not None and info.result.stdout == "hello from the web\n"
    expect(row(page, job_id).locator(".status-badge")).to_have_text("completed")

    drop(queue_root, "fails.json", {"command": "exit 3"})
    wait_finished(queue_root, "fails")
    expect(row(page, "fails").locator(".status-badge")).to_have_text("failed")
    row(page, "fails").locator("button.retry").click()
    expect(page.locator("#message")).to_contain_text("submitted job fails-r1")
    assert wait_finished(queue_root, "fails-r1").result.returncode == 3  # type: ignore[union-attr]
    expect(row(page, "fails-r1")).to_be_visible()

    drop(queue_root, "later.json", {"command": "echo later", "delay_s": 3600})
    expect(row(page, "later")).to_be_visible()
    row(page, "later").locator("button.hold").click()
    expect(row(page, "later").locator(".held")).to_be_visible()
    assert JobQueue(queue_root).get("later").held
    row(page, "later").locator("button.release").click()
    expect(row(page, "later").locator(".held")).to_have_count(0)
    assert not JobQueue(queue_root).get("later").held


HOSTILE = '<script>window.__owned = 1</script><img src=x onerror="window.__owned = 2">'


def test_job_text_is_shown_as_text_and_never_runs(
    start_worker: Callable[..., WorkerProcess], start_web: Callable[..., WebServer], page: Page, queue_root: Path
) -> None:
    start_worker()
    server = start_web()
    drop(
        queue_root,
        "hostile.json",
        {"command": "printf '%s\\n' \"$0\"", "args": [HOSTILE], "shell": True, "description": HOSTILE},
    )
    drop(queue_root, "hostile2.json", {"command": f"echo '{HOSTILE}'", "description": HOSTILE})
    wait_finished(queue_root, "hostile")
    wait_finished(queue_root, "hostile2")
    open_live(page, server)
    expect(row(page, "hostile2").locator(".description")).to_have_text(HOSTILE)
    expect(row(page, "hostile2").locator("code")).to_contain_text("<script>")
    assert page.evaluate("window.__owned") is None
    assert page.locator("img[src=x]").count() == 0
    page.goto(server.base + "/jobs/hostile2")
    expect(page.locator("#stdout")).to_have_text(HOSTILE + "\n")
    expect(page.locator("#command")).to_contain_text(HOSTILE)
    assert page.evaluate("window.__owned") is None
    assert page.locator("img[src=x]").count() == 0
    drop(queue_root, "hostile3.json", {"command": "sleep 0.2", "description": HOSTILE})  # arrives live
    page.goto(server.base + "/")
    expect(row(page, "hostile3").locator(".description")).to_have_text(HOSTILE)
    assert page.evaluate("window.__owned") is None


def write_history(queue_root: Path, count: int) -> None:
    """``count`` finished records in completed/, as a worker writes them, with the finish-time index."""
    completed = queue_root / "completed"
    template = {
        "command": "true",
        "submitted_by": "file",
        "result": {
            "status": "completed",
            "returncode": 0,
            "completed_at": "2026-11-30T10:00:00+00:00",
            "started_at": "2026-11-30T09:59:59+00:00",
            "duration_s": 0.5,
        },
    }
    lines = []
    for n in range(count):
        job_id = f"old-{n:06d}"
        record = {**template, "result": {**template["result"], "job_id": job_id, "job_file": f"{job_id}.json"}}
        path = completed / f"{job_id}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, json.dumps(record).encode())
        os.close(fd)
        stat = os.stat(path)
        lines.append(f"{stat.st_mtime_ns} {stat.st_ino} {job_id}\n")
    (completed / ".index").write_text("".join(lines))


def test_first_page_over_100000_records(start_web: Callable[..., WebServer], page: Page, queue_root: Path) -> None:
    JobQueue(queue_root)
    write_history(queue_root, 100_000)
    server = start_web()
    open_live(page, server)
    expect(page.locator("#count-completed")).to_have_text("100000")
    expect(page.locator("#rows tr.job")).to_have_count(50)
    expect(page.locator("#older")).to_be_visible()
    page.locator("#older").click()
    expect(page.locator("#newest")).to_be_visible()
    expect(page.locator("#rows tr.job")).to_have_count(50)


def test_a_dropped_event_stream_is_said_and_the_page_refreshes_slowly(
    start_web: Callable[..., WebServer], page: Page
) -> None:
    server = start_web()
    open_live(page, server)
    server.stop()
    expect(page.locator("#live-state")).to_contain_text("live updates lost: refreshing every 10 s")
    expect(page.locator("#live-state")).to_have_class("live-down")


def test_many_tabs_of_one_browser_are_all_live(
    start_worker: Callable[..., WorkerProcess], start_web: Callable[..., WebServer], browser: Browser, queue_root: Path
) -> None:
    """A browser keeps at most six HTTP/1.1 connections to one host: every tab's event stream
    must share one, or the seventh tab never even loads."""
    start_worker()
    server = start_web()
    context = browser.new_context()
    try:
        tabs = []
        for n in range(8):
            tab = context.new_page()
            tab.set_default_timeout(15_000)
            tab.goto(server.url if n == 0 else server.base + ("/" if n % 2 else "/jobs/none"))
            expect(tab.locator("#live-state")).to_have_text("live")
            tabs.append(tab)
        drop(queue_root, "seen-by-all.json", {"command": "true"})
        wait_finished(queue_root, "seen-by-all")
        for tab in tabs[1::2]:
            expect(tab.locator("[id='job-seen-by-all'] .status-badge")).to_have_text("completed")
    finally:
        context.close()


def test_the_overview_ends_with_the_counts_of_a_burst(
    start_worker: Callable[..., WorkerProcess], start_web: Callable[..., WebServer], page: Page, queue_root: Path
) -> None:
    """The overview is pushed at most once a second while jobs change; the last push must
    still be read after the last change (over a history that takes a while to count)."""
    JobQueue(queue_root)
    write_history(queue_root, 20_000)
    start_worker("--slots", "2")
    server = start_web()
    open_live(page, server)
    for n in range(60):
        drop(queue_root, f"burst-{n:02d}.json", {"command": "true"})
    for n in range(60):
        wait_finished(queue_root, f"burst-{n:02d}")
    expect(page.locator("#count-completed")).to_have_text("20060")
    expect(page.locator("#count-pending")).to_have_text("0")
    expect(page.locator("#count-running")).to_have_text("0")
