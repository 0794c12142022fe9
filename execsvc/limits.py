"""A job's resource limits: which apply, how they are set, and which one a failed job went beyond.

The worker is a threaded process, so it never sets limits in a ``preexec_fn``
(unsafe after ``fork`` with threads). Instead:

- ``cpu_s``, ``memory_mb`` and ``open_files`` are kernel rlimits (RLIMIT_CPU,
  RLIMIT_AS, RLIMIT_NOFILE) that the job's first process sets on itself by
  being started through ``prlimit(1)`` from util-linux, which sets them and
  execs the job: nothing of the job runs before they are in force, and every
  process it starts inherits them. Where ``prlimit`` is missing (macOS), a job
  that needs one of these is refused with the reason.
- ``processes`` and ``output_bytes`` are polled by the worker while the job
  runs (every ``limit_check_interval_s``): the job's process group is
  counted, and the size of its two logs read. Past a limit the job is stopped
  and recorded ``failed`` naming it; its log is cut at ``output_bytes``.
  (RLIMIT_NPROC counts every process of the user, and root ignores it, so it
  cannot express "this job's processes".)
"""

from __future__ import annotations

import resource
import shutil
import signal

from .protocol.models import JobLimits

PRLIMIT = shutil.which("prlimit")
"""The ``prlimit`` program, if this system has it."""


_MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "out of memory", "bad_alloc", "memory exhausted")
_FILES_SIGNS = ("Too many open files",)
_PROCESS_SIGNS = ("Resource temporarily unavailable", "Cannot fork", "fork: retry")


NO_LIMITS = JobLimits()
"""No limit at all (shared: :class:`JobLimits` is frozen)."""


def effective(job: JobLimits | None, defaults: JobLimits | None, caps: JobLimits | None) -> JobLimits:
    """The job's own limits, else the worker's defaults, each cut to the worker's cap."""
    if job is None and defaults is None and caps is None:  # most jobs: nothing to build, per job
        return NO_LIMITS
    values: dict[str, float | int | None] = {}
    for name in JobLimits.model_fields:
        value = getattr(job, name, None) if job is not None else None
        if value is None and defaults is not None:
            value = getattr(defaults, name)
        cap = getattr(caps, name) if caps is not None else None
        if cap is not None:
            value = cap if value is None else min(value, cap)
        values[name] = value
    return JobLimits.model_validate(values)


def is_empty(limits: JobLimits | None) -> bool:
    """True when no limit is set."""
    return limits is None or all(getattr(limits, name) is None for name in JobLimits.model_fields)


def prlimit_prefix(limits: JobLimits) -> list[str]:
    """The ``prlimit`` words that start a job under its rlimits (empty: none needed).

    Raises :class:`RuntimeError` when a limit needs ``prlimit`` and the system has none.
    """
    options: list[str] = []
    if limits.cpu_s is not None:
        soft = max(1, round(limits.cpu_s))
        options.append(f"--cpu={soft}:{soft + 1}")  # SIGXCPU at soft, SIGKILL a second later
    if limits.memory_mb is not None:
        options.append(f"--as={limits.memory_mb * 1024 * 1024}")
    if limits.open_files is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        value = limits.open_files if hard == resource.RLIM_INFINITY else min(limits.open_files, hard)
        options.append(f"--nofile={value}")
    if not options:
        return []
    if PRLIMIT is None:
        raise RuntimeError(
            "limits cpu_s, memory_mb and open_files are set with the prlimit program (util-linux), "
            "which this system lacks; remove them from the job, or install util-linux"
        )
    return [PRLIMIT, *options, "--"]


def diagnose(limits: JobLimits | None, returncode: int, stderr_tail: str) -> str | None:
    """The limit a failed job most likely went beyond, from how it ended; ``None`` if none shows.

    ``cpu_s``: killed by SIGXCPU (or SIGKILL at the hard limit a second later).
    The others show in what the job printed: an allocation that failed
    (``memory_mb``), "Too many open files" (``open_files``), a fork refused
    (``processes``).
    """
    if limits is None or returncode == 0:
        return None
    if limits.cpu_s is not None and returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "cpu_s"
    for name, signs in (("memory_mb", _MEMORY_SIGNS), ("open_files", _FILES_SIGNS), ("processes", _PROCESS_SIGNS)):
        if getattr(limits, name) is not None and any(sign in stderr_tail for sign in signs):
            return name
    return None


def describe(name: str, limits: JobLimits) -> str:
    """``limits.memory_mb (100 MiB)``: a limit and its value, for errors."""
    value = getattr(limits, name)
    unit = {"cpu_s": " CPU seconds", "memory_mb": " MiB", "output_bytes": " bytes per stream"}.get(name, "")
    return f"limits.{name} ({value:g}{unit})" if isinstance(value, float) else f"limits.{name} ({value:,}{unit})"
