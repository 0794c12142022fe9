"""Start-up cost of the client commands against the interpreter's own: ``python -m bench.client``.

Every repetition runs each command once, in turn (the order rotated between
repetitions, so none always runs first), as a fresh process on a temporary
queue with no worker; the table gives the wall-time median and min–max in
milliseconds over the repetitions, the median CPU time (user and system: on
a shared machine it moves less than the wall time does) and each median's
ratio to ``python3 -c pass`` measured in the same run (the interpreter of this
run, with the same site-packages the console scripts start with). ``queue-view list --json``
reads a queue of ``--jobs`` pending jobs written with :meth:`JobQueue.submit`;
``execsvc cancel`` is given an id that is not in the queue (it exits 1).
Two floor rows show what no command can go below: ``import typer``, and the
smallest typer command with one option (typer coerces every parameter but a
flag with a pydantic ``TypeAdapter``, so such a command imports pydantic and
builds one).
The commands run without ``PYTHONDONTWRITEBYTECODE`` and ``EXECSVC_QUEUE_DIR``:
the warm-up run of each writes the byte code of this checkout's modules, as an
installation from a wheel has it (compiling them on every start would add
tens of milliseconds that no installed copy pays).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from execsvc import QUEUE_DIR_ENV, JobQueue, JobSpec

BIN = Path(sys.executable).parent


def commands(submit_root: Path, list_root: Path) -> dict[str, list[str]]:
    """The measured command lines by row label (``submit_root`` gathers the submitted jobs)."""
    execsvc, view = str(BIN / "execsvc"), str(BIN / "queue-view")
    return {
        "python3 -c pass": [sys.executable, "-c", "pass"],
        "execsvc submit -- true": [execsvc, "submit", "--queue-dir", str(submit_root), "--", "true"],
        "queue-view list --json": [view, "--queue-dir", str(list_root), "list", "--json"],
        "execsvc cancel <unknown id>": [execsvc, "cancel", "--queue-dir", str(submit_root), "no-such-job"],
        "execsvc queue-dir": [execsvc, "queue-dir", "--queue-dir", str(submit_root)],
        "floor: import typer": [sys.executable, "-c", "import typer"],
        "floor: a typer command, one option": [sys.executable, "-c", ONE_OPTION, "--queue-dir", str(submit_root)],
    }


ONE_OPTION = "import gc, typer\ndef main(queue_dir: str = '') -> None:\n    gc.freeze()\ntyper.run(main)"
"""The least a command with an option can cost: typer coerces the option's value with a pydantic
TypeAdapter (and, as the client commands do, the command freezes the collector's objects at its end)."""


def filled_queue(root: Path, jobs: int) -> Path:
    """A queue with ``jobs`` pending JSON jobs, each written by :meth:`JobQueue.submit`."""
    queue = JobQueue(root)
    spec = JobSpec(command="true", args=[])
    for _ in range(jobs):
        queue.submit(spec, submitted_by="bench.client")
    return root


CHILD_ENV = {key: value for key, value in os.environ.items() if key not in ("PYTHONDONTWRITEBYTECODE", QUEUE_DIR_ENV)}


def run_ms(argv: list[str]) -> tuple[float, float]:
    """Milliseconds from start to exit of ``argv``, and the CPU milliseconds (user and system)
    it used (output discarded; exit code not checked)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    begun = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=CHILD_ENV)
    wall = (time.perf_counter() - begun) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000


def measure(lines: dict[str, list[str]], repeats: int) -> dict[str, list[tuple[float, float]]]:
    """Wall and CPU milliseconds per row label, one run of every command per repetition, in rotated order."""
    figures: dict[str, list[tuple[float, float]]] = {label: [] for label in lines}
    labels = list(lines)
    for label in labels:  # one warm-up each: page cache, .pyc files
        run_ms(lines[label])
    for rep in range(repeats):
        shift = rep % len(labels)
        for label in labels[shift:] + labels[:shift]:
            figures[label].append(run_ms(lines[label]))
    return figures


def table(figures: dict[str, list[tuple[float, float]]]) -> str:
    """The printed table: wall-time median and min–max, CPU-time median, and each median's
    ratio to the first row's (CPU, then wall time: the last column)."""
    first = next(iter(figures.values()))
    base_wall, base_cpu = statistics.median(w for w, _ in first), statistics.median(c for _, c in first)
    width = max(len(label) for label in figures)
    head = f"{'command':<{width}}  {'p50 ms':>8}  {'min–max ms':>13}  {'CPU p50 ms':>10}  {'CPU ×':>7}"
    rows = [f"{head}  {'× python3 -c pass':>18}"]
    for label, values in figures.items():
        walls = [wall for wall, _ in values]
        p50, cpu = statistics.median(walls), statistics.median(c for _, c in values)
        spread = f"{min(walls):.1f}–{max(walls):.1f}"
        line = f"{label:<{width}}  {p50:>8.1f}  {spread:>13}  {cpu:>10.1f}  {cpu / base_cpu:>6.1f}×"
        rows.append(f"{line}  {p50 / base_wall:>17.1f}×")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21, help="Runs of each command (default 21).")
    parser.add_argument("--jobs", type=int, default=1000, help="Jobs in the queue queue-view lists (default 1000).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-client-") as tmp:
        list_root = filled_queue(Path(tmp) / "listed", args.jobs)
        lines = commands(Path(tmp) / "submitted", list_root)
        figures = measure(lines, args.repeats)
    print(f"{args.repeats} runs of each, queue-view over {args.jobs} pending jobs, python {sys.version.split()[0]}")
    print(table(figures))
    if any(name.startswith("__editable__") for name in sys.modules):
        print(
            "note: this interpreter runs an editable install's import hook at every start; for the figures "
            "of an installed copy, run this from a virtualenv made with `pip install .`"
        )


if __name__ == "__main__":
    main()
