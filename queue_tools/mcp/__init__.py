"""The MCP front (``execsvc mcp``): :mod:`.server` (the server, compact answers, schemas),
:mod:`.tools` (the tools), :mod:`.answers` (the job shape), :mod:`.describe` (what the model
reads), :mod:`.resources` (resources and prompts), :mod:`.errors` (sentences),
:mod:`.autostart` (a worker that is always there)."""

from .server import build_server, serve

__all__ = ["build_server", "serve"]
