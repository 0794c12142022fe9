"""Run an MCP stdio server and note the size of every JSON-RPC response it writes.

    python -m bench.wiretap LOG -- COMMAND [ARGS...]

Copies its stdin to the server's stdin and the server's stdout to its stdout,
unchanged, line by line. Before forwarding a response line (one with an ``id``
and a ``result`` or ``error``) it appends ``{"id": ..., "bytes": N, "keys": [...]}`` to LOG (``N``: the line's
length in bytes without its newline, what the client reads; ``keys``: the
result's keys, which tell a ``tools/list`` answer from a tool's).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from typing import IO


def _copy_stdin(child: IO[bytes]) -> None:
    try:
        for line in sys.stdin.buffer:
            child.write(line)
            child.flush()
    except OSError:
        pass  # the server went away
    finally:
        with contextlib.suppress(OSError):
            child.close()


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    log_path, command = argv[0], argv[2:]
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    threading.Thread(target=_copy_stdin, args=(child.stdin,), daemon=True).start()
    with open(log_path, "a", encoding="utf-8") as log:
        for line in child.stdout:
            body = line.rstrip(b"\n")
            try:
                message = json.loads(body)
            except ValueError:
                message = None
            if isinstance(message, dict) and "id" in message and ("result" in message or "error" in message):
                result = message.get("result")
                keys = sorted(result) if isinstance(result, dict) else []
                log.write(json.dumps({"id": message["id"], "bytes": len(body), "keys": keys}) + "\n")
                log.flush()
            sys.stdout.buffer.write(line)
            sys.stdout.buffer.flush()
    return child.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
