"""The worker's file events, both ways (watchdog's inotify wrapper directly, and a watchdog Observer)."""

from __future__ import annotations

import os
import select
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, SimpleQueue

import pytest

from execsvc.file_events import FileEvents, InotifyFD, open_file_events

Watched = tuple[Path, Path, SimpleQueue[tuple[str, str]]]
LINUX_ONLY = pytest.mark.skipif(InotifyFD is None, reason="needs Linux inotify")
WAYS = [  # (direct, read by the caller's loop)
    pytest.param((True, True), id="direct-inotify-in-loop", marks=LINUX_ONLY),
    pytest.param((True, False), id="direct-inotify-thread", marks=LINUX_ONLY),
    pytest.param((False, False), id="observer"),
]


@pytest.fixture(params=WAYS)
def watched(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Watched]:
    pending, running = tmp_path / "pending", tmp_path / "running"
    pending.mkdir()
    running.mkdir()
    inbox: SimpleQueue[tuple[str, str]] = SimpleQueue()
    direct, in_loop = request.param
    watch: FileEvents = open_file_events(str(pending), str(running), inbox, direct=direct)
    watch.start(own_thread=not in_loop)
    fd = watch.fileno()
    assert (fd is not None) == in_loop
    stop_r, stop_w = os.pipe()

    def loop() -> None:  # the caller's loop, as the worker's: wait on the descriptor, then read
        assert fd is not None
        while True:
            ready = select.select([fd, stop_r], [], [])[0]
            if stop_r in ready:
                return
            watch.read()

    pump = threading.Thread(target=loop) if in_loop else None
    if pump is not None:
        pump.start()
    try:
        yield pending, running, inbox
    finally:
        os.write(stop_w, b"x")
        if pump is not None:
            pump.join()
        watch.stop()
        os.close(stop_r)
        os.close(stop_w)


def messages_until(inbox: SimpleQueue[tuple[str, str]], wanted: tuple[str, str]) -> list[tuple[str, str]]:
    seen = []
    while wanted not in seen:
        try:
            seen.append(inbox.get(timeout=5))
        except Empty:
            pytest.fail(f"no {wanted} within 5 s; saw {seen}")
    return seen


def test_a_job_renamed_into_pending_is_reported_by_its_new_name(watched: Watched) -> None:
    pending, _running, inbox = watched
    (pending / ".job.tmp").write_text("{}")
    os.rename(pending / ".job.tmp", pending / "job.json")
    seen = messages_until(inbox, ("event", "job.json"))
    assert all(kind == "event" for kind, _name in seen)


def test_a_file_written_in_place_is_reported_when_closed(watched: Watched) -> None:
    pending, _running, inbox = watched
    with open(pending / "inplace.sh", "w") as handle:
        handle.write("echo hi\n")
    messages_until(inbox, ("event", "inplace.sh"))


def test_a_cancel_request_in_running_is_reported_and_other_files_there_are_not(
    watched: Watched,
) -> None:
    _pending, running, inbox = watched
    (running / "job.json").write_text("{}")
    (running / ".cancel.job").write_text("")
    seen = messages_until(inbox, ("cancel", "job"))
    assert seen == [("cancel", "job")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify reports a removed watched folder")
def test_a_removed_pending_folder_is_reported(tmp_path: Path) -> None:
    pending, running = tmp_path / "pending", tmp_path / "running"
    pending.mkdir()
    running.mkdir()
    inbox: SimpleQueue[tuple[str, str]] = SimpleQueue()
    watch = open_file_events(str(pending), str(running), inbox, direct=True)
    watch.start()
    try:
        pending.rmdir()
        messages_until(inbox, ("watch_lost", "pending"))
    finally:
        watch.stop()


def test_an_unwatchable_folder_raises_oserror(tmp_path: Path) -> None:
    inbox: SimpleQueue[tuple[str, str]] = SimpleQueue()
    watch = open_file_events(str(tmp_path / "missing"), str(tmp_path / "missing2"), inbox)
    with pytest.raises(OSError):
        watch.start()
    watch.stop()
