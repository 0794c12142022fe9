"""How ``queue-view`` draws the queue with rich: the overview, the table of jobs, times and durations.

Whatever comes from a job (id, command, fields, error) becomes a cell by :func:`plain`:
text, never rich markup, its control and format characters written as escapes
(:func:`execsvc.protocol.visible.visible`). rich is imported inside each function, so a
listing with ``--json`` never loads it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from execsvc.protocol.models import JobStatus
from execsvc.protocol.queue import JobQueue
from execsvc.protocol.visible import visible

from . import api

if TYPE_CHECKING:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text


STATUS_STYLE = {
    JobStatus.PENDING: "cyan",
    JobStatus.RUNNING: "bold yellow",
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "red",
    JobStatus.TIMEOUT: "magenta",
    JobStatus.CANCELLED: "dim",
    JobStatus.INVALID: "bold red",
    JobStatus.INTERRUPTED: "red",
}


def overview_group(queue: JobQueue, page: api.JobPage, worker: api.WorkerStatus) -> Group:
    from rich.console import Group
    from rich.text import Text

    counts = page.counts
    head = Text()
    head.append("queue   ", style="dim").append(visible(str(queue.root)) + "\n")
    head.append("worker  ", style="dim")
    if worker.serving:
        head.append("serving", style="bold green")
        head.append(f"  pid {worker.pid}, {worker.slots} slot(s), up {seconds_text(worker.uptime_s)}\n")
        if worker.allowed_commands is not None or worker.allow_shell is False:
            shell = "shell jobs allowed" if worker.allow_shell else "no shell jobs"
            programs = "any program" if worker.allowed_commands is None else ", ".join(worker.allowed_commands)
            head.append("policy  ", style="dim").append(visible(f"{shell}; programs under: {programs}") + "\n")
    else:
        head.append("not running", style="bold red").append("  (start one: execsvc run)\n")
    head.append("jobs    ", style="dim")
    for state, style in (("pending", "cyan"), ("running", "yellow"), ("completed", "green"), ("failed", "red")):
        head.append(f"{getattr(counts, state)} {state}", style=style).append("  ")
    return Group(head, jobs_table(page.jobs))


def jobs_table(jobs: list[api.JobSummary]) -> Table:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("id", no_wrap=True)
    grouped = any(job.group for job in jobs)  # a job not in the default group is on the page
    if grouped:
        table.add_column("group", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("command", overflow="ellipsis", no_wrap=True, max_width=60)
    table.add_column("exit", justify="right")
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    scheduled = any(job.priority or job.waiting or job.attempt for job in jobs)
    if scheduled:
        table.add_column("prio", justify="right")
        table.add_column("try", justify="right")
        table.add_column("waiting", overflow="fold", max_width=50)
    for job in jobs:
        duration = seconds_text(job.elapsed_s) + " …" if job.elapsed_s is not None else seconds_text(job.duration_s)
        row: list[Text] = [
            plain(job.job_id),
            *([plain(job.group or "default", style="" if job.group else "dim")] if grouped else []),
            Text(job.status.value, style=STATUS_STYLE[job.status]),
            plain(job.command or job.error or ""),  # no command: a job that cannot be read says why here
            Text("" if job.exit_code is None else str(job.exit_code)),
            Text(time_text(job.started_at)),
            Text(duration),
        ]
        if scheduled:
            row += [Text(str(job.priority or "")), Text(str(job.attempt or "")), plain(job.waiting or "")]
        table.add_row(*row)
    return table


def groups_table(groups: list[api.GroupSummary]) -> Table:
    """Each group: its slots in use and in all, whether it is paused, its pending jobs."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("group", no_wrap=True)
    table.add_column("busy", justify="right")
    table.add_column("slots", justify="right")
    table.add_column("pending", justify="right")
    table.add_column("state", no_wrap=True)
    for group in groups:
        state = Text("paused", style="bold yellow") if group.paused else Text("claiming", style="green")
        slots = "?" if group.slots is None else str(group.slots)
        table.add_row(plain(group.name), Text(str(group.running)), Text(slots), Text(str(group.pending)), state)
    return table


def schedules_table(schedules: list[api.ScheduleSummary]) -> Table:
    """One row per schedule: name, cron or interval, zone, next due time, last run and its state."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("name", "when", "zone", "next due", "last run", "state"):
        table.add_column(column, no_wrap=column != "when", overflow="fold")
    for item in schedules:
        if item.error is not None:
            table.add_row(plain(item.name), plain(f"invalid: {item.error}", "red"), *[Text("")] * 4)
            continue
        next_due = time_text(item.next_due) if item.next_due else ("disabled" if not item.enabled else "")
        state = item.last_state or ""
        table.add_row(
            plain(item.name),
            plain(item.when or ""),
            plain(item.timezone or "local"),
            Text(next_due),
            plain(item.last_run or ""),
            Text(state, style=_STATE_STYLE.get(state, "")),
        )
    return table


_STATE_STYLE = {"pending": "cyan", "running": "yellow", "completed": "green", "failed": "red"}


def plain(value: object, style: str = "") -> Text:
    """Text from a job (its id, command, fields, error) as a cell that shows it as it is: never read
    as markup, control and format characters written as escapes (``\\x1b``, ``\\u202e``)."""
    from rich.text import Text

    return Text(visible(str(value)), style=style)


def seconds_text(value: float | None) -> str:
    if value is None:
        return ""
    if not 0 <= value < 1e9:  # not a number, negative, or longer than 30 years: as it is
        return f"{value:.3g} s"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def time_text(value: datetime | None) -> str:
    if value is None:
        return ""
    try:
        local = value.astimezone()
    except (OverflowError, ValueError, OSError):  # year 1 or 9999, just past the range in this time zone
        return value.isoformat(timespec="seconds")
    today = datetime.now().astimezone().date()
    return local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M")
