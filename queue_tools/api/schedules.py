"""Recurring jobs for the fronts: list, add and remove schedule files (docs/protocol.md, "Schedules").

A front never enqueues a schedule's runs (the worker does, at each due time); it reads
``schedules/`` and each schedule's latest run from the queue's ids
(:func:`~execsvc.protocol.schedules.last_run_id`), and writes or removes schedule files
whole. The next due time shown is the schedule's next one after now.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from execsvc.protocol.queue import JobQueue
from execsvc.protocol.schedules import (
    ScheduleFile,
    last_run_id,
    last_run_ids,
    last_run_mark,
    next_due,
    read_schedules,
    run_state,
    schedule_from,
    schedule_path,
    write_schedule,
)

from .models import COMMAND_WIDTH

_UNITS = (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1))


class ScheduleSummary(BaseModel):
    """One schedule as the fronts show it. ``when``: ``"cron 30 2 * * *"`` or ``"every 10m"``;
    ``timezone``: the zone name (``null``: the machine's); ``next_due``: the next due time
    (``null``: disabled or invalid); ``last_run`` and ``last_state``: the latest run in the
    queue and where it is (``pending``, ``running``, ``completed``, ``failed``); ``error``:
    why the file is invalid (then only ``name`` and ``error`` are set)."""

    model_config = ConfigDict(defer_build=True)

    name: str
    when: str | None = None
    timezone: str | None = None
    overlap: Literal["skip", "queue"] | None = None
    catch_up: bool | None = None
    enabled: bool | None = None
    command: str | None = None
    next_due: datetime | None = None
    last_run: str | None = None
    last_state: str | None = None
    error: str | None = None


def every_text(seconds: int) -> str:
    """``600`` as ``10m``, ``5400`` as ``90m``, ``86400`` as ``1d``: the largest unit that divides it."""
    for unit, size in _UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"  # never reached: 1 divides everything


def list_schedules(queue: JobQueue, *, now: datetime | None = None) -> list[ScheduleSummary]:
    """Every schedule file of the queue, by name, valid or not (see :class:`ScheduleSummary`)."""
    at = now or datetime.now(UTC)
    files = read_schedules(queue.layout)
    last = last_run_ids(queue.layout, [file.name for file in files])
    return [_summary(queue, file, at, last.get(file.name)) for file in files]


def get_schedule(queue: JobQueue, name: str) -> ScheduleSummary:
    """One schedule; raises :class:`FileNotFoundError` when there is none of that name and
    :class:`ValueError` for a name that is no schedule name."""
    path = schedule_path(queue.layout, name)
    for file in read_schedules(queue.layout):
        if file.path == path:
            return _summary(queue, file, datetime.now(UTC), last_run_id(queue.layout, name))
    raise FileNotFoundError(f"no schedule named {name!r} in {queue.layout.root / 'schedules'}")


def add_schedule(
    queue: JobQueue,
    name: str,
    job: dict[str, Any],
    *,
    cron: str | None = None,
    every_s: int | None = None,
    timezone: str | None = None,
    overlap: Literal["skip", "queue"] = "skip",
    catch_up: bool = False,
    enabled: bool = True,
    replace: bool = False,
) -> ScheduleSummary:
    """Write ``schedules/<name>.json`` whole; the worker picks it up at once (a file event).

    Raises :class:`~execsvc.protocol.errors.InvalidSchedule` (a ``ValueError``) naming what is
    wrong (neither or both of ``cron`` and ``every_s``, a bad expression or zone, a job
    template that is no job), :class:`ValueError` for a bad name, and
    :class:`FileExistsError` when the schedule exists and not ``replace``.
    """
    fields = {"cron": cron, "every_s": every_s, "timezone": timezone}
    given = {key: value for key, value in fields.items() if value is not None}
    schedule = schedule_from({**given, "overlap": overlap, "catch_up": catch_up, "enabled": enabled, "job": job})
    write_schedule(queue.layout, name, schedule, replace=replace)
    return get_schedule(queue, name)


def remove_schedule(queue: JobQueue, name: str) -> bool:
    """Remove ``schedules/<name>.json``: no further runs (those written stay). False if there was none."""
    try:
        schedule_path(queue.layout, name).unlink()
    except FileNotFoundError:
        return False
    with contextlib.suppress(FileNotFoundError):
        last_run_mark(queue.layout, name).unlink()
    return True


def _summary(queue: JobQueue, file: ScheduleFile, now: datetime, last: str | None) -> ScheduleSummary:
    schedule = file.schedule
    if schedule is None:
        return ScheduleSummary(name=file.name, error=file.error)
    state = None
    if last is not None:
        with contextlib.suppress(ValueError):
            found = run_state(queue, last)
            state = found.value if found is not None else None
    when = f"cron {schedule.cron}" if schedule.cron is not None else f"every {every_text(schedule.every_s or 1)}"
    return ScheduleSummary(
        name=file.name,
        when=when,
        timezone=schedule.timezone,
        overlap=schedule.overlap,
        catch_up=schedule.catch_up,
        enabled=schedule.enabled,
        command=_command(schedule.job),
        next_due=next_due(schedule, now) if schedule.enabled else None,
        last_run=last,
        last_state=state,
    )


def _command(job: dict[str, Any]) -> str:
    words = [str(job.get("command", "")), *(str(arg) for arg in job.get("args") or [])]
    text = " ".join(words)
    return text if len(text) <= COMMAND_WIDTH else text[: COMMAND_WIDTH - 1] + "…"
