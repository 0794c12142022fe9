"""The worker's mailbox: what wakes its selector, and what does not need to."""

from __future__ import annotations

import select
import threading

from execsvc.inbox import Inbox


def readable(inbox: Inbox) -> bool:
    return bool(select.select([inbox.fileno()], [], [], 0)[0])


def test_a_post_from_another_thread_wakes_the_loop_and_drains_in_order() -> None:
    inbox = Inbox()
    try:
        poster = threading.Thread(target=lambda: [inbox.put(("event", str(n))) for n in range(3)])
        poster.start()
        poster.join()
        assert readable(inbox)
        assert inbox.drain() == [("event", "0"), ("event", "1"), ("event", "2")]
        assert not readable(inbox) and inbox.drain() == []
    finally:
        inbox.close()


def test_the_loops_own_posts_wake_it_only_when_asked() -> None:
    inbox = Inbox()  # made in this thread: the loop's
    try:
        inbox.put(("event", "read by the loop itself"))
        assert not readable(inbox), "the loop drains its own posts before it waits"
        inbox.put(("signal", "15"), wake=True)  # a signal handler, or a stop asked from outside the loop
        assert readable(inbox)
        assert inbox.drain() == [("event", "read by the loop itself"), ("signal", "15")]
    finally:
        inbox.close()


def test_many_posts_never_block_the_poster() -> None:
    inbox = Inbox()
    try:
        poster = threading.Thread(target=lambda: [inbox.put(("recorded", str(n))) for n in range(200_000)])
        poster.start()
        poster.join(timeout=60)
        assert not poster.is_alive(), "a full wake-up pipe must not block a poster"
        assert len(inbox.drain()) == 200_000
    finally:
        inbox.close()


def test_a_drain_not_woken_by_the_inbox_leaves_its_wake_up_for_the_next_wait() -> None:
    inbox = Inbox()
    try:
        inbox.put(("recorded", "a"), wake=True)
        assert inbox.drain(woken=False) == [("recorded", "a")]
        assert readable(inbox), "the wake-up was not read: the next wait returns at once"
        assert inbox.drain(woken=True) == [] and not readable(inbox)
    finally:
        inbox.close()
