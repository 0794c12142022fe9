"""The client commands load only what they use (the fast client path): which modules a command
imported is read from ``sys.modules`` in a fresh interpreter that ran it, not from its timing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import WorkerProcess

from execsvc import JobQueue, JobSpec, JobState

PROBE = """
import json, sys
out, program, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.argv = [program, *argv]
if program == "execsvc":
    from execsvc.cli import main
else:
    from queue_tools.view import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
with open(out, "w") as handle:
    json.dump({"code": code, "modules": sorted(sys.modules)}, handle)
"""

NEVER_ON_THE_CLIENT_PATH = (
    "watchdog",
    "psutil",
    "mcp",
    "rich",
    "filelock",
    "tomllib",
    "execsvc.worker",
    "execsvc.runner",
    "execsvc.reaper",
    "execsvc.job_processes",
    "execsvc.job_logs",
    "execsvc.hooks",
    "execsvc.file_events",
    "queue_tools.mcp.server",
    "queue_tools.mcp",
    "regex",
)
"""Modules of the worker, the watchers, the MCP server and the tables: none is needed to hand a job
to the queue, act on one, or list the queue as JSON."""


def run_command(tmp_path: Path, program: str, *args: str) -> tuple[int, set[str]]:
    """Run ``program args`` (``execsvc`` or ``queue-view``) in a fresh interpreter with no
    ``$EXECSVC_QUEUE_DIR``; return its exit code and every module it had imported by the end."""
    out = tmp_path / "modules.json"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    subprocess.run(
        [sys.executable, "-c", PROBE, str(out), program, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    found = json.loads(out.read_text())
    return found["code"], set(found["modules"])


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """The ``names`` that are in ``modules``, a package counting as loaded when any of its submodules is."""
    return [name for name in names if any(module == name or module.startswith(f"{name}.") for module in modules)]


def test_submit_loads_no_worker_watcher_process_tool_mcp_or_rich(queue_root: Path, tmp_path: Path) -> None:
    JobQueue(queue_root)
    code, modules = run_command(tmp_path, "execsvc", "submit", "--queue-dir", str(queue_root), "--", "true")
    assert code == 0
    [job] = JobQueue(queue_root).jobs(JobState.PENDING)
    assert job.spec is not None and job.spec["command"] == "true"  # the submit path ran to the end
    assert "pydantic" in modules  # the job was validated
    assert loaded(modules, NEVER_ON_THE_CLIENT_PATH) == []
    assert "queue_tools.api" not in modules  # the fronts' answers: loaded by --wait only (its output)


def test_submit_to_a_serving_worker_loads_psutil_only_to_check_its_pid(
    queue_root: Path, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker()
    code, modules = run_command(tmp_path, "execsvc", "submit", "--queue-dir", str(queue_root), "--", "true")
    assert code == 0
    assert "psutil" in modules  # worker.json names a pid: is it the worker's (its start time), or reused?
    assert loaded(modules, tuple(name for name in NEVER_ON_THE_CLIENT_PATH if name != "psutil")) == []


@pytest.mark.parametrize("command", ["cancel", "hold", "release", "retry"])
def test_job_commands_on_an_unknown_id_load_none_of_the_worker(queue_root: Path, tmp_path: Path, command: str) -> None:
    JobQueue(queue_root)
    code, modules = run_command(tmp_path, "execsvc", command, "--queue-dir", str(queue_root), "no-such-job")
    assert code == 1  # the id was looked up: the command ran
    assert loaded(modules, NEVER_ON_THE_CLIENT_PATH) == []


def test_cancel_of_a_pending_job_loads_none_of_the_worker(queue_root: Path, tmp_path: Path) -> None:
    job_id = JobQueue(queue_root).submit(JobSpec(command="true", args=[]))
    code, modules = run_command(tmp_path, "execsvc", "cancel", "--queue-dir", str(queue_root), job_id)
    assert code == 0
    assert JobQueue(queue_root).get(job_id).state is JobState.FAILED
    assert loaded(modules, NEVER_ON_THE_CLIENT_PATH) == []


def test_queue_view_list_json_loads_no_table_or_watcher(queue_root: Path, tmp_path: Path) -> None:
    queue = JobQueue(queue_root)
    for _ in range(3):
        queue.submit(JobSpec(command="true", args=[]))
    code, modules = run_command(tmp_path, "queue-view", "--queue-dir", str(queue_root), "list", "--json")
    assert code == 0
    assert loaded(modules, NEVER_ON_THE_CLIENT_PATH) == []


def test_queue_view_list_as_a_table_loads_rich_and_still_no_worker(queue_root: Path, tmp_path: Path) -> None:
    JobQueue(queue_root).submit(JobSpec(command="true", args=[]))
    code, modules = run_command(tmp_path, "queue-view", "--queue-dir", str(queue_root), "list")
    assert code == 0
    assert "rich" in modules  # the table is drawn by rich: the probe sees what a command imports
    assert loaded(modules, tuple(name for name in NEVER_ON_THE_CLIENT_PATH if name != "rich")) == []


def test_import_execsvc_loads_only_the_protocol_package_init_and_its_names_still_resolve() -> None:
    probe = (
        "import sys, execsvc; before = sorted(m for m in sys.modules if m.startswith('execsvc.'));"
        "from execsvc import JobQueue, JobSpec, WorkerConfig, ExecsvcError, default_queue_dir, new_job_id;"
        "assert JobQueue.__module__ == 'execsvc.protocol.queue' and callable(new_job_id);"
        "print(before, 'execsvc.worker' in sys.modules, 'watchdog' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    # execsvc.protocol's __init__ (the version and lazy names) and nothing below it
    assert run.stdout.split() == ["['execsvc.protocol']", "False", "False"]
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        import execsvc

        _ = execsvc.Nothing  # type: ignore[attr-defined]


def test_queue_dir_of_status_sh_loads_no_job_model(tmp_path: Path) -> None:
    code, modules = run_command(tmp_path, "execsvc", "queue-dir", "--queue-dir", str(tmp_path / "q"))
    assert code == 0
    assert loaded(modules, ("execsvc.protocol.models", "execsvc.protocol.queue", *NEVER_ON_THE_CLIENT_PATH)) == []


def test_bench_client_prints_every_command_with_its_ratio() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.client", "--repeats", "1", "--jobs", "5"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    rows = {line.split("  ")[0]: line for line in run.stdout.splitlines()}
    for command in ("python3 -c pass", "execsvc submit -- true", "queue-view list --json", "execsvc cancel"):
        assert any(label.startswith(command) and line.endswith("\u00d7") for label, line in rows.items()), run.stdout
