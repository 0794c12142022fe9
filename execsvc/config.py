"""Worker settings: the TOML config file and its defaults (docs/service.md, "Configuration")."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .protocol.defaults import (
    DEFAULT_TIMEOUT_S,
    MAX_JOB_FILE_BYTES,
)
from .protocol.errors import ExecsvcError

if TYPE_CHECKING:
    from .protocol.models import JobLimits, JobSandbox

SandboxMode = Literal["off", "on-request", "required"]
UnknownGroups = Literal["create", "refuse"]
Executor = Literal["local", "rq"]

# The job models (pydantic), tomllib, platformdirs and the webhook policy are imported where they are
# used: `execsvc queue-dir` (status.sh) needs none, a client that submits only the models.

CONFIG_ENV = "EXECSVC_CONFIG"
"""Environment variable naming the worker's config file."""


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker can be told; times in seconds, sizes in bytes.

    - ``slots``: jobs of the ``default`` group run at once (start order stays FIFO within a group).
    - ``groups``: the other groups the config declares (``[groups.NAME] slots = N``), name to slots.
    - ``total_slots``: cap on the jobs of all groups running at once (``None``: each group's own slots only).
    - ``unknown_groups``: a job naming a group not declared: ``"create"`` it with ``slots`` slots
      (``group_created`` in ``daemon.log``) or ``"refuse"`` the job (recorded ``invalid``).
    - ``default_timeout_s``: timeout of a job that names none.
    - ``max_timeout_s``: cap on any job's ``timeout_s`` (and on ``default_timeout_s``).
    - ``kill_grace_s``: time between SIGTERM and SIGKILL when a job's process group is stopped.
    - ``drain_timeout_s``: on SIGTERM/SIGINT, how long running jobs may go on before they are stopped.
    - ``output_tail_bytes``: most bytes of each stream kept in the result record.
    - ``max_job_file_bytes``: larger job files are invalid.
    - ``settle_s``: where the kernel cannot say whether a file is still open for
      writing, a text job must be this long unchanged before it runs.
    - ``rescan_interval_s``: safety rescan of ``pending/`` in case a file event was lost.
    - ``log_max_bytes`` / ``log_backups``: rotation of ``daemon.log``.
    - ``retention_days``: when set, finished jobs older than this are removed at start
      and once a day (records, job files and logs; as ``execsvc clean``).
    - ``allowed_commands`` / ``allow_shell``: the command policy (see :mod:`execsvc.policy`);
      ``None`` / ``True`` allow every command.
    - ``refused_env``: more variable names (``fnmatch`` patterns, e.g. ``GIT_*``) a job may not
      set while ``allowed_commands`` is in force, on top of the built-in ones.
    - ``result_file_folders``: absolute folders a job's ``result_file`` may be in, besides the queue root.
    - ``webhook_hosts``: host names and networks a job's ``webhook`` may go to (see
      :mod:`execsvc.webhook_policy`); ``None``: any but link-local and metadata addresses.
    - ``sandbox`` / ``sandbox_for`` / ``sandbox_profile``: the sandbox policy (see :mod:`execsvc.sandbox`):
      ``"off"`` (a job that asks for a sandbox is refused), ``"on-request"`` (jobs that ask, and
      jobs whose ``submitted_by`` is in ``sandbox_for``, run sandboxed) or ``"required"`` (every
      job does); the default profile's additions (a :class:`~execsvc.protocol.models.JobSandbox`).
    - ``default_retries`` / ``max_retries``: retries of a job that names none, and the cap on any job's.
    - ``default_retry_delay_s`` / ``max_retry_delay_s``: the first retry's delay when a job names
      none (doubled after each attempt), and the cap on any delay.
    - ``default_limits`` / ``max_limits``: limits of a job that names none (per limit), and caps.
    - ``allow_no_timeout``: whether a JSON job may ask for no timeout (``"timeout_s": null``, a
      service); ``False`` records such a job ``invalid``, naming this switch.
    - ``default_restart_delay_s`` / ``max_restart_delay_s``: a service's first restart delay when it
      names no ``restart_delay_s`` (doubled per restart within ``restart_limit_interval_s``), and the cap.
    - ``restart_limit_burst`` / ``restart_limit_interval_s``: a service that ends more than
      ``restart_limit_burst`` times within ``restart_limit_interval_s`` seconds is recorded
      ``failed`` and not restarted (systemd's ``StartLimitBurst`` / ``StartLimitIntervalSec``).
    - ``hook_timeout_s``: how long an ``on_finish`` command may run.
    - ``webhook_timeout_s`` / ``webhook_attempts``: each webhook POST's timeout, and how many tries.
    - ``limit_check_interval_s``: how often a job with ``processes`` or ``output_bytes`` is checked.
    - ``executor`` / ``redis_url``: ``"local"`` (jobs run here) or ``"rq"`` (each claimed job is
      handed to RQ on the Redis at ``redis_url`` and run by ``execsvc remote-worker``; docs/distributed.md).
    - ``max_shipped_bytes``: on a remote worker, most bytes of each stream of a job sent back to
      the front machine's ``logs/`` (the whole logs stay on the remote machine).
    - ``config_file``: where these came from, if a file (shown in refusals and ``worker.json``).
    """

    slots: int = 1
    groups: dict[str, int] = field(default_factory=dict)
    total_slots: int | None = None
    unknown_groups: UnknownGroups = "create"
    default_timeout_s: float = DEFAULT_TIMEOUT_S
    max_timeout_s: float = 86_400.0
    kill_grace_s: float = 5.0
    drain_timeout_s: float = 15.0
    output_tail_bytes: int = 64 * 1024
    max_job_file_bytes: int = MAX_JOB_FILE_BYTES
    settle_s: float = 0.5
    rescan_interval_s: float = 60.0
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    retention_days: float | None = None
    allowed_commands: tuple[str, ...] | None = None
    allow_shell: bool = True
    refused_env: tuple[str, ...] = ()
    result_file_folders: tuple[str, ...] = ()
    webhook_hosts: tuple[str, ...] | None = None
    sandbox: SandboxMode = "on-request"
    sandbox_for: tuple[str, ...] = ()
    sandbox_profile: JobSandbox | None = None
    default_retries: int = 0
    max_retries: int = 10
    default_retry_delay_s: float = 1.0
    max_retry_delay_s: float = 3600.0
    default_limits: JobLimits | None = None
    max_limits: JobLimits | None = None
    allow_no_timeout: bool = True
    default_restart_delay_s: float = 1.0
    max_restart_delay_s: float = 60.0
    restart_limit_burst: int = 5
    restart_limit_interval_s: float = 60.0
    hook_timeout_s: float = 60.0
    webhook_timeout_s: float = 10.0
    webhook_attempts: int = 3
    limit_check_interval_s: float = 0.05
    executor: Executor = "local"
    redis_url: str | None = None
    max_shipped_bytes: int = 16 * 1024 * 1024
    config_file: str | None = None

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be at least 1")
        self._check_groups()
        if self.default_timeout_s <= 0 or self.max_timeout_s <= 0:
            raise ValueError("default_timeout_s and max_timeout_s must be > 0")
        if self.default_timeout_s > self.max_timeout_s:  # the cap wins, as it does for a job's own timeout_s
            object.__setattr__(self, "default_timeout_s", self.max_timeout_s)
        if self.retention_days is not None and self.retention_days <= 0:
            raise ValueError("retention_days must be > 0 (leave it unset to keep every job)")
        if self.kill_grace_s < 0 or self.drain_timeout_s < 0:
            raise ValueError("kill_grace_s and drain_timeout_s cannot be negative")
        if min(self.default_restart_delay_s, self.max_restart_delay_s) < 0 or self.restart_limit_interval_s <= 0:
            raise ValueError("restart delays cannot be negative, and restart_limit_interval_s must be > 0")
        if self.restart_limit_burst < 1:
            raise ValueError("restart_limit_burst must be at least 1")
        if min(self.default_retries, self.max_retries) < 0 or self.webhook_attempts < 1:
            raise ValueError("retries cannot be negative, and webhook_attempts must be at least 1")
        if (
            min(self.default_retry_delay_s, self.max_retry_delay_s) < 0
            or min(self.hook_timeout_s, self.webhook_timeout_s, self.limit_check_interval_s) <= 0
        ):
            raise ValueError(
                "retry delays cannot be negative; hook and webhook timeouts and limit_check_interval_s > 0"
            )
        from .webhook_policy import WebhookRule

        WebhookRule(self.webhook_hosts)  # raises ValueError naming a wrong entry
        if self.executor == "rq" and not self.redis_url:
            raise ValueError('executor = "rq" needs redis_url (or --redis-url, or $EXECSVC_REDIS_URL)')
        if self.max_shipped_bytes < 0:
            raise ValueError("max_shipped_bytes cannot be negative")
        if self.sandbox == "off" and self.sandbox_for:
            raise ValueError('sandbox_for needs sandbox = "on-request" or "required", not "off"')
        for key in ("allowed_commands", "result_file_folders"):
            relative = [root for root in getattr(self, key) or () if not os.path.isabs(root)]
            if relative:
                raise ValueError(f"{key} must be absolute folders, not {relative}")

    def _check_groups(self) -> None:
        from .protocol.defaults import DEFAULT_GROUP
        from .protocol.layout import group_problem

        for name, slots in self.groups.items():
            problem = group_problem(name)
            if problem is not None:
                raise ValueError(f"[groups.{name}]: {problem}")
            if name == DEFAULT_GROUP:
                raise ValueError("the default group's slots are `slots` ([worker] or [groups.default])")
            if slots < 1:
                raise ValueError(f"[groups.{name}] slots must be at least 1")
        if self.total_slots is not None and self.total_slots < 1:
            raise ValueError("total_slots must be at least 1 (leave it unset for no cap)")

    @property
    def group_slots(self) -> dict[str, int]:
        """Every declared group's slots, ``default`` (``slots``) among them."""
        from .protocol.defaults import DEFAULT_GROUP

        return {DEFAULT_GROUP: self.slots, **self.groups}

    @property
    def capacity(self) -> int:
        """The most jobs the declared groups run at once (``total_slots`` when it is less)."""
        declared = sum(self.group_slots.values())
        return declared if self.total_slots is None else min(declared, self.total_slots)


class ConfigError(ExecsvcError, ValueError):
    """The worker's config file cannot be read or holds a wrong key or value; the message says which."""


def default_config_file() -> Path:
    """``$EXECSVC_CONFIG`` if set, else ``config.toml`` in the platform's user config dir
    (``~/.config/execsvc/config.toml`` on Linux)."""
    configured = os.environ.get(CONFIG_ENV)
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("execsvc", appauthor=False)) / "config.toml"


def load_config(path: Path | None, **overrides: Any) -> WorkerConfig:
    """A :class:`WorkerConfig` from a TOML file, with ``overrides`` (not ``None``) on top.

    The file has a ``[worker]`` table (any field of :class:`WorkerConfig`
    except the policy and ``groups``), ``[groups.NAME]`` tables (``slots = N``; ``[groups.default]``
    sets ``slots``) and a ``[policy]`` table (``allowed_commands``,
    ``allow_shell``, ``refused_env``, ``result_file_folders``,
    ``webhook_hosts``, ``sandbox``, ``sandbox_for``, ``sandbox_profile``, ``allow_no_timeout``).
    ``path=None`` reads :func:`default_config_file` if it exists, else uses the defaults; an
    explicit ``path`` must exist. Raises :class:`ConfigError` naming the file and the key for anything wrong.
    """
    import tomllib

    import pydantic

    from .protocol.models import JobLimits, JobSandbox  # noqa: F401 - pydantic resolves the fields' types in this frame

    explicit = path is not None
    path = path if path is not None else default_config_file()
    values: dict[str, Any] = {}
    if explicit or path.exists():
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
        values = _flatten(document, path)
        values["config_file"] = str(path)
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return pydantic.TypeAdapter(WorkerConfig).validate_python(values, strict=False)
    except pydantic.ValidationError as exc:
        from .protocol.errors import validation_problems

        problems = validation_problems(exc)
        source = path if "config_file" in values else "the command line"
        raise ConfigError(f"the worker's settings are not valid ({source}): {problems}") from None


_POLICY_KEYS = {
    "allowed_commands",
    "allow_shell",
    "refused_env",
    "result_file_folders",
    "webhook_hosts",
    "sandbox",
    "sandbox_for",
    "sandbox_profile",
    "allow_no_timeout",
}


def _flatten(document: dict[str, Any], path: Path) -> dict[str, Any]:
    known = {field.name for field in fields(WorkerConfig)} - _POLICY_KEYS - {"config_file", "groups"}
    unknown_tables = set(document) - {"worker", "policy", "groups"}
    if unknown_tables:
        tables = "use [worker], [groups.NAME] and [policy]"
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown_tables)}; {tables}")
    worker, policy = document.get("worker", {}), document.get("policy", {})
    for table, allowed, name in ((worker, known, "worker"), (policy, _POLICY_KEYS, "policy")):
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        unknown = set(table) - allowed
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)} in [{name}]; known: {sorted(allowed)}")
    return {**worker, **policy, **_group_values(document.get("groups", {}), worker, path)}


def _group_values(groups: Any, worker: dict[str, Any], path: Path) -> dict[str, Any]:
    """The ``[groups.NAME]`` tables as :class:`WorkerConfig` values: ``groups``, and ``slots`` from
    ``[groups.default]`` (raises :class:`ConfigError` if it and ``[worker] slots`` differ)."""
    if not isinstance(groups, dict) or not all(isinstance(table, dict) for table in groups.values()):
        raise ConfigError(f"{path}: [groups] holds one table per group: [groups.NAME] with slots = N")
    for name, table in groups.items():
        if set(table) - {"slots"} or "slots" not in table:
            raise ConfigError(f"{path}: [groups.{name}] takes one key, slots = N (jobs of the group run at once)")
    values: dict[str, Any] = {"groups": {name: table["slots"] for name, table in groups.items() if name != "default"}}
    if "default" in groups:
        slots = groups["default"]["slots"]
        if "slots" in worker and worker["slots"] != slots:
            raise ConfigError(f"{path}: [worker] slots and [groups.default] slots differ; they are one setting")
        values["slots"] = slots
    return values
