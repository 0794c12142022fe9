"""The cost of distribution: ``python -m bench.distributed``.

Throughput of ``true`` and ``sleep 0.1`` jobs (jobs per second from the first job dropped into
``pending/`` until all are recorded) through ``execsvc run --executor rq`` with 1, 2 and 4
``execsvc remote-worker`` processes (and as many slots), beside the local executor with the
same slots, in the same run, on one machine: a redis-server on loopback with a password
(Debian's ``redis-server`` must be installed). Prints one table of medians (min–max over the
repetitions). See docs/distributed.md, "What it costs".
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from rich import box
from rich.console import Console
from rich.table import Table

from . import measures as m
from .peers import Execsvc

EXECSVC = str(Path(sys.executable).parent / "execsvc")
PASSWORD = "bench-pw"
WORKERS = (1, 2, 4)
JOBS = (("`true`", ["true"]), ("`sleep 0.1`", ["sleep", "0.1"]))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("bench.distributed: redis-server is not installed (apt-get install redis-server)")
    port = _free_port()
    argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", PASSWORD, "--save", ""]
    proc = subprocess.Popen([*argv, "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(200):
        try:
            client.ping()
            return proc, url
        except redis.RedisError:
            time.sleep(0.05)
    sys.exit("bench.distributed: redis-server did not answer")


def start_remote_workers(url: str, count: int, folder: Path) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "EXECSVC_REDIS_URL": url}
    procs = [
        subprocess.Popen(
            [EXECSVC, "remote-worker", "--name", f"bench{n}", "--dir", str(folder / f"remote{n}")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n in range(count)
    ]
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 60
    while len(client.smembers("rq:workers")) < count:
        if time.monotonic() > deadline:
            sys.exit("bench.distributed: the remote workers did not register")
        time.sleep(0.05)
    return procs


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rq_worker(slots: int, url: str, folder: Path, root: Path) -> Execsvc:
    """``execsvc run`` with ``executor = "rq"`` (its config file names the Redis)."""
    config = folder / f"rq-{slots}.toml"
    config.write_text(f'[worker]\nexecutor = "rq"\nredis_url = "{url}"\n')
    worker = Execsvc(slots, root=root, env={**os.environ, "EXECSVC_CONFIG": str(config)})
    worker.name = f"rq, {slots} remote worker{'s' if slots > 1 else ''}"
    return worker


def one_repetition(url: str, folder: Path, jobs: int, figures: dict[tuple[str, str], list[float]]) -> None:
    for label, argv in JOBS:
        for count in WORKERS:
            local = Execsvc(count, root=folder / f"q-local-{count}-{label.strip('`').replace(' ', '-')}")
            local.name = f"local, slots={count}"
            figures[(label, local.name)].append(m.throughput(local, jobs, argv))
            remotes = start_remote_workers(url, count, folder)
            try:
                remote = rq_worker(count, url, folder, folder / f"q-rq-{count}-{label.strip('`').replace(' ', '-')}")
                figures[(label, remote.name)].append(m.throughput(remote, jobs, argv))
            finally:
                stop_all(remotes)
            print(f"[{time.strftime('%H:%M:%S')}] {label} with {count}: done", file=sys.stderr, flush=True)


def print_table(figures: dict[tuple[str, str], list[float]], jobs: int) -> None:
    columns = list(dict.fromkeys(name for _label, name in figures))
    table = Table(title=f"throughput, jobs/s ({jobs} jobs; median, min–max)", box=box.SIMPLE)
    table.add_column("jobs")
    for name in columns:
        table.add_column(name, justify="right")
    for label, _argv in JOBS:
        cells = []
        for name in columns:
            values = figures.get((label, name), [])
            if not values:
                cells.append("-")
                continue
            spread = f" ({min(values):.1f}–{max(values):.1f})" if len(values) > 1 else ""
            cells.append(f"{statistics.median(values):.1f}{spread}")
        table.add_row(label, *cells)
    Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100, help="jobs per measure")
    parser.add_argument("--repeats", type=int, default=1, help="repetitions (the table gives medians)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    server, url = start_redis(folder)
    figures: dict[tuple[str, str], list[float]] = {}
    for label, _argv in JOBS:
        for count in WORKERS:
            figures[(label, f"local, slots={count}")] = []
            figures[(label, f"rq, {count} remote worker{'s' if count > 1 else ''}")] = []
    try:
        for _rep in range(args.repeats):
            one_repetition(url, folder, args.jobs, figures)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)
    print_table(figures, args.jobs)


if __name__ == "__main__":
    main()
