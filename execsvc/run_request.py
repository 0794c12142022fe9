"""A claimed job file into what the worker runs (a :class:`RunRequest`), with the worker's
defaults and caps applied (docs/protocol.md, "JSON jobs", "Text jobs", "Timeouts and cancelling").

:func:`read_job` is the one entry point: it returns a :class:`RunRequest` (argv, working
directory, environment, stdin, timeout) or raises :class:`~execsvc.protocol.errors.InvalidJob`
with a reason a person can act on; the parsing itself is :mod:`execsvc.protocol.jobfile`'s.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import WorkerConfig
from .limits import effective
from .protocol.defaults import JOB_ID_ENV, QUEUE_DIR_ENV
from .protocol.errors import InvalidJob
from .protocol.jobfile import (
    SHELL,
    ClaimedFile,
    check_script,
    describe_other,
    interpreter,
    parse_json_job,
    read_job_file,
    submitted_by,
)
from .protocol.models import JobKind, JobLimits, JobOptions, JobSpec
from .protocol.scheduling import text_options
from .sandbox import SandboxPlan, plan, wanted

_CRLF_HINT = (
    "the script has Windows line endings (CRLF), and the shell reads each line's \\r as part of the "
    "command; convert it (dos2unix, or sed -i 's/\\r$//') and submit it again"
)


@dataclass(frozen=True)
class RunRequest:
    """One job, ready for the runner.

    ``env`` is the whole environment of the job's process. ``stdin`` is fed
    to the job (``None``: the job reads from ``/dev/null``). ``timeout_s`` is
    already capped by the worker's maximum, ``None`` for no timeout (a JSON job's
    ``"timeout_s": null``, where the policy's ``allow_no_timeout`` lets it);
    ``requested_timeout_s`` is what the job asked for, if anything.
    """

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    timeout_s: float | None
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
    sandbox: SandboxPlan | None = None  # the sandbox it runs in (execsvc.sandbox); None: unconfined

    @property
    def polls_limits(self) -> bool:
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
    :func:`~execsvc.protocol.leases.read_unwritten`), with ``info``, the ``fstat`` of
    the file those bytes came from, when it is still the file at ``path``;
    else the file is read (and looked up) here. Raises :class:`InvalidJob`
    for anything that is not a runnable job: not a regular file, an unknown
    ending, too big, empty, not UTF-8 or not valid JSON, or fields of the
    wrong type, and for a job that must run sandboxed and cannot
    (:class:`~execsvc.sandbox.SandboxRefused`). Raises :class:`OSError` only for
    unexpected file-system failures.
    """
    if kind == "other":
        raise InvalidJob(describe_other(path))
    if data is None:
        data = read_job_file(path, config.max_job_file_bytes)
    if info is None:
        info = os.lstat(path)  # after any private copy (JobStore.unshare): the file as it runs
    claimed = ClaimedFile(data, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    # The markers go last: a job's own env must not hide it from crash recovery.
    markers = {QUEUE_DIR_ENV: str(queue_root), JOB_ID_ENV: job_id}
    base = _Defaults(dict(os.environ) if environ is None else environ, Path.home() if home is None else home)
    if kind == "text":
        check_script(data)
        options = text_options(data)
        request = RunRequest(
            argv=[*interpreter(data), str(path)],
            cwd=base.home,
            env={**base.environ, **markers},
            timeout_s=_timeout_s(options, config),
            requested_timeout_s=options.timeout_s,
            failure_hint=_CRLF_HINT if b"\r\n" in data else None,
            claimed=claimed,
            **_run_options(options, config),
        )
        return _sandboxed(request, (Path(os.path.realpath(path)),), queue_root=queue_root, config=config, base=base)
    spec = parse_json_job(data)
    request = _json_request(spec, queue_root=queue_root, markers=markers, config=config, base=base, claimed=claimed)
    return _sandboxed(request, (), queue_root=queue_root, config=config, base=base)


def _sandboxed(
    request: RunRequest, readable: tuple[Path, ...], *, queue_root: Path, config: WorkerConfig, base: _Defaults
) -> RunRequest:
    """``request`` in the sandbox the worker's policy gives it, if any (see :mod:`execsvc.sandbox`);
    ``readable``: the job's own file, when it runs it (a text job). Raises ``SandboxRefused``."""
    reason = wanted(request.options, submitted_by(request.spec), config)
    if reason is None:
        return request
    sandbox = plan(
        request.options,
        reason,
        cwd=request.cwd,
        home=base.home,
        queue_root=queue_root,
        config=config,
        env=request.env,
        readable=readable,
    )
    return replace(request, sandbox=sandbox)


def _timeout_s(options: JobOptions, config: WorkerConfig) -> float | None:
    """The timeout in force: the job's, else the default, capped; ``None`` for a job that asks for none.

    Raises :class:`InvalidJob` naming the policy's switch when the worker does not allow that."""
    if options.asks_no_timeout():
        if not config.allow_no_timeout:
            where = f" in {config.config_file}" if config.config_file else ""
            raise InvalidJob(
                "the job asks for no timeout (timeout_s: null), which this worker's policy refuses "
                f"(allow_no_timeout = false in [policy]{where}); give it a timeout_s, or set allow_no_timeout = true"
            )
        return None
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


def _resolve(path: str, queue_root: Path) -> Path:
    """A path from a job: ``~`` expanded; a relative path is relative to the queue root."""
    return queue_root / Path(path).expanduser()
