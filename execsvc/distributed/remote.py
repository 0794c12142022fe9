"""The job function a remote worker runs (:func:`run_remote`): one claimed job, judged again by
this machine's config and run by execsvc's own runner.

The payload (built by :meth:`.dispatch.RqDispatch.enqueue`) carries the job file as claimed on
the front machine: ``rq_id``, ``job_id``, ``kind``, ``job_file`` (its name) and ``data`` (its
bytes, base64). Here it is written to ``<dir>/jobs/``, read by :func:`~execsvc.run_request.read_job`
with THIS machine's config (its default and largest timeout, limits, sandbox policy, its
environment and home) and judged by its policy (:func:`~execsvc.policy.judge`: allowed
commands, shell, environment), whatever the job asks. ``result_file`` is the front machine's
business (written there from the shipped stdout), and so are ``on_finish`` and ``webhook``.

The job runs in its own process group (:class:`~execsvc.runner.JobProcess`), its output to
``<dir>/logs/<job id>-<rq id>.stdout|stderr``. Every :data:`~.keys.TICK_S` the runner ships
what the logs gained (:mod:`.shipping`), renews the job's heartbeat (:func:`~.keys.alive_key`),
reads stop requests (:func:`~.keys.stop_key`: a signal name each; the group gets it, then
SIGKILL after ``kill_grace_s``) and applies the job's timeout (SIGTERM, then SIGKILL) and its
``processes`` and ``output_bytes`` limits. When Redis cannot be reached for
:data:`~.keys.ALIVE_TTL_S`, the front machine takes the job for lost, so the job is stopped here
too. A keeper process (``sh``, in a session of its own) holds a pipe from this process: if
this process dies (kill -9), the keeper stops the job's process group, so a killed remote
worker leaves nothing running. The stream's last entry is the outcome
(``{"t": "exit", "j": <JSON>}``, see :func:`_outcome`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..config import WorkerConfig
from ..job_logs import cut_log
from ..limits import describe
from ..policy import judge
from ..protocol.defaults import GROUP_ENV, SLOT_ENV
from ..protocol.errors import InvalidJob
from ..protocol.layout import job_id_problem
from ..run_request import RunRequest, read_job
from ..runner import ExitInfo, JobProcess, SpawnError
from .keys import ALIVE_TTL_S, KEEP_S, TICK_S, alive_key, output_key, stop_key
from .shipping import LogShipper

if TYPE_CHECKING:
    import redis

_KEEPER = (
    'read -r line; [ "$line" = done ] && exit 0; kill -TERM "-$1" 2>/dev/null || exit 0; '
    'sleep "$2"; kill -KILL "-$1" 2>/dev/null; exit 0'
)
"""The keeper: waits on its stdin (a pipe this process holds); EOF without ``done`` means this
process died, so the job's group ($1) gets SIGTERM, then SIGKILL after the grace ($2 s)."""

_FINAL_TRIES = 8
"""Tries of the outcome's write, 0.5 s apart (within the heartbeat's TTL, so the dispatcher
never takes the job for lost meanwhile)."""


@dataclass(frozen=True)
class RemoteSettings:
    """A remote worker's own settings: its ``name`` (the record's ``host``), its folder ``root``
    (``jobs/``, ``logs/``), its ``config`` (the policy and caps jobs get here) and
    ``max_shipped_bytes`` (per stream and job)."""

    name: str
    root: Path
    config: WorkerConfig
    max_shipped_bytes: int


_settings: RemoteSettings | None = None


def configure(settings: RemoteSettings) -> None:
    """Set this process's remote settings (``execsvc remote-worker`` does, before it works)."""
    global _settings
    (settings.root / "jobs").mkdir(parents=True, exist_ok=True, mode=0o700)
    (settings.root / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
    _settings = settings


def run_remote(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ's job function: run one job (see the module docstring); returns its outcome, also the
    stream's last entry. Raises :class:`RuntimeError` in a process :func:`configure` was not
    called in, and :class:`ValueError` for a payload that is not one of execsvc's."""
    from rq import get_current_job

    if _settings is None:
        raise RuntimeError("run_remote runs only in `execsvc remote-worker`")
    current = get_current_job()
    if current is None:
        raise RuntimeError("run_remote runs only as an RQ job")
    return _RemoteRun(_settings, current.connection, payload).run()


class _RemoteRun:
    def __init__(self, settings: RemoteSettings, connection: redis.Redis, payload: dict[str, Any]) -> None:
        self.settings, self.redis = settings, connection
        self.rq_id = str(payload["rq_id"])
        self.job_id = str(payload["job_id"])
        if job_id_problem(self.job_id) is not None or "/" in self.rq_id or self.rq_id.startswith("."):
            raise ValueError(f"not an execsvc job: {self.job_id!r}")
        self.kind = payload["kind"]
        self.data = base64.b64decode(payload["data"])
        slot_env = payload.get("slot_env") or {}  # the dispatcher's group and slot: EXECSVC_GROUP, EXECSVC_SLOT
        self.slot_env = {
            name: value for name, value in slot_env.items() if name in (GROUP_ENV, SLOT_ENV) and isinstance(value, str)
        }
        suffix = Path(str(payload["job_file"])).suffix
        self.path = settings.root / "jobs" / f"{self.job_id}-{self.rq_id}{suffix}"
        logs = settings.root / "logs"
        self.logs = (logs / f"{self.job_id}-{self.rq_id}.stdout", logs / f"{self.job_id}-{self.rq_id}.stderr")
        self.shipper = LogShipper(self.logs, settings.max_shipped_bytes)
        self.last_renewed = time.monotonic()
        self.stop: tuple[str, str] | None = None  # (status, error) of a stop decided here
        self.stop_signal: str | None = None
        self.sigkilled_after_s: float | None = None
        self.limit_exceeded: str | None = None
        self.stopped_by: BaseException | None = None  # a stop of the worker itself, raised after the outcome

    def run(self) -> dict[str, Any]:
        self.redis.set(alive_key(self.rq_id), self.settings.name, ex=ALIVE_TTL_S)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as job_file:
            job_file.write(self.data)
        try:
            request = self._judged()
            if isinstance(request, str):
                return self._finish({"unstarted": "invalid", "error": request})
            if self.redis.llen(stop_key(self.rq_id)):  # cancelled (or the drain ended) while it waited in RQ
                why = f"it was stopped before it started on {self.settings.name}; it never ran"
                return self._finish({"unstarted": "stopped", "error": why})
            process = JobProcess(request, *self.logs, kill_grace_s=self.settings.config.kill_grace_s)
            try:
                process.start()
            except SpawnError as exc:
                return self._finish({"unstarted": "failed", "error": f"{exc} (on {self.settings.name})"})
            outcome = self._finish(self._supervise(process, request))
            if isinstance(self.stopped_by, (SystemExit, KeyboardInterrupt)):  # a cold shutdown: RQ's to finish
                raise self.stopped_by
            return outcome
        finally:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _judged(self) -> RunRequest | str:
        """The job as this machine's config lets it run, or why it does not."""
        config, where = self.settings.config, f"on {self.settings.name}"
        if config.config_file:
            where += f", set in {config.config_file}"
        try:
            request = read_job(
                self.path, self.kind, job_id=self.job_id, queue_root=self.settings.root, config=config, data=self.data
            )
        except InvalidJob as exc:
            return f"{exc.reason} ({where})"
        request = replace(request, result_file=None)  # the front machine writes it, from the shipped stdout
        verdict = judge(
            request,
            self.kind,
            allowed_commands=config.allowed_commands,
            allow_shell=config.allow_shell,
            refused_env=config.refused_env,
        )
        if verdict.problem is not None:
            return f"{verdict.problem} ({where})"
        request = replace(request, env={**request.env, **self.slot_env})
        return replace(request, executable=verdict.executable) if verdict.executable else request

    def _supervise(self, process: JobProcess, request: RunRequest) -> dict[str, Any]:
        """Wait for the job's exit, shipping its output and acting on stops, timeout and limits."""
        assert process.pid is not None
        keeper_r, keeper_w = os.pipe()
        keeper = subprocess.Popen(
            ["/bin/sh", "-c", _KEEPER, "keeper", str(process.pid), f"{process.kill_grace_s:g}"],
            stdin=keeper_r,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(keeper_r)
        self._add({"t": "start", "j": json.dumps({"host": self.settings.name, "pid": process.pid})})
        try:
            exit_info = self._wait(process, request)
        except BaseException as exc:  # RQ's job timeout (the backstop), a cold shutdown: stop the job first
            process.signal_group(signal.SIGKILL)
            exit_info = process.wait()
            why = "was stopped at once (a second SIGTERM)" if isinstance(exc, SystemExit) else f"failed ({exc!r})"
            error = f"the remote worker {self.settings.name} {why} while the job ran; its process group got SIGKILL"
            self.stop = ("interrupted", error)
            self.stopped_by = exc
        finally:
            os.write(keeper_w, b"done\n")
            os.close(keeper_w)
            keeper.wait()
        if self.limit_exceeded == "output_bytes" and request.limits.output_bytes is not None:
            for path in self.logs:
                cut_log(path, request.limits.output_bytes)
        return _outcome(self, process, exit_info)

    def _wait(self, process: JobProcess, request: RunRequest) -> ExitInfo:
        grace = process.kill_grace_s
        deadline = math.inf if request.timeout_s is None else time.monotonic() + request.timeout_s  # None: a service
        kill_at: float | None = None
        assert process.pidfd is not None, "remote workers need pidfds (Linux 5.3 or later)"
        poll = select.poll()
        poll.register(process.pidfd, select.POLLIN)
        while not poll.poll(TICK_S * 1000):
            current = time.monotonic()
            signals = self._tick()
            if current >= deadline and self.stop is None:
                error = f"the job ran past its timeout of {request.timeout_s:g} s; its process group got SIGTERM"
                self.stop = ("timeout", error)
                signals.append("SIGTERM")
            if self.stop is None and current - self.last_renewed > ALIVE_TTL_S:
                error = f"{self.settings.name} could not reach Redis for {ALIVE_TTL_S} s; the job was stopped there"
                self.stop = ("interrupted", error)
                signals.append("SIGTERM")
            exceeded = self._limit(process, request)
            if exceeded is not None:
                signals.append("SIGKILL")
            for name in signals:
                stopping = self.stop_signal not in (None, "SIGKILL")
                self.stop_signal = self.stop_signal or name
                if process.signal_group(signal.Signals[name]) and name == "SIGKILL" and stopping:
                    self.sigkilled_after_s = grace  # asked for by the dispatcher, after its grace
                if name != "SIGKILL" and kill_at is None:
                    kill_at = current + grace
            if kill_at is not None and current >= kill_at:
                kill_at = float("inf")
                if process.signal_group(signal.SIGKILL):
                    self.sigkilled_after_s = grace
        return process.stop_leftovers(process.reap())

    def _limit(self, process: JobProcess, request: RunRequest) -> str | None:
        """The limit (``processes``, ``output_bytes``) the running job went beyond, once."""
        limits = request.limits
        if self.limit_exceeded is not None or not request.polls_limits:
            return None
        if limits.processes is not None and process.group_size() > limits.processes:
            self.limit_exceeded = "processes"
        elif limits.output_bytes is not None and max(process.output_sizes()) > limits.output_bytes:
            self.limit_exceeded = "output_bytes"
        else:
            return None
        error = f"the job went beyond {describe(self.limit_exceeded, limits)}; its process group got SIGKILL"
        if self.limit_exceeded == "output_bytes":
            error += f"; its output was cut at {limits.output_bytes:,} bytes per stream"
        self.stop = self.stop or ("failed", error)
        return self.limit_exceeded

    def _tick(self) -> list[str]:
        """Ship new output, renew the heartbeat, take the stop requests (signal names); a Redis
        that cannot be reached is tried again at the next tick."""
        import redis

        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for stream, offset, data in self.shipper.take():
                    pipe.xadd(output_key(self.rq_id), {"t": stream, "o": offset, "d": data})
                pipe.set(alive_key(self.rq_id), self.settings.name, ex=ALIVE_TTL_S)
                pipe.lpop(stop_key(self.rq_id), 16)
                answers = pipe.execute()
        except redis.RedisError:
            return []
        self.last_renewed = time.monotonic()
        stops = answers[-1] or []
        return [name for raw in stops if (name := raw.decode()) in signal.Signals.__members__]

    def _add(self, fields: dict[str, str | bytes | int]) -> None:
        self.redis.xadd(output_key(self.rq_id), cast(dict[Any, Any], fields))

    def _finish(self, outcome: dict[str, Any]) -> dict[str, Any]:
        """Ship the rest of the output and the outcome; the heartbeat ends."""
        outcome.setdefault("host", self.settings.name)
        if "unstarted" not in outcome:
            for stream, offset, data in self.shipper.take():
                self._add({"t": stream, "o": offset, "d": data})
            if self.shipper.cut:
                outcome["remote_logs"] = [f"{self.settings.name}:{path}" for path in self.logs]
        import redis

        for tries_left in range(_FINAL_TRIES - 1, -1, -1):  # Redis restarting: try for a while
            try:
                with self.redis.pipeline() as pipe:
                    pipe.xadd(output_key(self.rq_id), {"t": "exit", "j": json.dumps(outcome)})
                    pipe.expire(output_key(self.rq_id), KEEP_S)
                    pipe.delete(alive_key(self.rq_id), stop_key(self.rq_id))
                    pipe.execute()
                break
            except redis.RedisError:
                if not tries_left:
                    raise
                time.sleep(0.5)
        return outcome


def _outcome(run: _RemoteRun, process: JobProcess, exit_info: ExitInfo) -> dict[str, Any]:
    """The outcome of a job that ran: how it ended (times ISO 8601), and any stop decided here
    (``stop``: ``timeout``, ``failed`` for a limit, ``interrupted``, with its ``error``)."""
    return {
        "returncode": exit_info.returncode,
        "started_at": exit_info.started_at.isoformat(),
        "ended_at": exit_info.ended_at.isoformat(),
        "duration_s": exit_info.duration_s,
        "leftovers_stopped": exit_info.leftovers_stopped,
        "pid": process.pid,
        "stop": run.stop[0] if run.stop else None,
        "error": run.stop[1] if run.stop else None,
        "stop_signal": run.stop_signal,
        "sigkilled_after_s": run.sigkilled_after_s,
        "limit_exceeded": run.limit_exceeded,
    }
