"""Names in Redis shared by the dispatcher and the remote workers, and connecting to Redis.

- :func:`rq_queue_name`: the RQ queue of an execsvc group (``execsvc:<group>``).
- :func:`inflight_key`: the hash of a front queue's dispatched jobs, job id to RQ job id
  (``execsvc:front:<front id>:inflight``), what a restarted dispatcher adopts.
- :func:`output_key`, :func:`stop_key`, :func:`alive_key`: one RQ job's stream of output
  chunks and its exit, its list of stop requests, and its heartbeat (a string with a TTL of
  :data:`ALIVE_TTL_S`, renewed by the remote runner while the job runs).
"""

from __future__ import annotations

import hashlib
import socket
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit

if TYPE_CHECKING:
    import redis

PREFIX = "execsvc"
ALIVE_TTL_S = 5
"""Seconds a running remote job's heartbeat lives; renewed about every :data:`TICK_S`."""
TICK_S = 0.2
"""How often the remote runner ships output, renews the heartbeat and reads stop requests."""
KEEP_S = 7 * 86_400
"""Seconds a finished job's keys (stream, stop list) and RQ record stay in Redis at most."""
RUN_FUNCTION = "execsvc.distributed.remote.run_remote"
"""The only function a remote worker runs (it refuses RQ jobs naming any other)."""
REDIS_URL_ENV = "EXECSVC_REDIS_URL"
"""Where ``--redis-url`` is read from when not given (keeps a password out of ``ps``)."""


def rq_queue_name(group: str) -> str:
    """The RQ queue that holds the jobs of execsvc group ``group``: ``execsvc:<group>``."""
    return f"{PREFIX}:{group}"


def front_id(root: str, queue_identity: str) -> str:
    """A front queue's id in Redis: 16 hex digits from its host name, root path and identity,
    the same across restarts of its worker."""
    seed = f"{socket.gethostname()}\0{root}\0{queue_identity}".encode()
    return hashlib.sha256(seed).hexdigest()[:16]


def inflight_key(front: str) -> str:
    return f"{PREFIX}:front:{front}:inflight"


def output_key(rq_id: str) -> str:
    return f"{PREFIX}:job:{rq_id}:out"


def stop_key(rq_id: str) -> str:
    return f"{PREFIX}:job:{rq_id}:stop"


def alive_key(rq_id: str) -> str:
    return f"{PREFIX}:job:{rq_id}:alive"


def redacted(url: str) -> str:
    """``url`` with its user and password (also a ``password=`` in its query) replaced by
    ``***``, for logs: ``redis://***@host:6379/0``."""
    parts = urlsplit(url)
    query = urlencode(
        [(name, "***" if name == "password" else value) for name, value in parse_qsl(parts.query)], safe="/*"
    )
    netloc = parts.netloc
    if parts.password is not None or parts.username is not None:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def connect(url: str) -> redis.Redis:
    """A Redis client for ``url`` (``redis://[:password@]host:port/db``, ``rediss://`` for TLS,
    ``unix://``); connections are made on first use and again after a Redis restart. Raises
    :class:`ValueError` for a URL redis-py cannot read."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
