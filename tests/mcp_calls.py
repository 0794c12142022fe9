"""Calling the MCP server from tests: a session against an in-process server
(``mcp.Client(build_server(queue))``) and what a tool call answered. Shared by the e2e and
faults layers, so it lives beside ``conftest.py`` (``pythonpath = ["tests"]``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp.types import CallToolResult

from queue_tools.mcp.server import build_server


def run(session: Callable[[Client], Awaitable[None]], queue_root: Path) -> None:
    """Run ``session`` against an in-process server on ``queue_root``."""

    async def main() -> None:
        async with Client(build_server(queue_root)) as client:
            await session(client)

    anyio.run(main)


def structured(result: CallToolResult) -> dict[str, Any]:
    """The structured content of a call that succeeded (asserts it did)."""
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    """The text of a call that failed (asserts it did, and that no traceback reached the client)."""
    assert result.is_error, result.structured_content
    text = " ".join(getattr(block, "text", "") for block in result.content)
    assert "Traceback" not in text
    return text
