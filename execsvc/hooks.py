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

Both are bounded by the worker's stop through a :class:`HookStop`: once it is set
(the drain period is over, or a second stop signal came), an ``on_finish`` still
running gets SIGKILL on its process group, a webhook's connection is shut down
(the POST in flight fails at once; one still connecting ends within
``webhook_timeout_s``), and no hook starts any more.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

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


class HookStop:
    """Set once when the worker stops: it ends the hooks in flight and keeps new ones from starting.

    Safe from any thread. The hooks register what can block them (an ``on_finish``
    process group, a webhook's socket) for the time they use it; :meth:`set`
    SIGKILLs the one and shuts the other down.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._processes: set[JobProcess] = set()
        self._sockets: set[socket.socket] = set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s``; True if the stop came."""
        return self._event.wait(timeout_s)

    def set(self) -> None:
        with self._lock:
            self._event.set()
            processes, sockets = list(self._processes), list(self._sockets)
        for process in processes:
            process.signal_group(signal.SIGKILL)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _add(self, what: JobProcess | socket.socket) -> bool:
        """Register ``what``; False (nothing registered) once the stop has come."""
        with self._lock:
            if self._event.is_set():
                return False
            if isinstance(what, JobProcess):
                self._processes.add(what)
            else:
                self._sockets.add(what)
            return True

    def _discard(self, what: JobProcess | socket.socket) -> None:
        with self._lock:
            if isinstance(what, JobProcess):
                self._processes.discard(what)
            else:
                self._sockets.discard(what)


def run_on_finish(
    request: RunRequest,
    command: str,
    record: Path,
    status: str,
    logs: tuple[Path, Path],
    *,
    timeout_s: float,
    stop: HookStop | None = None,
) -> HookOutcome:
    """Run ``command`` for a finished job; blocks until it ends, ``timeout_s`` passes or ``stop`` is set."""
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
        return HookOutcome(False, str(exc))
    if stop is not None and not stop._add(process):
        process.signal_group(signal.SIGKILL)
    timer = threading.Timer(timeout_s, process.signal_group, (signal.SIGKILL,))
    timer.start()
    try:
        exit_info = process.wait()
    finally:
        timer.cancel()
        if stop is not None:
            stop._discard(process)
    if exit_info.returncode == 0:
        return HookOutcome(True, "exit code 0")
    if stop is not None and stop.is_set():
        return HookOutcome(False, "stopped: the worker was stopping")
    if exit_info.returncode == -signal.SIGKILL and exit_info.duration_s >= timeout_s:
        return HookOutcome(False, f"stopped after hook_timeout_s ({timeout_s:g} s)")
    return HookOutcome(False, f"exit code {exit_info.returncode}")


def post_webhook(
    url: str, body: bytes, *, timeout_s: float, attempts: int, stop: HookStop | None = None
) -> HookOutcome:
    """POST ``body`` (JSON) to ``url``; retried with back-off until a 2xx answer or ``attempts`` tries.

    ``stop`` ends it early: the POST in flight fails, no try or back-off follows.
    """
    stop = stop if stop is not None else HookStop()
    connected: list[socket.socket] = []  # this call's sockets, registered with stop while used
    opener = urllib.request.build_opener(
        _StoppableHTTPHandler(stop, connected), _StoppableHTTPSHandler(stop, connected)
    )
    detail = "not tried"
    attempt = 0
    for attempt in range(1, attempts + 1):
        if stop.is_set():
            break
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"execsvc/{__version__}"},
        )
        try:
            with opener.open(request, timeout=timeout_s) as response:
                return HookOutcome(True, f"HTTP {response.status} after {attempt} tr{'y' if attempt == 1 else 'ies'}")
        except urllib.error.HTTPError as exc:
            detail = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            detail = str(getattr(exc, "reason", exc))
        finally:
            for sock in connected:
                stop._discard(sock)
            connected.clear()
        if attempt < attempts and stop.wait(2.0 ** (attempt - 1)):
            break
    return HookOutcome(False, f"{detail} (after {attempt} tr{'y' if attempt == 1 else 'ies'})")


def _stoppable(cls: type[http.client.HTTPConnection], stop: HookStop, connected: list[socket.socket]) -> Any:
    """A factory of ``cls`` connections whose socket ``stop`` can shut down once connected
    (added to ``connected``, which the caller discards from ``stop`` after each try)."""

    class Connection(cls):  # type: ignore[valid-type,misc]
        def connect(self) -> None:
            super().connect()
            if not stop._add(self.sock):
                self.sock.close()
                raise ConnectionAbortedError("the worker is stopping")
            connected.append(self.sock)

    return Connection


class _StoppableHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, stop: HookStop, connected: list[socket.socket]) -> None:
        super().__init__()
        self._connection = _stoppable(http.client.HTTPConnection, stop, connected)

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)


class _StoppableHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, stop: HookStop, connected: list[socket.socket]) -> None:
        super().__init__()
        self._connection = _stoppable(http.client.HTTPSConnection, stop, connected)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req, context=getattr(self, "_context", None))
