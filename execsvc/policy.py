"""The worker's command policy: which programs a job may run (``[policy]`` in the worker's config file).

Enforced by the worker when it claims a job, after the job file is read
and before anything starts, so no job file and no client can lift it: the
policy lives only in the worker's own config file. A refused job is
recorded ``invalid`` with the rule that refused it.

- ``allow_shell = false`` refuses text jobs (scripts) and JSON jobs that run
  a ``/bin/sh -c`` command line. A shell can run any program, so
  ``allowed_commands`` only confines jobs when shells are refused too.
- ``allowed_commands = ["/usr/bin", ...]``: the job's program, found in the
  job's ``PATH`` (or relative to its ``cwd``), resolved with ``realpath``, must
  lie under one of these folders (themselves resolved). A symlink inside an
  allowed folder that points outside it is refused. The job is then started
  from the resolved path, so the link cannot be swapped between the check
  and the start.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .jobfile import SHELL, RunRequest
from .models import JobKind


@dataclass(frozen=True)
class Verdict:
    """``problem`` is why the job is refused (``None``: allowed); ``executable`` is what to start."""

    problem: str | None
    executable: str | None = None


def judge(
    request: RunRequest, kind: JobKind, *, allowed_commands: tuple[str, ...] | None, allow_shell: bool
) -> Verdict:
    """Apply the policy to one job; never raises."""
    if not allow_shell and (kind == "text" or (request.argv[:2] == [SHELL, "-c"])):
        what = "a shell script" if kind == "text" else "a shell command line (no 'args', or \"shell\": true)"
        return Verdict(
            f"refused by the worker's policy (allow_shell = false): this job is {what}; "
            "give 'command' and 'args' to run a program directly"
        )
    if not allow_shell and request.options.on_finish is not None:
        return Verdict(
            "refused by the worker's policy (allow_shell = false): the job's on_finish is a shell command line"
        )
    if allowed_commands is None:
        return Verdict(None)
    program = request.argv[0]
    if "/" in program:
        found: str | None = str(request.cwd / program)
    else:
        found = shutil.which(program, path=request.env.get("PATH", os.defpath))
    if found is None or not os.path.exists(found):
        return Verdict(None)  # nothing to run: the start fails with "command not found"
    real = Path(os.path.realpath(found))
    roots = [Path(os.path.realpath(root)) for root in allowed_commands]
    if any(real.is_relative_to(root) for root in roots):
        return Verdict(None, str(real))
    shown = ", ".join(str(root) for root in roots) or "(none)"
    via = f" (via {found})" if str(real) != found else ""
    return Verdict(
        f"refused by the worker's policy (allowed_commands): the program {program!r} is {real}{via}, "
        f"which is not under an allowed folder: {shown}"
    )
