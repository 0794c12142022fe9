"""The dispatcher's side: a claimed job handed to an RQ queue, its output and exit followed.

:class:`RqDispatch` is the worker's one link to Redis with ``--executor rq``:
:meth:`~RqDispatch.enqueue` puts a claimed job (its file's bytes) on the RQ queue of its group
(:func:`~.keys.rq_queue_name`) and, in the same Redis transaction, names it in the front
queue's in-flight hash (:func:`~.keys.inflight_key`), so a dispatcher restarted at any point
finds each job it dispatched (:meth:`~RqDispatch.inflight`) and never enqueues one twice.

:class:`RemoteProcess` stands for the job in the worker's loop where a
:class:`~execsvc.runner.JobProcess` would: ``start`` dispatches it, ``signal_group`` forwards a
signal (cancel, the drain's end) to the remote runner, and :meth:`~RemoteProcess.follow`
(in a job thread) writes the shipped output into ``logs/`` and returns the :class:`Outcome`:
the remote runner's exit entry, or ``interrupted`` when the job is lost (its heartbeat expired
after it started, RQ says it failed or was stopped, or its RQ job is gone).
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ..protocol.defaults import DEFAULT_GROUP, GROUP_ENV, SLOT_ENV
from ..protocol.errors import ExecsvcError
from ..protocol.models import JobStatus
from ..run_request import RunRequest
from ..runner import ExitInfo, JobProcess, StartDeferred
from .keys import (
    ALIVE_TTL_S,
    KEEP_S,
    RUN_FUNCTION,
    alive_key,
    connect,
    inflight_key,
    output_key,
    redacted,
    rq_queue_name,
    stop_key,
)
from .shipping import LogWriter

if TYPE_CHECKING:
    from ..protocol import ClaimedJob

_FORGET = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry and string.sub(entry, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. ' ' then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
"""
"""Forget a recorded job: its in-flight entry only if it still names that RQ job (a retry's next
attempt may have replaced it), and that RQ job's stream, stop list and heartbeat."""
_BACKSTOP_S = 90
"""RQ's job timeout is the job's ``timeout_s`` plus this many seconds: a backstop only (the
remote runner applies the timeout itself)."""
_STATUS_EVERY_S = 1.0
"""How often a follower asks Redis for the job's heartbeat and RQ status between chunks."""


@dataclass
class Outcome:
    """How a remote job ended, for the record. ``exit_info``: ``None`` when it never started
    there (``unstarted``: ``invalid`` or ``failed``) or was lost (``stop_status`` ``interrupted``).
    ``stop_status``/``error``: a stop the remote runner decided (timeout, a limit) or the loss."""

    exit_info: ExitInfo | None = None
    unstarted: JobStatus | None = None
    stop_status: JobStatus | None = None
    error: str | None = None
    stop_signal: str | None = None
    sigkilled_after_s: float | None = None
    limit_exceeded: str | None = None
    host: str | None = None
    remote_logs: list[str] | None = field(default=None)
    never_ran: bool = False  # stopped before it started there: recorded with the stop's status

    @property
    def lost(self) -> bool:
        """Started there, then lost (its heartbeat expired, RQ gave it up): no exit to record."""
        return self.exit_info is None and self.unstarted is None and not self.never_ran


class RqDispatch:
    """The worker's connection to Redis and its RQ queues (thread-safe: redis-py's pool).

    ``url``: ``redis://[:password@]host:port/db`` or ``rediss://`` (TLS); never logged as given
    (:attr:`where` is the URL without its password). ``front``: this queue's id (:func:`~.keys.front_id`).
    """

    def __init__(self, url: str, front: str) -> None:
        try:
            self.redis = connect(url)
        except ValueError as exc:
            raise ExecsvcError(f"redis_url {redacted(url)!r} is not a Redis URL: {exc}") from None
        self.where = redacted(url)
        self._inflight = inflight_key(front)
        self._forget = self.redis.register_script(_FORGET)

    def check(self) -> None:
        """Raise :class:`~execsvc.protocol.errors.ExecsvcError` when Redis cannot be reached."""
        import redis

        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise ExecsvcError(f"cannot reach Redis at {self.where}: {exc}") from None

    def enqueue(self, claimed: ClaimedJob, request: RunRequest, data: bytes, group: str = DEFAULT_GROUP) -> str:
        """Put the job on its group's RQ queue and in the in-flight hash, atomically; its RQ job
        id. Raises :class:`redis.RedisError` (nothing was enqueued then)."""
        from rq import Queue
        from rq.serializers import JSONSerializer

        rq_id = uuid.uuid4().hex
        payload = {
            "rq_id": rq_id,
            "job_id": claimed.job_id,
            "kind": claimed.kind,
            "job_file": claimed.job_file,
            "data": base64.b64encode(data).decode("ascii"),
            "slot_env": {name: request.env[name] for name in (GROUP_ENV, SLOT_ENV) if name in request.env},
        }
        queue = Queue(rq_queue_name(group), connection=self.redis, serializer=JSONSerializer)
        with self.redis.pipeline() as pipe:
            pipe.multi()  # one MULTI/EXEC: in flight and enqueued together, or neither
            slot = request.env.get(SLOT_ENV, "")  # adopted again in the same slot (see inflight)
            pipe.hset(self._inflight, claimed.job_id, f"{rq_id} {request.options.attempt} {slot}".rstrip())
            queue.enqueue_call(
                RUN_FUNCTION,
                args=(payload,),
                job_id=rq_id,
                timeout=-1 if request.timeout_s is None else int(request.timeout_s) + _BACKSTOP_S,  # -1: none
                result_ttl=KEEP_S,
                failure_ttl=KEEP_S,
                description=f"execsvc job {claimed.job_id}",
                pipeline=pipe,
            )
            pipe.execute()
        return rq_id

    def inflight(self) -> dict[str, tuple[str, int, int | None]]:
        """This queue's dispatched jobs not yet recorded: job id to (RQ job id, attempt, the slot
        of its group it was started in, if known). Raises :class:`redis.RedisError`."""
        entries = cast(dict[bytes, bytes], self.redis.hgetall(self._inflight))
        found = {}
        for key, value in entries.items():
            rq_id, attempt, slot = ([*value.decode().split(" "), "", ""])[:3]
            found[key.decode()] = (
                rq_id,
                int(attempt) if attempt.isdigit() else 1,
                int(slot) if slot.isdigit() else None,
            )
        return found

    def forget(self, job_id: str, rq_id: str) -> None:
        """After the record: the job's entries in Redis go (its RQ record stays for its TTL)."""
        self._forget(keys=[self._inflight, output_key(rq_id), stop_key(rq_id), alive_key(rq_id)], args=[job_id, rq_id])

    def stop(self, rq_id: str, signal_name: str) -> None:
        """Ask the remote runner to send ``signal_name`` to the job's process group.
        Raises :class:`redis.RedisError`."""
        with self.redis.pipeline() as pipe:
            pipe.rpush(stop_key(rq_id), signal_name)
            pipe.expire(stop_key(rq_id), KEEP_S)
            pipe.execute()

    def rq_status(self, rq_id: str) -> str | None:
        """RQ's status of the job (``queued``, ``started``, ``finished``, ``failed``, ``stopped``,
        ...), ``None`` when Redis has no such job."""
        raw = cast(bytes | None, self.redis.hget(f"rq:job:{rq_id}", "status"))
        return raw.decode() if raw is not None else None


class RemoteProcess(JobProcess):
    """A job run by a remote worker, as the worker's loop sees it: no pid or pidfd here;
    :attr:`host` and :attr:`pid` once the remote runner said it started the job."""

    def __init__(
        self,
        request: RunRequest,
        stdout_path: Path,
        stderr_path: Path,
        *,
        kill_grace_s: float,
        dispatch: RqDispatch,
        claimed: ClaimedJob,
        rq_id: str | None = None,
    ) -> None:
        super().__init__(request, stdout_path, stderr_path, kill_grace_s=kill_grace_s)
        self.dispatch, self.claimed, self.rq_id = dispatch, claimed, rq_id
        self.remote_ended = threading.Event()

    def start(self) -> None:
        """Empty the job's logs and dispatch it. Raises :class:`~execsvc.runner.StartDeferred`
        when a log cannot be created or Redis cannot take the job (nothing was dispatched)."""
        import redis

        try:
            LogWriter(self.stdout_path, self.stderr_path, create=True).close()
        except OSError as exc:
            raise StartDeferred(f"its log files cannot be created: {exc.strerror or exc}") from exc
        data = self.request.claimed.data if self.request.claimed is not None else self.claimed.path.read_bytes()
        try:
            group = self.request.options.group or DEFAULT_GROUP
            self.rq_id = self.dispatch.enqueue(self.claimed, self.request, data, group)
        except redis.RedisError as exc:
            raise StartDeferred(f"it could not be handed to Redis at {self.dispatch.where}: {exc}") from exc
        self.started_at = datetime.now().astimezone()

    def signal_group(self, sig: int) -> bool:
        """Forward ``sig`` to the remote runner; False once the remote job ended."""
        import signal

        import redis

        if self.remote_ended.is_set() or self.rq_id is None:
            return False
        try:
            self.dispatch.stop(self.rq_id, signal.Signals(sig).name)
        except redis.RedisError:
            return False
        return True

    def group_size(self) -> int:
        return 0

    def follow(self, give_up: threading.Event) -> Outcome:
        """Block until the remote job ends: write its output chunks into ``logs/`` at their
        offsets and return its :class:`Outcome`. Redis errors are retried (Redis restarting);
        once ``give_up`` is set, waits at most ``kill_grace_s`` + 5 s more, then raises
        :class:`TimeoutError` (the job stays in ``running/`` and in Redis, for the next start)."""
        assert self.rq_id is not None
        writer = LogWriter(self.stdout_path, self.stderr_path, create=False)
        try:
            return _Follower(self, writer, give_up).run()
        finally:
            writer.close()
            self.remote_ended.set()


class _Follower:
    def __init__(self, process: RemoteProcess, writer: LogWriter, give_up: threading.Event) -> None:
        self.process, self.writer, self.give_up = process, writer, give_up
        assert process.rq_id is not None
        self.rq_id, self.redis = process.rq_id, process.dispatch.redis
        self.last_id: bytes | str = "0-0"
        self.started = False
        self.queued_dead_since: float | None = None
        self.give_up_at: float | None = None

    def run(self) -> Outcome:
        import redis

        next_check = 0.0
        delay_s = 0.2
        while True:
            self._check_give_up()
            try:
                outcome = self._read(block_ms=1000)
                if outcome is None and time.monotonic() >= next_check:
                    next_check = time.monotonic() + _STATUS_EVERY_S
                    outcome = self._lost()
                delay_s = 0.2
            except redis.RedisError:
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
                continue
            if outcome is not None:
                return outcome

    def _check_give_up(self) -> None:
        if self.give_up.is_set():
            if self.give_up_at is None:
                self.give_up_at = time.monotonic() + self.process.kill_grace_s + 5
            elif time.monotonic() > self.give_up_at:
                raise TimeoutError("the worker stopped before the remote job ended")

    def _read(self, block_ms: int | None) -> Outcome | None:
        """Apply the stream's new entries; the outcome if the exit entry came."""
        answer = cast(
            list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None,
            self.redis.xread({output_key(self.rq_id): self.last_id}, count=512, block=block_ms),
        )
        for _key, entries in answer or []:
            for entry_id, fields in entries:
                self.last_id = entry_id
                kind = fields[b"t"].decode()
                if kind in ("out", "err"):
                    self.writer.write(kind, int(fields[b"o"]), fields[b"d"])
                elif kind == "start":
                    started = json.loads(fields[b"j"])
                    self.started = True
                    self.process.host, self.process.pid = started["host"], started["pid"]
                elif kind == "exit":
                    return _from_exit(json.loads(fields[b"j"]))
        return None

    def _lost(self) -> Outcome | None:
        """``interrupted`` if the job can no longer end by itself; else ``None`` (keep waiting)."""
        alive = self.redis.exists(alive_key(self.rq_id))
        status = self.process.dispatch.rq_status(self.rq_id)
        if status in ("queued", "deferred", "scheduled") or (alive and status == "started"):
            self.queued_dead_since = None
            return None
        final = self._read(block_ms=None)  # the exit entry is written before RQ's status changes
        if final is not None:
            return final
        host = self.process.host or "a remote worker"
        if status == "started" and not self.started:  # dequeued; the job function has not begun yet
            since = self.queued_dead_since = self.queued_dead_since or time.monotonic()
            if time.monotonic() - since < 3 * ALIVE_TTL_S:
                return None
            reason = "its RQ worker took it but never started it (the worker died)"
        elif status == "started":
            reason = f"{host} stopped renewing its heartbeat for {ALIVE_TTL_S} s (the worker or its machine died)"
        elif status is None:
            reason = "its RQ job is gone from Redis (Redis lost its data?)"
        else:
            reason = f"RQ says its job is {status} and no exit came back from {host}"
        return Outcome(
            stop_status=JobStatus.INTERRUPTED,
            error=f"the job was lost: {reason}; it was not run again",
            host=self.process.host,
        )


def _from_exit(outcome: dict[str, Any]) -> Outcome:
    """The :class:`Outcome` of the remote runner's exit entry (see :func:`.remote._outcome`)."""
    host = outcome.get("host")
    if outcome.get("unstarted") == "stopped":  # its status is the stop's: the loop's (cancelled, interrupted)
        return Outcome(unstarted=JobStatus.CANCELLED, never_ran=True, error=outcome.get("error"), host=host)
    if outcome.get("unstarted"):
        return Outcome(unstarted=JobStatus(outcome["unstarted"]), error=outcome.get("error"), host=host)
    started = datetime.fromisoformat(outcome["started_at"])
    ended = datetime.fromisoformat(outcome["ended_at"])
    exit_info = ExitInfo(
        returncode=int(outcome["returncode"]),
        started_at=started,
        ended_at=ended,
        duration_s=float(outcome["duration_s"]),
        leftovers_stopped=bool(outcome.get("leftovers_stopped")),
    )
    stop = outcome.get("stop")
    return Outcome(
        exit_info=exit_info,
        stop_status=JobStatus(stop) if stop else None,
        error=outcome.get("error"),
        stop_signal=outcome.get("stop_signal"),
        sigkilled_after_s=outcome.get("sigkilled_after_s"),
        limit_exceeded=outcome.get("limit_exceeded"),
        host=host,
        remote_logs=outcome.get("remote_logs"),
    )
