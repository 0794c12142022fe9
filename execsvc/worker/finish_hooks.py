"""A finished job's ``on_finish`` and ``webhook``, in the hook threads, after its record.

:class:`FinishHooks` owns the two hook threads and the count of jobs whose hooks are in
flight (under its lock); a job thread (or the loop, for a job recorded unstarted) hands it a
job with :meth:`FinishHooks.after_record`, and the loop asks :meth:`FinishHooks.idle` before
it stops. The hooks touch only what they are handed: the job's request and record path.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import WorkerConfig
from ..daemonlog import EventLog
from ..hooks import HookStop, post_webhook, run_on_finish
from ..inbox import Inbox, MessageKind
from ..protocol.durable import read_regular_file
from ..protocol.layout import QueueLayout
from ..protocol.models import JobStatus
from ..run_request import RunRequest
from ..webhook_policy import WebhookRule

_RECORD_MAX_BYTES = 64 * 1024 * 1024  # as execsvc.protocol reads records


_ABANDONED = "the worker was stopping; the hook is not run again"


class FinishHooks:
    """The hook threads (``execsvc-hook-*``, two) and what they run; ``stop`` bounds them (set at the
    end of the drain period, on a second stop signal, or when the queue is lost)."""

    def __init__(
        self,
        layout: QueueLayout,
        config: WorkerConfig,
        log: EventLog,
        inbox: Inbox,
        webhook_rule: WebhookRule,
        stop: HookStop,
    ) -> None:
        self.layout, self.config, self.log = layout, config, log
        self._inbox, self._webhook_rule, self._hook_stop = inbox, webhook_rule, stop
        self._hooks = ThreadPoolExecutor(max_workers=2, thread_name_prefix="execsvc-hook")  # on_finish, webhook
        self._hooks_lock = threading.Lock()
        self._hooks_in_flight = 0  # jobs whose hooks are queued or running (see idle)

    def shutdown(self) -> None:
        """Abandon hooks still queued or running (their stop is set) and join the hook threads."""
        self._hook_stop.set()
        self._hooks.shutdown(wait=True)

    def after_record(self, job_id: str, request: RunRequest, record: Path, status: JobStatus) -> None:
        """Start the job's finish hooks, if it has any, in the hook threads (never waited for here)."""
        if request.options.on_finish is not None or request.options.webhook is not None:
            with self._hooks_lock:
                self._hooks_in_flight += 1
            self._hooks.submit(self._run_hooks, job_id, request, record, status)

    def idle(self) -> bool:
        """Whether no finish hook is queued or running (read by the loop before it stops)."""
        with self._hooks_lock:
            return self._hooks_in_flight == 0

    def _run_hooks(self, job_id: str, request: RunRequest, record: Path, status: JobStatus) -> None:
        """In a hook thread: the job's ``on_finish``, then its ``webhook``; each outcome is a line.

        Bounded by the stop: once :attr:`_hook_stop` is set (the drain period
        ended, or a second stop signal), a hook in flight is cut short and the
        rest are not started; each is logged ``on_finish_abandoned`` /
        ``webhook_abandoned``. When done, wakes the loop, which may be waiting
        for the last hook to stop.
        """
        try:
            self._on_finish(job_id, request, record, status)
            self._webhook(job_id, request, record)
        except Exception as exc:
            self.log.error("hook_error", job_id, error=repr(exc))
        finally:
            with self._hooks_lock:
                self._hooks_in_flight -= 1
            self._inbox.put((MessageKind.HOOKS_DONE, job_id))  # the inbox outlives the hook threads: see shutdown

    def _on_finish(self, job_id: str, request: RunRequest, record: Path, status: JobStatus) -> None:
        """The job's ``on_finish`` command, if any (refused where ``allow_shell`` is false)."""
        if request.options.on_finish is not None and not self.config.allow_shell:  # judge refuses such jobs
            self.log.error("on_finish_refused", job_id, reason="allow_shell = false; the hook was not run")
        elif request.options.on_finish is not None:
            logs = (self.layout.hook_log(job_id, "stdout"), self.layout.hook_log(job_id, "stderr"))
            if self._hook_stop.is_set():
                self.log.warning("on_finish_abandoned", job_id, reason=_ABANDONED)
            else:
                outcome = run_on_finish(
                    request,
                    request.options.on_finish,
                    record,
                    status.value,
                    logs,
                    timeout_s=self.config.hook_timeout_s,
                    stop=self._hook_stop,
                )
                if not outcome.ok and self._hook_stop.is_set():
                    self.log.warning("on_finish_abandoned", job_id, reason=_ABANDONED, outcome=outcome.detail)
                else:
                    event = "on_finish_done" if outcome.ok else "on_finish_failed"
                    (self.log.info if outcome.ok else self.log.warning)(event, job_id, outcome=outcome.detail)

    def _webhook(self, job_id: str, request: RunRequest, record: Path) -> None:
        """The job's ``webhook``, if any: the record just written, POSTed."""
        if request.options.webhook is not None:
            url = request.options.webhook
            if self._hook_stop.is_set():
                self.log.warning("webhook_abandoned", job_id, url=url, reason=_ABANDONED)
            else:
                body = read_regular_file(record, _RECORD_MAX_BYTES)  # the record just written: never a FIFO
                if body is None:
                    raise OSError(f"{record} is no longer a regular file of at most {_RECORD_MAX_BYTES} bytes")
                outcome = post_webhook(
                    url,
                    body,
                    timeout_s=self.config.webhook_timeout_s,
                    attempts=self.config.webhook_attempts,
                    rule=self._webhook_rule,
                    stop=self._hook_stop,
                )
                if not outcome.ok and self._hook_stop.is_set():
                    self.log.warning("webhook_abandoned", job_id, url=url, reason=_ABANDONED, outcome=outcome.detail)
                else:
                    event = "webhook_sent" if outcome.ok else "webhook_failed"
                    (self.log.info if outcome.ok else self.log.warning)(event, job_id, url=url, outcome=outcome.detail)
