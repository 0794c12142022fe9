"""A queue's job processes found by their environment, wherever they went, and stopped.

Every job's environment carries ``EXECSVC_JOB_ID`` and the queue's identity
(``EXECSVC_QUEUE_ID``, :func:`queue_identity`), so the processes of a job are found even after
they left its process group, and a queue reached through another path (a bind mount, a link)
finds its own. Recovery stops what a dead worker's jobs left (:func:`find_job_processes`,
:func:`stop_processes`; docs/protocol.md, "Crashes and restarts").
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil

from .protocol.defaults import JOB_ID_ENV, QUEUE_DIR_ENV, QUEUE_ID_ENV


def queue_identity(root: str | os.PathLike[str]) -> str:
    """The identity of the directory at ``root``: ``"<st_dev>:<st_ino>"`` (symbolic links
    followed). The same for every path that reaches it (a bind mount, a link); another for a
    directory that replaced it. Raises :class:`OSError` when ``root`` cannot be looked at."""
    info = os.stat(root)
    return f"{info.st_dev}:{info.st_ino}"


def find_job_processes(queue_root: Path, job_ids: set[str]) -> dict[str, list[psutil.Process]]:
    """Processes of this user still running for the given jobs of this queue.

    Found by the ``EXECSVC_JOB_ID`` variable every job's environment carries
    (so processes that left the job's process group are found too), and by the
    queue's identity, not a path string: ``EXECSVC_QUEUE_ID`` equal to the
    root's (see :func:`queue_identity`), or an ``EXECSVC_QUEUE_DIR`` that
    names the same directory now. So a queue served through another path (a bind
    mount, a symbolic link) finds its jobs' processes, and a directory that
    replaced the root at the same path does not take another queue's. When
    ``queue_root`` cannot be looked at, ``EXECSVC_QUEUE_DIR`` must equal it.
    Processes whose environment cannot be read are skipped.
    """
    found: dict[str, list[psutil.Process]] = {}
    try:
        identity: str | None = queue_identity(queue_root)
    except OSError:
        identity = None
    for proc in psutil.process_iter():
        try:
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        job_id = env.get(JOB_ID_ENV)
        if job_id in job_ids and _of_queue(env, queue_root, identity):
            found.setdefault(job_id, []).append(proc)
    return found


def _of_queue(env: dict[str, str], queue_root: Path, identity: str | None) -> bool:
    """Whether a job process's environment ``env`` says it belongs to the queue ``identity``."""
    folder = env.get(QUEUE_DIR_ENV)
    if identity is None:
        return folder == str(queue_root)
    if env.get(QUEUE_ID_ENV) == identity:
        return True
    if not folder:
        return False
    try:  # a job of an older worker (no EXECSVC_QUEUE_ID), or one whose own env changed it
        return queue_identity(folder) == identity
    except OSError:
        return False


def stop_processes(procs: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM each process, then SIGKILL whatever is still there after ``grace_s``."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _gone, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)
