"""Two versions of the worker side by side, alternating: ``python -m bench.ab REV_A [REV_B]``.

For a change's effect on the hot path on a noisy machine, where two runs of
the full benchmark minutes apart differ by more than the change. Each pair
runs the same N ``true`` jobs through version A and version B back to back
(which goes first alternates), each a fresh ``execsvc run`` on a fresh queue
fed the way a foreign tool feeds it (hidden temp file, then rename). It
prints, per run, jobs/s from the first hand-over to the last record and the
worker's CPU time per job (user + system, all its threads, from psutil),
then the medians and the ratio B / A. With ``--latency`` each run is the
benchmark's drop-to-start measure instead (its p50 over ``--samples`` jobs, one
at a time on an idle queue). Each revision's packages are taken
with ``git archive`` and put first on ``PYTHONPATH``, so both run with this
environment's packages; ``REV_B`` defaults to the working tree.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import psutil

from .measures import drop_to_start
from .peers import Execsvc

_REPO = Path(__file__).resolve().parent.parent
WORKTREE = "worktree"
_PACKAGES = ("execsvc", "queue_tools")  # the execsvc command imports both


def source_tree(rev: str, into: Path) -> Path:
    """A folder whose ``execsvc/`` and ``queue_tools/`` are those of ``rev`` (``worktree``: this checkout)."""
    if rev == WORKTREE:
        return _REPO
    archive = subprocess.run(
        ["git", "-C", str(_REPO), "archive", "--format=tar", rev, *_PACKAGES], check=True, capture_output=True
    ).stdout
    folder = into / rev.replace("/", "_")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4
            tar.extractall(folder, filter="data")
        else:
            tar.extractall(folder)  # our own repository's archive
    return folder


def worker_from(tree: Path, slots: int) -> Execsvc:
    """An ``execsvc run`` worker (not started) whose packages come from ``tree`` (see :func:`source_tree`)."""
    return Execsvc(slots, env={**os.environ, "PYTHONPATH": str(tree)})


def one_run(tree: Path, jobs: int, slots: int) -> tuple[float, float]:
    """(jobs/s, worker CPU ms per job) of ``jobs`` ``true`` jobs through the worker in ``tree``."""
    system = worker_from(tree, slots)
    system.start()
    try:
        assert system.proc is not None
        worker = psutil.Process(system.proc.pid)
        before = worker.cpu_times()
        begun = time.monotonic()
        for index in range(jobs):
            system.enqueue(index, ["true"])
        system.wait_all(jobs)
        elapsed = time.monotonic() - begun
        after = worker.cpu_times()
    finally:
        system.stop()
    cpu_s = (after.user - before.user) + (after.system - before.system)
    return jobs / elapsed, 1000 * cpu_s / jobs


def one_latency_run(tree: Path, samples: int) -> float:
    """The p50 of drop-to-start, ms, over ``samples`` jobs through the worker in ``tree``."""
    return statistics.median(drop_to_start(worker_from(tree, 1), samples))


def compare_latency(trees: dict[str, Path], pairs: int, samples: int) -> None:
    p50s: dict[str, list[float]] = {"A": [], "B": []}
    for pair in range(pairs):
        for side in ("A", "B") if pair % 2 == 0 else ("B", "A"):
            p50s[side].append(one_latency_run(trees[side], samples))
            print(f"pair {pair + 1} {side}: drop-to-start p50 {p50s[side][-1]:.2f} ms", flush=True)
    medians = {side: statistics.median(values) for side, values in p50s.items()}
    wins = sum(b < a for a, b in zip(p50s["A"], p50s["B"], strict=True))
    print(f"median of p50s: A {medians['A']:.2f} ms, B {medians['B']:.2f} ms")
    print(f"B / A: {medians['B'] / medians['A']:.2f}x; B quicker in {wins} of {pairs} pairs")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n\n")[0])
    parser.add_argument("rev_a", help="the baseline: a git revision")
    parser.add_argument("rev_b", nargs="?", default=WORKTREE, help="the change: a git revision (default: worktree)")
    parser.add_argument("--pairs", type=int, default=6, help="pairs of runs (default 6)")
    parser.add_argument("--jobs", type=int, default=1000, help="`true` jobs per run (default 1000)")
    parser.add_argument("--slots", type=int, default=1, help="the worker's slots (default 1)")
    parser.add_argument("--latency", action="store_true", help="compare drop-to-start instead of throughput")
    parser.add_argument("--samples", type=int, default=60, help="with --latency: jobs per run (default 60)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    try:
        trees = {"A": source_tree(args.rev_a, scratch), "B": source_tree(args.rev_b, scratch)}
        if args.latency:
            print(f"A = {args.rev_a}, B = {args.rev_b}: drop-to-start, {args.samples} jobs per run")
            compare_latency(trees, args.pairs, args.samples)
            return
        figures: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
        print(f"A = {args.rev_a}, B = {args.rev_b}: {args.jobs} `true` jobs per run, slots={args.slots}")
        for pair in range(args.pairs):
            for side in ("A", "B") if pair % 2 == 0 else ("B", "A"):
                rate, cpu_ms = one_run(trees[side], args.jobs, args.slots)
                figures[side].append((rate, cpu_ms))
                print(f"pair {pair + 1} {side}: {rate:6.0f} jobs/s  {cpu_ms:5.2f} ms CPU per job", flush=True)
        medians = {
            side: (statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs))
            for side, runs in figures.items()
        }
        wins = sum(b[0] > a[0] for a, b in zip(figures["A"], figures["B"], strict=True))
        for side in ("A", "B"):
            print(f"median {side}: {medians[side][0]:.0f} jobs/s, {medians[side][1]:.2f} ms CPU per job")
        print(
            f"B / A: {medians['B'][0] / medians['A'][0]:.2f}x jobs/s, {medians['B'][1] / medians['A'][1]:.2f}x CPU "
            f"per job; B faster in {wins} of {args.pairs} pairs"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
