"""The sandbox's cost: drop-to-start p50 and `true` throughput, unconfined and sandboxed, in one run.

``python -m bench.sandbox [--jobs N] [--samples N] [--repeats N]``. Each repetition runs a real
worker twice on fresh queues: once with the default policy (jobs unconfined), once with
``sandbox = "required"`` in its config file (every job in bubblewrap, the default profile); and
the spawn floor of ``true`` and of ``bwrap <the default profile's options> true`` from a plain
Python loop, which is the sandbox's own start-up cost. Needs bwrap (Debian: bubblewrap).
docs/performance.md, "Sandboxed jobs", has the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from execsvc.sandbox import bare_argv, host_problem

from . import measures as m
from .peers import Execsvc

Figures = dict[tuple[str, str], list[float]]


def worker(sandboxed: bool, folder: Path) -> Execsvc:
    """A worker on a fresh queue under ``folder``; sandboxed: every job runs in bwrap (``required``),
    with the stamp folder of :func:`measures.drop_to_start` (under ``tempfile.tempdir``) writable."""
    config = folder / "config.toml"
    policy = f'sandbox = "required"\nsandbox_profile = {{ writable = ["{tempfile.gettempdir()}"] }}\n'
    config.write_text("[policy]\n" + (policy if sandboxed else ""))
    env = {**os.environ, "EXECSVC_CONFIG": str(config)}
    system = Execsvc(1, root=folder / "q", env=env)
    system.name = "sandboxed" if sandboxed else "unconfined"
    return system


def bwrap_true() -> list[str]:
    """``bwrap`` with the default profile's namespaces and mounts, running ``true``."""
    found = shutil.which("bwrap")
    assert found is not None
    return bare_argv(found, ["true"])


def one_repetition(args: argparse.Namespace, figures: Figures, queues: str) -> None:
    """Each system once for each measure; its queues in fresh folders under ``queues``."""
    for sandboxed in (False, True):
        with tempfile.TemporaryDirectory(prefix="bench-sandbox-", dir=queues) as tmp:
            system = worker(sandboxed, Path(tmp))
            figures[("drop-to-start p50 (ms)", system.name)].append(
                statistics.median(m.drop_to_start(system, args.samples))
            )
        with tempfile.TemporaryDirectory(prefix="bench-sandbox-", dir=queues) as tmp:
            system = worker(sandboxed, Path(tmp))
            figures[("throughput `true` (jobs/s)", system.name)].append(m.throughput(system, args.jobs, ["true"]))
    for name, argv in (("true", ["true"]), ("bwrap ... true", bwrap_true())):
        figures[("spawn floor (jobs/s)", name)].append(m.floor_throughput(args.jobs, argv))


def print_table(figures: Figures, repeats: int) -> None:
    table = Table(title=f"The sandbox's cost ({repeats} repetitions)", box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("measure", "system", "median", "min–max"):
        table.add_column(column, justify="left" if column in ("measure", "system") else "right")
    for (measure, system), values in figures.items():
        median, low, high = m.summary(values)
        table.add_row(measure, system, f"{median:.1f}", f"{low:.1f}–{high:.1f}")
    Console(width=120).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=300, help="`true` jobs per throughput run (default 300)")
    parser.add_argument("--samples", type=int, default=60, help="drop-to-start samples per run (default 60)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default 3)")
    args = parser.parse_args()
    problem = host_problem()
    if problem is not None:
        sys.exit(f"bench.sandbox: no sandbox on this host: {problem}")
    figures: Figures = defaultdict(list)
    queues = tempfile.gettempdir()
    with tempfile.TemporaryDirectory(prefix="bench-stamps-root-") as stamps_root:
        tempfile.tempdir = stamps_root  # the stamp folders land here, which the sandboxed worker makes writable
        try:
            for _ in range(args.repeats):
                one_repetition(args, figures, queues)
        finally:
            tempfile.tempdir = None
    print_table(figures, args.repeats)


if __name__ == "__main__":
    main()
