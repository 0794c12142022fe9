"""Recurring jobs: the schedule file's model, its due times, and the job id of each due time
(docs/protocol.md, "Schedules").

A schedule is ``schedules/<name>.json`` in the queue root, written like a job file (hidden
temporary name, then a rename). It holds a job template (``job``: the fields of a JSON job)
and either ``cron`` (five fields, parsed and iterated by the ``cronsim`` library in the
schedule's ``timezone``) or ``every_s`` (whole seconds, counted from the Unix epoch). The
worker enqueues one job per due time as ``pending/<name>-<UTC time>.json``
(:func:`run_id`); the id is the guarantee that no due time is enqueued twice, so the
schedule's state (its last run) is read back from the queue (:func:`last_run_id`), and from
``schedules/.<name>.last`` (:func:`mark_last_run`), which still holds it once retention or
``execsvc clean`` has removed that run's record.

Pure computation and file reads, plus :func:`enqueue_run` (one exclusive create in
``pending/``) and :func:`write_schedule`; nothing here knows about the worker's loop.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, model_validator

from .durable import read_regular_file, write_durable
from .errors import InvalidSchedule, JobNotFound
from .layout import SIDECAR_SUFFIX, QueueLayout, is_ignored_name, split_job_name
from .listing import QueueReader
from .models import JobSpec, JobState

SCHEDULE_SUFFIX = ".json"
SCHEDULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")
"""A schedule's name (its file name less ``.json``): letters, digits, ``_ . -``, at most 100."""
_BAD_NAME = "a schedule's name is letters, digits, '_', '.' and '-' (at most 100), starting with a letter or digit"
MAX_SCHEDULE_BYTES = 1024 * 1024
MAX_EVERY_S = 366 * 86_400
_RUN_STAMP = re.compile(r"-([0-9]{8}T[0-9]{4}(?:[0-9]{2})?)\Z")
_ID_STATES = (JobState.PENDING, JobState.RUNNING, JobState.COMPLETED, JobState.FAILED)


class Schedule(BaseModel):
    """A schedule file's content. Unknown fields are refused (a typo would silently change it).

    Exactly one of ``cron`` (a 5-field expression: minute hour day-of-month month
    day-of-week, as cron(8); ``cronsim`` syntax, ``L`` and ``#`` included) or ``every_s``
    (1 to 31,622,400 s, due at every multiple of it since the Unix epoch). ``timezone``:
    an IANA name (``Europe/Paris``) for ``cron``; ``None`` is the machine's zone.
    ``overlap``: ``"skip"`` a due time while the last run is pending or running, or
    ``"queue"`` it anyway. ``catch_up``: at the worker's start, enqueue one run for due
    times missed while no worker served the queue. ``job``: a JSON job's fields
    (:class:`~execsvc.protocol.models.JobSpec`), copied into each run's job file.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    job: dict[str, Any]
    cron: StrictStr | None = None
    every_s: StrictInt | None = Field(default=None, ge=1, le=MAX_EVERY_S)
    timezone: StrictStr | None = None
    overlap: Literal["skip", "queue"] = "skip"
    catch_up: StrictBool = False
    enabled: StrictBool = True
    description: StrictStr | None = None

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("a schedule has either 'cron' or 'every_s', not both and not neither")
        if self.timezone is not None:
            zone_named(self.timezone)
        if self.cron is not None:
            check_cron(self.cron)
        try:
            JobSpec.model_validate(self.job)
        except ValidationError as exc:
            raise ValueError(f"its 'job' is not a valid JSON job: {_first_error(exc)}") from None
        return self


def check_cron(expr: str) -> str:
    """Return ``expr`` if it is a valid 5-field cron expression; raise ``ValueError`` saying why."""
    if len(expr.split()) != 5:
        raise ValueError(f"cron {expr!r} must have 5 fields (minute hour day-of-month month day-of-week)")
    try:
        CronSim(expr, datetime(2026, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise ValueError(f"cron {expr!r}: {exc}") from None
    return expr


def zone_named(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ``ValueError`` if the zone database has none of that name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as 'Europe/Paris' or 'UTC')") from None


def local_zone() -> tzinfo:
    """The machine's time zone: ``$TZ`` if it names a zone, else ``/etc/localtime``, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        return UTC


def schedule_zone(schedule: Schedule) -> tzinfo:
    """The zone ``schedule``'s cron fields are read in."""
    return zone_named(schedule.timezone) if schedule.timezone is not None else local_zone()


def next_due(schedule: Schedule, after: datetime) -> datetime:
    """The first due time strictly after ``after`` (an aware time), in UTC.

    For ``cron``, ``cronsim``'s answer in the schedule's zone: a time a spring-forward
    change skips is due at the change (``30 2 * * *`` runs at 03:00 that day), a time a
    fall-back change repeats is due once (the first), and ``0 * * * *`` is due at both
    02:00 of the repeated hour, as cron(8) does.
    """
    if schedule.every_s is not None:
        stamp = int(after.timestamp()) // schedule.every_s * schedule.every_s + schedule.every_s
        return datetime.fromtimestamp(stamp, UTC)
    assert schedule.cron is not None
    start = after.astimezone(schedule_zone(schedule)).replace(microsecond=0)
    return next(iter(CronSim(schedule.cron, start))).astimezone(UTC)


def last_due(schedule: Schedule, at_or_before: datetime) -> datetime:
    """The latest due time at or before ``at_or_before`` (an aware time), in UTC."""
    if schedule.every_s is not None:
        stamp = int(at_or_before.timestamp()) // schedule.every_s * schedule.every_s
        return datetime.fromtimestamp(stamp, UTC)
    assert schedule.cron is not None
    start = at_or_before.astimezone(schedule_zone(schedule)).replace(microsecond=0) + timedelta(seconds=1)
    return next(iter(CronSim(schedule.cron, start, reverse=True))).astimezone(UTC)


def run_id(name: str, schedule: Schedule, due: datetime) -> str:
    """The job id of ``name``'s run for ``due``: ``<name>-20261201T0805`` (UTC), with the seconds
    (``<name>-20261201T080501``) when ``every_s`` is under 60. UTC, so that the ids of one
    schedule sort by due time and no fall-back hour gives two due times one id."""
    stamp = due.astimezone(UTC)
    with_seconds = schedule.every_s is not None and schedule.every_s < 60
    return f"{name}-{stamp:%Y%m%dT%H%M%S}" if with_seconds else f"{name}-{stamp:%Y%m%dT%H%M}"


def due_of_run_id(name: str, job_id: str) -> datetime | None:
    """The due time (UTC) a job id of schedule ``name`` stands for, or ``None`` if it is none of its ids."""
    match = _RUN_STAMP.search(job_id)
    if match is None or job_id[: match.start()] != name:
        return None
    text = match.group(1)
    return datetime.strptime(text, "%Y%m%dT%H%M%S" if len(text) == 15 else "%Y%m%dT%H%M").replace(tzinfo=UTC)


@dataclass(frozen=True)
class ScheduleFile:
    """One entry of ``schedules/``: its ``name``, and either its ``schedule`` or the ``error`` that
    makes it invalid (a sentence). ``seen`` identifies the file read: (inode, mtime ns, size)."""

    name: str
    path: Path
    seen: tuple[int, int, int]
    schedule: Schedule | None = None
    error: str | None = None

    @property
    def modified(self) -> datetime:
        """When the file was last written (UTC)."""
        return datetime.fromtimestamp(self.seen[1] / 1e9, UTC)


def read_schedule_file(path: Path) -> ScheduleFile:
    """Read and check one schedule file; never raises for bad content (see ``error``).

    Raises :class:`FileNotFoundError` when it is gone. A name that is no schedule name, a
    file that is not a regular one (a link, a FIFO: never followed or waited on), over
    1 MiB, not JSON or not a :class:`Schedule` gives a :class:`ScheduleFile` with ``error``.
    """
    name = path.name.removesuffix(SCHEDULE_SUFFIX)
    info = os.lstat(path)
    seen = _seen(info)
    if SCHEDULE_NAME.match(name) is None:
        return ScheduleFile(name, path, seen, error=_BAD_NAME)
    if not stat.S_ISREG(info.st_mode):
        return ScheduleFile(name, path, seen, error="not a regular file")
    try:
        return ScheduleFile(name, path, seen, schedule=parse_schedule(read_regular_file(path, MAX_SCHEDULE_BYTES)))
    except InvalidSchedule as exc:
        return ScheduleFile(name, path, seen, error=str(exc))
    except FileNotFoundError:
        raise
    except OSError as exc:
        return ScheduleFile(name, path, seen, error=f"cannot be read: {exc.strerror or exc}")


def parse_schedule(data: bytes | None) -> Schedule:
    """A schedule from a file's bytes (``None``: too big or not a regular file); raises
    :class:`InvalidSchedule` with a sentence naming the field at fault."""
    if data is None:
        raise InvalidSchedule("not a regular file of at most 1 MiB")
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise InvalidSchedule(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidSchedule("a schedule file holds a JSON object")
    return schedule_from(raw)


def schedule_from(raw: dict[str, Any]) -> Schedule:
    """A :class:`Schedule` from its fields; raises :class:`InvalidSchedule` naming the first field at fault."""
    try:
        return Schedule.model_validate(raw)
    except ValidationError as exc:
        raise InvalidSchedule(_first_error(exc)) from None


def read_schedules(layout: QueueLayout, known: Mapping[str, ScheduleFile] | None = None) -> list[ScheduleFile]:
    """Every ``schedules/*.json`` (hidden and ``.tmp`` names skipped), by name; ``[]`` when
    the folder is missing. Files that vanish while read are left out. A file of ``known``
    (by name) that is still the same file (inode, modification time, size) is not read again."""
    try:
        with os.scandir(layout.root / "schedules") as entries:
            names = sorted(e.name for e in entries if e.name.endswith(SCHEDULE_SUFFIX) and not is_ignored_name(e.name))
    except FileNotFoundError:
        return []
    found = []
    for file_name in names:
        path = layout.root / "schedules" / file_name
        try:
            before = (known or {}).get(file_name.removesuffix(SCHEDULE_SUFFIX))
            if before is not None and _seen(os.lstat(path)) == before.seen:
                found.append(before)
            else:
                found.append(read_schedule_file(path))
        except FileNotFoundError:
            continue
    return found


def schedule_path(layout: QueueLayout, name: str) -> Path:
    """``schedules/<name>.json``; ``ValueError`` for a name that is no schedule name."""
    if SCHEDULE_NAME.match(name) is None:
        raise ValueError(f"{name!r} is no schedule name: {_BAD_NAME}")
    return layout.root / "schedules" / f"{name}{SCHEDULE_SUFFIX}"


def write_schedule(layout: QueueLayout, name: str, schedule: Schedule, *, replace: bool = False) -> Path:
    """Write ``schedules/<name>.json`` whole (temporary file, fsync, rename; the folder is made
    private if missing). Raises :class:`FileExistsError` when it exists and not ``replace``."""
    path = schedule_path(layout, name)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    data = schedule.model_dump_json(exclude_defaults=True, indent=2).encode() + b"\n"
    write_durable(path, data, replace=replace)
    return path


def run_ids(layout: QueueLayout, name: str) -> list[str]:
    """The ids of ``name``'s runs the queue holds, in any state, oldest due time first.

    Read from the names in ``pending/`` (and ``.held/``), ``running/``, ``completed/``
    and ``failed/``: the queue is the schedule's state."""
    return sorted(_runs_by_schedule(layout, {name}).get(name, ()), key=lambda job_id: _due_key(name, job_id))


def last_run_ids(layout: QueueLayout, names: Collection[str]) -> dict[str, str]:
    """The id of each schedule's latest run, from the queue (see :func:`run_ids`, one pass over
    the folders for all of ``names``) and its mark (:func:`mark_last_run`); a schedule with
    neither is left out."""
    found = _runs_by_schedule(layout, set(names))
    for name in names:
        marked = _marked_last_run(layout, name)
        if marked is not None:
            found.setdefault(name, set()).add(marked)
    return {name: max(ids, key=lambda job_id: _due_key(name, job_id)) for name, ids in found.items()}


def last_run_mark(layout: QueueLayout, name: str) -> Path:
    """``schedules/.<name>.last``: the id of the schedule's latest run enqueued (a hidden name,
    never read as a schedule)."""
    return layout.root / "schedules" / f".{name}{_LAST_RUN_SUFFIX}"


def mark_last_run(layout: QueueLayout, name: str, job_id: str) -> None:
    """Keep ``job_id`` as ``name``'s latest run (replacing the mark, made durable), so a due time
    is never enqueued again after its record is removed. Raises :class:`OSError`."""
    write_durable(last_run_mark(layout, name), job_id.encode(), replace=True)


def _marked_last_run(layout: QueueLayout, name: str) -> str | None:
    try:
        data = read_regular_file(last_run_mark(layout, name), 256)
    except OSError:
        return None
    job_id = None if data is None else data.decode("ascii", "replace").strip()
    return job_id if job_id and due_of_run_id(name, job_id) is not None else None


def last_run_id(layout: QueueLayout, name: str) -> str | None:
    """The id of ``name``'s latest run the queue holds (see :func:`run_ids`), or ``None``."""
    return last_run_ids(layout, [name]).get(name)


_LAST_RUN_SUFFIX = ".last"


def _runs_by_schedule(layout: QueueLayout, names: set[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    if not names:
        return found
    for folder in [layout.folder(state) for state in _ID_STATES] + [layout.held]:
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    file_name = entry.name.removesuffix(SIDECAR_SUFFIX)
                    stem = split_job_name(file_name)[0] if file_name == entry.name else file_name
                    match = _RUN_STAMP.search(stem)
                    if match is not None and stem[: match.start()] in names:
                        found.setdefault(stem[: match.start()], set()).add(stem)
        except FileNotFoundError:
            continue
    return found


def _due_key(name: str, job_id: str) -> datetime:
    return due_of_run_id(name, job_id) or datetime.min.replace(tzinfo=UTC)


def enqueue_run(store: QueueReader, name: str, schedule: Schedule, due: datetime) -> str | None:
    """Write the run of ``name`` for ``due`` into ``pending/``; return its id, or ``None`` when the
    queue already holds that id in any state (it was enqueued: nothing is written).

    The job file is the template plus ``submitted_by`` (``"schedule <name>"`` unless the template
    has one) and ``schedule`` (``{"name", "due_at"}``); created with
    :func:`~execsvc.protocol.durable.write_durable`, which never replaces a file, so a
    run is written once however often this is called. Raises :class:`OSError` when
    ``pending/`` cannot be written.
    """
    job_id = run_id(name, schedule, due)
    if run_state(store, job_id) is not None or store.layout.id_in_use(job_id):
        return None
    template = dict(schedule.job)
    template.setdefault("submitted_by", f"schedule {name}")
    template["schedule"] = {"name": name, "due_at": due.astimezone(UTC).isoformat()}
    data = JobSpec.model_validate(template).model_dump_json(exclude_unset=True).encode()
    try:
        write_durable(store.layout.pending / f"{job_id}.json", data)
    except FileExistsError:
        return None
    return job_id


def run_state(store: QueueReader, job_id: str) -> JobState | None:
    """Where a job is (its folders read in the order a job travels, without pausing: see
    :meth:`~execsvc.protocol.listing.QueueReader.get`); ``None`` if the queue has no such job."""
    try:
        return store.get(job_id, patient=False).state
    except JobNotFound:
        return None


def _seen(info: os.stat_result) -> tuple[int, int, int]:
    return info.st_ino, info.st_mtime_ns, info.st_size


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
