"""The MCP server's former module: :mod:`queue_tools.mcp` holds it now (kept for imports)."""

from .mcp.server import build_server, serve
from .mcp.tools import QueueTools

__all__ = ["QueueTools", "build_server", "serve"]
