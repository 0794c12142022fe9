"""Whether a running job is ready (``ready_when``, docs/protocol.md, "Services"): a line of its
output matches a regular expression, or a TCP port on 127.0.0.1 accepts a connection.

The worker asks every :data:`READY_CHECK_S` seconds while such a job runs and is not yet
ready, in its loop's thread: each look reads only what the job wrote since the last one (at
most :data:`READ_MAX_BYTES` per stream), matches it for at most :data:`MATCH_MAX_S` seconds (the
``regex`` module's timeout: a pattern that backtracks without end cannot hold the loop), and a
port is tried with a connect that gives up after :data:`CONNECT_TIMEOUT_S`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported by the first job with ready_when.line, not by every worker
    import regex

from .protocol.models import ReadyWhen

READY_CHECK_S = 0.1
"""Seconds between two looks at a job that is not ready yet."""
READ_MAX_BYTES = 1024 * 1024
"""Most bytes of each stream read in one look (a job printing faster is read on over the next looks)."""
CONNECT_TIMEOUT_S = 0.05
MATCH_MAX_S = 0.02
"""Most seconds one look may spend matching ``ready_when.line``; past it :class:`ReadyCheckTooSlow`."""
LINE_MAX_BYTES = 64 * 1024
"""A line longer than this is looked at in pieces of this size."""


class ReadyCheckTooSlow(Exception):
    """Matching ``ready_when.line`` against the job's output took over :data:`MATCH_MAX_S` seconds."""


@dataclass
class ReadyWatch:
    """One running job's readiness: what it waits for, and how far each stream was read."""

    ready_when: ReadyWhen
    streams: tuple[Path, ...]
    _offsets: dict[Path, int] = field(default_factory=dict)
    _partial: dict[Path, bytes] = field(default_factory=dict)

    def ready(self) -> bool:
        """Whether the job is ready now (a line seen since the job started, or the port open).
        Raises :class:`ReadyCheckTooSlow` when the pattern took over :data:`MATCH_MAX_S` seconds."""
        if self.ready_when.port is not None:
            return port_accepts(self.ready_when.port)
        assert self.ready_when.line is not None
        import regex

        pattern = regex.compile(self.ready_when.line, regex.V0)
        try:
            deadline = time.monotonic() + MATCH_MAX_S
            return any(self._line_seen(path, pattern, deadline) for path in self.streams)
        except TimeoutError:
            raise ReadyCheckTooSlow(
                f"matching ready_when.line against the job's output took over {MATCH_MAX_S:g} s"
            ) from None

    def _line_seen(self, path: Path, pattern: regex.Pattern[str], deadline: float) -> bool:
        offset = self._offsets.get(path, 0)
        data = _read_from(path, offset)
        if not data:
            return False
        self._offsets[path] = offset + len(data)
        text = self._partial.get(path, b"") + data
        *lines, rest = text.split(b"\n")
        self._partial[path] = rest[-LINE_MAX_BYTES:]
        lines.append(rest)  # a line not ended yet counts too (a prompt, a last line without \n)
        return any(
            pattern.search(line.decode("utf-8", "replace"), timeout=max(deadline - time.monotonic(), 1e-4))
            for line in lines
        )


def _read_from(path: Path, offset: int) -> bytes:
    """Up to :data:`READ_MAX_BYTES` of the log at ``path`` from ``offset``; nothing if it is not
    a regular file (a job replaced its log with a FIFO or a link: never followed or waited on)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return b""
        return os.pread(fd, READ_MAX_BYTES, offset)
    except OSError:
        return b""
    finally:
        os.close(fd)


def port_accepts(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:``port`` is accepted (it is closed again at once)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.settimeout(CONNECT_TIMEOUT_S)
        try:
            probe.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True
