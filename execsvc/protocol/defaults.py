"""The protocol's names and defaults that need no model: the environment variables a job
gets, where the default queue lives, a job's default timeout and group, and the largest job file
(docs/protocol.md, "Layout", "JSON jobs", "Groups")."""

from __future__ import annotations

import os
from pathlib import Path

QUEUE_DIR_ENV = "EXECSVC_QUEUE_DIR"
"""Environment variable naming the queue root."""

JOB_ID_ENV = "EXECSVC_JOB_ID"
"""Set in every job's environment to its job id (also how leftover processes are found)."""

QUEUE_ID_ENV = "EXECSVC_QUEUE_ID"
"""Set in every job's environment to the queue root's identity, ``<st_dev>:<st_ino>``: which
queue the job belongs to, whatever path (a bind mount, a symbolic link) reached it."""

GROUP_ENV = "EXECSVC_GROUP"
"""Set in every job's environment to the group it runs in (docs/protocol.md, "Groups")."""

SLOT_ENV = "EXECSVC_SLOT"
"""Set in every job's environment to its slot's index within its group: 0-based, the lowest index
free when it started, so no two jobs of a group running at once have the same one."""

DEFAULT_GROUP = "default"
"""The group of a job that names none (docs/protocol.md, "Groups")."""


def default_queue_dir() -> Path:
    """``$EXECSVC_QUEUE_DIR`` if set, else the platform's user data dir + ``/command_queue``.

    That is ``~/.local/share/execsvc/command_queue`` on Linux and
    ``~/Library/Application Support/execsvc/command_queue`` on macOS.
    """
    configured = os.environ.get(QUEUE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("execsvc", appauthor=False)) / "command_queue"


DEFAULT_TIMEOUT_S = 300.0
"""A job's timeout when it names none (docs/protocol.md, "JSON jobs")."""

MAX_JOB_FILE_BYTES = 16 * 1024 * 1024
"""The largest job file the worker reads unless configured (``max_job_file_bytes``)."""
