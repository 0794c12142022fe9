"""Groups through RQ (docs/distributed.md, docs/scheduling.md "Groups"): each execsvc group is
its own RQ queue, so a remote worker started with ``--queue NAME`` runs that group's jobs only,
with the dispatcher's ``EXECSVC_GROUP`` and ``EXECSVC_SLOT``; a job without a timeout
(``timeout_s: null``) runs remotely too."""

from __future__ import annotations

from pathlib import Path

from conftest import drop, wait_finished
from redis_support import redis_server, start_remote

__all__ = ["redis_server", "start_remote"]


def test_each_group_is_its_own_rq_queue_and_its_jobs_know_their_group_and_slot(
    queue_root: Path, tmp_path: Path, start_worker, redis_server, start_remote
) -> None:
    url = redis_server.url()
    start_remote(url, "w-build", "--queue", "build")
    start_remote(url, "w-default")
    cfg = tmp_path / "config.toml"
    cfg.write_text("[groups.build]\nslots = 2\n")
    start_worker("--executor", "rq", "--redis-url", url, "--config", str(cfg))
    show = ["sh", "-c", 'echo "$EXECSVC_GROUP $EXECSVC_SLOT"']
    for n in range(3):
        drop(queue_root, f"b{n}.json", {"command": show[0], "args": show[1:], "group": "build"})
    drop(queue_root, "d0.json", {"command": show[0], "args": show[1:], "timeout_s": None})
    for n in range(3):
        record = wait_finished(queue_root, f"b{n}").result
        assert record is not None and record.status.value == "completed", record
        assert record.host == "w-build" and record.group == "build"
        group, slot = record.stdout.split()
        assert group == "build" and slot in ("0", "1")
    record = wait_finished(queue_root, "d0").result
    assert record is not None and record.status.value == "completed", record
    assert record.host == "w-default" and record.stdout == "default 0\n"
