"""Change notifications where the SDK serves them (issue 19, item 7): a client listening on
``subscriptions/listen`` for ``queue://jobs/<id>`` hears when that job starts and when it ends;
the 2025-era ``resources/subscribe`` is not advertised to a client of that era."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import anyio
from conftest import WorkerProcess, console_script, wait_finished
from mcp_stdio import mcp_over_stdio

from execsvc import JobQueue

Start = Callable[..., WorkerProcess]


def test_a_listening_client_hears_a_job_start_and_end(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    start_worker()
    heard: list[str] = []

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            uri = "queue://jobs/told"
            async with client.client.listen(resource_subscriptions=[uri]) as subscription:
                JobQueue(queue_root).submit({"command": "sleep 0.3"}, job_id="told")
                with anyio.fail_after(15):
                    async for event in subscription:
                        heard.append(str(event.uri))  # type: ignore[union-attr]
                        if JobQueue(queue_root).get("told").state.value in ("completed", "failed"):
                            break

    anyio.run(session)
    assert heard and set(heard) == {"queue://jobs/told"}
    assert wait_finished(queue_root, "told").status.value == "completed"


def test_a_2025_client_is_not_offered_resources_subscribe(queue_root: Path) -> None:
    server = subprocess.Popen(
        [console_script("execsvc"), "mcp", "--queue-dir", str(queue_root), "--no-auto-start"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    hello = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    server.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello}) + "\n")
    server.stdin.flush()
    answer = json.loads(server.stdout.readline())
    server.stdin.close()
    server.wait(10)
    assert answer["result"]["capabilities"]["resources"]["subscribe"] is False
