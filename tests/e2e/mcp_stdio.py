"""Helpers for the MCP end-to-end tests: the installed ``execsvc mcp`` over real stdio behind
``bench.wiretap`` (sizes as the client receives them), and stopping workers a server started."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import psutil
from conftest import kill_orphaned_jobs, process_gone, wait_until

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.mcp_sizes import SizedClient, sized_client  # noqa: E402


@asynccontextmanager
async def mcp_over_stdio(queue: Path, tmp_path: Path, *extra: str, name: str = "tap") -> AsyncIterator[SizedClient]:
    """``execsvc mcp --queue-dir queue`` started in ``tmp_path`` with no user service to use."""
    (tmp_path / "config").mkdir(exist_ok=True)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}  # no installed unit: auto-start goes detached
    async with sized_client(queue, tmp_path / f"{name}.log", *extra, cwd=tmp_path, env=env) as client:
        yield client


def workers_of(queue: Path) -> list[psutil.Process]:
    """Live ``execsvc run`` processes serving ``queue`` (by their command line)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "run" in cmdline and str(queue) in cmdline and any(part.endswith("execsvc") for part in cmdline):
            found.append(process)
    return found


def stop_started_workers(queue: Path) -> None:
    """Stop every worker serving ``queue`` (the one in ``worker.json`` and any other), then its jobs."""
    pids = {process.pid for process in workers_of(queue)}
    with contextlib.suppress(OSError, ValueError, KeyError):
        pids.add(int(json.loads((queue / "worker.json").read_text())["pid"]))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for pid in pids:
        wait_until(lambda pid=pid: process_gone(pid), timeout_s=30, what=f"worker {pid} to stop")  # type: ignore[misc]
    kill_orphaned_jobs(queue)
