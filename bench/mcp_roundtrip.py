"""Round-trip time of one MCP call that runs a quick job: ``enqueue_job(..., wait_s=10)`` over stdio.

Starts a worker and the installed ``execsvc mcp`` on a scratch queue, calls the tool N
times (default 20) with ``python3 -c "print(6*7)"``, and prints the median and
p90 beside the floor measured in the same run: the same command run directly.

    .venv/bin/python bench/mcp_roundtrip.py [N]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

BIN = Path(sys.executable).parent
COMMAND = 'python3 -c "print(6*7)"'


def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        queue = Path(scratch) / "queue"
        worker = subprocess.Popen(
            [str(BIN / "execsvc"), "run", "--queue-dir", str(queue), "--stderr-level", "info"],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert worker.stderr is not None
        for line in worker.stderr:
            if "watching" in line:
                break
        calls: list[float] = []

        async def session() -> None:
            params = StdioServerParameters(
                command=str(BIN / "execsvc"), args=["mcp", "--queue-dir", str(queue)], env=dict(os.environ)
            )
            async with Client(params) as client:
                await client.list_tools()
                for _ in range(n):
                    start = time.perf_counter()
                    result = await client.call_tool("enqueue_job", {"command": COMMAND, "wait_s": 10})
                    calls.append(time.perf_counter() - start)
                    assert result.structured_content and result.structured_content["stdout"]["text"] == "42\n"

        try:
            anyio.run(session)
        finally:
            worker.terminate()
            worker.wait(30)
    floor = []
    for _ in range(n):
        start = time.perf_counter()
        subprocess.run(["/bin/sh", "-c", COMMAND], check=True, capture_output=True)
        floor.append(time.perf_counter() - start)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; {n} calls")
    for name, values in (("enqueue_job(wait_s=10) over stdio", calls), ("floor: sh -c the same command", floor)):
        ordered = sorted(values)
        p90 = ordered[int(0.9 * (len(ordered) - 1))]
        print(f"{name:40s} median {statistics.median(values) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms")
    overhead_ms = (statistics.median(calls) - statistics.median(floor)) * 1000
    print(f"overhead of the queue and the MCP call (median): {overhead_ms:.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
