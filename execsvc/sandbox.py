"""Sandboxed jobs: which jobs run in a sandbox, the profile each gets, and bubblewrap's argv
(docs/protocol.md, "Sandbox"; docs/security.md, "Sandboxed jobs").

The sandbox is bubblewrap (``bwrap``, Linux only). The worker's policy lives in its config file
(``[policy]`` ``sandbox``, ``sandbox_for``, ``sandbox_profile``), which no job, CLI call or MCP
call can change. A job runs sandboxed when it asks (``"sandbox": true`` or an object), when the
worker requires it (``sandbox = "required"``), or when the front that submitted it (its
``submitted_by``) is in ``sandbox_for``. A job the policy forces into the sandbox gets the
worker's profile: its own ``sandbox`` object may hide more or make more read-only, never add
the network or a writable path. Nothing is ever run unconfined in place of a sandbox: a job
that cannot be sandboxed (``bwrap`` missing, user namespaces disabled, a writable path that
does not exist...) is refused as ``invalid`` with a reason a person can act on.

The default profile: the root file system read-only, the job's ``cwd`` writable (read-only when
it is ``/``, the home directory or a folder above it), a private ``/tmp``, ``/proc`` and ``/dev``, no
network but a private loopback, every namespace unshared (its own PID namespace, so nothing
survives the job; with bwrap 0.8 or later, no nested user namespace), no new privileges, every
capability dropped, a new session, and masked:
:data:`SECRET_PATHS`, the sockets of services that run commands (:data:`RUNTIME_PATHS`,
:func:`session_sockets`) and the queue root itself (a text job's script and a hook's record are
bound back read-only). Its stdout and stderr reach ``logs/`` through the descriptors the
worker opened. bwrap forwards no signal: stopping the job's process group ends bwrap, and
``--die-with-parent`` then SIGKILLs the sandbox's PID 1, so the kernel ends the rest. That
option watches the thread that started bwrap: the worker starts jobs from its loop (the main
thread) and hooks from its hook threads, which live as long as the worker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .config import WorkerConfig
from .protocol.errors import InvalidJob
from .protocol.models import JobOptions, JobSandbox, SandboxRecord

BWRAP = "bwrap"
"""The program, looked for in the worker's own ``PATH``."""

SECRET_PATHS = (
    "~/.ssh",
    "~/.gnupg",
    "~/.aws",
    "~/.azure",
    "~/.config/gcloud",
    "~/.kube",
    "~/.docker",
    "~/.netrc",
    "~/.pypirc",
    "~/.git-credentials",
)
"""Paths every sandbox hides (those that exist), on top of the queue root and the profile's own."""

RUNTIME_PATHS = ("/run/dbus", "/run/docker.sock", "/run/containerd", "/run/podman", "/var/run/docker.sock")
"""Folders and Unix sockets of services that run commands on request (a read-only mount does not
stop a ``connect``), hidden too, with the user's ``/run/user/<uid>`` and the sockets the job's
environment names (:func:`session_sockets`)."""

KEPT_IN_CWD = (".git/hooks", ".git/config")
"""Paths in a writable ``cwd`` kept read-only (those that exist): what git runs later, outside any sandbox."""

_SOCKET_VARIABLES = ("XDG_RUNTIME_DIR", "SSH_AUTH_SOCK", "DBUS_SESSION_BUS_ADDRESS", "DOCKER_HOST")

_BASE = ("--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL")
_MOUNTS = ("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp")
_INSTALL = (
    "install bubblewrap on the worker's machine (Debian, Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
    "bubblewrap; Arch: pacman -S bubblewrap) and make sure `bwrap` is on the worker's PATH"
)

Reason = Literal["asked", "required", "sandbox_for"]


class SandboxRefused(InvalidJob):
    """The job must run sandboxed and cannot be (or asks for what the policy does not give); the
    reason says what to do."""


@dataclass(frozen=True)
class SandboxPlan:
    """How one job is sandboxed: ``record`` (what ``result.sandbox`` says) and ``argv``, the bwrap
    prefix (ending in ``--``) the runner puts before the job's own argv."""

    record: SandboxRecord
    argv: tuple[str, ...]

    def with_readable(self, paths: list[Path]) -> tuple[str, ...]:
        """The prefix with ``paths`` (files under a hidden folder, e.g. a hook's record) bound read-only."""
        real = [os.path.realpath(path) for path in paths]
        binds = [arg for path in real for arg in ("--ro-bind", path, path)]
        return (*self.argv[:-1], *binds, "--")


def wanted(options: JobOptions, submitted_by: str, config: WorkerConfig) -> Reason | None:
    """Why the job runs sandboxed under ``config``'s policy, or ``None`` when it does not.

    Raises :class:`SandboxRefused` when the job asks for a sandbox and ``sandbox = "off"``.
    """
    asked = options.sandbox is not None and options.sandbox is not False
    if config.sandbox == "required":
        return "required"
    if submitted_by in config.sandbox_for:
        return "sandbox_for"
    if not asked:
        return None
    if config.sandbox == "off":
        raise SandboxRefused(_policy('sandbox = "off"', "this worker runs no sandboxed job; none was run unconfined"))
    return "asked"


def plan(
    options: JobOptions,
    reason: Reason,
    *,
    cwd: Path,
    home: Path,
    queue_root: Path,
    config: WorkerConfig,
    env: Mapping[str, str],
    readable: tuple[Path, ...] = (),
) -> SandboxPlan:
    """The sandbox of a job whose ``options`` are given, run in ``cwd`` with the environment ``env``;
    ``readable``: files under the queue root it must still read (a text job's script).

    Raises :class:`SandboxRefused`: the host cannot sandbox (:func:`host_problem`), the job asks
    for more than a forced sandbox gives (the network, a writable path, or a ``webhook`` while
    the worker's ``webhook_hosts`` is unset: the worker sends it, outside the sandbox), its
    ``cwd`` is in what the sandbox hides (the queue, ``~/.ssh``...), or a ``writable`` or
    ``readable_only`` path does not exist.
    """
    problem = host_problem()
    if problem is not None:
        raise SandboxRefused(f"the job must run sandboxed, and {problem}; it was not run")
    base = config.sandbox_profile or JobSandbox()
    own = options.sandbox if isinstance(options.sandbox, JobSandbox) else None
    forced = reason != "asked"
    if forced:
        _check_forced(options, own, base, reason, config)
    network = own.network if own is not None and not forced else base.network
    real_cwd = Path(os.path.realpath(cwd))
    root = Path(os.path.realpath(queue_root))
    writable = _existing("writable", [*base.writable, *(own.writable if own and not forced else [])], home)
    readable_only = _existing("readable_only", [*base.readable_only, *(own.readable_only if own else [])], home)
    cwd_writable = real_cwd != Path("/") and not Path(os.path.realpath(home)).is_relative_to(real_cwd)
    if cwd_writable:
        writable.insert(0, real_cwd)
        readable_only += [real_cwd / name for name in KEPT_IN_CWD if os.path.lexists(real_cwd / name)]
    else:  # read-only, and shown even where the sandbox has its own (a home under /tmp)
        readable_only.insert(0, real_cwd)
    masked = [*SECRET_PATHS, *RUNTIME_PATHS, *session_sockets(env), *base.hidden, *(own.hidden if own else [])]
    hidden = _hidden(masked, home, root)
    covering = next((path for path in hidden if real_cwd.is_relative_to(path)), None)
    if covering is not None:
        raise SandboxRefused(
            f"a sandboxed job cannot run in {cwd}: its sandbox hides {covering}; give it a project folder"
        )
    record = SandboxRecord(
        profile="job" if own is not None else "default",
        reason=reason,
        network=network,
        writable=_unique(writable),
        readable_only=_unique(readable_only),
        hidden=[str(path) for path in hidden],
    )
    return SandboxPlan(record, _argv(record, hidden, cwd=real_cwd, readable=readable))


def _argv(record: SandboxRecord, hidden: list[Path], *, cwd: Path, readable: tuple[Path, ...]) -> tuple[str, ...]:
    """bwrap's options for ``record``: later mounts lie over earlier ones, so the binds go from the
    shallowest path to the deepest (the more specific path wins), then what is hidden, then
    ``readable`` (bound back read-only, even under a hidden folder)."""
    bwrap = _bwrap()
    argv = [bwrap, *_BASE, *_hardening.get(bwrap, ())]
    if record.network:
        argv.append("--share-net")
    argv.extend(_MOUNTS)
    if not record.network and os.path.isdir("/sys/class/net"):
        # /sys is the host's: show only the loopback device, which is all the job's network has
        argv += ["--tmpfs", "/sys/class/net", "--symlink", "../../devices/virtual/net/lo", "/sys/class/net/lo"]
    binds = [("--bind", path) for path in record.writable] + [("--ro-bind", path) for path in record.readable_only]
    for option, path in sorted(binds, key=lambda bind: len(Path(bind[1]).parts)):
        argv += [option, path, path]
    for mask in hidden:
        argv += ["--tmpfs", str(mask)] if mask.is_dir() else ["--ro-bind", os.devnull, str(mask)]
    for shown in readable:
        argv += ["--ro-bind", str(shown), str(shown)]
    return (*argv, "--chdir", str(cwd), "--")


def _check_forced(
    options: JobOptions, own: JobSandbox | None, base: JobSandbox, reason: Reason, config: WorkerConfig
) -> None:
    """A job the policy sandboxes may only hide more or make more read-only, and has a webhook
    (sent by the worker, outside the sandbox) only where the network is its or ``webhook_hosts``
    is set; raises :class:`SandboxRefused`."""
    rule = 'sandbox = "required"' if reason == "required" else "sandbox_for"
    if options.webhook is not None and not base.network and config.webhook_hosts is None:
        raise SandboxRefused(
            _policy(
                rule,
                "the job's webhook would send its record, with its output, to a host of its choosing from outside "
                "its sandbox, which has no network; set webhook_hosts in [policy] to the hosts webhooks may go to",
            )
        )
    if own is None:
        return
    if own.network and not base.network:
        raise SandboxRefused(_policy(rule, "the job asks for the network, which the worker's sandbox profile denies"))
    extra = [path for path in own.writable if path not in base.writable]
    if extra:
        raise SandboxRefused(
            _policy(rule, f"the job asks to write {extra[0]}, which the worker's sandbox profile does not allow")
        )


def session_sockets(env: Mapping[str, str]) -> list[str]:
    """The user's runtime folder (``/run/user/<uid>``: the D-Bus session bus, the systemd user
    manager, agents) and the socket paths ``env`` names (``XDG_RUNTIME_DIR``, ``SSH_AUTH_SOCK``,
    a ``unix:path=`` D-Bus address, a ``unix://`` ``DOCKER_HOST``)."""
    paths = [f"/run/user/{os.getuid()}"]
    for name in _SOCKET_VARIABLES:
        for part in env.get(name, "").split(";"):
            path = part.partition("unix:path=")[2].split(",")[0] if "unix:path=" in part else part
            path = path.removeprefix("unix://")
            if path.startswith("/"):
                paths.append(path)
    return paths


def _policy(rule: str, what: str) -> str:
    return f"refused by the worker's policy ({rule}): {what}"


def _expand(path: str, home: Path) -> Path:
    return home / path[2:] if path.startswith("~/") else (home if path == "~" else Path(path))


def _existing(key: str, paths: list[str], home: Path) -> list[Path]:
    found = []
    for path in paths:
        full = _expand(path, home)
        if not full.exists():
            raise SandboxRefused(
                f"the sandbox's {key} path {full} does not exist; create it first or leave it out (nothing was run)"
            )
        found.append(Path(os.path.realpath(full)))
    return found


def _hidden(paths: list[str], home: Path, queue_root: Path) -> list[Path]:
    """The paths to mask that exist (resolved), the queue root last, each once."""
    found = [Path(os.path.realpath(full)) for full in (_expand(path, home) for path in paths) if os.path.lexists(full)]
    return [Path(path) for path in _unique([path for path in [*found, queue_root] if path.exists()])]


def _unique(paths: list[Path]) -> list[str]:
    return list(dict.fromkeys(str(path) for path in paths))


def _bwrap() -> str:
    found = shutil.which(BWRAP)
    if found is None:
        raise SandboxRefused(f"the job must run sandboxed, and bwrap is not on the worker's PATH: {_INSTALL}")
    return found


def bare_argv(bwrap: str, command: list[str]) -> list[str]:
    """``command`` in a sandbox of the default profile's namespaces and mounts, without its binds
    and masks (the benchmark's floor); after :func:`host_problem`, with the hardening it found."""
    return [bwrap, *_BASE, *_hardening.get(bwrap, ()), *_MOUNTS, *command]


_NO_USERNS = ("--unshare-user", "--disable-userns")
"""A user namespace of the sandbox's own in which no further one can be made (bwrap 0.8 and later):
a job cannot unshare namespaces of its own, the kernel's most used attack surface."""

_hardening: dict[str, tuple[str, ...]] = {}  # bwrap path -> the options its first sandbox worked with
_probe_lock = threading.Lock()


def host_problem() -> str | None:
    """Why this host cannot run a sandbox (a sentence that says what to do), or ``None``.

    Not Linux; ``bwrap`` not on the worker's ``PATH``; or a first sandbox (``bwrap --unshare-all
    ... true``) fails: user namespaces disabled, AppArmor's restriction (Ubuntu 24.04), ``/proc``
    not mountable. It is tried with :data:`_NO_USERNS` first, then without (an older bwrap, or
    root where user namespaces are off). A success is remembered for the worker's life; a
    failure is tried again at the next sandboxed job (the cause may be fixed meanwhile).
    """
    if not sys.platform.startswith("linux"):
        return f"sandboxed jobs need Linux (bubblewrap); this system is {sys.platform}"
    found = shutil.which(BWRAP)
    if found is None:
        return f"bwrap is not on the worker's PATH: {_INSTALL}"
    with _probe_lock:
        if found in _hardening:
            return None
        stderr = ""
        for hardening in (_NO_USERNS, ()):
            probe = [found, *_BASE, *hardening, *_MOUNTS, "true"]
            try:
                done = subprocess.run(probe, capture_output=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"{found} could not be run: {exc}"
            if done.returncode == 0:
                _hardening[found] = hardening
                return None
            stderr = stderr or done.stderr.decode("utf-8", errors="replace").strip()
        return _diagnose(found, done.stderr.decode("utf-8", errors="replace").strip() or stderr)


def _sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def _diagnose(bwrap: str, stderr: str) -> str:
    """A sentence for a failed first sandbox, from bwrap's message and the kernel's settings."""
    said = f" (bwrap said: {stderr[:300]})" if stderr else ""
    if _sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return (
            "AppArmor restricts unprivileged user namespaces on this host (Ubuntu 24.04 and later): give bwrap a "
            "profile that allows them (/etc/apparmor.d/bwrap with `userns,`, see docs/security.md), or run "
            f"`sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`{said}"
        )
    if _sysctl("kernel.unprivileged_userns_clone") == "0":
        return f"unprivileged user namespaces are disabled: run `sysctl -w kernel.unprivileged_userns_clone=1`{said}"
    if _sysctl("user.max_user_namespaces") == "0":
        return f"user namespaces are disabled: run `sysctl -w user.max_user_namespaces=10000`{said}"
    if "proc" in stderr.lower():
        return (
            "bwrap cannot mount a private /proc here (a container whose /proc is masked: run it with "
            f"--security-opt systempaths=unconfined, or without masked /proc paths){said}"
        )
    return f"bwrap cannot start a sandbox on this host{said}; see docs/security.md, 'Where the sandbox runs'"
