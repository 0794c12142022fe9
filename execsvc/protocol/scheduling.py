"""What a pending job's scheduling fields say, read without claiming it (docs/protocol.md, "Scheduling fields").

A JSON job carries the fields (:class:`~execsvc.protocol.models.JobOptions`); a text
job carries them in header comments at its top, one or more lines like::

    #!/bin/sh
    # execsvc: priority=5 after=build-1,build-2 retries=2 memory_mb=512
    # execsvc: on_finish="notify-send done"
    # execsvc: sandbox=true group=build
    # execsvc: sandbox='{"network": true, "writable": ["~/.cache/pip"]}'

Values are words as the shell splits them (``shlex``); ``after`` is a comma
list; ``sandbox`` is ``true``, ``false`` or a JSON object (docs/protocol.md,
"Sandbox"); the limit names (``cpu_s``, ``memory_mb``, ``open_files``,
``processes``, ``output_bytes``) are given directly. :func:`peek` is what the
worker and the fronts use to order and explain pending jobs; the worker
validates the whole job again when it claims it.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .defaults import DEFAULT_GROUP
from .durable import read_regular_file
from .errors import InvalidJob, validation_problems
from .models import SCHEDULING_FIELDS, AfterMode, JobKind, JobLimits, JobOptions

HEADER_PREFIX = "execsvc:"
_HEADER_MAX_BYTES = 8192
_LIMIT_NAMES = frozenset(JobLimits.model_fields)
_PEEK_MAX_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class SchedulingFields:
    """A pending job's place in the order: ``due_at`` in seconds since the epoch (``None``: now),
    ``group`` whose slots it waits for (docs/protocol.md, "Groups").

    ``problem`` says why the job's scheduling fields are not valid (then every
    other field has its default: the job is claimed at its FIFO turn and refused there).
    """

    priority: int = 0
    after: tuple[str, ...] = ()
    after_mode: AfterMode = "success"
    due_at: float | None = None
    attempt: int = 1
    retries: int | None = None
    group: str = DEFAULT_GROUP
    problem: str | None = None


PLAIN = SchedulingFields()
"""The scheduling fields of a job that names none (or cannot be read: its claim says why)."""


def header_fields(data: bytes) -> dict[str, Any]:
    """The fields of a text job's ``# execsvc:`` header lines, as a dict for :class:`JobOptions`.

    Header lines are comment lines at the top of the script (after an
    optional ``#!`` line); the first line that is not a comment ends the
    header. Raises :class:`~execsvc.protocol.errors.InvalidJob` for a word that is not
    ``key=value`` or a line the shell could not split.
    """
    fields: dict[str, Any] = {}
    limits: dict[str, str] = {}
    text = data[:_HEADER_MAX_BYTES].decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if number == 1 and stripped.startswith("#!"):
            continue
        if not stripped.startswith("#"):
            break
        body = stripped.lstrip("#").strip()
        if not body.startswith(HEADER_PREFIX):
            continue
        try:
            words = shlex.split(body[len(HEADER_PREFIX) :])
        except ValueError as exc:
            raise InvalidJob(f"line {number}: the '# execsvc:' header cannot be split into words ({exc})") from exc
        for word in words:
            key, sep, value = word.partition("=")
            if not sep or not key:
                raise InvalidJob(f"line {number}: '{word}' in the '# execsvc:' header is not key=value")
            if key in _LIMIT_NAMES:
                limits[key] = value
            elif key == "after":
                fields[key] = [part for part in value.split(",") if part]
            elif key == "sandbox":
                fields[key] = _sandbox_word(value, number)
            else:
                fields[key] = value
    if limits:
        fields["limits"] = limits
    return fields


def _sandbox_word(value: str, number: int) -> Any:
    """A header's ``sandbox=`` value: ``true`` / ``false``, or a JSON object; raises :class:`InvalidJob`."""
    if value in ("true", "false"):
        return value == "true"
    if value.startswith("{"):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise InvalidJob(f"line {number}: sandbox= in the '# execsvc:' header is not JSON ({exc})") from exc
    raise InvalidJob(f"line {number}: sandbox= in the '# execsvc:' header is true, false or a JSON object: {value!r}")


def text_options(data: bytes) -> JobOptions:
    """The :class:`JobOptions` of a text job (its header; numbers given as words are converted).

    Raises :class:`~execsvc.protocol.errors.InvalidJob` saying which field is wrong.
    """
    fields = header_fields(data)
    try:
        return JobOptions.model_validate(fields, strict=False)
    except ValidationError as exc:
        raise InvalidJob(f"the '# execsvc:' header is not valid: {validation_problems(exc)}") from exc


def fields_of(options: JobOptions, written_at: float) -> SchedulingFields:
    """The :class:`SchedulingFields` that ``options`` give a job whose file was written at ``written_at``."""
    return SchedulingFields(
        priority=options.priority,
        after=tuple(options.after or ()),
        after_mode=options.after_mode,
        due_at=options.due_at(written_at),
        attempt=options.attempt,
        retries=options.retries,
        group=options.group or DEFAULT_GROUP,
    )


def peek(path: Path | str, kind: JobKind, written_at: float) -> SchedulingFields:
    """The scheduling fields of the pending job file at ``path`` (``written_at``: its mtime, in seconds).

    Never raises for the job's content: a file that cannot be read or whose
    fields are wrong gets :data:`PLAIN`, so it is claimed at its FIFO turn and
    refused there with the reason. Raises :class:`FileNotFoundError` if the
    file left ``pending/``.
    """
    if kind == "other":
        return PLAIN
    try:
        data = read_regular_file(Path(path), peek_bytes(kind), head=True)
    except FileNotFoundError:
        raise
    except OSError:  # a symlink (never followed), or unreadable: refused when claimed
        return PLAIN
    return fields_from_head(data, kind, written_at)


def peek_bytes(kind: JobKind) -> int:
    """How many of a job file's first bytes :func:`fields_from_head` reads: a text job's header
    lines, or a JSON job whole (one byte more than it accepts, so a bigger file shows)."""
    return _PEEK_MAX_BYTES + 1 if kind == "json" else _HEADER_MAX_BYTES


def fields_from_head(data: bytes | None, kind: JobKind, written_at: float) -> SchedulingFields:
    """The scheduling fields a pending job's first :func:`peek_bytes` bytes give it (see :func:`peek`).

    Fields that are not valid give scheduling fields with only ``problem`` set."""
    if not data or kind == "other" or (kind == "json" and len(data) > _PEEK_MAX_BYTES):
        return PLAIN
    try:
        if kind == "text":
            options = text_options(data) if HEADER_PREFIX.encode() in data else None
        else:
            raw = json.loads(data) if _may_name_fields(data) else None
            options = JobOptions.model_validate(raw) if isinstance(raw, dict) and _names_fields(raw) else None
    except ValidationError as exc:
        return SchedulingFields(problem=validation_problems(exc))
    except InvalidJob as exc:
        return SchedulingFields(problem=str(exc))
    except (ValueError, RecursionError):  # not JSON, or nested too deep: refused when claimed, saying so
        return PLAIN
    return fields_of(options, written_at) if options is not None else PLAIN


_MAY_NAME_FIELDS = re.compile(rb'\\u|"(?:' + b"|".join(key.encode() for key in SCHEDULING_FIELDS) + rb')"')


def _may_name_fields(data: bytes) -> bool:
    """Whether a JSON job's bytes may name a scheduling field; False lets most jobs skip ``json.loads``.

    A key written with ``\\u`` escapes cannot be ruled out from the bytes, so any escape counts.
    One pass over the bytes.
    """
    return _MAY_NAME_FIELDS.search(data) is not None


def _names_fields(raw: dict[str, Any]) -> bool:
    """Whether a JSON job names any scheduling field (most do not: skip validating them)."""
    return any(key in raw for key in SCHEDULING_FIELDS)
