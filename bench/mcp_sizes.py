"""How many bytes each MCP tool answers, as a client receives them: ``python -m bench.mcp_sizes``.

Runs the installed ``execsvc mcp`` behind :mod:`bench.wiretap` on scratch queues
with a real worker, calls the tools of the scenarios below with the SDK's
client, and prints per call the text bytes (the ``content[].text`` a model
reads) and the wire bytes (the whole JSON-RPC response line). Sizes are
deterministic (give or take the digits of ids, times and durations). ``--transcript``
also prints each call and the start of its answer.

Scenarios: ``tools/list``; a quick job in one call; a job that prints 5 MB
(``seq 1 700000``) with its status, its default output page and a search for
one line; the queue's status and listing; a job enqueued on a queue that no
worker serves (the server starts one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
QUICK = "python3 -c 'print(6*7)'"
BIG = "seq 1 700000"
PATTERN = "^4242[0-9][0-9]$"
TRANSCRIPT_CHARS = 420
"""Characters of each answer ``--transcript`` prints."""


@dataclass
class Sized:
    """One answer and its sizes in bytes."""

    result: Any
    text_bytes: int
    wire_bytes: int


@dataclass
class SizedClient:
    """An MCP client whose every answer comes with its text and wire sizes."""

    client: Client
    tap_log: Path
    seen: int = 0
    rows: list[tuple[str, int, int]] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)

    def _wire(self, tools_list: bool = False) -> int:
        """The size of the last response of that kind (the client may list the tools on its own)."""
        for line in reversed(self.tap_log.read_text().splitlines()):
            entry = json.loads(line)
            if ("tools" in entry["keys"]) == tools_list:
                return int(entry["bytes"])
        raise AssertionError(f"no such response in {self.tap_log}")

    async def call(self, name: str, arguments: dict[str, Any], label: str | None = None) -> Sized:
        result = await self.client.call_tool(name, arguments)
        sized = Sized(result, text_bytes(result), self._wire())
        self.rows.append((label or name, sized.text_bytes, sized.wire_bytes))
        text = " ".join(getattr(block, "text", "") for block in result.content)
        shown = text if len(text) <= TRANSCRIPT_CHARS else text[: TRANSCRIPT_CHARS - 5] + " ..."
        error = "isError: " if result.is_error else ""
        self.transcript.append(f"-> {name} {json.dumps(arguments)}\n<- {error}{shown}")
        return sized

    async def list_tools(self) -> Sized:
        listed = await self.client.list_tools()
        sized = Sized(listed, descriptive_bytes(listed.tools), self._wire(tools_list=True))
        self.rows.append(("tools/list (names, descriptions, input schemas)", sized.text_bytes, sized.wire_bytes))
        return sized


def text_bytes(result: CallToolResult) -> int:
    """Bytes of the text blocks a model reads."""
    return sum(len(getattr(block, "text", "").encode()) for block in result.content)


def descriptive_bytes(tools: list[Any]) -> int:
    """Bytes of the tools' names, descriptions and input schemas (compact JSON)."""
    return sum(
        len(tool.name.encode())
        + len((tool.description or "").encode())
        + len(json.dumps(tool.input_schema, separators=(",", ":")).encode())
        for tool in tools
    )


@asynccontextmanager
async def sized_client(
    queue: Path, tap_log: Path, *extra: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> AsyncIterator[SizedClient]:
    """``execsvc mcp --queue-dir queue`` behind the wire tap, as a :class:`SizedClient`;
    ``env`` is added to this process's environment."""
    command = [str(BIN / "execsvc"), "mcp", "--queue-dir", str(queue), *extra]
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "bench.wiretap", str(tap_log), "--", *command],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=str(cwd) if cwd else None,
    )
    async with Client(params) as client:
        yield SizedClient(client, tap_log)


def start_worker(queue: Path) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [str(BIN / "execsvc"), "run", "--queue-dir", str(queue), "--stderr-level", "info"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert worker.stderr is not None
    for line in worker.stderr:
        if "watching" in line:
            break
    return worker


def stop_worker_of(queue: Path) -> None:
    """SIGTERM the worker named in ``worker.json`` (one the server started), and wait for it to go."""
    try:
        pid = int(json.loads((queue / "worker.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


async def scenarios(scratch: Path, transcript: list[str]) -> list[tuple[str, int, int]]:
    queue = scratch / "queue"
    worker = start_worker(queue)
    try:
        async with sized_client(queue, scratch / "tap.log") as c:
            tools = await c.list_tools()
            names = {tool.name for tool in tools.result.tools}
            await c.call("enqueue_job", {"command": QUICK, "wait_s": 10}, "enqueue_job print(6*7), wait_s 10")
            big = await c.call("enqueue_job", {"command": BIG, "wait_s": 30}, "enqueue_job seq 1 700000, wait_s 30")
            job_id = (big.result.structured_content or {}).get("job_id")
            await c.call("get_job", {"job_id": job_id}, "get_job on the 5 MB job")
            await c.call("get_job_output", {"job_id": job_id}, "get_job_output, defaults")
            if "search_output" in names:
                await c.call("search_output", {"job_id": job_id, "pattern": PATTERN}, f"search_output {PATTERN}")
            else:
                c.rows.append((f"search_output {PATTERN} (no such tool)", 0, 0))
            await c.call("list_jobs", {}, "list_jobs, defaults")
            await c.call("queue_status", {})
            rows = c.rows
            transcript += c.transcript
    finally:
        worker.terminate()
        worker.wait(30)
    lone = scratch / "lone"
    try:
        async with sized_client(lone, scratch / "tap2.log") as c:
            await c.call("enqueue_job", {"command": QUICK, "wait_s": 10}, "enqueue_job, no worker, wait_s 10")
            rows += c.rows
            transcript += c.transcript
    finally:
        stop_worker_of(lone)
    return rows


def main() -> None:
    transcript: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        rows = anyio.run(scenarios, Path(scratch), transcript)
    print(f"{'scenario':58s} {'text B':>9s} {'wire B':>9s}")
    for label, text, wire in rows:
        print(f"{label:58s} {text:9,d} {wire:9,d}")
    if "--transcript" in sys.argv[1:]:
        print("\n" + "\n".join(transcript))


if __name__ == "__main__":
    main()
