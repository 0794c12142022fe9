"""execsvc against task-spooler, nq and the spawn floor, side by side in one run: ``python -m bench``.

Installs the peers if missing (Debian: task-spooler, nq, inotify-tools), then
runs every system in turn inside each repetition and prints one table of
medians with min–max over the repetitions, and ratios against the peers
measured in the same run. See docs/performance.md for what each
figure means.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from . import measures as m
from .peers import Execsvc, InotifyLoop, Nq, System, TaskSpooler, install_missing_peers

Figures = dict[tuple[str, str], list[float]]


def _peers(missing: list[str], slots: int) -> list[System]:
    found: list[System] = []
    if "tsp" not in missing:
        found.append(TaskSpooler(slots))
    if "nq" not in missing and slots == 1:
        found.append(Nq())
    return found


def _settle() -> None:
    """Let the disk finish the previous run's work (deleted trees, online discard) before the next."""
    os.sync()
    time.sleep(0.5)


def _rotated(systems: list[System], rep: int) -> list[System]:
    """Each repetition starts with a different system, so no one always runs first or last."""
    shift = rep % len(systems)
    return systems[shift:] + systems[:shift]


def _progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run_repetition(args: argparse.Namespace, missing: list[str], scale: dict[str, Path], rep: int, f: Figures) -> None:
    """One repetition: every system in turn for every measure; figures appended to ``f``."""
    for label, argv in (("`true`", ["true"]), ("`sleep 0.01`", ["sleep", "0.01"])):
        key = f"throughput {label}, jobs/s"
        _progress(f"rep {rep + 1}: {key}")
        cpu: dict[str, float] = {}
        for slots in (1, 2):
            for system in _rotated([Execsvc(slots), *_peers(missing, slots)], rep):
                _settle()
                rate, cpu_ms = m.throughput_and_cpu(system, args.jobs, argv)
                f[(key, system.name)].append(rate)
                if cpu_ms is not None:
                    cpu[system.name] = cpu_ms
        f[(key, "floor: subprocess.run loop")].append(m.floor_throughput(args.jobs, argv))
        for name, cpu_ms in cpu.items():  # the row under its jobs/s
            f[(f"worker CPU per {label} job, ms", name)].append(cpu_ms)

    _progress(f"rep {rep + 1}: drop-to-start latency")
    latency_systems: list[System] = [Execsvc(1), *_peers(missing, 1)]
    if "inotifywait" not in missing:
        latency_systems.append(InotifyLoop())
    delays: dict[str, list[float]] = {}
    for system in _rotated(latency_systems, rep):
        _settle()
        delays[system.name] = m.drop_to_start(system, args.samples)
    _settle()
    delays["floor: the job's own exec"] = m.exec_floor(args.samples)
    names = [system.name for system in latency_systems] + ["floor: the job's own exec"]
    for name in names:  # p50 rows together, then p90 rows, in a fixed order
        f[("drop-to-start p50, ms", name)].append(m.summary(delays[name])[0])
    for name in names:
        f[("drop-to-start p90, ms", name)].append(m.p90(delays[name]))

    _progress(f"rep {rep + 1}: enqueue cost and memory")
    f[("enqueue, µs per job", "execsvc JobQueue.submit (durable)")].append(m.summary(m.enqueue_in_process_us())[0])
    f[("enqueue, ms per job", "execsvc submit CLI")].append(m.summary(m.enqueue_cli_ms())[0])
    for system in _peers(missing, 1):
        f[("enqueue, ms per job", f"{system.name.split()[0]} CLI")].append(m.summary(m.peer_enqueue_ms(system))[0])
    idle, peak = m.memory_mb(args.output_mb * 1_000_000)
    f[("worker RSS, MB", "execsvc idle")].append(idle)
    f[("worker RSS, MB", f"execsvc peak, one job printing {args.output_mb} MB")].append(peak)

    if scale:
        _progress(f"rep {rep + 1}: scale")
        seconds, first = m.first_start_with_backlog(scale["backlog"], scale["stamps"])
        f[(f"scale: first job start with {args.backlog:,} pending, s", "execsvc slots=1")].append(seconds)
        f[("scale: FIFO first job (index)", "execsvc slots=1")].append(float(first[1:]))
        history = Execsvc(1, root=scale["history"], prefix=f"r{rep}-")
        f[(f"throughput `true` with {args.history:,} finished, jobs/s", "execsvc slots=1")].append(
            m.throughput(history, args.jobs, ["true"])
        )
        f[(f"scale: queue-view list --json, {args.listing:,} finished, s", "execsvc")].append(
            m.queue_view_list_s(scale["listing"])
        )


def ratio_notes(f: Figures) -> dict[tuple[str, str], str]:
    """Per row, execsvc against the peers with the same slots (median / median)."""
    med = {k: m.summary(v)[0] for k, v in f.items()}
    notes: dict[tuple[str, str], str] = {}
    for (measure, system), value in med.items():
        parts = []
        if measure.startswith("throughput") and system.startswith("execsvc"):
            slots = system.split("=")[1]
            for peer in (f"tsp slots={slots}", "nq" if slots == "1" else ""):
                if (measure, peer) in med:
                    parts.append(f"{value / med[(measure, peer)]:.2f}× {peer}")
            floor = med.get((measure, "floor: subprocess.run loop"))
            if floor:
                parts.append(f"{value / (floor * int(slots)):.2f}× floor per slot")
        if measure.startswith("drop-to-start") and not system.startswith("floor"):
            for peer in ("tsp slots=1", "nq"):
                if system.startswith("execsvc") and (measure, peer) in med:
                    parts.append(f"{value / med[(measure, peer)]:.2f}× {peer}")
            floor = med.get((measure, "floor: the job's own exec"))
            if floor:
                parts.append(f"floor + {value - floor:.2f} ms")
        if measure.startswith("enqueue, ms") and system.startswith("execsvc"):
            for peer in ("tsp CLI", "nq CLI"):
                if (measure, peer) in med:
                    parts.append(f"{value / med[(measure, peer)]:.2f}× {peer}")
        if parts:
            notes[(measure, system)] = ", ".join(parts)
    return notes


def print_table(f: Figures, title: str) -> None:
    notes = ratio_notes(f)
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for column, justify in (("measure", "left"), ("system", "left"), ("median", "right"), ("min–max", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    table.add_column("ratios (medians, same run)")
    previous = ""
    for (measure, system), values in f.items():
        median, low, high = m.summary(values)
        digits = 0 if median >= 100 else (1 if median >= 10 else 2)
        table.add_row(
            measure if measure != previous else "",
            system,
            f"{median:.{digits}f}",
            f"{low:.{digits}f}–{high:.{digits}f}",
            notes.get((measure, system), ""),
        )
        previous = measure
    Console(width=170).print(table)


def machine() -> str:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if "model name" in ln), "")
    return (
        f"{os.cpu_count()} cores ({model or platform.processor()}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, temp folder {tempfile.gettempdir()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs per throughput run (default 500)")
    parser.add_argument("--samples", type=int, default=100, help="latency samples per system (default 100)")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--output-mb", type=int, default=1000, help="output of the memory job, MB (default 1000)")
    parser.add_argument("--backlog", type=int, default=10_000, help="pending jobs for the start-up measure")
    parser.add_argument("--history", type=int, default=10_000, help="finished records for the throughput measure")
    parser.add_argument("--listing", type=int, default=100_000, help="finished records for queue-view list")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale measures")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install missing peers")
    args = parser.parse_args()

    missing = [t for t in ("tsp", "nq", "inotifywait") if shutil.which(t) is None]
    if missing and not args.no_install:
        missing = install_missing_peers()
    started = datetime.now().astimezone()
    figures: Figures = defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        scale: dict[str, Path] = {}
        if not args.no_scale:
            _progress("preparing the scale queues (backlog, histories)")
            parent = Path(tmp)
            scale["stamps"] = parent / "stamps"
            scale["backlog"] = m.backlog_queue(parent, args.backlog, scale["stamps"])
            scale["history"] = m.history_queue(parent, "history", args.history)
            scale["listing"] = m.history_queue(parent, "listing", args.listing)
        for rep in range(args.repeats):
            run_repetition(args, missing, scale, rep, figures)
        if scale:
            starts = [int(v) for v in figures.pop(("scale: FIFO first job (index)", "execsvc slots=1"))]
            fifo = "FIFO held" if starts == sorted(starts) and starts[0] == 0 else f"FIFO BROKEN: {starts}"
            print(f"backlog start order: first jobs started {starts} ({fifo})")
    title = (
        f"execsvc benchmark, {started:%Y-%m-%d %H:%M %Z}: {machine()}\n"
        f"{args.jobs} jobs per throughput run, {args.samples} latency samples, "
        f"{args.repeats} repetitions (median and min–max over repetitions)"
        + (f"\nleft out (not installed): {', '.join(missing)}" if missing else "")
    )
    print_table(figures, title)


if __name__ == "__main__":
    main()
