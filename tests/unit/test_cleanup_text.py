"""Text a reader relies on says what the code does: the MCP tools' descriptions (every LLM client
reads them) hold no leftover of the code they were written from."""

from __future__ import annotations

from pathlib import Path

import anyio
from mcp import Client

from queue_tools.mcp.server import build_server


def test_no_tool_description_names_the_code_behind_it(tmp_path: Path) -> None:
    async def main() -> dict[str, str]:
        async with Client(build_server(tmp_path / "queue")) as client:
            return {tool.name: tool.description or "" for tool in (await client.list_tools()).tools}

    descriptions = anyio.run(main)
    assert descriptions["queue_status"].endswith("and the queue's root folder.")
    leftovers = {name: text for name, text in descriptions.items() if "self." in text or "self)" in text}
    assert leftovers == {}
