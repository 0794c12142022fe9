"""GroupFlusher: claims flushed in a thread of their own, many per fsync, errors handed to the waiter."""

from __future__ import annotations

import threading
from pathlib import Path

from execsvc.protocol.flusher import GroupFlusher


def test_every_ticket_is_flushed_and_a_burst_shares_flushes(tmp_path: Path) -> None:
    flusher = GroupFlusher([tmp_path])
    try:
        tickets: list[int] = []
        lock = threading.Lock()

        def claim_many() -> None:
            for _ in range(50):
                ticket = flusher.request()
                with lock:
                    tickets.append(ticket)

        threads = [threading.Thread(target=claim_many) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(tickets) == list(range(1, 201))
        assert all(flusher.wait(ticket) is None for ticket in tickets)
    finally:
        flusher.close()


def test_a_failed_flush_is_reported_to_its_waiter_and_the_next_one_recovers(tmp_path: Path) -> None:
    folder = tmp_path / "running"
    flusher = GroupFlusher([folder])  # missing: the fsync fails
    try:
        error = flusher.wait(flusher.request())
        assert error is not None and "FileNotFoundError" in error
        folder.mkdir()
        assert flusher.wait(flusher.request()) is None
    finally:
        flusher.close()


def test_close_flushes_what_was_requested(tmp_path: Path) -> None:
    flusher = GroupFlusher([tmp_path])
    ticket = flusher.request()
    flusher.close()
    assert flusher.wait(ticket) is None
