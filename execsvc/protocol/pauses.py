"""Paused groups: ``pending/.paused.<group>`` files (docs/protocol.md, "Groups").

While ``pending/.paused.<group>`` exists (any entry under that name: a foreign tool may
``touch`` it), the worker claims no job of that group; its running jobs go on. The state
is the file, so a pause outlives the worker, and any tool pauses a group by creating the
name and resumes it by removing it. The worker sees both at once (the file events of
``pending/``: a creation or rename in, a removal) and reads every such name again at
each rescan. :func:`pause_group` writes a small JSON note (``group``, ``paused_by``,
``paused_at``) for people to read; the worker reads only the name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime

from .durable import write_durable
from .layout import PAUSED_PREFIX, QueueLayout, group_problem


def pause_file_group(name: str) -> str | None:
    """The group a ``pending/`` entry name pauses (``.paused.build``: ``build``), or ``None``."""
    if not name.startswith(PAUSED_PREFIX):
        return None
    group = name[len(PAUSED_PREFIX) :]
    return group if group_problem(group) is None else None


def paused_in(names: Iterable[str]) -> frozenset[str]:
    """The groups that the ``pending/`` entry ``names`` pause."""
    return frozenset(group for name in names if (group := pause_file_group(name)) is not None)


def paused_groups(layout: QueueLayout) -> frozenset[str]:
    """The groups paused in the queue at ``layout`` now (one read of ``pending/``)."""
    with os.scandir(layout.pending) as entries:
        return paused_in(entry.name for entry in entries if entry.name.startswith(PAUSED_PREFIX))


def pause_group(layout: QueueLayout, group: str, *, paused_by: str = "a client") -> bool:
    """Pause ``group``: create ``pending/.paused.<group>`` (whole, by a rename that never replaces).

    Returns False if it was paused already. Raises :class:`ValueError` for a name that is no
    group name and :class:`OSError` when ``pending/`` cannot be written.
    """
    problem = group_problem(group)
    if problem is not None:
        raise ValueError(problem)
    note = {"group": group, "paused_by": paused_by, "paused_at": datetime.now(UTC).isoformat(timespec="seconds")}
    try:
        write_durable(layout.pending / f"{PAUSED_PREFIX}{group}", json.dumps(note).encode() + b"\n")
    except FileExistsError:
        return False
    return True


def resume_group(layout: QueueLayout, group: str) -> bool:
    """Resume ``group``: remove ``pending/.paused.<group>``. Returns False if it was not paused.

    Raises :class:`ValueError` for a name that is no group name, :class:`OSError` when the
    name cannot be removed (a folder under that name: remove it yourself).
    """
    problem = group_problem(group)
    if problem is not None:
        raise ValueError(problem)
    try:
        os.unlink(layout.pending / f"{PAUSED_PREFIX}{group}")
    except FileNotFoundError:
        return False
    return True
