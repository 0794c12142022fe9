"""Messages to the loop and what it does with each (:class:`~execsvc.inbox.MessageKind`,
dispatched with ``match``), and the signal handlers that post them.
"""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import assert_never

from ..inbox import Message, MessageKind
from ..protocol.durable import read_regular_file
from ..protocol.models import CancelRequest, JobStatus
from ..reaper import reap_orphans
from .launch import Launch
from .state import DeadlineAction, _ActiveJob

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
"""Signals that stop the worker the normal way: no more claims, running jobs drain for
``drain_timeout_s``, then are stopped as ``interrupted``; exit code 0. A second one stops the jobs
at once. (SIGHUP: the terminal closed, or an operator asks for a restart; the service manager
starts the worker again, which reads the config file anew.)"""

STATUS_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
"""Signals that only write a ``status`` line to ``daemon.log`` (jobs running, recording, pending)."""

_KEEP_IGNORED = (signal.SIGHUP, signal.SIGQUIT)
_PUT_BACK_WHILE_RUNNING = 3
"""Times a running job's removed file is put back at once (a job removing it in a loop gets it back at its end)."""


class Messages(Launch):
    """What other threads and signal handlers post to the loop, and what it does with each, in
    the loop's thread (the handlers themselves only post)."""

    def _install_signal_handlers(self) -> None:
        """Handle every signal a terminal or an operator commonly sends, so none ends the worker
        without the normal stop (see :data:`STOP_SIGNALS` and :data:`STATUS_SIGNALS`).

        SIGHUP and SIGQUIT are left ignored when the worker was started with them ignored
        (``nohup``, a service manager): that is how the one who started it asked it to outlive
        the terminal.
        """
        for signum in (*STOP_SIGNALS, *STATUS_SIGNALS):
            if signum in _KEEP_IGNORED and signal.getsignal(signum) == signal.SIG_IGN:
                continue
            signal.signal(signum, self._on_signal)
        if self._subreaper:  # an orphan re-parented here exited: reap it (see _handle)
            signal.signal(signal.SIGCHLD, self._on_child)

    def _on_child(self, _signum: int, _frame: FrameType | None) -> None:
        """SIGCHLD: reap orphans at the loop's next step, without waking it for that: nearly every
        SIGCHLD is a job's own exit, whose pidfd wakes the loop anyway, and an orphan's zombie costs
        nothing until then (a job thread waiting for its group to empty reaps the group's zombies
        itself, and the rescan reaps at the latest)."""
        if not self._child_posted:
            self._child_posted = True
            self._inbox.put((MessageKind.CHILD, ""), wake=False)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._inbox.put((MessageKind.SIGNAL, str(signum)), wake=True)  # SimpleQueue.put is reentrant: safe here

    def _handle(self, message: Message) -> None:
        kind, value = message
        match kind:
            case MessageKind.EVENT:
                self._consider(value)
            case MessageKind.EXITED:
                self._slot_freed(value)
                self._catch_up()
            case MessageKind.RECORDED:
                self._recording -= 1
                self._scheduler.settled(value, time.time())
            case MessageKind.LEFT_RUNNING:
                job = self._active.get(value)
                if job is not None:  # still running: the job removed or moved its own file
                    self._put_back_while_running(job)
                else:  # a job another program recorded (execsvc cancel): its dependents may go on
                    self._scheduler.settled(value, time.time())
            case MessageKind.RECORD_FAILING:
                if self._paused is None:
                    self.log.error(
                        "claims_paused",
                        reason=value,
                        note="no job is claimed until records can be written again (free disk space, or fix the "
                        "permissions of completed/ and failed/); the worker retries by itself",
                    )
                self._paused = value
            case MessageKind.RECORD_WRITTEN:
                if self._paused is not None:
                    self._paused = None
                    self.log.info("claims_resumed", reason="records can be written again")
            case MessageKind.CHILD:
                self._child_posted = False
                reap_orphans()
            case MessageKind.SIGNAL:
                if int(value) in STATUS_SIGNALS:
                    self._log_status(int(value))
                else:
                    self._on_stop_request(int(value))
            case MessageKind.CANCEL:
                self._on_cancel_request(value)
            case MessageKind.RESCAN:
                self.log.warning("events_lost", reason="the kernel's event queue overflowed; reading the folders")
                self._rescan_all()
            case MessageKind.WATCH_LOST:
                self._check_queue()
            case MessageKind.SCHEDULES:
                self._reload_schedules()
            case MessageKind.HOOKS_DONE:
                pass  # a wake-up only: loop() looks at FinishHooks.idle() after this step
            case _:
                assert_never(kind)

    def _put_back_while_running(self, job: _ActiveJob) -> None:
        """A running job removed or moved its own file: put it back in ``running/`` at once (at most
        ``_PUT_BACK_WHILE_RUNNING`` times), so that the job is still found there while it runs (by
        :meth:`JobStore.get`, cancel, its dependents) and settled after a crash; the record says so."""
        kept = job.kept or job.request.claimed
        if kept is None or job.put_back >= _PUT_BACK_WHILE_RUNNING:
            return
        job.put_back += 1
        try:
            job.kept, note = self.queue.restore_job_file(job.claimed, kept)
        except OSError as exc:  # put back before the record instead
            self.log.warning("job_file_changed", job.claimed.job_id, error=str(exc))
            return
        if note is not None:
            job.file_note = note
            self.log.warning("job_file_changed", job.claimed.job_id, reason=note, note="put back while it runs")

    def _on_cancel_request(self, job_id: str) -> None:
        """A client asked to cancel ``job_id``: stop its process group; it is recorded ``cancelled``."""
        request = self._read_cancel_request(job_id)
        if not self.queue.drop_cancel_request(job_id):
            return  # already consumed: the event of that removal, or a rescan that found it first
        job = self._active.get(job_id)
        if job is None:
            self.log.info("cancel_ignored", job_id, reason="the job is not running (it ended, or never started here)")
        elif job.stop_status is None:
            sig = signal.Signals[request.signal]
            job.stop_status = JobStatus.CANCELLED
            forced = " (forced)" if request.force else ""
            job.stop_error = f"the job was cancelled on request{forced} while running; its process group got {sig.name}"
            self.log.warning("cancelling", job_id, signal=sig.name, kill_grace_s=self.config.kill_grace_s)
            self._stop_job(job, sig)

    def _read_cancel_request(self, job_id: str) -> CancelRequest:
        """What ``running/.cancel.<id>`` asks (docs/protocol.md); one that cannot be read asks for SIGTERM."""
        try:
            body = read_regular_file(self.layout.cancel_request(job_id), 4096)
            return CancelRequest() if body is None else CancelRequest.model_validate_json(body)
        except (OSError, ValueError):
            return CancelRequest()

    def _log_status(self, signum: int) -> None:
        """SIGUSR1 or SIGUSR2: one ``status`` line in ``daemon.log``; the worker serves on."""
        self.log.info(
            "status",
            signal=signal.Signals(signum).name,
            running=len(self._active),
            recording=self._recording,
            pending=len(self._candidates),
            stopping="yes" if self._stopping else None,
            claims_paused=self._paused,
            groups_paused=",".join(sorted(self._groups.paused)) or None,
        )

    def _on_stop_request(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self._stopping:
            self._stopping = True
            self.log.info(
                "worker_stopping", signal=name, running=len(self._active), drain_timeout_s=self.config.drain_timeout_s
            )
            self._set_deadline(self.config.drain_timeout_s, DeadlineAction.DRAIN, "")
            self._stop_services()
        elif not self._forced:
            self._forced = True
            self._give_up.set()
            self._hook_stop.set()
            self.log.warning("worker_stopping_now", signal=name, running=len(self._active))
            self._interrupt_all(
                f"the worker got a second stop signal ({name}) and stopped the job at once", signal.SIGKILL
            )

    def _rescan_all(self) -> None:
        """Read pending/, the cancel requests and the dependencies, in case a file event was lost."""
        self._rescan()
        self._reload_schedules()
        self._scheduler.recheck(time.time())
        for job_id in self.queue.cancel_requests():
            self._on_cancel_request(job_id)
