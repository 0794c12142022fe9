"""``execsvc schedule add | list | remove``: recurring jobs, as schedule files in the queue's
``schedules/`` folder (docs/protocol.md, "Schedules"; docs/scheduling.md, "Recurring jobs").

Thin commands over :mod:`queue_tools.api`. Exit codes: 0 done, 1 the schedule exists
(``add`` without ``--replace``) or is not there (``remove``), 2 a usage error (a bad
expression, zone, interval or job).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_manage import QueueDirOption, fail, open_queue
from .protocol.errors import ExecsvcError

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


def register(app: typer.Typer) -> None:
    """Mount ``execsvc schedule`` on ``app``."""
    app.add_typer(schedule_app, name="schedule")
