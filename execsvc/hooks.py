"""What runs after a job's final record is written: ``on_finish`` and ``webhook`` (README, "Finish hooks").

Both run in the worker's hook threads, never in the loop or a job's thread,
so a slow hook never holds up the queue. They run at most once per job: a
worker killed while a hook runs does not run it again (the record is what
tells what happened). Each outcome is a line in ``daemon.log``.

- ``on_finish``: a ``/bin/sh -c`` line in the job's folder and environment,
  with ``EXECSVC_RECORD`` (the record's absolute path) and ``EXECSVC_STATUS``
  added; its own process group, stopped after ``hook_timeout_s``; output in
  ``logs/<id>.on_finish.stdout`` / ``.stderr``.
- ``webhook``: the record's JSON by HTTP POST (``Content-Type:
  application/json``), each try cut after ``webhook_timeout_s``, up to
  ``webhook_attempts`` tries 1, 2, 4 ... seconds apart; any 2xx answer is success.
"""

from __future__ import annotations

import signal
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from . import __version__
from .jobfile import SHELL, RunRequest
from .models import JobLimits
from .runner import JobProcess, SpawnError

RECORD_ENV = "EXECSVC_RECORD"
STATUS_ENV = "EXECSVC_STATUS"


@dataclass(frozen=True)
class HookOutcome:
    """``ok`` and a short ``detail`` for the log (exit code, HTTP status, or the error)."""

    ok: bool
    detail: str


def run_on_finish(
    request: RunRequest, command: str, record: Path, status: str, logs: tuple[Path, Path], *, timeout_s: float
) -> HookOutcome:
    """Run ``command`` for a finished job; blocks until it ends or ``timeout_s`` passes."""
    hook = replace(
        request,
        argv=[SHELL, "-c", command],
        env={**request.env, RECORD_ENV: str(record), STATUS_ENV: status},
        stdin=None,
        executable=None,
        limits=JobLimits(),
        timeout_s=timeout_s,
    )
    process = JobProcess(hook, logs[0], logs[1], kill_grace_s=0)
    try:
        process.start()
    except SpawnError as exc:
        return HookOutcome(False, _with_moved(str(exc), process))
    timer = threading.Timer(timeout_s, process.signal_group, (signal.SIGKILL,))
    timer.start()
    try:
        exit_info = process.wait()
    finally:
        timer.cancel()
    if exit_info.returncode == 0:
        return HookOutcome(True, _with_moved("exit code 0", process))
    if exit_info.returncode == -signal.SIGKILL and exit_info.duration_s >= timeout_s:
        return HookOutcome(False, _with_moved(f"stopped after hook_timeout_s ({timeout_s:g} s)", process))
    return HookOutcome(False, _with_moved(f"exit code {exit_info.returncode}", process))


def _with_moved(detail: str, process: JobProcess) -> str:
    """``detail``, and what the opening of the hook's logs moved aside (a FIFO, a link...)."""
    return "; ".join([detail, *(moved.describe() for moved in process.moved_aside)])


def post_webhook(
    url: str, body: bytes, *, timeout_s: float, attempts: int, stop: threading.Event | None = None
) -> HookOutcome:
    """POST ``body`` (JSON) to ``url``; retried with back-off until a 2xx answer or ``attempts`` tries.

    ``stop`` ends the back-off early (the worker is shutting down).
    """
    detail = "not tried"
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"execsvc/{__version__}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return HookOutcome(True, f"HTTP {response.status} after {attempt} tr{'y' if attempt == 1 else 'ies'}")
        except urllib.error.HTTPError as exc:
            detail = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            detail = str(getattr(exc, "reason", exc))
        if attempt < attempts:
            pause = 2.0 ** (attempt - 1)
            if stop is not None and stop.wait(pause):
                break
            if stop is None:
                time.sleep(pause)
    return HookOutcome(False, f"{detail} (after {attempt} tr{'y' if attempt == 1 else 'ies'})")
