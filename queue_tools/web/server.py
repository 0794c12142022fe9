"""Starting the dashboard: a random access token, a socket bound before anything is printed,
uvicorn serving the app on it until SIGINT or SIGTERM."""

from __future__ import annotations

import secrets
import socket
import sys
import webbrowser
from pathlib import Path
from urllib.parse import quote

from execsvc.protocol.queue import JobQueue

from .guard import Access

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
GRACEFUL_STOP_S = 2
"""How long a stopping server waits for open event streams (seconds); then it closes them."""


def url_of(access: Access) -> str:
    """The URL to open: the server's address with the token (``http://127.0.0.1:8765/?token=...``)."""
    host = f"[{access.host}]" if ":" in access.host else access.host
    return f"http://{host}:{access.port}/?token={quote(access.token)}"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: any free one). Raises :class:`OSError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(
    queue_dir: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    read_only: bool = False,
    open_browser: bool = False,
    token: str | None = None,
) -> None:
    """Serve the dashboard of the queue at ``queue_dir`` until stopped; print its URL (with a
    fresh token unless ``token`` is given) on stdout once the socket is listening.
    Raises :class:`OSError` when ``host:port`` cannot be bound."""
    import uvicorn

    from .app import create_app

    queue = JobQueue(queue_dir)
    sock = bind(host, port)
    access = Access(
        token=token or secrets.token_urlsafe(24), host=host, port=sock.getsockname()[1], read_only=read_only
    )
    app = create_app(queue, access)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_STOP_S,
        proxy_headers=False,
        server_header=False,
    )
    url = url_of(access)
    print(f"execsvc web: serving {queue.root}{' (read-only)' if read_only else ''} at {url}", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"execsvc web: {host} is not a loopback address: anyone who can reach it and has the URL can use it",
            file=sys.stderr,
            flush=True,
        )
    if open_browser:
        webbrowser.open(url)
    uvicorn.Server(config).run(sockets=[sock])
