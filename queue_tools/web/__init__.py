"""The web dashboard (``execsvc web``): the queue in a browser, updated as it changes.

A front like ``queue-view`` and the MCP server: it imports only the protocol package and the
fronts' behaviour layer (:mod:`queue_tools.api`). Its modules: ``server`` (the token, the socket,
uvicorn), ``app`` (the Starlette routes and templates), ``actions`` (the POSTs), ``guard`` (who
may ask what), ``hub`` (the one shared file watcher), ``live`` (the server-sent events),
``views`` (what a page shows). docs/web.md says how to use it.
"""

from __future__ import annotations

from .server import serve

__all__ = ["serve"]
