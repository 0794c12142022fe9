"""Reading a claimed job file into what to run (docs/protocol.md, "JSON jobs", "Text jobs").

:func:`read_job` is the one entry point: it returns a :class:`RunRequest`
(argv, working directory, environment, stdin, timeout) or raises
:class:`~execsvc.errors.InvalidJob` with a reason a person can act on.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .config import JOB_ID_ENV, QUEUE_DIR_ENV, WorkerConfig
from .durable import read_regular_file
from .errors import InvalidJob, validation_problems
from .limits import effective
from .models import JobKind, JobLimits, JobOptions, JobSpec
from .schedule import text_options

SHELL = "/bin/sh"
_SHEBANG_MAX_BYTES = 4096
SUBMITTED_BY_FILE = "file"
"""``submitted_by`` of a job that does not say: a file some program put in ``pending/``."""
_CRLF_HINT = (
    "the script has Windows line endings (CRLF), and the shell reads each line's \\r as part of the "
    "command; convert it (dos2unix, or sed -i 's/\\r$//') and submit it again"
)


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


@dataclass(frozen=True)
class RunRequest:
    """One job, ready for the runner.

    ``env`` is the whole environment of the job's process. ``stdin`` is fed
    to the job (``None``: the job reads from ``/dev/null``). ``timeout_s`` is
    already capped by the worker's maximum; ``requested_timeout_s`` is what the
    job asked for, if anything.
    """

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    timeout_s: float
    stdin: bytes | None = None
    result_file: Path | None = None
    requested_timeout_s: float | None = None
    spec: JobSpec | None = field(default=None, compare=False)
    failure_hint: str | None = None  # added to the record's error if the job fails
    executable: str | None = None  # the program to start, when the policy resolved it (argv[0] stays as given)
    options: JobOptions = field(default_factory=JobOptions, compare=False)  # scheduling fields (spec or header)
    limits: JobLimits = field(default_factory=JobLimits)  # in force: the job's, else the worker's defaults, capped
    retries: int = 0  # the job's retries (else the worker's default), capped
    claimed: ClaimedFile | None = field(default=None, compare=False, repr=False)  # the job file as it was read

    @property
    def watched(self) -> bool:
        """Whether the worker must check the job while it runs (``processes`` or ``output_bytes``)."""
        return self.limits.processes is not None or self.limits.output_bytes is not None


def read_job(
    path: Path,
    kind: JobKind,
    *,
    job_id: str,
    queue_root: Path,
    config: WorkerConfig,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
    data: bytes | None = None,
    info: os.stat_result | None = None,
) -> RunRequest:
    """Read the job file at ``path`` (a claimed job in ``running/``).

    The job's environment is ``environ`` (default: this process's), with the
    job's own ``env`` over it; its working directory defaults to ``home``
    (default: the user's home). A worker passes both once, from its start,
    and ``data``, the file's bytes, when it has read them already (see
    :func:`~execsvc.durable.read_unwritten`), with ``info``, the ``fstat`` of
    the file those bytes came from, when it is still the file at ``path``;
    else the file is read (and looked up) here. Raises :class:`InvalidJob`
    for anything that is not a runnable job: not a regular file, an unknown
    ending, too big, empty, not UTF-8 or not valid JSON, or fields of the
    wrong type. Raises :class:`OSError` only for
    unexpected file-system failures.
    """
    if kind == "other":
        raise InvalidJob(_describe_other(path))
    if data is None:
        data = _read_job_file(path, config.max_job_file_bytes)
    if info is None:
        info = os.lstat(path)  # after any private copy (JobQueue.unshare): the file as it runs
    claimed = ClaimedFile(data, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    # The markers go last: a job's own env must not hide it from crash recovery.
    markers = {QUEUE_DIR_ENV: str(queue_root), JOB_ID_ENV: job_id}
    base = _Defaults(dict(os.environ) if environ is None else environ, Path.home() if home is None else home)
    if kind == "text":
        _check_script(data)
        options = text_options(data)
        return RunRequest(
            argv=[*_interpreter(data), str(path)],
            cwd=base.home,
            env={**base.environ, **markers},
            timeout_s=_timeout_s(options, config),
            requested_timeout_s=options.timeout_s,
            failure_hint=_CRLF_HINT if b"\r\n" in data else None,
            claimed=claimed,
            **_run_options(options, config),
        )
    spec = parse_json_job(data)
    return _json_request(spec, queue_root=queue_root, markers=markers, config=config, base=base, claimed=claimed)


def _read_job_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of a claimed job file, read by :func:`~execsvc.durable.read_regular_file` (one
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
            raise InvalidJob(_describe_other(path)) from None
        raise InvalidJob(f"the job file cannot be opened: {exc.strerror}") from exc
    if data is not None:
        return data
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise InvalidJob(_describe_other(path))
    if info.st_size <= max_bytes:
        raise InvalidJob(f"the job file grew past the limit of {max_bytes:,} bytes while it was read")
    raise InvalidJob(
        f"the job file is {info.st_size:,} bytes; the limit is {max_bytes:,} bytes "
        "(pass large inputs as files the job reads, not inside the job)"
    )


def _timeout_s(options: JobOptions, config: WorkerConfig) -> float:
    asked = options.timeout_s if options.timeout_s is not None else config.default_timeout_s
    return min(asked, config.max_timeout_s)


def _run_options(options: JobOptions, config: WorkerConfig) -> dict[str, Any]:
    """The RunRequest fields that come from a job's options and the worker's defaults and caps."""
    retries = options.retries if options.retries is not None else config.default_retries
    return {
        "options": options,
        "limits": effective(options.limits, config.default_limits, config.max_limits),
        "retries": min(retries, config.max_retries),
    }


def spec_if_valid(path: Path, max_bytes: int = WorkerConfig.max_job_file_bytes) -> JobSpec | None:
    """The JSON job in ``path`` if it is a valid one, else ``None`` (for records of jobs that never ran).

    Read with :func:`~execsvc.durable.read_regular_file`: a FIFO, socket or
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


@dataclass(frozen=True)
class _Defaults:
    environ: Mapping[str, str]
    home: Path


def _json_request(
    spec: JobSpec,
    *,
    queue_root: Path,
    markers: dict[str, str],
    config: WorkerConfig,
    base: _Defaults,
    claimed: ClaimedFile | None,
) -> RunRequest:
    if spec.runs_in_shell():
        line = spec.command if not spec.args else f"{spec.command} {shlex.join(spec.args)}"
        argv = [SHELL, "-c", line]
    elif spec.args is not None:
        argv = [spec.command, *spec.args]
    else:
        try:
            argv = shlex.split(spec.command)
        except ValueError as exc:
            raise InvalidJob(f"'command' cannot be split into words ({exc}); quote it properly or use 'args'") from exc
    if any("\x00" in arg for arg in argv):
        raise InvalidJob("'args' contains a NUL byte, which no program can receive")
    for key, value in (spec.env or {}).items():
        if not key or "=" in key or "\x00" in key or "\x00" in value:
            raise InvalidJob(f"'env' has an unusable variable {key!r}: names must be non-empty, without '=' or NUL")
    return RunRequest(
        argv=argv,
        cwd=_resolve(spec.cwd, queue_root) if spec.cwd else base.home,
        env={**base.environ, **(spec.env or {}), **markers},
        timeout_s=_timeout_s(spec, config),
        stdin=spec.stdin.encode("utf-8") if spec.stdin is not None else None,
        result_file=_resolve(spec.result_file, queue_root) if spec.result_file else None,
        requested_timeout_s=spec.timeout_s,
        spec=spec,
        claimed=claimed,
        **_run_options(spec, config),
    )


def submitted_by(spec: JobSpec | None) -> str:
    """Who the job says submitted it: its own ``submitted_by`` field (a non-blank string, cut to
    200 characters), else :data:`SUBMITTED_BY_FILE` (text jobs, and JSON jobs that do not say)."""
    value = (spec.model_extra or {}).get("submitted_by") if spec is not None else None
    return value[:200] if isinstance(value, str) and value.strip() else SUBMITTED_BY_FILE


def _resolve(path: str, queue_root: Path) -> Path:
    """A path from a job: ``~`` expanded; a relative path is relative to the queue root."""
    return queue_root / Path(path).expanduser()


def _check_script(data: bytes) -> None:
    if not data:
        raise InvalidJob("the script is empty")
    if not data.strip():
        raise InvalidJob("the script holds only white space, so there is nothing to run")


def _interpreter(data: bytes) -> list[str]:
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


def _describe_other(path: Path) -> str:
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
