"""``python -m bench.sandbox`` runs end to end (a tiny run: it checks the harness, not the speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sandbox_support import needs_bwrap

ROOT = Path(__file__).resolve().parents[2]


@needs_bwrap
def test_bench_sandbox_prints_both_systems_for_each_measure() -> None:
    tiny = ["--repeats", "1", "--jobs", "5", "--samples", "3"]
    run = subprocess.run(
        [sys.executable, "-m", "bench.sandbox", *tiny],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    rows = [line.split() for line in run.stdout.splitlines()]
    for measure in ("drop-to-start", "throughput"):
        systems = {row[-3] for row in rows if row and row[0] == measure}
        assert systems == {"unconfined", "sandboxed"}, run.stdout
    assert "bwrap ... true" in run.stdout
