"""Pending files, in the loop's thread: what arrived in ``pending/``, whether it is complete,
its scheduling fields into the scheduler, rescans; and the groups' pause files
(``pending/.paused.<group>``, docs/protocol.md, "Groups").
"""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime

from ..protocol.errors import InvalidJob
from ..protocol.jobfile import parse_json_job
from ..protocol.layout import PAUSED_PREFIX, is_ignored_name, split_job_name
from ..protocol.leases import look_at_file
from ..protocol.pauses import pause_file_group, paused_in
from ..protocol.scheduling import fields_from_head, peek_bytes
from .state import DeadlineAction, _Candidate, _identity
from .timers import Timers

_CATCH_UP_MAX_FILES = 256


class Intake(Timers):
    """Pending files into the scheduler, in the loop's thread: candidates, completeness, rescans."""

    def _consider(self, name: str) -> None:
        """Look at ``pending/<name>`` after an event or in a scan; mark it ready when complete.

        On the path of every job (and of every file at start-up): plain string
        paths, and one open of the file both to ask whether it is still being
        written and to read what its scheduling fields need. The candidate keeps which
        file that was (``seen``); a second event for a ready file is skipped
        unless the name now holds another file or the file changed.
        """
        if name.startswith(PAUSED_PREFIX):  # a group paused or resumed (docs/protocol.md, "Groups")
            self._pause_seen(name)
            return
        if is_ignored_name(name):
            return
        path = f"{self._pending_dir}/{name}"
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            self._forget(name)
            return
        known = self._candidates.get(name)
        seen = _identity(info)
        if known is not None and known.ready and known.seen == seen:
            return  # a second event for the same file (a changed one is looked at again)
        stem, _suffix, kind = split_job_name(name)
        head = None
        if kind != "other" and stat.S_ISREG(info.st_mode):
            try:
                writing, head, opened = look_at_file(path, peek_bytes(kind))
            except FileNotFoundError:
                self._forget(name)
                return
            except OSError:  # unreadable: refused with the reason when claimed
                writing, opened = False, None
            if opened is not None:  # the file whose head was read, for the claim to compare with
                info, seen = opened, _identity(opened)
            if not self._complete(name, kind, info, writing, head):
                self._candidates[name] = _Candidate(False, seen)
                return
        if info.st_nlink > 1 and self.queue.settle_release(name, info):
            self.log.info("release_settled", file=name, reason="a release cut short left it held too; now only pending")
        # A retry whose last attempt is still leaving running/ (only a job thread recording a job
        # writes one, so the look is skipped when none is, as for every file at start-up).
        if self._recording and os.path.lexists(f"{self._running_dir}/{name}"):
            self._candidates[name] = _Candidate(False, seen)
            self._set_deadline(0.005, DeadlineAction.RECHECK, name)
            return
        self._candidates[name] = _Candidate(True, seen)
        fields = fields_from_head(head, kind, info.st_mtime)
        self._scheduler.offer(name, stem, fields, info.st_mtime_ns, time.time())

    def _pause_seen(self, name: str) -> None:
        """``pending/<name>`` pauses a group: whether it is there now decides whether the group is paused."""
        group = pause_file_group(name)
        if group is not None:
            there = os.path.lexists(f"{self._pending_dir}/{name}")
            self._set_paused(self._groups.paused | {group} if there else self._groups.paused - {group})

    def _set_paused(self, paused: frozenset[str]) -> None:
        """The groups paused now; ``group_paused`` / ``group_resumed`` for each that changed."""
        for group in sorted(paused - self._groups.paused):
            self.log.info("group_paused", group=group, reason="no job of the group is claimed until it is resumed")
        for group in sorted(self._groups.paused - paused):
            self.log.info("group_resumed", group=group)
        self._groups.paused = paused

    def _forget(self, name: str) -> None:
        """``pending/<name>`` is gone (claimed, held, cancelled or removed)."""
        self._candidates.pop(name, None)
        self._scheduler.forget(name)

    def _complete(self, name: str, kind: str, info: os.stat_result, writing: bool | None, head: bytes | None) -> bool:
        """Whether a job file is whole: nobody has it open for writing (``writing``, from the lease
        check), or, where that cannot be asked, JSON that parses (``head``: the bytes already read),
        or a script unchanged for ``settle_s``."""
        if writing is not None:
            return not writing
        quiet_for = time.time() - info.st_mtime
        if quiet_for >= self.config.settle_s:
            return True
        if kind == "json" and head is not None:
            try:
                parse_json_job(head)
                return True
            except InvalidJob:
                pass
        self._set_deadline(self.config.settle_s - quiet_for + 0.01, DeadlineAction.RECHECK, name)
        return False

    def _catch_up(self) -> None:
        """A slot was freed by a job thread: read pending/ itself before choosing the next job.

        File events read by a thread lag behind the files under load, so a job
        dropped before this moment might not have been seen yet; looking now
        gives it its FIFO place. Skipped for a backlog of more than
        ``_CATCH_UP_MAX_FILES`` known files, where one look costs more than
        the order it could fix. (A slot freed in the loop, by a pidfd, needs
        none of this where the loop reads the events itself: it reads those
        already waiting in the kernel first, see :meth:`loop`.)
        """
        if len(self._candidates) <= _CATCH_UP_MAX_FILES:
            self._rescan()

    def _events_waiting(self) -> bool:
        """Whether file events wait to be read by the loop (never blocks)."""
        return self._events_poll is not None and bool(self._events_poll.poll(0))

    def _read_events(self) -> None:
        assert self._file_events is not None
        self._file_events.read()

    def _run_schedules(self) -> None:
        """Enqueue the runs of the schedules now due (none while stopping), and look at them at once."""
        if not self._stopping and (due_at := self._schedules.next_due_at()) is not None and due_at <= time.time():
            for name in self._schedules.run_due(datetime.now(UTC)):
                self._consider(name)

    def _reload_schedules(self) -> None:
        """``schedules/`` changed (or a rescan): read the schedule files again."""
        for name in self._schedules.reload(datetime.now(UTC)):
            self._consider(name)

    def _rescan(self) -> None:
        with os.scandir(self.layout.pending) as entries:
            names = [entry.name for entry in entries]
        present = set(names)
        self._set_paused(paused_in(names))
        for gone in [name for name in self._candidates if name not in present]:
            del self._candidates[gone]
            self._scheduler.forget(gone)
        for name in names:
            candidate = self._candidates.get(name)
            if candidate is None or not candidate.ready:
                self._consider(name)
