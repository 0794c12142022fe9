"""``execsvc cancel | hold | release | retry | clean``, ``execsvc schedule add | list | remove`` and
``execsvc service install | uninstall | status``.

Thin commands over :mod:`queue_tools.api`, :mod:`execsvc.retention` and
:mod:`queue_tools.service`. Exit codes: 0 done, 1 the job or service could not
be found or acted on, 2 a usage error.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .protocol.defaults import default_queue_dir
from .protocol.errors import ExecsvcError

if TYPE_CHECKING:  # each command imports what it uses when it runs (see execsvc.cli)
    from queue_tools import api, service

    from .protocol import JobQueue

QueueDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--queue-dir", help="Queue root (default: $EXECSVC_QUEUE_DIR, else the user data dir).", show_default=False
    ),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"execsvc: {message}", err=True)
    return typer.Exit(code)


def open_queue(queue_dir: Path | None) -> JobQueue:
    from .protocol import JobQueue

    try:
        return JobQueue(queue_dir if queue_dir is not None else default_queue_dir())
    except (ExecsvcError, OSError) as exc:
        raise fail(str(exc)) from exc


def cancel(job_id: Annotated[str, typer.Argument(help="The job to cancel.")], queue_dir: QueueDirOption = None) -> None:
    """Cancel a job: a pending one never runs; a running one has its process group stopped (waits up to 10 s)."""
    from queue_tools import api

    queue = open_queue(queue_dir)
    try:
        done = api.cancel_job(queue, job_id, requested_by="execsvc cancel")
    except KeyboardInterrupt:
        raise fail(f"stopped waiting; the cancel request for {job_id} stands", 130) from None
    except (ExecsvcError, OSError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(cancel_message(done))


def cancel_message(done: api.Cancelled) -> str:
    """The line ``execsvc cancel`` prints for what :func:`queue_tools.api.cancel_job` did."""
    from queue_tools.api import CancelOutcome

    job = done.job
    if done.outcome is CancelOutcome.CANCELLED:
        return f"{job.job_id}: cancelled (it was pending and will never run)"
    if done.outcome is CancelOutcome.STOPPED:
        return f"{job.job_id}: cancel requested; the worker stopped its process group and recorded it cancelled"
    if done.outcome is CancelOutcome.ALREADY_FINISHED and done.serving is not None:
        return f"{job.job_id}: it finished ({job.status.value}) before the cancel took effect"
    if done.outcome is CancelOutcome.ALREADY_FINISHED:
        return f"{job.job_id}: already finished ({job.status.value}); nothing to cancel"
    if not done.serving:
        return f"{job.job_id}: cancel requested, but no worker is serving; it is recorded when one starts"
    stopping = f"still stopping after {done.waited_s:g} s"
    return f"{job.job_id}: cancel requested; the worker stops its process group ({stopping})"


def hold(job_id: Annotated[str, typer.Argument(help="A pending job.")], queue_dir: QueueDirOption = None) -> None:
    """Hold a pending job: it stays pending (pending/.held/) but does not start until released."""
    queue = open_queue(queue_dir)
    try:
        info = queue.hold(job_id)
    except (ExecsvcError, ValueError, OSError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"{info.job_id}: held (execsvc release {info.job_id} lets it start)")


def release(job_id: Annotated[str, typer.Argument(help="A held job.")], queue_dir: QueueDirOption = None) -> None:
    """Release a held job: it goes back into pending/ at its old place in line."""
    queue = open_queue(queue_dir)
    try:
        info = queue.release(job_id)
    except (ExecsvcError, ValueError, OSError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"{info.job_id}: {'released' if not info.held else 'still held'} ({info.state.value})")


def retry(job_id: Annotated[str, typer.Argument(help="A finished job.")], queue_dir: QueueDirOption = None) -> None:
    """Enqueue a finished job again under a new id (printed), linked to the old one by retry_of."""
    from queue_tools import api

    queue = open_queue(queue_dir)
    try:
        typer.echo(api.retry_job(queue, job_id))
    except (ExecsvcError, ValueError, OSError) as exc:
        raise fail(str(exc)) from exc


def clean(
    older_than: Annotated[str, typer.Option(help="Age of the jobs to remove: 30d, 12h, 90m...")] = "30d",
    state: Annotated[str, typer.Option(help="completed, failed or all.")] = "all",
    archive: Annotated[
        Optional[Path], typer.Option(help="Move the files under this folder instead of deleting them.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would go; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    queue_dir: QueueDirOption = None,
) -> None:
    """Remove (or archive) finished jobs' records, job files and logs older than --older-than."""
    from queue_tools import api

    from .protocol import FINISHED_STATES
    from .protocol.models import JobState
    from .retention import clean as clean_jobs

    try:
        age = api.parse_duration(older_than)
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    if state not in ("completed", "failed", "all"):
        raise fail(f"--state must be completed, failed or all, not {state!r}", 2)
    states = FINISHED_STATES if state == "all" else (JobState(state),)
    queue = open_queue(queue_dir)
    try:
        report = clean_jobs(queue, older_than_s=age.total_seconds(), states=states, archive=archive, dry_run=dry_run)
    except OSError as exc:
        raise fail(f"cleaning stopped: {exc}") from exc
    if as_json:
        typer.echo(json.dumps({"removed": report.removed, "bytes_freed": report.bytes_freed, "dry_run": dry_run}))
        return
    verb = "would remove" if dry_run else ("archived" if archive else "removed")
    typer.echo(f"{verb} {report.count} job(s), {report.bytes_freed} bytes, older than {older_than}")


schedule_app = typer.Typer(
    help="Recurring jobs: schedule files in the queue's schedules/ folder, run by the worker at each due time."
)


@schedule_app.command("add")
def schedule_add(
    name: Annotated[str, typer.Argument(help="The schedule's name (letters, digits, _ . -); runs are NAME-<time>.")],
    command: Annotated[
        Optional[list[str]], typer.Argument(help="Program and arguments (after --).", show_default=False)
    ] = None,
    cron: Annotated[Optional[str], typer.Option(help="A 5-field cron expression, e.g. '*/5 * * * *'.")] = None,
    every: Annotated[Optional[str], typer.Option(help="An interval instead of --cron: 10m, 2h, 1d, 30s.")] = None,
    timezone: Annotated[
        Optional[str], typer.Option(help="IANA zone the cron fields are read in. [default: the machine's]")
    ] = None,
    overlap: Annotated[
        str, typer.Option(help="skip: no new run while the last is pending or running; queue: enqueue it anyway.")
    ] = "skip",
    catch_up: Annotated[
        bool, typer.Option("--catch-up", help="At the worker's start, run once for times missed while it was down.")
    ] = False,
    disabled: Annotated[bool, typer.Option("--disabled", help="Write it disabled: no runs until enabled.")] = False,
    replace: Annotated[bool, typer.Option("--replace", help="Replace a schedule of that name.")] = False,
    shell: Annotated[Optional[str], typer.Option(help="A command line run by /bin/sh -c.")] = None,
    timeout_s: Annotated[Optional[float], typer.Option(min=0.001, help="Each run's timeout in seconds.")] = None,
    cwd: Annotated[Optional[Path], typer.Option(help="Working directory (default: the current one).")] = None,
    env: Annotated[
        Optional[list[str]], typer.Option("--env", help="KEY=VALUE added to the runs' environment (repeatable).")
    ] = None,
    description: Annotated[Optional[str], typer.Option(help="What the runs are for.")] = None,
    priority: Annotated[Optional[int], typer.Option(help="Higher starts first among ready jobs.")] = None,
    retries: Annotated[Optional[int], typer.Option(min=0, help="Attempts after a failure or timeout.")] = None,
    queue_dir: QueueDirOption = None,
) -> None:
    """Add a schedule: `execsvc schedule add nightly --cron '30 2 * * *' -- make backup`."""
    from queue_tools import api
    from queue_tools.submit import command_spec, parse_env, scheduling_fields

    if (cron is None) == (every is None):
        raise fail("give --cron or --every (one of them)", 2)
    if bool(command) == bool(shell):
        raise fail("give the command after --, or --shell 'line' (one of them)", 2)
    if overlap not in ("skip", "queue"):
        raise fail(f"--overlap must be skip or queue, not {overlap!r}", 2)
    try:
        options = scheduling_fields(priority=priority, retries=retries)
        spec = command_spec(
            command, shell, cwd=str(cwd or Path.cwd()), env=parse_env(env), timeout_s=timeout_s,
            description=description, options=options,
        )  # fmt: skip
        job = {**spec.model_dump(exclude_unset=True), "submitted_by": f"schedule {name}"}
        queue = open_queue(queue_dir)
        added = api.add_schedule(
            queue, name, job, cron=cron, every_s=_every_s(every), timezone=timezone,
            overlap="queue" if overlap == "queue" else "skip", catch_up=catch_up, enabled=not disabled,
            replace=replace,
        )  # fmt: skip
    except FileExistsError as exc:
        raise fail(f"a schedule named {name!r} exists; --replace to replace it", 1) from exc
    except (ExecsvcError, ValueError) as exc:
        raise fail(str(exc), 2) from exc
    except OSError as exc:
        raise fail(str(exc)) from exc
    next_due = added.next_due.isoformat() if added.next_due else "never (disabled)"
    typer.echo(f"schedule {name}: {added.when}, next run {next_due}")


def _every_s(every: str | None) -> int | None:
    """``--every 10m`` as whole seconds; ``ValueError`` for anything else, or less than 1 s."""
    from queue_tools import api

    if every is None:
        return None
    seconds = api.parse_duration(every).total_seconds()
    if seconds < 1 or not seconds.is_integer():
        raise ValueError(f"--every must be a whole number of seconds, at least 1 (not {every})")
    return int(seconds)


@schedule_app.command("list")
def schedule_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON: one object per schedule.")] = False,
    queue_dir: QueueDirOption = None,
) -> None:
    """List the schedules: name, cron or interval, zone, next due time, last run and where it is."""
    from queue_tools import api

    from .protocol.visible import visible

    queue = open_queue(queue_dir)
    try:
        found = api.list_schedules(queue)
    except OSError as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json", exclude_none=True) for s in found]))
        return
    if not found:
        typer.echo(f"no schedules in {queue.layout.schedules}")
        return
    for s in found:
        if s.error is not None:
            typer.echo(f"{s.name}  INVALID: {visible(s.error)}")
            continue
        next_due = s.next_due.astimezone().isoformat(timespec="seconds") if s.next_due else "disabled"
        last = f"{s.last_run} ({s.last_state})" if s.last_run else "no run yet"
        typer.echo(f"{s.name}  {s.when}  zone={s.timezone or 'local'}  next={next_due}  last={last}")


@schedule_app.command("remove")
def schedule_remove(
    name: Annotated[str, typer.Argument(help="The schedule to remove (its runs already enqueued stay).")],
    queue_dir: QueueDirOption = None,
) -> None:
    """Remove a schedule: no further runs."""
    from queue_tools import api

    queue = open_queue(queue_dir)
    try:
        removed = api.remove_schedule(queue, name)
    except (ValueError, OSError) as exc:
        raise fail(str(exc), 2 if isinstance(exc, ValueError) else 1) from exc
    if not removed:
        raise fail(f"no schedule named {name!r}")
    typer.echo(f"removed schedule {name}")


service_app = typer.Typer(help="Keep the worker running: launchd agent (macOS) or systemd user unit (Linux).")


@service_app.command("install")
def service_install(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the file and the commands; change nothing.")
    ] = False,
    queue_dir: QueueDirOption = None,
) -> None:
    """Write the agent or unit with this installation's paths, and load it."""
    from queue_tools import service

    unit = _service_file(queue_dir)
    if dry_run:
        typer.echo(f"# {unit.path}")
        typer.echo(unit.content.decode(), nl=False)
        for argv in unit.load:
            typer.echo(f"# then: {' '.join(argv)}")
        return
    try:
        for line in service.install(unit):
            typer.echo(line)
    except (OSError, subprocess.CalledProcessError) as exc:
        said = getattr(exc, "stderr", "") or str(exc)
        raise fail(f"the service could not be loaded: {said.strip()}") from exc


@service_app.command("uninstall")
def service_uninstall(queue_dir: QueueDirOption = None) -> None:
    """Stop the service and remove its file."""
    from queue_tools import service

    for line in service.uninstall(_service_file(queue_dir)):
        typer.echo(line)


@service_app.command("status")
def service_status(queue_dir: QueueDirOption = None) -> None:
    """Is the service installed and running? Exit 0 only when it runs."""
    from queue_tools import service

    unit = _service_file(queue_dir)
    installed, running, said = service.status(unit)
    typer.echo(f"file:    {unit.path} ({'installed' if installed else 'not installed'})")
    typer.echo(f"service: {'running' if running else 'not running'}{f' ({said})' if said else ''}")
    raise typer.Exit(0 if running else 1)


def _service_file(queue_dir: Path | None) -> service.ServiceFile:
    from queue_tools import service

    try:
        return service.service_files(queue_dir if queue_dir is not None else default_queue_dir())
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc


def register(app: typer.Typer) -> None:
    """Add these commands to the ``execsvc`` app."""
    app.command()(cancel)
    app.command()(hold)
    app.command()(release)
    app.command()(retry)
    app.command()(clean)
    app.add_typer(schedule_app, name="schedule")
    app.add_typer(service_app, name="service")
