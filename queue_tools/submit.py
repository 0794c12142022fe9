"""The submit helper: turn a command line, a job file or a script into a queued job,
and turn a finished job back into output and an exit code.

Used by ``execsvc submit``; a client of the protocol's public API only.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Literal

from execsvc.protocol.durable import NotRegularFile
from execsvc.protocol.errors import InvalidJob
from execsvc.protocol.jobfile import parse_json_job
from execsvc.protocol.layout import JOB_SUFFIXES
from execsvc.protocol.models import JobInfo, JobLimits, JobSpec, JobStatus
from execsvc.protocol.queue import JobQueue

EXIT_TIMEOUT = 124
"""Exit code for a job that hit its timeout, as ``timeout(1)`` uses."""


NO_TIMEOUT: Literal["none"] = "none"
"""``--timeout-s none``: the job has no timeout (``"timeout_s": null``, docs/protocol.md, "Services")."""


def parse_timeout(text: str | None) -> float | Literal["none"] | None:
    """``--timeout-s``: ``None`` when not given, ``"none"`` for no timeout, else seconds (> 0).

    Raises :class:`ValueError` saying what it takes."""
    if text is None:
        return None
    if text.strip().lower() == NO_TIMEOUT:
        return NO_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"--timeout-s takes seconds (a number > 0) or 'none' (no timeout), not {text!r}")
    return seconds


def command_spec(
    command: list[str] | None,
    shell: str | None,
    *,
    cwd: str | None,
    env: dict[str, str],
    timeout_s: float | Literal["none"] | None,
    description: str | None,
    options: dict[str, Any] | None = None,
) -> JobSpec:
    """A JSON job from ``argv`` (run directly) or a shell line (run by ``/bin/sh -c``).

    ``options`` are scheduling fields (:func:`scheduling_fields`); ``timeout_s`` ``"none"``
    writes ``"timeout_s": null`` (no timeout). Raises
    :class:`ValueError` unless exactly one of the two is given, and
    ``pydantic.ValidationError`` for a field of the wrong shape.
    """
    if bool(command) == bool(shell):
        raise ValueError("give either a command (after --) or --shell 'command line', not both")
    given = {"cwd": cwd, "env": env or None, "timeout_s": timeout_s, "description": description, **(options or {})}
    fields: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    if timeout_s == NO_TIMEOUT:
        fields["timeout_s"] = None
    if shell:
        return JobSpec(command=shell, **fields)
    assert command
    return JobSpec(command=command[0], args=command[1:], **fields)


def scheduling_fields(**given: Any) -> dict[str, Any]:
    """The scheduling fields of a job from keyword values, leaving out the ``None`` ones.

    Takes the :class:`~execsvc.protocol.models.JobOptions` names, and the limit names
    (``cpu_s``, ``memory_mb``, ``open_files``, ``processes``, ``output_bytes``),
    which are gathered into ``limits``. An empty ``after`` is left out.
    """
    limits = {name: given.pop(name) for name in JobLimits.model_fields if given.get(name) is not None}
    fields = {key: value for key, value in given.items() if value is not None and value != []}
    if limits:
        fields["limits"] = limits
    return fields


def sandbox_field(
    sandbox: bool, *, network: bool = False, writable: list[str] | None = None
) -> bool | dict[str, Any] | None:
    """The job's ``sandbox`` field (docs/protocol.md, "Sandbox") from ``execsvc submit``'s options:
    ``None`` when none is given, ``True`` for the worker's default profile, else an object with
    ``network`` and ``writable`` (each relative path made absolute from the current folder)."""
    if not (network or writable):
        return True if sandbox else None
    profile: dict[str, Any] = {"network": True} if network else {}
    if writable:
        profile["writable"] = [path if path.startswith(("/", "~")) else os.path.abspath(path) for path in writable]
    return profile


def option_problem(
    *,
    command: list[str] | None,
    shell: str | None,
    file: Path | None,
    options: dict[str, Any],
    timeout_s: float | str | None = None,
    cwd: Path | str | None = None,
    env: list[str] | None = None,
    description: str | None = None,
    stdin_is_terminal: bool = True,
) -> str | None:
    """Why ``execsvc submit``'s options cannot go together (a sentence naming the option), or ``None``.

    ``options`` are the given scheduling fields (:func:`scheduling_fields`); they, and
    ``timeout_s``, ``cwd``, ``env`` and ``description``, go with a command or ``shell`` only:
    a job file or a script on stdin carries its own, and an option is never dropped in
    silence. ``file`` goes alone. With none of ``command``, ``shell`` and ``file``, the job is
    a script on stdin, so stdin must not be a terminal (``stdin_is_terminal``).
    """
    inline = bool(command or shell)
    if options and not inline:
        return (
            f"--{sorted(options)[0].replace('_', '-')} and the other scheduling options go with a command (after --) "
            "or --shell; a job file carries them itself (JSON fields, or a '# execsvc:' header in a script)"
        )
    given = {"--timeout-s": timeout_s, "--cwd": cwd, "--env": env, "--description": description}
    stray = [name for name, value in given.items() if value is not None]
    if stray and not inline:
        return (
            f"{stray[0]} goes with a command (after --) or --shell; a job file or a script on stdin carries its own "
            "fields (timeout_s, cwd, env, description in JSON; timeout_s in a script's '# execsvc:' header)"
        )
    if file is not None and inline:
        return "give --file alone, without a command or --shell"
    if file is None and not inline and stdin_is_terminal:
        return "nothing to submit: give a command after --, --shell 'line', --file, or a script on stdin"
    return None


def parse_env(pairs: list[str] | None) -> dict[str, str]:
    """``--env KEY=VALUE`` pairs as a mapping (a later key wins); raises :class:`ValueError`
    for a pair without ``=`` or with an empty key."""
    env: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env takes KEY=VALUE, not {pair!r}")
        env[key] = value
    return env


def submit_file(queue: JobQueue, path: Path, *, job_id: str | None, held: bool = False) -> str:
    """Enqueue a job file (``.json``, ``.sh`` or ``.txt``) safely; return its job id.

    A JSON file is checked first, so a bad one is refused here with the
    reason (:class:`~execsvc.protocol.errors.InvalidJob`) instead of failing in the queue.
    """
    data = path.read_bytes()
    kind = JOB_SUFFIXES.get(path.suffix)
    if kind == "json":
        return queue.submit(parse_json_job(data), job_id=job_id, submitted_by="execsvc submit", held=held)
    if kind == "text":
        return queue.submit_script(data, job_id=job_id, suffix=path.suffix, held=held)
    raise InvalidJob(f"{path.name}: a job file ends in .json, .sh or .txt")


def exit_code(info: JobInfo) -> int:
    """The exit code a shell would give for this finished job.

    The job's own code; 124 for a timeout; 128 + N for a job killed by signal
    N; 127 when the command was not found; 1 for anything else that did not
    complete (invalid, cancelled, interrupted, failed to start).
    """
    result = info.result
    if result is None:
        return 1
    if result.status is JobStatus.TIMEOUT:
        return EXIT_TIMEOUT
    if result.returncode is not None:
        return result.returncode if result.returncode >= 0 else 128 - result.returncode
    if result.error and result.error.startswith("command not found"):
        return 127
    return 1


def copy_output(queue: JobQueue, info: JobInfo, stdout: BinaryIO, stderr: BinaryIO) -> list[str]:
    """Write a finished job's whole stdout and stderr (``logs/<id>.stdout``, ``.stderr``) to the
    given streams; return a sentence for each log not copied because it is not a regular file.

    The logs are the protocol's names for the job's id, whatever its record says; each is opened
    by :func:`~queue_tools.api.open_for_reading` (a symbolic link is never followed, a FIFO never
    waited on). A missing log is skipped; other errors raise :class:`OSError`.
    """
    from .api import open_for_reading  # here: enqueueing a job needs none of the fronts' answers

    if info.result is None:
        return []
    problems: list[str] = []
    logs = (
        (info.result.stdout_log, queue.layout.stdout_log(info.job_id), stdout),
        (info.result.stderr_log, queue.layout.stderr_log(info.job_id), stderr),
    )
    for recorded, log, stream in logs:
        if not recorded:
            continue
        try:
            with open_for_reading(log) as handle:
                shutil.copyfileobj(handle, stream)
        except FileNotFoundError:
            continue
        except NotRegularFile as exc:
            problems.append(f"execsvc: job {info.job_id}: {exc}; it is not shown")
            continue
        stream.flush()
    return problems


def describe_end(info: JobInfo) -> str | None:
    """A one-line note for stderr when a job did not complete, else ``None``."""
    result = info.result
    if result is None or result.status is JobStatus.COMPLETED:
        return None
    detail = result.error or result.status.value
    if result.signal and result.signal not in detail:
        detail += f" ({result.signal})"
    return f"execsvc: job {info.job_id} {result.status.value}: {detail}"


__all__ = [
    "EXIT_TIMEOUT",
    "command_spec",
    "copy_output",
    "describe_end",
    "exit_code",
    "option_problem",
    "parse_env",
    "scheduling_fields",
    "submit_file",
]
