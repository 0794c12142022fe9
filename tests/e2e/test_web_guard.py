"""The dashboard's safety on a shared machine, against a real ``execsvc web`` on a free
loopback port: the token, the Host check, same-origin POSTs, --read-only, the headers, and
job text that stays text in a real browser with --read-only."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import WorkerProcess, drop, start_job_with_child, wait_finished, wait_until
from web_server import CHROMIUM, CHROMIUM_ARGS, WebServer, chromium_missing

from execsvc import JobQueue, JobState


@pytest.fixture
def start_web(queue_root: Path) -> Iterator[Callable[..., WebServer]]:
    started: list[WebServer] = []

    def start(*args: str) -> WebServer:
        JobQueue(queue_root)
        server = WebServer(queue_root, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def cookie_of(server: WebServer) -> dict[str, str]:
    """The cookie a browser gets by opening the printed URL (checked on the way)."""
    status, headers, _ = server.request("GET", f"/?token={server.token}")
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert cookie.startswith(f"execsvc_web_{server.port}={server.token};")
    return {"Cookie": f"execsvc_web_{server.port}={server.token}"}


def test_without_the_token_every_request_gets_401(start_web: Callable[..., WebServer]) -> None:
    server = start_web()
    for method, path in (
        ("GET", "/"),
        ("GET", "/rows"),
        ("GET", "/events"),
        ("GET", "/jobs/x"),
        ("GET", "/static/app.js"),
        ("POST", "/submit"),
    ):
        status, headers, body = server.request(method, path)
        assert status == 401, (method, path)
        assert "open the URL execsvc web printed" in body
        assert "access-control-allow-origin" not in headers
    status, _, _ = server.request("GET", "/?token=not-the-token")
    assert status == 401
    status, _, _ = server.request("GET", "/", headers={"Cookie": f"execsvc_web_{server.port}=wrong"})
    assert status == 401
    status, headers, body = server.request("GET", "/", headers=cookie_of(server))
    assert status == 200 and "<table" in body
    assert "script-src 'self'" in headers["content-security-policy"] and "unsafe-inline" not in body
    assert headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in headers
    assert not re.search(r"<script>(?!</script>)", body)  # no inline script: every <script> has a src


def test_a_foreign_host_header_is_refused(start_web: Callable[..., WebServer]) -> None:
    server = start_web()
    cookie = cookie_of(server)
    # Header values only, sent to the server on 127.0.0.1 (WebServer.request): nothing leaves this
    # machine, and .invalid names never resolve anywhere (RFC 2606).
    for host in ("attacker.invalid", f"attacker.invalid:{server.port}", f"127.0.0.1:{server.port + 1}", ""):
        status, _, body = server.request("GET", "/", headers={**cookie, "Host": host})
        assert status == 421, host
        assert "only to the address it was started on" in body
    status, _, _ = server.request("GET", "/", headers={**cookie, "Host": f"localhost:{server.port}"})
    assert status == 200


def test_a_cross_origin_post_is_refused_and_changes_nothing(
    start_worker: Callable[..., WorkerProcess], start_web: Callable[..., WebServer], queue_root: Path
) -> None:
    worker = start_worker()
    server = start_web()
    cookie = cookie_of(server)
    start_job_with_child(queue_root, worker, "victim")
    for extra in (
        {"Origin": "http://attacker.invalid"},  # a header sent to 127.0.0.1 only
        {"Origin": "null"},
        {"Origin": f"http://127.0.0.1:{server.port + 1}"},
        {"Sec-Fetch-Site": "cross-site"},
        {},
    ):
        status, _, body = server.request("POST", "/jobs/victim/cancel", headers={**cookie, **extra}, body="")
        assert status == 403, extra
        assert "must come from this server's own page" in body
        status, _, _ = server.request("POST", "/submit", headers={**cookie, **extra}, body="command=touch+/tmp/x")
        assert status == 403
    assert JobQueue(queue_root).get("victim").state is JobState.RUNNING
    assert len(JobQueue(queue_root).entries(JobState.PENDING)) == 0
    status, _, _ = server.request("PUT", "/jobs/victim/cancel", headers=cookie)
    assert status == 405
    status, _, body = server.request("POST", "/jobs/victim/cancel", headers={**cookie, "Origin": server.base}, body="")
    assert status == 200 and "stopped" in body
    assert wait_finished(queue_root, "victim").status.value == "cancelled"


def test_read_only_shows_no_actions_and_refuses_every_post(
    start_worker: Callable[..., WorkerProcess], start_web: Callable[..., WebServer], queue_root: Path
) -> None:
    start_worker()
    server = start_web("--read-only")
    drop(queue_root, "done.json", {"command": "true"})
    drop(queue_root, "later.json", {"command": "true", "delay_s": 3600})
    wait_finished(queue_root, "done")
    cookie = cookie_of(server)
    same_origin = {**cookie, "Origin": server.base}
    for path in ("/submit", "/jobs/later/cancel", "/jobs/later/hold", "/jobs/done/retry"):
        status, _, body = server.request("POST", path, headers=same_origin, body="command=true")
        assert status == 403, path
        assert "read-only" in body
    assert JobQueue(queue_root).get("later").state is JobState.PENDING
    assert not JobQueue(queue_root).get("later").held
    assert not JobQueue(queue_root).layout.id_in_use("done-r1")
    if chromium_missing() is not None:
        pytest.skip(chromium_missing() or "")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(server.url)
            expect(page.locator("#live-state")).to_have_text("live")
            expect(page.locator("[id='job-done']")).to_be_visible()
            expect(page.locator("[id='job-later']")).to_be_visible()
            assert page.locator("button").count() == 0
            assert page.locator("#submit-form").count() == 0
            expect(page.locator(".badge")).to_have_text("read-only")
            page.goto(server.base + "/jobs/later")
            expect(page.locator("#waiting")).to_contain_text("due at")
            assert page.locator("button").count() == 0
        finally:
            browser.close()


def test_the_server_stops_on_sigterm_with_pages_open(start_web: Callable[..., WebServer]) -> None:
    server = start_web()
    cookie = cookie_of(server)
    import http.client

    streams = []
    for _ in range(3):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/events", headers={**cookie, "Host": f"127.0.0.1:{server.port}"})
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("content-type", "").startswith("text/event-stream")
        assert b"event: ready" in response.readline() + response.readline()
        streams.append(connection)
    # uvicorn stops gracefully, then raises the signal again (its exit status is SIGTERM's)
    assert server.stop() in (0, -signal.SIGTERM)
    assert not any("Traceback" in line or "ERROR" in line for line in server.lines), server.lines
    for connection in streams:
        connection.close()


def test_output_resumes_from_the_offsets_a_reconnecting_browser_sends(
    start_worker: Callable[..., WorkerProcess], start_web: Callable[..., WebServer], queue_root: Path
) -> None:
    start_worker()
    server = start_web()
    drop(queue_root, "said.json", {"command": "printf 'one\\ntwo\\n'; printf 'err\\n' >&2"})
    wait_finished(queue_root, "said")
    cookie = cookie_of(server)
    status, headers, body = server.request("GET", "/jobs/said/output", headers=cookie)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert "event: stdout" in body and '"one\\ntwo\\n"' in body and "id: 8,0" in body
    assert "event: stderr" in body and "id: 8,4" in body and "event: end" in body
    status, _, body = server.request("GET", "/jobs/said/output", headers={**cookie, "Last-Event-ID": "4,0"})
    assert status == 200 and '"two\\n"' in body and "one" not in body and "id: 8,4" in body
    status, _, body = server.request("GET", "/jobs/said/output", headers={**cookie, "Last-Event-ID": "8,4"})
    assert "event: stdout" not in body and "event: stderr" not in body and "event: end" in body
    status, _, body = server.request("GET", "/jobs/said/output", headers={**cookie, "Last-Event-ID": "x"})
    assert status == 400 and "not the offsets" in body
    status, headers, body = server.request("GET", "/jobs/said/log/stdout", headers=cookie)
    assert status == 200 and body == "one\ntwo\n" and "attachment" in headers["content-disposition"]


def test_reading_a_job_is_no_change_so_an_idle_queue_sends_nothing(
    start_web: Callable[..., WebServer], queue_root: Path
) -> None:
    """The server reads a job to render its row; the watcher sees that read (inotify's open and
    close-without-write). Taken for a change, it re-renders the row, reads it again: a loop."""
    server = start_web()
    cookie = cookie_of(server)
    import http.client
    import json

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    connection.request("GET", "/events", headers={**cookie, "Host": f"127.0.0.1:{server.port}"})
    response = connection.getresponse()
    assert b"event: ready" in response.readline()

    def rows_until(job_id: str) -> list[str]:
        """The ids of every row pushed until one for ``job_id`` arrives."""
        seen: list[str] = []
        event = ""
        while job_id not in seen:
            line = response.readline().decode()
            assert line, "the stream ended"
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "rows":
                seen += [row["id"] for row in json.loads(line[5:])]
        return seen

    drop(queue_root, "idle.json", {"command": "true"})
    rows_until("idle")
    assert server.request("GET", "/jobs/idle", headers=cookie)[0] == 200  # reads it once more
    drop(queue_root, "marker.json", {"command": "true"})
    assert rows_until("marker") == ["marker"]
    connection.close()


def test_force_cancel_kills_a_job_that_ignores_sigterm_at_once(
    start_worker: Callable[..., WorkerProcess], start_web: Callable[..., WebServer], queue_root: Path
) -> None:
    start_worker("--kill-grace-s", "60")  # without force, stopping it would take a minute
    server = start_web()
    cookie = cookie_of(server)
    drop(queue_root, "stubborn.json", {"command": "trap '' TERM; sleep 60"})
    wait_until(lambda: JobQueue(queue_root).get("stubborn").state is JobState.RUNNING, what="the job to start")
    status, _, body = server.request("GET", "/jobs/stubborn", headers=cookie)
    assert status == 200 and "/jobs/stubborn/force-cancel" in body  # the detail page offers it for a running job
    status, _, body = server.request(
        "POST", "/jobs/stubborn/force-cancel", headers={**cookie, "Origin": server.base}, body=""
    )
    assert status == 200 and "stopped" in body, body
    record = wait_finished(queue_root, "stubborn")
    assert record.status.value == "cancelled" and record.result is not None
    assert "(forced)" in (record.result.error or "") and "SIGKILL" in (record.result.error or "")
