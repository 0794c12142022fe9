"""The worker, as a package whose modules follow who owns what.

The loop's thread owns the queue state (:mod:`.state`), and its parts are the steps it takes:
:mod:`.intake` (pending files, readiness, the scheduler), :mod:`.launch` (claim, read, policy,
spawn), :mod:`.timers` (deadlines owned by the attempt that set them, limit checks, stopping),
:mod:`.messages` (what other threads and signals post) and :mod:`.loop` (initialize, loop,
shutdown: :class:`Worker`). Job threads run :mod:`.recorder` (everything after a job's exit);
hook threads run :mod:`.finish_hooks`. :mod:`.guard` is the queue's lock and the check that it
is still the one served.
"""

from __future__ import annotations

from .guard import QUEUE_LOST_EXIT
from .loop import Worker
from .messages import STATUS_SIGNALS, STOP_SIGNALS
from .state import DeadlineAction

__all__ = ["QUEUE_LOST_EXIT", "STATUS_SIGNALS", "STOP_SIGNALS", "DeadlineAction", "Worker"]
