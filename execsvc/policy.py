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
- The environment rule, whenever ``allowed_commands`` is set: a job may not
  set a variable that makes the loader or an interpreter run code of the
  job's choosing before or instead of the allowed program's own
  (:data:`CODE_LOADING_VARIABLES`, :data:`CODE_LOADING_PREFIXES`, plus the
  config's ``refused_env`` patterns), and a ``PATH`` it sets must name only
  absolute folders that resolve under an allowed folder, so that a program
  the allowed one runs by its bare name is found there too. Such a job is
  refused, naming the variable; nothing is stripped in silence. The rule
  applies to what the job sets (``env`` of a JSON job), not to the
  environment the worker itself was started with.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .jobfile import SHELL, RunRequest
from .models import JobKind


CODE_LOADING_VARIABLES = frozenset(
    {
        # shells: a file read at start, options (xtrace with PS4 runs code), prompt hooks
        "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND",
        # glibc: modules loaded by iconv, locale and host look-ups, tunables
        "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCPATH", "NLSPATH", "RESOLV_HOST_CONF", "GLIBC_TUNABLES",
        # Java, Tcl, PHP
        "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH", "TCLLIBPATH", "PHPRC",
        "PHP_INI_SCAN_DIR",
    }
)  # fmt: skip
"""Variables a job may not set while ``allowed_commands`` is in force (besides the prefixes)."""

CODE_LOADING_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_", "PYTHON", "PERL", "RUBY", "NODE_", "LUA_")
"""Name beginnings a job may not set while ``allowed_commands`` is in force: the dynamic loader
(``LD_PRELOAD``, ``LD_LIBRARY_PATH``, ``LD_AUDIT``..., macOS's ``DYLD_*``), bash's exported
functions, and the start-up hooks and module paths of Python, Perl, Ruby, Node and Lua."""


@dataclass(frozen=True)
class Verdict:
    """``problem`` is why the job is refused (``None``: allowed); ``executable`` is what to start."""

    problem: str | None
    executable: str | None = None


def judge(
    request: RunRequest,
    kind: JobKind,
    *,
    allowed_commands: tuple[str, ...] | None,
    allow_shell: bool,
    refused_env: tuple[str, ...] = (),
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
    roots = [Path(os.path.realpath(root)) for root in allowed_commands]
    problem = env_problem(request.spec.env or {} if request.spec else {}, roots, refused_env)
    if problem is not None:
        return Verdict(f"refused by the worker's policy (allowed_commands): {problem}")
    program = request.argv[0]
    if "/" in program:
        found: str | None = str(request.cwd / program)
    else:
        found = shutil.which(program, path=request.env.get("PATH", os.defpath))
    if found is None or not os.path.exists(found):
        return Verdict(None)  # nothing to run: the start fails with "command not found"
    real = Path(os.path.realpath(found))
    if any(real.is_relative_to(root) for root in roots):
        return Verdict(None, str(real))
    shown = ", ".join(str(root) for root in roots) or "(none)"
    via = f" (via {found})" if str(real) != found else ""
    return Verdict(
        f"refused by the worker's policy (allowed_commands): the program {program!r} is {real}{via}, "
        f"which is not under an allowed folder: {shown}"
    )


def env_problem(env: dict[str, str], roots: list[Path], refused_env: tuple[str, ...] = ()) -> str | None:
    """Why the variables a job sets break the environment rule (see the module docstring), or ``None``.

    ``roots``: the allowed folders, resolved; ``refused_env``: more names, as ``fnmatch`` patterns.
    """
    for name in sorted(env):
        upper = name.upper()
        if (
            upper in CODE_LOADING_VARIABLES
            or upper.startswith(CODE_LOADING_PREFIXES)
            or any(fnmatch.fnmatchcase(name, pattern) for pattern in refused_env)
        ):
            return (
                f"the job sets {name}, which makes the loader or an interpreter run code the policy never "
                "saw; leave it out of 'env'"
            )
    if "PATH" in env:
        for folder in env["PATH"].split(os.pathsep):
            real = Path(os.path.realpath(folder)) if os.path.isabs(folder) else None
            if real is None or not any(real.is_relative_to(root) for root in roots):
                shown = ", ".join(str(root) for root in roots) or "(none)"
                return (
                    f"the job sets PATH, and its entry {folder!r} is not an absolute folder under an allowed "
                    f"folder ({shown}); a program the job runs by its bare name would be looked up there"
                )
    return None
