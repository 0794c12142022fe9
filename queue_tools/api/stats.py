"""A running job's process group now: CPU seconds, resident memory and processes (psutil).

The job's processes are found among the descendants of the serving worker (its
pid is in ``worker.json``; on Linux the worker is a child subreaper, so what a
job leaves behind stays below it) by the ``EXECSVC_JOB_ID`` variable every job's
environment carries (docs/protocol.md, "JSON jobs"). psutil is imported here
only, when a running job is looked at.
"""

from __future__ import annotations

from execsvc.protocol.queue import JobQueue

from .models import RunningStats

JOB_ID_ENV = "EXECSVC_JOB_ID"
"""The variable naming the job in its processes' environment."""


def running_stats(queue: JobQueue, job_id: str) -> RunningStats:
    """CPU seconds (user + system), resident memory (MiB) and count of the job's live processes.

    ``problem`` says why nothing could be measured (no worker, the job's processes
    are gone or cannot be looked at); never raises.
    """
    import psutil  # only here: listing the queue does not need it

    worker = queue.worker_info()
    if worker is None:
        return RunningStats(problem="no worker serves the queue")
    try:
        below = psutil.Process(worker.pid).children(recursive=True)
    except psutil.Error as exc:
        return RunningStats(problem=f"the worker's processes cannot be looked at ({exc})")
    cpu_s, rss, count = 0.0, 0, 0
    for process in below:
        try:
            if process.environ().get(JOB_ID_ENV) != job_id:
                continue
            with process.oneshot():
                times = process.cpu_times()
                cpu_s += times.user + times.system
                rss += process.memory_info().rss
            count += 1
        except psutil.Error:
            continue  # it ended meanwhile, or is not ours to look at
    if count == 0:
        return RunningStats(problem="none of the job's processes is running now")
    return RunningStats(cpu_s=round(cpu_s, 2), rss_mb=round(rss / 2**20, 1), processes=count)
