"""What runs after a job's final record is written: ``on_finish`` and ``webhook`` (docs/protocol.md, "Finish hooks").

Both run in the worker's hook threads, never in the loop or a job's thread,
so a slow hook never holds up the queue. They run at most once per job: a
worker killed while a hook runs does not run it again (the record is what
tells what happened). Each outcome is a line in ``daemon.log``.

- ``on_finish``: a ``/bin/sh -c`` line in the job's folder, environment and sandbox,
  with ``EXECSVC_RECORD`` (the record's absolute path) and ``EXECSVC_STATUS``
  added; its own process group, stopped after ``hook_timeout_s``; output in
  ``logs/<id>.on_finish.stdout`` / ``.stderr``.
- ``webhook``: the record's JSON by HTTP POST (``Content-Type:
  application/json``), each try cut after ``webhook_timeout_s``, up to
  ``webhook_attempts`` tries 1, 2, 4 ... seconds apart; any 2xx answer is success.
  It goes straight to the host (no proxy), only to an address the
  :class:`~.webhook_policy.WebhookRule` allows when it is sent; a redirect
  (3xx) is a failure, never followed, and so is a refused address (neither is retried).

Both are bounded by the worker's stop through a :class:`HookStop`: once it is set
(the drain period is over, or a second stop signal came), an ``on_finish`` still
running gets SIGKILL on its process group, a webhook's connection is shut down
(the POST in flight fails at once; one still connecting ends within
``webhook_timeout_s``), and no hook starts any more.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import signal
import socket
import ssl
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from .protocol import __version__
from .protocol.jobfile import SHELL
from .protocol.models import JobLimits
from .run_request import RunRequest
from .runner import JobProcess, SpawnError
from .webhook_policy import WebhookRule

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
    """Run ``command`` for a finished job; blocks until it ends, ``timeout_s`` passes or ``stop`` is set.

    A sandboxed job's hook runs in the same sandbox, its record bound in read-only."""
    sandbox = request.sandbox
    hook = replace(
        request,
        argv=[SHELL, "-c", command],
        env={**request.env, RECORD_ENV: str(record), STATUS_ENV: status},
        stdin=None,
        executable=None,
        limits=JobLimits(),
        timeout_s=timeout_s,
        sandbox=replace(sandbox, argv=sandbox.with_readable([record])) if sandbox is not None else None,
    )
    process = JobProcess(hook, logs[0], logs[1], kill_grace_s=0)
    try:
        process.start()
    except SpawnError as exc:
        return HookOutcome(False, _with_moved(str(exc), process))
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
        return HookOutcome(True, _with_moved("exit code 0", process))
    if stop is not None and stop.is_set():
        return HookOutcome(False, _with_moved("stopped: the worker was stopping", process))
    if exit_info.returncode == -signal.SIGKILL and exit_info.duration_s >= timeout_s:
        return HookOutcome(False, _with_moved(f"stopped after hook_timeout_s ({timeout_s:g} s)", process))
    return HookOutcome(False, _with_moved(f"exit code {exit_info.returncode}", process))


def _with_moved(detail: str, process: JobProcess) -> str:
    """``detail``, and what the opening of the hook's logs moved aside (a FIFO, a link...)."""
    return "; ".join([detail, *(moved.describe() for moved in process.moved_aside)])


def post_webhook(
    url: str,
    body: bytes,
    *,
    timeout_s: float,
    attempts: int,
    rule: WebhookRule | None = None,
    stop: HookStop | None = None,
) -> HookOutcome:
    """POST ``body`` (JSON) to ``url``; retried with back-off until a 2xx answer or ``attempts`` tries.

    ``rule`` (default: the default :class:`~.webhook_policy.WebhookRule`) decides which of the
    host's addresses may be contacted, looked up again at each try; a refusal or a redirect
    ends it at once. ``stop`` ends it early: the POST in flight fails, no try or back-off follows.
    """
    rule = rule or WebhookRule()
    stop = stop if stop is not None else HookStop()
    detail, tries = "not tried", "0 tries"
    for attempt in range(1, attempts + 1):
        if stop.is_set():
            break
        tries = f"{attempt} tr{'y' if attempt == 1 else 'ies'}"
        try:
            status = _post_once(url, body, timeout_s, rule, stop)
        except _Refused as exc:
            return HookOutcome(False, f"refused by the worker's policy (webhook): {exc}; not sent")
        except (OSError, http.client.HTTPException) as exc:
            detail = str(exc) or type(exc).__name__
        else:
            if 200 <= status < 300:
                return HookOutcome(True, f"HTTP {status} after {tries}")
            if 300 <= status < 400:
                return HookOutcome(False, f"HTTP {status}: redirects are not followed (after {tries})")
            detail = f"HTTP {status}"
        if attempt < attempts and stop.wait(2.0 ** (attempt - 1)):
            break
    return HookOutcome(False, f"{detail} (after {tries})")


class _Refused(Exception):
    """The webhook's host has no address the rule allows (the message says why)."""


def _post_once(url: str, body: bytes, timeout_s: float, rule: WebhookRule, stop: HookStop) -> int:
    """One POST to an allowed address of ``url``'s host; returns the HTTP status (the answer's
    body is never read: a server cannot hold the hook thread or fill memory with it). The
    socket is registered with ``stop`` while used, so a stop shuts it down.

    Once connected, the whole try (TLS, request, status and headers) has ``timeout_s``
    seconds: then the socket is shut down, so a server that trickles bytes, which no
    per-read timeout catches, cannot hold the hook thread either. Raises :class:`_Refused`,
    :class:`OSError` (resolving, connecting; :class:`TimeoutError` when the time is up) or
    :class:`http.client.HTTPException`.
    """
    problem = rule.url_problem(url)
    if problem is not None:
        raise _Refused(problem)
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    sock = _connect(host, port, timeout_s, rule)
    stoppable = sock.dup()  # the same socket, whatever wraps it (TLS): shut down when the time is up
    expired = threading.Event()

    def hang_up() -> None:
        expired.set()
        with contextlib.suppress(OSError):
            stoppable.shutdown(socket.SHUT_RDWR)

    if not stop._add(stoppable):
        stoppable.close()
        sock.close()
        raise ConnectionAbortedError("the worker is stopping")
    deadline = threading.Timer(timeout_s, hang_up)
    deadline.daemon = True
    deadline.start()
    try:
        connection: http.client.HTTPConnection = (
            _PinnedHTTPSConnection(host, port, sock, timeout_s)
            if https
            else _PinnedHTTPConnection(host, port, sock, timeout_s)
        )
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json", "User-Agent": f"execsvc/{__version__}"}
        connection.request("POST", target, body=body, headers=headers)
        status = connection.getresponse().status
        connection.close()  # the status is the answer: its body, which may never end, is not read
    except (OSError, http.client.HTTPException):
        if not expired.is_set():
            raise
    else:
        if not expired.is_set():  # else the headers were cut short: an end of file ends them too
            return status
    finally:
        stop._discard(stoppable)
        deadline.cancel()
        stoppable.close()
        sock.close()
    raise TimeoutError(f"no whole answer within {timeout_s:g} s (webhook_timeout_s)")


def _connect(host: str, port: int, timeout_s: float, rule: WebhookRule) -> socket.socket:
    """A socket connected to the first address of ``host`` that ``rule`` allows."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    problems: list[str] = []
    error: OSError | None = None
    for family, kind, proto, _name, address in infos:
        problem = rule.address_problem(ipaddress.ip_address(str(address[0])), host)
        if problem is not None:
            problems.append(problem)
            continue
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout_s)
            sock.connect(address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    if error is not None:
        raise error
    raise _Refused(problems[0] if problems else f"{host} has no address")


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a socket already connected to a checked address."""

    def __init__(self, host: str, port: int, sock: socket.socket, timeout_s: float) -> None:
        super().__init__(host, port, timeout=timeout_s)
        self._pinned = sock

    def connect(self) -> None:
        self.sock = self._pinned


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS over a socket already connected to a checked address; the certificate is checked for ``host``."""

    def __init__(self, host: str, port: int, sock: socket.socket, timeout_s: float) -> None:
        super().__init__(host, port, timeout=timeout_s)
        self._pinned = sock
        self._tls = ssl.create_default_context()

    def connect(self) -> None:
        self.sock = self._tls.wrap_socket(self._pinned, server_hostname=self.host)
