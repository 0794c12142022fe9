"""A remote job's output through Redis: read from the remote machine's logs, written into the
front machine's ``logs/`` at the same offsets.

The remote runner (:mod:`.remote`) reads what each log gained since the last tick
(:meth:`LogShipper.take`) and adds it to the job's stream (:func:`~.keys.output_key`) as
entries ``{"t": "out"|"err", "o": offset, "d": bytes}``, at most :data:`CHUNK_BYTES` each and at
most ``max_shipped_bytes`` per stream in all; beyond that the record names the remote logs
(``result.remote_logs``). The dispatcher writes each chunk at its offset (:class:`LogWriter`),
so reading the stream again from its start after a restart rewrites the same bytes: nothing is
doubled or lost.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..protocol.durable import open_regular

CHUNK_BYTES = 64 * 1024
STREAMS = ("out", "err")


class LogShipper:
    """What a running job's two logs (``paths``: stdout, stderr) gained, bounded by ``max_bytes``
    per stream. :attr:`cut` turns True once a stream had more than that."""

    def __init__(self, paths: tuple[Path, Path], max_bytes: int) -> None:
        self._paths = paths
        self._max_bytes = max_bytes
        self._sent = [0, 0]
        self.cut = False

    def take(self) -> Iterator[tuple[str, int, bytes]]:
        """``(stream, offset, data)`` chunks of what the logs gained since the last call."""
        for index, path in enumerate(self._paths):
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                continue
            end = min(size, self._max_bytes)
            if size > self._max_bytes:
                self.cut = True
            if end <= self._sent[index]:
                continue
            with open(path, "rb") as log:
                log.seek(self._sent[index])
                while self._sent[index] < end:
                    data = log.read(min(CHUNK_BYTES, end - self._sent[index]))
                    if not data:
                        break
                    yield STREAMS[index], self._sent[index], data
                    self._sent[index] += len(data)


class LogWriter:
    """The front machine's two logs of a remote job; :meth:`write` puts a chunk at its offset.

    ``create``: empty them first (a new dispatch), else keep what an earlier dispatcher wrote.
    Raises :class:`OSError` when a log cannot be opened.
    """

    def __init__(self, stdout_path: Path, stderr_path: Path, *, create: bool) -> None:
        self._fds: dict[str, int] = {}
        for stream, path in zip(STREAMS, (stdout_path, stderr_path), strict=True):
            fd, _moved = open_regular(path, os.O_WRONLY | os.O_CREAT, truncate=create)
            self._fds[stream] = fd

    def write(self, stream: str, offset: int, data: bytes) -> None:
        fd = self._fds.get(stream)
        if fd is not None:
            os.pwrite(fd, data, offset)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
