"""The dashboard's figures (issue 21): the first page over 100,000 finished records, the time
from a job file dropped into ``pending/`` to its row visible in a browser, and the server's CPU
with 20 pages open while 1,000 jobs run (20 Chromium pages, a browser context each, so 20
event streams). Each is measured ``--rounds`` times (default 3) and
printed as the median of the rounds.

    .venv/bin/python -m bench.web [--rounds N] [--drops N] [--jobs N] [--pages N]

Needs Debian's chromium (/usr/bin/chromium) and playwright, as the browser tests do; starts the
installed ``execsvc run`` and ``execsvc web`` on scratch queues and a free loopback port.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from bench.measures import history_queue, p90

BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
_URL = re.compile(r"at (http://\S+/\?token=(\S+))")

# Records when each row first appears in the table (Date.now(), ms), by job id.
_WATCH_ROWS = """
window.__seen = {};
new MutationObserver(() => {
  document.querySelectorAll('#rows tr.job').forEach(tr => {
    if (!(tr.dataset.job in window.__seen)) window.__seen[tr.dataset.job] = Date.now();
  });
}).observe(document.body, {childList: true, subtree: true});
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``execsvc web`` on a free port: ``url`` (with the token), ``pid``."""

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [str(BIN / "execsvc"), "web", "--queue-dir", str(root), "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=open(root.parent / f"web-{root.name}.log", "w"),  # noqa: SIM115 (the child keeps it)
            text=True,
        )
        assert self.proc.stdout is not None
        found = _URL.search(self.proc.stdout.readline())
        if found is None:
            raise RuntimeError("execsvc web printed no URL")
        self.url, self.token = found.group(1), found.group(2)

    def get_s(self, path: str) -> float:
        """Wall seconds of one ``GET path`` (a script's request, with the bearer token), body read."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        begun = time.perf_counter()
        connection.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        response = connection.getresponse()
        response.read()
        elapsed = time.perf_counter() - begun
        connection.close()
        assert response.status == 200, response.status
        return elapsed

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Worker:
    def __init__(self, root: Path, slots: int) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "execsvc"), "run", "--queue-dir", str(root), "--slots", str(slots), "--stderr-level", "info"],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "watching" in line:
                break
        self.proc.stderr.close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


@contextmanager
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def drop(pending: Path, job_id: str, job: dict[str, object]) -> float:
    """Write a job as a careful tool does (hidden temp file, rename); the time of the rename (s)."""
    temp = pending / f".{job_id}.tmp"
    temp.write_text(json.dumps(job))
    at = time.time()
    os.rename(temp, pending / f"{job_id}.json")
    return at


def _after_overview_expired(server: Server) -> float:
    """``GET /`` once the overview the server keeps for 1 s has expired, so it is read again."""
    time.sleep(1.1)
    return server.get_s("/")


def first_page(scratch: Path, records: int, samples: int) -> tuple[float, float, float]:
    """Over ``records`` finished records: (s of the first ``GET /`` after the server started,
    median s of the next ``GET /``, median s of a browser's load of the page to its 50th row)."""
    root = history_queue(scratch, "history", records)
    server = Server(root)
    try:
        cold_s = server.get_s("/")  # the first lists the folders and reads the overview's 500 records
        http_s = statistics.median(_after_overview_expired(server) for _ in range(samples))
        with browser() as launched:
            page = launched.new_page()  # type: ignore[attr-defined]
            page.goto(server.url)
            loads = []
            for _ in range(samples):
                begun = time.perf_counter()
                page.goto(server.url.split("?")[0], wait_until="load")
                page.locator("#rows tr.job").nth(49).wait_for()
                loads.append(time.perf_counter() - begun)
        return cold_s, http_s, statistics.median(loads)
    finally:
        server.stop()


def drop_to_visible(scratch: Path, drops: int) -> list[float]:
    """Seconds from each file's rename into ``pending/`` to its row in the open page (idle queue)."""
    root = scratch / "drops"
    worker = Worker(root, 1)
    server = Server(root)
    seen: list[float] = []
    try:
        with browser() as launched:
            page = launched.new_page()  # type: ignore[attr-defined]
            page.goto(server.url)
            page.locator("#live-state").filter(has_text="live").wait_for()
            page.evaluate(_WATCH_ROWS)
            for n in range(drops):
                job_id = f"d{n:04d}"
                at = drop(root / "pending", job_id, {"command": "true"})
                page.wait_for_function("id => id in window.__seen", arg=job_id)
                seen.append(page.evaluate("id => window.__seen[id]", job_id) / 1000 - at)
                time.sleep(0.1)  # idle again before the next one
    finally:
        server.stop()
        worker.stop()
    return seen


def cpu_with_pages(scratch: Path, pages: int, jobs: int) -> tuple[float, float]:
    """(server CPU seconds, wall seconds) while ``jobs`` quick jobs run with ``pages`` pages
    open, each in a browser context of its own (so ``pages`` event streams: one browser's tabs
    share one), until every page shows them all completed."""
    root = scratch / f"cpu{pages}"
    worker = Worker(root, 4)
    server = Server(root)
    try:
        with browser() as launched:
            opened = []
            for _ in range(pages):
                page = launched.new_context().new_page()  # type: ignore[attr-defined]
                page.goto(server.url)
                page.locator("#live-state").filter(has_text="live").wait_for()
                opened.append(page)
            process = psutil.Process(server.proc.pid)
            before = process.cpu_times()
            begun = time.perf_counter()
            for n in range(jobs):
                drop(root / "pending", f"c{n:05d}", {"command": "true"})
            for page in opened:
                page.locator("#count-completed").filter(has_text=str(jobs)).wait_for(timeout=120_000)
            wall = time.perf_counter() - begun
            after = process.cpu_times()
        return (after.user + after.system) - (before.user + before.system), wall
    finally:
        server.stop()
        worker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--drops", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--pages", type=int, default=20)
    options = parser.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        sys.exit(f"bench.web: {CHROMIUM} is missing (apt-get install chromium)")
    cold_s, http_s, load_s, p50s, p90s, cpu, cpu_one = [], [], [], [], [], [], []
    for _ in range(options.rounds):
        with tempfile.TemporaryDirectory() as scratch:
            cold, warm, load = first_page(Path(scratch), options.records, 5)
            cold_s.append(cold)
            http_s.append(warm)
            load_s.append(load)
            seen = drop_to_visible(Path(scratch), options.drops)
            p50s.append(statistics.median(seen))
            p90s.append(p90(seen))
            cpu.append(cpu_with_pages(Path(scratch), options.pages, options.jobs))
            cpu_one.append(cpu_with_pages(Path(scratch), 1, options.jobs))
    median = statistics.median
    print(f"execsvc web, median of {options.rounds} rounds")
    print(
        f"  first page, {options.records:,} finished records: GET / {median(http_s) * 1000:.0f} ms"
        f" (the first after start {median(cold_s) * 1000:.0f} ms),"
        f" browser load to 50 rows {median(load_s) * 1000:.0f} ms"
    )
    print(
        f"  drop to visible row ({options.drops} drops, idle queue): p50 {median(p50s) * 1000:.0f} ms,"
        f" p90 {median(p90s) * 1000:.0f} ms"
    )
    for label, runs in ((f"{options.pages} pages", cpu), ("1 page", cpu_one)):
        seconds = median(run[0] for run in runs)
        wall = median(run[1] for run in runs)
        print(
            f"  server CPU while {options.jobs:,} jobs run, {label} open: {seconds:.2f} s over {wall:.1f} s"
            f" ({100 * seconds / wall:.0f}% of one core)"
        )


if __name__ == "__main__":
    main()
