"""``execsvc cancel | hold | release | retry | clean | wait``, ``execsvc group pause | resume | list`` and
``execsvc service install | uninstall | status``.

Thin commands over :mod:`queue_tools.api`, :mod:`execsvc.retention` and
:mod:`queue_tools.service`. Exit codes: 0 done, 1 the job or service could not
be found or acted on, 2 a usage error (``wait`` has its own: see :func:`wait`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from .distributed.cli import remote_worker
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


group_app = typer.Typer(help="Groups of jobs with their own slots: pause and resume one, list them.")


@group_app.command("pause")
def group_pause(group: Annotated[str, typer.Argument(help="The group.")], queue_dir: QueueDirOption = None) -> None:
    """Claim no more jobs of GROUP (its running jobs go on) until it is resumed; holds across restarts."""
    queue = open_queue(queue_dir)
    try:
        paused = queue.pause_group(group, paused_by="execsvc group pause")
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"group {group}: {'paused' if paused else 'already paused'} (execsvc group resume {group})")


@group_app.command("resume")
def group_resume(group: Annotated[str, typer.Argument(help="The group.")], queue_dir: QueueDirOption = None) -> None:
    """Let the jobs of GROUP be claimed again."""
    queue = open_queue(queue_dir)
    try:
        resumed = queue.resume_group(group)
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"group {group}: {'resumed' if resumed else 'was not paused'}")


@group_app.command("list")
def group_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
    queue_dir: QueueDirOption = None,
) -> None:
    """Each group: slots in use and in all, paused or not, jobs pending."""
    from queue_tools import api

    queue = open_queue(queue_dir)
    try:
        groups = api.group_summaries(queue)
    except (ExecsvcError, OSError) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps([group.model_dump(mode="json") for group in groups]))
        return
    for group in groups:
        typer.echo(f"{group.name}: {api.QueueStatus.group_line(group)}")


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


def wait(
    job_ids: Annotated[list[str], typer.Argument(help="The jobs to wait for.", show_default=False)],
    status: Annotated[
        Optional[str], typer.Option(help="success: exit 1 at the first job that does not complete.")
    ] = None,
    timeout_s: Annotated[Optional[float], typer.Option(min=0, help="Give up after this many seconds.")] = None,
    queue_dir: QueueDirOption = None,
) -> None:
    """Wait until the jobs end (woken by file events); print each as it ends.

    Exit 0 once all have ended; 1 at the first that does not complete with --status success;
    2 for an unknown job id; 124 when --timeout-s passes first. A held job, or a service that
    is not cancelled, keeps it waiting.
    """
    from queue_tools.api.ends import job_ends

    from .protocol.errors import InvalidJobId, JobNotFound
    from .protocol.models import JobStatus

    if status not in (None, "success"):
        raise fail(f"--status takes success, not {status!r}", 2)
    queue = open_queue(queue_dir)
    ended = 0
    try:
        for info in job_ends(queue, job_ids, timeout_s):
            ended += 1
            code = info.result.returncode if info.result is not None else None
            typer.echo(f"{info.job_id}: {info.status.value}" + (f" (exit code {code})" if code is not None else ""))
            if status == "success" and info.status is not JobStatus.COMPLETED:
                raise fail(f"job {info.job_id} ended {info.status.value}, not completed", 1)
    except KeyboardInterrupt:
        raise fail("stopped waiting; the jobs go on in the queue", 130) from None
    except (JobNotFound, InvalidJobId) as exc:
        raise fail(str(exc), 2) from exc
    except (ExecsvcError, OSError) as exc:
        raise fail(str(exc), 1) from exc
    left = len(dict.fromkeys(job_ids)) - ended
    if left:
        raise fail(f"{left} job(s) still not finished after {timeout_s:g} s", 124)


def register(app: typer.Typer) -> None:
    """Add these commands to the ``execsvc`` app."""
    app.command()(cancel)
    app.command()(hold)
    app.command()(release)
    app.command()(retry)
    app.command()(clean)
    app.command()(wait)
    app.add_typer(group_app, name="group")
    app.add_typer(service_app, name="service")
    app.command("remote-worker")(remote_worker)
