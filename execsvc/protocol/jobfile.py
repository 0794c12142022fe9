"""Parsing a job file (docs/protocol.md, "JSON jobs", "Text jobs"): a JSON job into a
:class:`~execsvc.protocol.models.JobSpec`, a script's interpreter and checks, and what to
say of a file that is not a job. Raises :class:`~execsvc.protocol.errors.InvalidJob` with a
reason a person can act on. What the worker runs is built from these by
:mod:`execsvc.run_request`.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from .defaults import MAX_JOB_FILE_BYTES
from .durable import read_regular_file
from .errors import InvalidJob, validation_problems
from .models import JobSpec

SHELL = "/bin/sh"


_SHEBANG_MAX_BYTES = 4096


SUBMITTED_BY_FILE = "file"
"""``submitted_by`` of a job that does not say: a file some program put in ``pending/``."""


@dataclass(frozen=True)
class ClaimedFile:
    """A claimed job file as the worker read it: its bytes and the ``lstat`` identity it had.

    Kept so that the job's record holds the job as it was claimed even when the job removed,
    moved, replaced or changed its own file in ``running/`` while it ran (``rm -f -- "$0"``).
    """

    data: bytes
    dev: int
    ino: int
    size: int
    mtime_ns: int

    def describes(self, info: os.stat_result) -> bool:
        """Whether ``info`` (an ``lstat``) is still this file, unchanged: same inode, size and modification time."""
        now = (info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns)
        return now == (self.ino, self.dev, self.size, self.mtime_ns)


def read_job_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a claimed job file, read by :func:`~execsvc.protocol.durable.read_regular_file` (one
    open that never follows a link nor waits on a FIFO, and reads the size of the file).

    Raises :class:`InvalidJob` for a link, directory, FIFO or device and for a file above
    ``max_bytes``; the reason is looked up only then.
    """
    try:
        data = read_regular_file(path, max_bytes)
    except FileNotFoundError:
        raise
    except OSError as exc:  # a symbolic link (ELOOP), a socket (ENXIO), no permission...
        if not stat.S_ISREG(path.lstat().st_mode):
            raise InvalidJob(describe_other(path)) from None
        raise InvalidJob(f"the job file cannot be opened: {exc.strerror}") from exc
    if data is not None:
        return data
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise InvalidJob(describe_other(path))
    if info.st_size <= max_bytes:
        raise InvalidJob(f"the job file grew past the limit of {max_bytes:,} bytes while it was read")
    raise InvalidJob(
        f"the job file is {info.st_size:,} bytes; the limit is {max_bytes:,} bytes "
        "(pass large inputs as files the job reads, not inside the job)"
    )


def spec_if_valid(path: Path, max_bytes: int = MAX_JOB_FILE_BYTES) -> JobSpec | None:
    """The JSON job in ``path`` if it is a valid one, else ``None`` (for records of jobs that never ran).

    Read with :func:`~execsvc.protocol.durable.read_regular_file`: a FIFO, socket or
    symlink named ``x.json`` is ``None`` at once (a plain read of a FIFO
    would wait forever), as is a file above ``max_bytes``.
    """
    try:
        data = read_regular_file(path, max_bytes)
        return parse_json_job(data) if data is not None else None
    except (InvalidJob, OSError):
        return None


def parse_json_job(data: bytes) -> JobSpec:
    """Parse and validate the bytes of a JSON job; raise :class:`InvalidJob` saying what is wrong.

    A UTF-8 byte-order mark is accepted. The ``result`` field is reserved for
    the worker's record and refused in a submitted job.
    """
    if not data.strip():
        raise InvalidJob("the job file is empty" if not data else "the job file holds only white space")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidJob(f"the job file is not UTF-8 text (byte {exc.start} cannot be decoded)") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidJob(f"the job file is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from exc
    except RecursionError as exc:
        raise InvalidJob("the job file's JSON is nested too deeply") from exc
    if not isinstance(raw, dict):
        raise InvalidJob(f'a JSON job must be an object like {{"command": ...}}, but this file holds {_json_kind(raw)}')
    if "result" in raw:
        raise InvalidJob("the field 'result' is reserved for the worker's record; remove it from the job")
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise InvalidJob("the job is not valid: " + validation_problems(exc)) from exc


def submitted_by(spec: JobSpec | None) -> str:
    """Who the job says submitted it: its own ``submitted_by`` field (a non-blank string, cut to
    200 characters), else :data:`SUBMITTED_BY_FILE` (text jobs, and JSON jobs that do not say)."""
    value = (spec.model_extra or {}).get("submitted_by") if spec is not None else None
    return value[:200] if isinstance(value, str) and value.strip() else SUBMITTED_BY_FILE


def check_script(data: bytes) -> None:
    if not data:
        raise InvalidJob("the script is empty")
    if not data.strip():
        raise InvalidJob("the script holds only white space, so there is nothing to run")


def interpreter(data: bytes) -> list[str]:
    """The interpreter named by a ``#!`` line (kernel rules: one optional argument), else ``/bin/sh``."""
    if not data.startswith(b"#!"):
        return [SHELL]
    line = data[:_SHEBANG_MAX_BYTES].split(b"\n", 1)[0][2:].rstrip(b"\r").strip()
    try:
        words = line.decode("utf-8").split(None, 1)
    except UnicodeDecodeError as exc:
        raise InvalidJob("the script's #! line is not UTF-8 text") from exc
    if not words:
        raise InvalidJob("the script's #! line names no interpreter")
    return words


def describe_other(path: Path) -> str:
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return "this is a symbolic link; links in pending/ are never followed (copy or move the job file itself)"
    if stat.S_ISDIR(mode):
        return "this is a directory, not a job file"
    if not stat.S_ISREG(mode):
        return "this is not a regular file (a FIFO, socket or device); only regular files are jobs"
    return f"'{path.name}' is not a job: job files end in .json, .sh or .txt"


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
