"""``queue-view``: the queue from a terminal (typer + rich), in the spirit of ``pueue status`` and ``tsp -l``.

A thin front over :mod:`queue_tools.api`. Every listing takes ``--json`` for
scripts; colours and live views appear only on a terminal. Whatever comes from a
job (id, command, fields, error, output) is shown as text: never read as rich
markup, its control and format characters written as escapes
(:func:`execsvc.protocol.visible.visible`; ``logs`` into a pipe passes the output as written). Exit codes: 0, 1 for
an unknown job id (or an unreadable queue, or a log that is not a regular file), 2 for a usage error.
Files of the queue are read through :mod:`queue_tools.api` and :func:`api.open_for_reading`: a
symbolic link there is never followed, a FIFO never waited on, nothing is moved. The commands
are here; the overview and the tables are drawn by :mod:`queue_tools.view_render`.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections import deque
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional

import typer

from execsvc.protocol import folder_changes
from execsvc.protocol.defaults import default_queue_dir
from execsvc.protocol.durable import NotRegularFile
from execsvc.protocol.errors import ExecsvcError
from execsvc.protocol.models import SCHEDULING_FIELDS, JobState
from execsvc.protocol.queue import JobQueue
from execsvc.protocol.visible import visible

from . import api
from .view_render import (
    STATUS_STYLE,
    groups_table,
    jobs_table,
    overview_group,
    plain,
    schedules_table,
    seconds_text,
    time_text,
)

if TYPE_CHECKING:  # rich is imported where a table or a live view is drawn, watchdog where a folder is watched:
    # a listing with --json loads neither
    from rich.console import Console

app = typer.Typer(
    name="queue-view",
    help="See the execsvc queue: counts, the worker, recent jobs, a job's record and output, daemon.log.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]


class _State:
    queue_dir: Path | None = None


def _queue() -> JobQueue:
    root = _State.queue_dir or default_queue_dir()
    if not (root / "pending").is_dir():
        _fail(f"no queue at {root} (a worker creates it when it starts: execsvc run)", 1)
    try:
        queue = JobQueue(root, create=False)
    except (ExecsvcError, OSError) as exc:
        _fail(str(exc), 1)
    missing = [state.value for state in JobState if not queue.layout.folder(state).is_dir()]
    if missing:
        _fail(f"the queue at {queue.root} has no {missing[0]}/ folder (the next worker to start creates it)", 1)
    return queue


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"queue-view: {message}", err=True)
    raise typer.Exit(code)


@app.callback(invoke_without_command=True)
def overview(
    ctx: typer.Context,
    queue_dir: Annotated[
        Optional[Path],
        typer.Option("--queue-dir", help="Queue root (default: $EXECSVC_QUEUE_DIR, else the user data dir)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Recent jobs to show.")] = 15,
    as_json: JsonOption = False,
) -> None:
    """Counts per state, whether a worker is serving, and the most recent jobs."""
    _State.queue_dir = queue_dir
    if ctx.invoked_subcommand is not None:
        return
    queue = _queue()
    page = api.list_jobs(queue, limit=limit)
    worker = api.worker_status(queue)
    if as_json:
        status = api.QueueStatus(queue_dir=str(queue.root), counts=page.counts, worker=worker)
        typer.echo(json.dumps({"status": status.model_dump(mode="json"), "jobs": _jobs_json(page)}))
        return
    _console().print(overview_group(queue, page, worker))


@app.command("list")
def list_command(
    state: Annotated[
        Optional[str],
        typer.Option(
            "--state",
            "-s",
            help="pending, running, completed or failed; or waiting (pending jobs held, not yet due, or "
            "waiting for the jobs in their 'after').",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most jobs to show.")] = 50,
    since: Annotated[Optional[str], typer.Option(help="Only jobs changed within this time: 30m, 12h, 7d.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Jobs, newest first (only the rows shown are read: fast over a large history)."""
    states = tuple(JobState)
    waiting = state == "waiting"
    if state is not None and not waiting:
        try:
            states = (JobState(state),)
        except ValueError:
            _fail(f"--state must be pending, running, completed, failed or waiting, not {state!r}", 2)
    window = _duration(since) if since else None
    page = api.list_jobs(_queue(), states=states, limit=limit, since=window, waiting_only=waiting)
    if as_json:
        typer.echo(
            json.dumps({"jobs": _jobs_json(page), "counts": page.counts.model_dump(), "more": bool(page.next_cursor)})
        )
        return
    from rich.text import Text

    console = _console()
    console.print(jobs_table(page.jobs))
    if page.next_cursor:
        console.print(Text(f"(more: --limit {limit * 2})", style="dim"))


@app.command()
def groups(as_json: JsonOption = False) -> None:
    """Each group: slots in use and in all (the worker's), paused or claiming, jobs pending."""
    found = api.group_summaries(_queue())
    if as_json:
        typer.echo(json.dumps({"groups": [group.model_dump(mode="json") for group in found]}))
        return
    _console().print(groups_table(found))


@app.command()
def schedules(as_json: JsonOption = False) -> None:
    """Recurring jobs: each schedule's cron or interval, zone, next due time, last run and its state."""
    found = api.list_schedules(_queue())
    if as_json:
        typer.echo(json.dumps([item.model_dump(mode="json", exclude_none=True) for item in found]))
        return
    if not found:
        typer.echo("no schedules (execsvc schedule add, or a file in the queue's schedules/)")
        return
    _console().print(schedules_table(found))


@app.command()
def show(job_id: str, as_json: JsonOption = False, lines: Annotated[int, typer.Option("-n", min=1)] = 20) -> None:
    """A job's record, then the last lines of its stdout and stderr."""
    queue = _queue()
    detail = _detail(queue, job_id)
    out = api.read_output(queue, detail.job_id, "stdout", tail_lines=lines)
    err = api.read_output(queue, detail.job_id, "stderr", tail_lines=lines)
    if as_json:
        payload = detail.model_dump(mode="json")
        payload["stdout_tail"], payload["stderr_tail"] = out.text, err.text
        typer.echo(json.dumps(payload))
        return
    from rich.table import Table
    from rich.text import Text

    console = _console()
    table = Table.grid(padding=(0, 2))
    table.add_row("job", plain(detail.job_id, style="bold"))
    table.add_row("state", Text(detail.status.value, style=STATUS_STYLE[detail.status]))
    table.add_row("command", plain(detail.command or ""))
    if detail.group is not None:
        table.add_row("group", plain(detail.group))
    for key in ("description", "purpose", "cwd", "timeout_s", "retry_of", "submitted_by", *SCHEDULING_FIELDS):
        if detail.spec and key in detail.spec and key != "group":  # the group: its own row above
            table.add_row(key, plain(detail.spec[key]))
    if detail.waiting is not None:
        table.add_row("waiting", plain(detail.waiting.reason))
    if detail.position is not None:
        table.add_row("in line", plain(f"{detail.position} ({detail.note})"))
    if detail.elapsed_s is not None:
        table.add_row("running for", seconds_text(detail.elapsed_s))
    result = detail.result
    if result is not None:
        table.add_row("exit code", "" if result.returncode is None else str(result.returncode))
        table.add_row("started", time_text(result.started_at))
        table.add_row("ended", time_text(result.completed_at))
        table.add_row("duration", seconds_text(result.duration_s))
        if result.attempt is not None:
            table.add_row("attempt", str(result.attempt))
        if result.error:
            table.add_row("error", plain(result.error, style="red"))
    table.add_row("path", plain(detail.path))
    console.print(table)
    for name, chunk in (("stdout", out), ("stderr", err)):
        if chunk.problem is not None:
            console.rule(f"{name} (not read)", style="dim")
            console.print(plain(chunk.problem, style="red"))
            continue
        console.rule(f"{name} ({chunk.size_bytes} bytes, last {lines} lines)", style="dim")
        text = visible(chunk.text, keep="\n\t")
        console.out(text, end="" if text.endswith("\n") or not text else "\n")


@app.command()
def logs(
    job_id: str,
    stderr: Annotated[bool, typer.Option("--stderr", help="Show stderr instead of stdout.")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing as the job writes; end when it ends.")
    ] = False,
) -> None:
    """A job's whole output (stdout, or stderr), and with --follow what it prints until it ends."""
    queue = _queue()
    detail = _detail(queue, job_id)
    stream: api.Stream = "stderr" if stderr else "stdout"
    offset = 0
    on_terminal = sys.stdout.isatty()  # a terminal gets control characters made visible; a pipe the bytes as written
    with folder_changes([queue.layout.logs, queue.layout.completed, queue.layout.failed], "changes") as changed:
        while True:
            chunk = api.read_output(queue, detail.job_id, stream, offset=offset, max_bytes=1024 * 1024)
            if chunk.problem is not None:  # a FIFO or a link at the log: named, never read or waited on
                _fail(visible(chunk.problem), 1)
            sys.stdout.write(visible(chunk.text, keep="\n\t") if on_terminal else chunk.text)
            sys.stdout.flush()
            offset = chunk.next_offset
            if chunk.complete:
                return
            if offset < chunk.size_bytes:
                continue  # more than one page to print
            if not follow:
                return
            changed(1.0)


@app.command()
def watch(limit: Annotated[int, typer.Option("--limit", "-n", min=1)] = 15) -> None:
    """The overview, redrawn whenever a queue folder changes (file events). Ctrl-C to leave."""
    queue = _queue()
    if not sys.stdout.isatty():
        _fail("watch needs a terminal; use `queue-view --json` or `queue-view list --json` in scripts", 2)
    folders = [queue.layout.folder(state) for state in JobState]
    from rich.live import Live

    try:
        with folder_changes(folders, "changes") as changed, Live(console=_console(), auto_refresh=False) as live:
            while True:
                page = api.list_jobs(queue, limit=limit)
                live.update(overview_group(queue, page, api.worker_status(queue)), refresh=True)
                changed(1.0)  # also once a second, so running times move on
    except KeyboardInterrupt:
        pass


@app.command("daemon-log")
def daemon_log(
    lines: Annotated[int, typer.Option("-n", min=1, help="Lines to show.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C to stop).")] = False,
) -> None:
    """The last lines of daemon.log, and with --follow the new ones as the worker writes them."""
    queue = _queue()
    path = queue.layout.daemon_log
    try:
        if not follow:
            for line in api.daemon_log_tail(queue, lines):
                typer.echo(visible(line))
            return
        with folder_changes([queue.root], "changes") as changed:
            handle = api.open_for_reading(path)  # reopened on rotation below
            # The tail comes from the handle that then follows: a line written meanwhile is shown once.
            for raw in deque(handle, maxlen=lines):
                typer.echo(visible(raw.decode("utf-8", errors="replace").rstrip("\n")))
            while True:
                data = handle.read()
                if data:
                    sys.stdout.write(visible(data.decode("utf-8", errors="replace"), keep="\n"))
                    sys.stdout.flush()
                elif _rotated(handle, path):
                    handle.close()
                    handle = api.open_for_reading(path)
                    continue
                changed(5.0)
    except NotRegularFile as exc:
        _fail(f"{visible(str(exc))}; it is not read", 1)
    except KeyboardInterrupt:
        pass


# ----- helpers (the drawing is view_render's) -------------------------------------------


def _jobs_json(page: api.JobPage) -> list[dict[str, object]]:
    return [job.model_dump(mode="json") for job in page.jobs]


def _detail(queue: JobQueue, job_id: str) -> api.JobDetail:
    try:
        return api.get_job(queue, job_id)
    except ExecsvcError as exc:  # JobNotFound, InvalidJobId
        _fail(str(exc), 1)
    except ValueError as exc:  # a file whose content or times no front can hold
        _fail(f"job {job_id!r} cannot be shown: {exc}", 1)


def _duration(text: str) -> timedelta:
    try:
        return api.parse_duration(text)
    except ValueError as exc:
        _fail(str(exc), 2)


def _rotated(handle: object, path: Path) -> bool:
    try:
        return os.lstat(path).st_ino != os.fstat(handle.fileno()).st_ino  # type: ignore[attr-defined]
    except FileNotFoundError:
        return False


def main() -> None:
    """Console-script entry point: a queue that cannot be read ends it with a sentence and exit code 1."""
    try:
        app()
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        typer.echo(f"queue-view: the queue cannot be read: {exc.strerror or exc}{where}", err=True)
        sys.exit(1)
    finally:
        gc.freeze()  # the process ends: no last collection over start-up's objects (see execsvc.cli.main)
