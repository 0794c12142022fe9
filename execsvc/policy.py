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
- ``result_file``, always: it must lie under the queue root or under a
  folder of the config's ``result_file_folders``, reached from there without
  a symbolic link, and not in one of the queue's own folders or files, which
  are told by what they are (device and inode), however the path reaches
  them (:func:`result_file_problem` at the claim; :func:`write_result_file`
  follows no link when it writes, in case one appeared since).
- ``webhook``, always: where it may go is :mod:`.webhook_policy`'s rule
  (``webhook_hosts``; by default anywhere but link-local and cloud metadata
  addresses), checked at the claim and again by address when it is sent.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from .protocol.durable import TEMP_PREFIX, open_regular
from .protocol.jobfile import SHELL
from .protocol.models import JobKind
from .run_request import RunRequest
from .webhook_policy import WebhookRule

CODE_LOADING_VARIABLES = frozenset(
    {
        # shells: a file read at start (zsh: $ZDOTDIR/.zshenv), options (xtrace with PS4 runs code), prompt hooks
        "BASH_ENV", "ENV", "ZDOTDIR", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND",
        # glibc: modules loaded by iconv, locale and host look-ups, tunables
        "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCPATH", "NLSPATH", "RESOLV_HOST_CONF", "GLIBC_TUNABLES",
        # OpenSSL's libcrypto, in every program that uses it (Python's hashlib too): a config whose
        # provider or engine section loads any shared object, and where those are looked for
        "OPENSSL_CONF", "OPENSSL_CONF_INCLUDE", "OPENSSL_MODULES", "OPENSSL_ENGINES",
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


QUEUE_OWN_NAMES = frozenset({"pending", "running", "completed", "failed", "logs", "worker.lock", "worker.json"})
"""Entries of the queue root that a ``result_file`` may not be in or be (so are ``daemon.log*`` and
hidden names): a job's output there would be a job, a record or the worker's own state."""

_OWN_FOLDERS = ("pending", "pending/.held", "running", "completed", "failed", "logs")
"""The queue's folders (relative to its root) that no ``result_file`` may be in."""


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
    result_roots: tuple[Path, ...] = (),
    webhooks: WebhookRule | None = None,
) -> Verdict:
    """Apply the policy to one job; never raises.

    ``result_roots``: where a ``result_file`` may be (:func:`result_roots`; the queue root first);
    ``webhooks``: where a ``webhook`` may go (default: the default rule).
    """
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
    if request.options.webhook is not None:
        problem = (webhooks or WebhookRule()).url_problem(request.options.webhook)
        if problem is not None:
            return Verdict(f"refused by the worker's policy (webhook): {problem}")
    if request.result_file is not None:
        problem = result_file_problem(request.result_file, result_roots)
        if problem is not None:
            return Verdict(f"refused by the worker's policy (result_file): {problem}")
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


def result_roots(queue_root: Path, folders: tuple[str, ...]) -> tuple[Path, ...]:
    """The folders a ``result_file`` may be under: ``queue_root`` first, then ``folders`` (the
    config's ``result_file_folders``), each as given (normalized) and resolved."""
    roots = [queue_root]
    for folder in folders:
        for form in (Path(os.path.normpath(folder)), Path(os.path.realpath(folder))):
            if form not in roots:
                roots.append(form)
    return tuple(roots)


def _confining_root(path: Path, roots: tuple[Path, ...]) -> tuple[Path, tuple[str, ...]] | None:
    """The longest root ``path`` lies strictly under, and the parts of ``path`` below it."""
    under = [root for root in roots if path != root and path.is_relative_to(root)]
    if not under:
        return None
    root = max(under, key=lambda folder: len(folder.parts))
    return root, path.relative_to(root).parts


def result_file_problem(result_file: Path, roots: tuple[Path, ...]) -> str | None:
    """Why ``result_file`` (absolute) breaks the rule of the module docstring, or ``None``.

    ``roots[0]`` is the queue root. ``..`` is taken away as written; a folder on the way that
    does not exist is not a problem here (the job then fails, saying so); a symbolic link on the
    way, or as the file, is, and so is any of the queue's own folders, reached by any path.
    """
    path = Path(os.path.normpath(result_file))
    found = _confining_root(path, roots)
    if found is None:
        shown = ", ".join(str(root) for root in roots)
        return (
            f"{result_file} is outside the folders a result_file may be in ({shown}); the worker's "
            "result_file_folders adds folders"
        )
    root, parts = found
    queue = _QueueFolders(roots[0])
    here = root
    try:
        info = os.stat(root)
    except OSError as exc:
        return f"{root} cannot be looked at ({exc.strerror})"
    for part in parts:
        own = queue.own_entry(info, part)
        if own is not None:
            return f"{result_file} is in the queue's own {own!r}, where output would be taken for a job or a record"
        here = here / part
        try:
            info = os.lstat(here)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"{here} cannot be looked at ({exc.strerror})"
        if stat.S_ISLNK(info.st_mode):
            return f"{here} is a symbolic link; a result_file is reached without following links"
    return None


class _QueueFolders:
    """The queue root and its own folders (:data:`_OWN_FOLDERS`) by device and inode, so that they
    are known under any name: a ``result_file_folders`` entry that is a link to the folder holding
    the queue, a bind mount, an entry inside the queue. A folder that does not exist is left out."""

    def __init__(self, queue_root: Path) -> None:
        self.root = _key_of(queue_root)
        self.folders = {key: name for name in _OWN_FOLDERS if (key := _key_of(queue_root / name)) is not None}

    def own_entry(self, folder: os.stat_result, name: str) -> str | None:
        """Which of the queue's own entries ``name`` in ``folder`` (its ``stat``) is or is in, or ``None``."""
        key = (folder.st_dev, folder.st_ino)
        if key in self.folders:
            return self.folders[key]
        if key == self.root and (name in QUEUE_OWN_NAMES or name.startswith((".", "daemon.log"))):
            return name
        return None

    def refuse_own_entry(self, folder: int, name: str) -> None:
        """Raise :class:`OSError` (``EPERM``) if ``name`` in the open ``folder`` is one of the queue's own entries."""
        own = self.own_entry(os.fstat(folder), name)
        if own is not None:
            raise OSError(
                errno.EPERM, f"it is in the queue's own {own!r}, where output would be taken for a job or a record"
            )


def _key_of(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def write_result_file(result_file: Path, roots: tuple[Path, ...], source: Path) -> None:
    """Copy ``source`` to ``result_file``, following no symbolic link below its root and never
    into the queue's own folders (see :func:`result_file_problem`; ``roots[0]`` is the queue
    root); the file is written beside and renamed into place, so a link or a hard link at its
    name is replaced, never written through.

    Raises :class:`OSError` (its ``strerror`` says why) if the rule is broken now or the write fails.
    """
    path = Path(os.path.normpath(result_file))
    found = _confining_root(path, roots)
    if found is None:
        raise OSError(errno.EPERM, "it is outside the folders a result_file may be in")
    root, parts = found
    queue = _QueueFolders(roots[0])
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            queue.refuse_own_entry(folder, part)
            below = _open_folder_below(folder, part)
            os.close(folder)
            folder = below
        name = parts[-1]
        queue.refuse_own_entry(folder, name)
        # Short and unique whatever the name (which may take all 255 bytes a folder allows), so
        # that jobs writing the same result_file at once do not meet at the temporary name either.
        temp = f"{TEMP_PREFIX}result-{os.getpid()}-{secrets.token_hex(4)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        source_fd, _moved = open_regular(source, os.O_RDONLY, move_aside=False)  # never a link, a FIFO
        with open(source_fd, "rb") as data:
            out = os.open(temp, flags, 0o666, dir_fd=folder)
            try:
                with open(out, "wb") as target:
                    shutil.copyfileobj(data, target)
                os.rename(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp, dir_fd=folder)
                raise
    finally:
        os.close(folder)


def _open_folder_below(folder: int, name: str) -> int:
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    except OSError as exc:
        try:
            is_link = exc.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(os.lstat(name, dir_fd=folder).st_mode)
        except OSError:
            is_link = False
        if is_link:
            raise OSError(errno.ELOOP, f"{name} is a symbolic link, and a result_file follows none") from None
        raise
