"""The benchmark harness runs end to end (a tiny run: it checks the harness, not the speed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_RUN = ["--jobs", "8", "--samples", "4", "--repeats", "1", "--output-mb", "4", "--no-install"]
TINY_RUN += ["--backlog", "30", "--history", "30", "--listing", "50"]


def test_python_m_bench_prints_the_table_with_every_system_found() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", *TINY_RUN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    table = run.stdout
    rows = ("throughput `true`", "drop-to-start p50", "enqueue", "worker RSS", "execsvc slots=2", "floor")
    for row in (*rows, "worker CPU per `true` job"):
        assert row in table, f"no {row!r} row in:\n{table}"
    assert "FIFO held" in table
    for tool, row in (("tsp", "tsp slots=1"), ("nq", "nq"), ("inotifywait", "inotifywait | sh")):
        if shutil.which(tool):
            assert row in table, f"{tool} is installed but has no row:\n{table}"
        else:
            assert tool in table.split("left out (not installed):")[1]
