"""``execsvc remote-worker``: an RQ worker that runs a front machine's jobs here (docs/distributed.md).

It is an RQ ``SimpleWorker`` (no fork per job: the job function only starts and watches the
job's own process group) on the RQ queues of the groups it serves (:func:`~.keys.rq_queue_name`),
running only execsvc's job function (:class:`ExecsvcJob` refuses any other an RQ job names).
Its settings are this machine's: ``--config`` (the same TOML file as ``execsvc run``'s: its
``[policy]`` judges every job again, its ``[worker]`` caps timeouts and limits and sets
``max_shipped_bytes``). Nothing but typer is imported until the command runs.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..protocol.defaults import DEFAULT_GROUP
from .keys import REDIS_URL_ENV, RUN_FUNCTION, redacted, rq_queue_name


def remote_worker(
    redis_url: Annotated[
        Optional[str],
        typer.Option(
            "--redis-url",
            envvar=REDIS_URL_ENV,
            show_envvar=True,
            help="redis://[:password@]host:port/db, or rediss:// for TLS. Default: redis_url of --config.",
        ),
    ] = None,
    queue: Annotated[
        Optional[list[str]],
        typer.Option("--queue", help="An execsvc group to serve (repeatable; default: default).", show_default=False),
    ] = None,
    config_file: Annotated[
        Optional[Path],
        typer.Option(
            "--config", help="This machine's config file, as execsvc run's: its policy judges every job again."
        ),
    ] = None,
    name: Annotated[
        Optional[str],
        typer.Option(help="This worker's name, the records' host (default: the host name).", show_default=False),
    ] = None,
    folder: Annotated[
        Optional[Path],
        typer.Option("--dir", help="Where job files and whole logs are kept (default: ~/.local/share/execsvc/remote)."),
    ] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Exit once the queues are empty.")] = False,
) -> None:
    """Run jobs dispatched by `execsvc run --executor rq` on this machine, until SIGTERM or Ctrl-C."""
    from ..config import load_config
    from .remote import RemoteSettings, configure

    try:
        config = load_config(config_file)
    except ValueError as exc:
        typer.echo(f"execsvc: {exc}", err=True)
        raise typer.Exit(2) from exc
    url = redis_url or config.redis_url
    if not url:
        typer.echo(f"execsvc: give --redis-url (or ${REDIS_URL_ENV}, or redis_url in the config file)", err=True)
        raise typer.Exit(2)
    host = name or socket.gethostname()
    root = folder or _default_folder()
    configure(RemoteSettings(host, root, config, config.max_shipped_bytes))
    groups = queue or [DEFAULT_GROUP]
    typer.echo(f"execsvc: remote worker {host} on {redacted(url)}, groups {', '.join(groups)}, in {root}", err=True)
    _work(url, [rq_queue_name(group) for group in groups], f"{host}.{os.getpid()}", burst)


def _default_folder() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("execsvc", appauthor=False)) / "remote"


def _work(url: str, queue_names: list[str], worker_name: str, burst: bool) -> None:
    import redis
    from rq import Queue, SimpleWorker
    from rq.job import Job
    from rq.serializers import JSONSerializer

    from .keys import connect

    class ExecsvcJob(Job):
        """An RQ job that may only name execsvc's job function."""

        @property
        def func(self) -> Any:
            if self.func_name != RUN_FUNCTION:
                raise PermissionError(f"an execsvc remote worker runs only {RUN_FUNCTION}, not {self.func_name!r}")
            from .remote import run_remote

            return run_remote

    connection = connect(url)
    try:
        connection.ping()
    except redis.RedisError as exc:
        typer.echo(f"execsvc: cannot reach Redis at {redacted(url)}: {exc}", err=True)
        raise typer.Exit(1) from None
    queues = [Queue(name, connection=connection, serializer=JSONSerializer) for name in queue_names]
    worker = SimpleWorker(
        queues, name=worker_name, connection=connection, serializer=JSONSerializer, job_class=ExecsvcJob
    )
    worker.work(burst=burst, logging_level="WARNING")
    sys.stderr.flush()
