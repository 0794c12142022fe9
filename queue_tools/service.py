"""Keeping the worker up: the launchd agent (macOS) and the systemd user unit (Linux).

:func:`service_files` says what ``execsvc service install`` writes, with the
real paths of this installation: a launchd property list (written with
:mod:`plistlib`) whose ``KeepAlive`` restarts the worker, or a systemd user
unit with ``Restart=always``. Both run ``execsvc run --queue-dir <queue>`` and
send its stdout and stderr to ``server.log`` and ``server.error.log`` in the
queue folder. :func:`install`, :func:`uninstall` and :func:`status` call
``launchctl`` or ``systemctl --user``; every command they run is returned, so
``--dry-run`` can print them instead.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LAUNCHD_LABEL = "com.brain.execution-server"
"""The launchd agent's label (and its file name, with ``.plist``)."""
SYSTEMD_UNIT = "execsvc.service"
"""The systemd user unit's name."""
THROTTLE_INTERVAL_S = 10
"""Least time between two starts of the worker by the service manager (seconds)."""
STOP_TIMEOUT_S = 30
"""How long the service manager waits after SIGTERM before SIGKILL (seconds): more than the
worker's default drain (15 s) plus its kill grace (5 s), so a stop drains jobs cleanly."""

Platform = Literal["launchd", "systemd"]

EXAMPLE_PROGRAM = "/Users/you/execsvc/.venv/bin/execsvc"
EXAMPLE_QUEUE = "/Users/you/Library/Application Support/execsvc/command_queue"
EXAMPLE_HOME = "/Users/you"
EXAMPLE_LINUX_PROGRAM = "/home/you/execsvc/.venv/bin/execsvc"
EXAMPLE_LINUX_QUEUE = "/home/you/.local/share/execsvc/command_queue"
"""Paths of the example installations (macOS, Linux) whose agent and unit are shipped in ``launchagents/``."""


@dataclass(frozen=True)
class ServiceFile:
    """A file to write, its content, and the commands that load it (argv lists)."""

    path: Path
    content: bytes
    load: list[list[str]]
    unload: list[list[str]]
    query: list[str]


def current_platform() -> Platform:
    """``launchd`` on macOS, ``systemd`` elsewhere."""
    return "launchd" if sys.platform == "darwin" else "systemd"


def execsvc_program() -> Path:
    """The ``execsvc`` console script of this installation (beside the running Python)."""
    beside = Path(sys.executable).parent / "execsvc"
    if beside.exists():
        return beside.absolute()
    found = shutil.which("execsvc")
    if found is None:
        raise FileNotFoundError("the execsvc command is not installed beside this Python or on PATH")
    return Path(found).absolute()


def launchd_plist(program: Path, queue_dir: Path, *, home: Path | None = None) -> bytes:
    """The launchd agent as an XML property list (see ``launchd.plist(5)``); ``home`` is its working folder."""
    agent = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": [str(program), "run", "--queue-dir", str(queue_dir)],
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": THROTTLE_INTERVAL_S,
        "ExitTimeOut": STOP_TIMEOUT_S,
        "ProcessType": "Background",
        "WorkingDirectory": str(home or Path.home()),
        "StandardOutPath": str(queue_dir / "server.log"),
        "StandardErrorPath": str(queue_dir / "server.error.log"),
        "EnvironmentVariables": {
            "EXECSVC_QUEUE_DIR": str(queue_dir),
            "PATH": f"{program.parent}:/usr/local/bin:/opt/homebrew/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        },
    }
    return plistlib.dumps(agent, fmt=plistlib.FMT_XML, sort_keys=False)


def systemd_unit(program: Path, queue_dir: Path) -> bytes:
    """The systemd user unit (see ``systemd.service(5)``); values quoted and ``%`` escaped."""
    sections: dict[str, list[tuple[str, str]]] = {
        "Unit": [
            ("Description", "execsvc job queue worker"),
            ("StartLimitIntervalSec", "0"),  # keep restarting, as launchd's KeepAlive does
        ],
        "Service": [
            ("Type", "exec"),
            ("ExecStart", " ".join(map(_systemd_quote, (str(program), "run", "--queue-dir", str(queue_dir))))),
            ("Environment", _systemd_quote(f"EXECSVC_QUEUE_DIR={queue_dir}")),
            ("Restart", "always"),
            ("RestartSec", "2"),
            # SIGTERM to the worker alone: it drains its jobs, then stops their process groups itself.
            ("KillMode", "mixed"),
            ("TimeoutStopSec", str(STOP_TIMEOUT_S)),
            ("StandardOutput", f"append:{_systemd_escape(str(queue_dir / 'server.log'))}"),
            ("StandardError", f"append:{_systemd_escape(str(queue_dir / 'server.error.log'))}"),
        ],
        "Install": [("WantedBy", "default.target")],
    }
    lines: list[str] = []
    for name, settings in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key}={value}" for key, value in settings)
        lines.append("")
    return "\n".join(lines).encode()


def service_files(queue_dir: Path, platform: Platform | None = None, program: Path | None = None) -> ServiceFile:
    """What ``execsvc service install`` writes for this platform, and how it loads it.

    Raises :class:`ValueError` for paths a unit file cannot hold (a newline).
    """
    platform = platform or current_platform()
    program = program or execsvc_program()
    queue_dir = Path(os.path.abspath(queue_dir))
    for path in (program, queue_dir):
        if "\n" in str(path):
            raise ValueError(f"a service file cannot hold a path with a newline: {path!r}")
    if platform == "launchd":
        path = Path.home() / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
        domain = f"gui/{os.getuid()}"
        return ServiceFile(
            path=path,
            content=launchd_plist(program, queue_dir),
            load=[["launchctl", "bootstrap", domain, str(path)]],
            unload=[["launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"]],
            query=["launchctl", "print", f"{domain}/{LAUNCHD_LABEL}"],
        )
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return ServiceFile(
        path=config / "systemd" / "user" / SYSTEMD_UNIT,
        content=systemd_unit(program, queue_dir),
        load=[["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", SYSTEMD_UNIT]],
        unload=[["systemctl", "--user", "disable", "--now", SYSTEMD_UNIT], ["systemctl", "--user", "daemon-reload"]],
        query=["systemctl", "--user", "is-active", SYSTEMD_UNIT],
    )


def install(service: ServiceFile) -> list[str]:
    """Write the file (mode 0644, replacing an older one) and load it; return what was done.

    Raises :class:`subprocess.CalledProcessError` when the service manager refuses.
    """
    service.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = service.path.with_name(f".{service.path.name}.tmp")
    tmp.write_bytes(service.content)
    tmp.chmod(0o644)
    os.replace(tmp, service.path)
    done = [f"wrote {service.path}"]
    for argv in service.load:
        subprocess.run(argv, check=True, capture_output=True, text=True)
        done.append(" ".join(argv))
    return done


def uninstall(service: ServiceFile) -> list[str]:
    """Stop and unload the service and remove its file; return what was done. A service
    that is not loaded is fine."""
    done: list[str] = []
    for argv in service.unload:
        if shutil.which(argv[0]) is not None:
            subprocess.run(argv, check=False, capture_output=True, text=True)
            done.append(" ".join(argv))
    if service.path.exists():
        service.path.unlink()
        done.append(f"removed {service.path}")
    return done


def status(service: ServiceFile) -> tuple[bool, bool, str]:
    """(installed, loaded and running, what the service manager said)."""
    installed = service.path.exists()
    if shutil.which(service.query[0]) is None:
        return installed, False, f"{service.query[0]} is not available here"
    result = subprocess.run(service.query, check=False, capture_output=True, text=True)
    said = (result.stdout or result.stderr).strip()
    return installed, result.returncode == 0, said.splitlines()[0] if said else ""


def _systemd_quote(value: str) -> str:
    """A value as one word of a unit file: quoted when it holds spaces or quotes, ``%`` doubled."""
    escaped = _systemd_escape(value)
    if any(ch.isspace() or ch in "\"'\\" for ch in value):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def _systemd_escape(value: str) -> str:
    return value.replace("%", "%%")
