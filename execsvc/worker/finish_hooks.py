"""A finished job's ``on_finish`` and ``webhook``, in the hook threads, after its record."""

from pathlib import Path

from ..hooks import post_webhook, run_on_finish
from ..inbox import MessageKind
from ..protocol.durable import read_regular_file
from ..protocol.models import JobStatus
from ..run_request import RunRequest
from .state import LoopState

_RECORD_MAX_BYTES = 64 * 1024 * 1024  # as execsvc.protocol reads records


class FinishHooks(LoopState):
    """(moved)"""

    def _after_record(self, job_id: str, request: RunRequest, record: Path, status: JobStatus) -> None:
        """Start the job's finish hooks, if it has any, in the hook threads (never waited for here)."""
        if request.options.on_finish is not None or request.options.webhook is not None:
            with self._hooks_lock:
                self._hooks_in_flight += 1
            self._hooks.submit(self._run_hooks, job_id, request, record, status)

    def _hooks_idle(self) -> bool:
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
        abandoned = "the worker was stopping; the hook is not run again"
        try:
            if request.options.on_finish is not None and not self.config.allow_shell:  # judge refuses such jobs
                self.log.error("on_finish_refused", job_id, reason="allow_shell = false; the hook was not run")
            elif request.options.on_finish is not None:
                logs = (self.layout.hook_log(job_id, "stdout"), self.layout.hook_log(job_id, "stderr"))
                if self._hook_stop.is_set():
                    self.log.warning("on_finish_abandoned", job_id, reason=abandoned)
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
                        self.log.warning("on_finish_abandoned", job_id, reason=abandoned, outcome=outcome.detail)
                    else:
                        event = "on_finish_done" if outcome.ok else "on_finish_failed"
                        (self.log.info if outcome.ok else self.log.warning)(event, job_id, outcome=outcome.detail)
            if request.options.webhook is not None:
                url = request.options.webhook
                if self._hook_stop.is_set():
                    self.log.warning("webhook_abandoned", job_id, url=url, reason=abandoned)
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
                        self.log.warning("webhook_abandoned", job_id, url=url, reason=abandoned, outcome=outcome.detail)
                    else:
                        event = "webhook_sent" if outcome.ok else "webhook_failed"
                        (self.log.info if outcome.ok else self.log.warning)(
                            event, job_id, url=url, outcome=outcome.detail
                        )
        except Exception as exc:
            self.log.error("hook_error", job_id, error=repr(exc))
        finally:
            with self._hooks_lock:
                self._hooks_in_flight -= 1
            self._inbox.put((MessageKind.HOOKS_DONE, job_id))  # the inbox outlives the hook threads: see shutdown
