"""The ``daemon.log`` line format, for the worker's event log and a client's one line (a cancel).

A line reads ``<ISO 8601 time> <LEVEL> <event> job=<id> key=value ...`` (docs/protocol.md,
"daemon.log"); values with spaces, quotes or characters that act on a terminal are JSON-quoted,
those characters as ``\\u`` escapes (:mod:`.visible`). Writing the file (one ``O_APPEND`` write a
line) is :func:`~execsvc.protocol.durable.append_line` for a client and :mod:`execsvc.daemonlog` for the worker.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from .layout import readable_name
from .visible import visible

_PLAIN = re.compile(r"[^\s\"'=\\]+")  # a value needs no quotes: no white space, quote, '=' or backslash


def iso_stamp(seconds: float) -> str:
    """ISO 8601 local time with milliseconds and offset, e.g. ``2026-11-21T10:14:00.123+01:00``."""
    local = time.localtime(seconds)
    offset = local.tm_gmtoff // 60
    sign = "+" if offset >= 0 else "-"
    millis = int(seconds % 1 * 1000)
    return (
        f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{millis:03d}{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    )


def format_event(event: str, job: str | None = None, **fields: Any) -> str:
    """``event job=<id> k=v ...`` with values quoted where needed; ``None`` values are left out."""
    parts = [event]
    if job is not None:
        parts.append(f"job={_quote(job)}")
    parts.extend(f"{key}={_quote(value)}" for key, value in fields.items() if value is not None)
    return " ".join(parts)


def event_line(level: str, event: str, job: str | None = None, **fields: Any) -> bytes:
    """One whole line, stamped now, newline included, UTF-8: ``<time> <level> <event> job=<id> k=v ...``."""
    return f"{iso_stamp(time.time())} {level} {format_event(event, job, **fields)}\n".encode()


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if _PLAIN.fullmatch(text) and text.isprintable():
        return text
    quoted = json.dumps(readable_name(text), ensure_ascii=False)  # C0 controls escaped; DEL, C1, U+202E... not
    return quoted if quoted.isprintable() else visible(quoted, json=True)
