"""The worker as a child subreaper: it reaps the orphans its jobs leave, and knows whose they are.

``execsvc run`` makes the worker a child subreaper (:func:`become_subreaper`, Linux
``prctl(PR_SET_CHILD_SUBREAPER)``; a worker that is PID 1 is one by nature): every process a
job leaves behind is re-parented to the worker, not to init. The worker then reaps what it
inherits (:func:`reap_orphans`, at the loop's next step after a SIGCHLD, and while a job
thread waits for a job's process group to empty), so their zombies never keep a group
"alive", and it sees cheaply, by its own children, which processes of a job left the job's
process group (:func:`orphans_of`). The processes :mod:`execsvc.runner` starts itself (jobs,
hooks) are registered in ``_own_children`` under ``_children_lock`` at the spawn, so the
reaper never takes the exit status a job's own wait is for.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading

import psutil

from .protocol.defaults import JOB_ID_ENV

_children_lock = threading.Lock()  # held while a child is spawned and registered, and while orphans are reaped


_own_children: set[int] = set()  # children this module started and reaps itself (jobs, hooks)


_orphan_jobs: dict[int, str | None] = {}  # inherited children still unreaped: pid -> their EXECSVC_JOB_ID


_reaping = False  # set by become_subreaper


def become_subreaper() -> bool:
    """Make this process the reaper of its descendants' orphans, and reap them from now on.

    Linux: ``prctl(PR_SET_CHILD_SUBREAPER, 1)``; a process that is PID 1 (a
    container without an init) is its namespace's reaper already. True when
    either holds; False elsewhere (macOS: orphans go to launchd, which reaps
    them). Only for a process that owns all its children, like ``execsvc
    run``: :func:`reap_orphans` reaps every child not started by this module.
    """
    global _reaping
    subreaper = os.getpid() == 1
    if not subreaper and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    _reaping = subreaper
    return subreaper


def reaps_orphans() -> bool:
    """Whether :func:`become_subreaper` succeeded: orphans come here and are reaped."""
    return _reaping


def reap_orphans() -> int:
    """Reap every exited child this module did not start (orphans re-parented here); how many.

    Never blocks, never reaps a job's or a hook's own process. Records the
    ``EXECSVC_JOB_ID`` of each inherited child still running (for :func:`orphans_of`).
    """
    reaped = 0
    with _children_lock:
        children = _child_pids()
        for pid in children - _own_children:
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                _orphan_jobs.pop(pid, None)
                reaped += 1
            elif pid not in _orphan_jobs:
                _orphan_jobs[pid] = _job_id_of(pid)
        for pid in [pid for pid in _orphan_jobs if pid not in children]:
            del _orphan_jobs[pid]
    return reaped


def orphans_of(job_id: str) -> list[psutil.Process]:
    """The running processes of job ``job_id`` that this process inherited, and their descendants.

    Only where it reaps orphans (:func:`become_subreaper`): once a job's main
    process has exited and its process group was stopped, whatever of the job
    still runs left the group, and was re-parented here. Cheap: no look at
    processes that are not children of this one, unless such a process exists.
    """
    reap_orphans()
    with _children_lock:
        pids = [pid for pid, owner in _orphan_jobs.items() if owner == job_id]
    found: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            found.append(proc)
            found.extend(proc.children(recursive=True))
    return found


_PR_SET_CHILD_SUBREAPER = 36


def _child_pids() -> set[int]:
    """This process's children. Orphans are re-parented to its main thread, whose
    ``/proc/<pid>/task/<pid>/children`` lists them with the children it started itself;
    the children of other threads (hooks) are registered in ``_own_children`` anyway."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/children", "rb") as listing:
            return {int(pid) for pid in listing.read().split()}
    except OSError:
        with contextlib.suppress(psutil.Error):
            return {child.pid for child in psutil.Process().children()}
        return set()


def _job_id_of(pid: int) -> str | None:
    try:
        return psutil.Process(pid).environ().get(JOB_ID_ENV)
    except (psutil.Error, OSError):
        return None
