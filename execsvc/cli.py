"""The ``execsvc`` command: ``run`` (the worker), ``submit``, ``mcp``, ``web``; the rest in :mod:`.cli_manage`.

The queue root comes from ``--queue-dir``, else ``$EXECSVC_QUEUE_DIR``, else
the platform's user data dir (see :func:`execsvc.protocol.defaults.default_queue_dir`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_manage import QueueDirOption, fail, open_queue, register
from .cli_schedule import register as register_schedules
from .protocol import __version__
from .protocol.defaults import DEFAULT_TIMEOUT_S, default_queue_dir
from .protocol.errors import ExecsvcError

# Each command imports what only it needs (the worker, pydantic, the submit helpers, the MCP SDK)
# when it runs: `execsvc submit` loads no worker module, watchdog, psutil or MCP SDK.

app = typer.Typer(
    name="execsvc",
    help="A file-queue job executor: drop job files into pending/, a worker runs them and records results.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion, --show-completion (docs/cli.md, "Shell completion")
    pretty_exceptions_enable=False,
)


class StderrLevel(str, Enum):
    """Which worker events ``execsvc run`` also prints on stderr."""

    AUTO = "auto"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    OFF = "off"

    def logging_level(self, terminal: bool) -> int | None:
        """The ``logging`` level to print from (``None``: nothing); ``auto`` is info on a terminal."""
        import logging

        if self is StderrLevel.AUTO:
            return logging.INFO if terminal else logging.WARNING
        return {
            StderrLevel.INFO: logging.INFO,
            StderrLevel.WARNING: logging.WARNING,
            StderrLevel.ERROR: logging.ERROR,
        }.get(self)


def _queue_dir(option: Path | None) -> Path:
    return option if option is not None else default_queue_dir()


@app.command()
def run(
    queue_dir: QueueDirOption = None,
    config_file: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            help="The worker's TOML config file ([worker] settings, [policy] allowed_commands and allow_shell). "
            "Default: $EXECSVC_CONFIG, else ~/.config/execsvc/config.toml if it exists. Options given here win.",
        ),
    ] = None,
    slots: Annotated[
        Optional[int], typer.Option(min=1, help="Jobs of the default group run at once (FIFO). [default: 1]")
    ] = None,
    timeout_s: Annotated[
        Optional[float],
        typer.Option(min=0.001, help=f"Timeout of a job that names none, in seconds. [default: {DEFAULT_TIMEOUT_S:g}]"),
    ] = None,
    max_timeout_s: Annotated[
        Optional[float], typer.Option(min=0.001, help="Cap on any job's timeout_s, in seconds. [default: 86400]")
    ] = None,
    kill_grace_s: Annotated[
        Optional[float], typer.Option(min=0, help="Seconds between SIGTERM and SIGKILL. [default: 5]")
    ] = None,
    drain_timeout_s: Annotated[
        Optional[float],
        typer.Option(
            min=0, help="On SIGTERM/SIGINT, seconds running jobs may go on before they are stopped. [default: 15]"
        ),
    ] = None,
    retention_days: Annotated[
        Optional[float],
        typer.Option(min=0.001, help="Remove finished jobs older than this many days, at start and daily."),
    ] = None,
    executor: Annotated[
        Optional[str], typer.Option(help="local (run jobs here, the default) or rq (hand them to remote workers).")
    ] = None,
    redis_url: Annotated[
        Optional[str],
        typer.Option(envvar="EXECSVC_REDIS_URL", help="Redis for --executor rq: redis://[:pw@]host:port/0"),
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Drop an example job into pending/ at start, to watch one go through.")
    ] = False,
    stderr_level: Annotated[
        StderrLevel,
        typer.Option(
            help="Events also printed on stderr (daemon.log gets them all). auto: every event on a terminal, "
            "else warnings and errors only (a service's stderr file would copy daemon.log line for line).",
        ),
    ] = StderrLevel.AUTO,
) -> None:
    """Run the worker in the foreground until SIGTERM or Ctrl-C (events to daemon.log, and to stderr).

    Exits 0 after a stop, 1 when it cannot serve (another worker serves the queue), 75 when the
    queue root, pending/ or running/ was removed or replaced while it served.
    """
    from .config import load_config
    from .protocol.models import JobSpec
    from .protocol.queue import JobQueue
    from .worker import Worker

    try:
        config = load_config(
            config_file,
            slots=slots,
            default_timeout_s=timeout_s,
            max_timeout_s=max_timeout_s,
            kill_grace_s=kill_grace_s,
            drain_timeout_s=drain_timeout_s,
            retention_days=retention_days,
            executor=executor,
            redis_url=redis_url,
        )
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    worker = Worker(
        _queue_dir(queue_dir),
        config,
        stderr_level=stderr_level.logging_level(sys.stderr.isatty()),
        subreaper=True,  # this process owns all its children: it reaps what its jobs leave behind
    )
    try:
        worker.initialize()
    except ExecsvcError as exc:
        raise fail(str(exc)) from exc
    except KeyboardInterrupt:
        raise fail("interrupted while starting", 130) from None
    # Serve from where jobs run by default (as a systemd user service does), so the runner can start
    # those jobs with posix_spawn, which cannot change folders (see execsvc.runner.JobProcess._spawn).
    with contextlib.suppress(OSError):
        os.chdir(Path.home())
    try:
        if demo:
            JobQueue(worker.layout.root, create=False).submit(
                JobSpec(command="echo", args=["Hello, World!"], description="example job from execsvc run --demo"),
                submitted_by="execsvc run --demo",
            )
        while worker.loop():
            pass
    finally:
        worker.shutdown()
    if worker.exit_code:  # the queue's folders were removed or replaced: see Worker._check_queue
        raise typer.Exit(worker.exit_code)


@app.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
def submit(
    command: Annotated[
        Optional[list[str]],
        typer.Argument(help="Program and arguments, run without a shell (put them after --).", show_default=False),
    ] = None,
    shell: Annotated[Optional[str], typer.Option(help="A command line run by /bin/sh -c.")] = None,
    file: Annotated[
        Optional[Path], typer.Option(exists=True, dir_okay=False, help="A job file to enqueue (.json, .sh or .txt).")
    ] = None,
    job_id: Annotated[Optional[str], typer.Option("--id", help="Job id (default: a fresh time-ordered id).")] = None,
    timeout_s: Annotated[
        Optional[str], typer.Option(help="The job's timeout in seconds; none: no timeout (a service).")
    ] = None,
    cwd: Annotated[Optional[Path], typer.Option(help="Working directory (default: the current one).")] = None,
    env: Annotated[
        Optional[list[str]], typer.Option("--env", help="KEY=VALUE added to the job's environment (repeatable).")
    ] = None,
    description: Annotated[Optional[str], typer.Option(help="What the job is for.")] = None,
    priority: Annotated[Optional[int], typer.Option(help="Higher starts first among ready jobs. [default: 0]")] = None,
    after: Annotated[
        Optional[list[str]], typer.Option("--after", help="Run after this job id (repeatable).", show_default=False)
    ] = None,
    after_mode: Annotated[
        Optional[str], typer.Option(help="success: every --after job must complete (else cancelled); any: all ended.")
    ] = None,
    not_before: Annotated[Optional[str], typer.Option(help="Start no earlier than this ISO 8601 time.")] = None,
    delay_s: Annotated[
        Optional[float], typer.Option(min=0, help="Start no earlier than this many seconds from now.")
    ] = None,
    retries: Annotated[Optional[int], typer.Option(min=0, help="Attempts after a failure or timeout.")] = None,
    retry_delay_s: Annotated[
        Optional[float], typer.Option(min=0, help="Seconds before the first retry (doubled each time).")
    ] = None,
    restart: Annotated[Optional[str], typer.Option(help="A service: no, on-failure or always.")] = None,
    restart_delay_s: Annotated[
        Optional[float], typer.Option(min=0, help="Seconds before a service's restart (doubled while it fails).")
    ] = None,
    ready_line: Annotated[Optional[str], typer.Option(help="Ready once a line of its output matches.")] = None,
    ready_port: Annotated[Optional[int], typer.Option(help="Ready once 127.0.0.1:PORT accepts.")] = None,
    cpu_s: Annotated[Optional[float], typer.Option(min=0.001, help="Limit: CPU seconds.")] = None,
    memory_mb: Annotated[Optional[int], typer.Option(min=1, help="Limit: address space in MiB.")] = None,
    open_files: Annotated[Optional[int], typer.Option(min=1, help="Limit: open files.")] = None,
    processes: Annotated[Optional[int], typer.Option(min=1, help="Limit: processes at once.")] = None,
    output_bytes: Annotated[Optional[int], typer.Option(min=1, help="Limit: bytes per output stream.")] = None,
    on_finish: Annotated[
        Optional[str], typer.Option(help="Shell line run after the job ($EXECSVC_RECORD: its record).")
    ] = None,
    webhook: Annotated[Optional[str], typer.Option(help="http(s) URL that gets the record by POST.")] = None,
    sandbox: Annotated[
        bool, typer.Option("--sandbox", help="Run it in the worker's sandbox (bwrap): no network, read-only files.")
    ] = False,
    sandbox_network: Annotated[
        bool, typer.Option("--sandbox-network", help="Sandboxed, but sharing the host's network.")
    ] = False,
    sandbox_writable: Annotated[
        Optional[list[str]],
        typer.Option(
            "--sandbox-writable", help="Sandboxed, and this path writable too (repeatable).", show_default=False
        ),
    ] = None,
    hold: Annotated[bool, typer.Option("--hold", help="Submit it held: it waits for execsvc release.")] = False,
    group: Annotated[
        Optional[str], typer.Option(help="The group whose slots it runs in (execsvc group list). [default: default]")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the job, print its output, exit with its exit code.")
    ] = False,
    queue_dir: QueueDirOption = None,
) -> None:
    """Enqueue a job and print its id: a command (after --), --shell 'line', --file, or a script on stdin.

    With --wait: print the job's stdout and stderr when it ends and exit with its exit code
    (124 on timeout, 128+N when killed by signal N).
    """
    from pydantic import ValidationError

    from queue_tools.submit import (
        command_spec,
        copy_output,
        describe_end,
        exit_code,
        option_problem,
        parse_env,
        parse_timeout,
        sandbox_field,
        scheduling_fields,
        submit_file,
    )

    from .protocol.errors import validation_problems
    from .protocol.visible import visible

    queue = open_queue(queue_dir)
    options = scheduling_fields(
        priority=priority,
        after=after,
        after_mode=after_mode,
        not_before=not_before,
        delay_s=delay_s,
        retries=retries,
        retry_delay_s=retry_delay_s,
        restart=restart,
        restart_delay_s=restart_delay_s,
        ready_when={"line": ready_line, "port": ready_port} if ready_line or ready_port else None,
        cpu_s=cpu_s,
        memory_mb=memory_mb,
        open_files=open_files,
        processes=processes,
        output_bytes=output_bytes,
        on_finish=on_finish,
        webhook=webhook,
        sandbox=sandbox_field(sandbox, network=sandbox_network, writable=sandbox_writable),
        group=group,
    )
    problem = option_problem(
        command=command,
        shell=shell,
        file=file,
        options=options,
        timeout_s=timeout_s,
        cwd=cwd,
        env=env,
        description=description,
        stdin_is_terminal=sys.stdin.isatty(),
    )
    if problem is not None:
        raise fail(problem, 2)
    try:
        timeout = parse_timeout(timeout_s)
        if file is not None:
            job = submit_file(queue, file, job_id=job_id, held=hold)
        elif command or shell:
            spec = command_spec(
                command,
                shell,
                cwd=str(cwd or os.getcwd()),
                env=parse_env(env),
                timeout_s=timeout,
                description=description,
                options=options,
            )
            job = queue.submit(spec, job_id=job_id, submitted_by="execsvc submit", held=hold)
        else:
            job = queue.submit_script(sys.stdin.buffer.read(), job_id=job_id, held=hold)
    except ValidationError as exc:
        raise fail(f"the job is not valid: {validation_problems(exc)}", 2) from exc
    except (ExecsvcError, ValueError) as exc:
        raise fail(str(exc), 2) from exc
    if queue.worker_info() is None:
        typer.echo(
            f"execsvc: note: no worker is serving {queue.root}; the job waits in pending/ until one "
            "starts (execsvc run)",
            err=True,
        )
    if not wait:
        typer.echo(job)
        return
    typer.echo(f"execsvc: job {job} submitted", err=True)
    try:
        info = queue.wait(job, until_ready=True)
    except KeyboardInterrupt:
        raise fail(f"stopped waiting; job {job} goes on in the queue", 130) from None
    except (ExecsvcError, OSError) as exc:  # the job is in the queue: say so, and where to look
        raise fail(
            f"job {job} was submitted, but waiting for it failed ({exc}); see where it stands with "
            f"queue-view show {job}",
            1,
        ) from None
    if info.ready:  # a service that is up (ready_when): it goes on running
        raise fail(f"job {job} is running and ready", 0)
    for problem in copy_output(queue, info, sys.stdout.buffer, sys.stderr.buffer):
        typer.echo(visible(problem), err=True)
    note = describe_end(info)
    if note:
        typer.echo(note, err=True)
    raise typer.Exit(exit_code(info))


@app.command()
def mcp(
    queue_dir: QueueDirOption = None,
    log_level: Annotated[
        str, typer.Option(help="Level of the server's log on stderr: DEBUG, INFO, WARNING or ERROR.")
    ] = "WARNING",
    auto_start: Annotated[
        bool,
        typer.Option(
            help="Start a worker when none serves the queue (the user service if installed, else "
            "`execsvc run` detached). Also EXECSVC_MCP_AUTO_START=0.",
        ),
    ] = True,
    job_cwd: Annotated[
        Path | None,
        typer.Option(
            help="Folder jobs run in unless they name one (default: the folder the server is started "
            "in; the home folder when that is /). Also EXECSVC_MCP_JOB_CWD.",
        ),
    ] = None,
) -> None:
    """Serve the queue to an MCP client over stdio (enqueue, wait, read and search output, cancel).

    Configure your client to start `execsvc mcp`; stdout carries only MCP messages.
    """
    from queue_tools.mcp import serve  # imported here: the worker does not need the SDK

    level = log_level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise fail(f"--log-level must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}", 2)
    if os.environ.get("EXECSVC_MCP_AUTO_START", "").strip().lower() in ("0", "false", "no", "off"):
        auto_start = False
    if job_cwd is None and os.environ.get("EXECSVC_MCP_JOB_CWD"):
        job_cwd = Path(os.environ["EXECSVC_MCP_JOB_CWD"])
    serve(queue_dir, log_level=level, auto_start=auto_start, job_cwd=job_cwd)  # type: ignore[arg-type]


@app.command()
def web(
    queue_dir: QueueDirOption = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; keep it loopback on a shared machine.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one).")] = 8765,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Show the queue; hide and refuse every action.")
    ] = False,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the URL in a browser.")] = False,
) -> None:
    """Serve a live web dashboard of the queue; open the URL it prints (it carries the access token)."""
    from queue_tools.web import serve  # imported here: the worker does not need Starlette

    try:
        serve(_queue_dir(queue_dir), host=host, port=port, read_only=read_only, open_browser=open_browser)
    except ExecsvcError as exc:
        raise fail(str(exc), 1) from exc
    except OSError as exc:
        raise fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}", 1) from exc


@app.command("queue-dir")
def queue_dir_command(queue_dir: QueueDirOption = None) -> None:
    """Print the queue root this command would use (handy in scripts: Q=$(execsvc queue-dir))."""
    from .protocol.layout import QueueLayout

    typer.echo(QueueLayout.at(_queue_dir(queue_dir)).root)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


register(app)  # cancel, retry, clean, wait, group, service: after the commands above in --help
register_schedules(app)  # execsvc schedule


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    finally:
        # The process ends: its last cyclic collections need not walk every object typer and
        # pydantic made at start-up: the kernel takes their memory back when the process ends.
        gc.freeze()
