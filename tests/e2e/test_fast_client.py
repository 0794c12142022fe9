"""The fast client path: a client command builds only the pydantic models it uses, and
``execsvc submit`` of a command loads no listing code. Read in a fresh interpreter that ran the
command (``sys.modules`` and each model's ``__pydantic_complete__``), never from its timing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

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
import gc
frozen = gc.get_freeze_count()
built = {}
for module_name, module in list(sys.modules.items()):
    if not module_name.startswith(("execsvc.protocol", "queue_tools.api")):
        continue
    for name, value in vars(module).items():
        if isinstance(value, type) and hasattr(value, "__pydantic_complete__") and value.__module__ == module_name:
            built[name] = bool(value.__pydantic_complete__)
with open(out, "w") as handle:
    json.dump({"code": code, "modules": sorted(sys.modules), "built": built, "frozen": frozen}, handle)
"""

RECORD_MODELS = ("JobResult", "JobRecord", "SidecarRecord", "JobInfo")
"""The models of finished jobs and listings: none is needed to hand a job to the queue."""

RESPONSE_MODELS = ("WorkerStatus", "QueueStatus", "JobDetail", "OutputChunk", "Cancelled")
"""queue_tools.api's answers that ``queue-view list --json`` does not give (it gives a JobPage:
JobSummary rows, StateCounts, a Waiting per pending job)."""


def run_command(tmp_path: Path, program: str, *args: str) -> tuple[int, set[str], dict[str, bool]]:
    """Run ``program args`` (``execsvc`` or ``queue-view``) in a fresh interpreter; return its exit
    code, every module it had imported by the end, and whether each pydantic model of the loaded
    modules of :mod:`execsvc.protocol` and :mod:`queue_tools.api` had been built (one not loaded
    is not built)."""
    out = tmp_path / "probe.json"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), program, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.exists(), run.stderr
    found = json.loads(out.read_text())
    return found["code"], set(found["modules"]), found["built"]


def frozen_at_exit(tmp_path: Path, program: str, *args: str) -> tuple[int, int]:
    """Run ``program args`` as :func:`run_command` does; return its exit code and how many objects
    its entry point had moved out of the cyclic collector's reach (``gc.get_freeze_count``) when it returned."""
    out = tmp_path / "probe.json"
    subprocess.run(
        [sys.executable, "-c", PROBE, str(out), program, *args],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    found = json.loads(out.read_text())
    return found["code"], found["frozen"]


def test_submit_builds_the_job_model_it_validates_and_no_record_model(queue_root: Path, tmp_path: Path) -> None:
    JobQueue(queue_root)
    code, _, built = run_command(tmp_path, "execsvc", "submit", "--queue-dir", str(queue_root), "--", "true")
    assert code == 0
    [job] = JobQueue(queue_root).jobs(JobState.PENDING)
    assert job.spec is not None and job.spec["command"] == "true"
    assert built["JobSpec"] is True  # the job was validated before it was written
    assert {name: built.get(name, False) for name in RECORD_MODELS} == dict.fromkeys(RECORD_MODELS, False)


def test_submit_of_a_command_loads_no_listing_or_answer_models(queue_root: Path, tmp_path: Path) -> None:
    JobQueue(queue_root)
    code, modules, _ = run_command(tmp_path, "execsvc", "submit", "--queue-dir", str(queue_root), "--", "true")
    assert code == 0
    assert "queue_tools.submit" in modules  # the submit helpers ran
    api = [name for name in modules if name == "queue_tools.api" or name.startswith("queue_tools.api.")]
    assert api == []  # the fronts' answers and listings: not needed to enqueue


def test_submit_wait_still_copies_the_output_through_the_safe_opener(
    queue_root: Path, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker()
    out = tmp_path / "probe.json"
    submit = [
        "submit",
        "--queue-dir",
        str(queue_root),
        "--wait",
        "--",
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2; exit 3",
    ]
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), "execsvc", *submit],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = json.loads(out.read_text())
    assert found["code"] == 3  # the job's exit code
    assert run.stdout == "to-stdout\n" and "to-stderr\n" in run.stderr
    assert any(name.startswith("queue_tools.api") for name in found["modules"])  # its open_for_reading


def test_queue_view_list_json_builds_no_detail_or_status_answer(queue_root: Path, tmp_path: Path) -> None:
    queue = JobQueue(queue_root)
    for _ in range(3):
        queue.submit(JobSpec(command="true", args=[]))
    code, _, built = run_command(tmp_path, "queue-view", "--queue-dir", str(queue_root), "list", "--json")
    assert code == 0
    assert built["JobPage"] is True  # what it printed
    assert {name: built.get(name, False) for name in RESPONSE_MODELS} == dict.fromkeys(RESPONSE_MODELS, False)


def test_models_built_late_by_a_worker_on_two_slots_still_record_every_job(
    queue_root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    # The worker builds each record model at its first use, in whichever job thread finishes
    # first: two slots finishing at once must both write a complete record.
    queue = JobQueue(queue_root)
    ids = [queue.submit(JobSpec(command="sh", args=["-c", f"exit {n % 3}"])) for n in range(6)]
    start_worker("--slots", "2")
    finished = [queue.wait(job_id, timeout_s=20) for job_id in ids]
    assert [info.result.returncode if info.result else None for info in finished] == [n % 3 for n in range(6)]


def test_both_entry_points_leave_start_ups_objects_to_the_process_end_not_to_a_last_collection(
    queue_root: Path, tmp_path: Path
) -> None:
    # At exit the interpreter collects cycles over every object typer and pydantic made at
    # start-up; frozen (gc.freeze), they are skipped: the process ends and frees them all at once.
    JobQueue(queue_root).submit(JobSpec(command="true", args=[]))
    for program, *args in (
        ("execsvc", "submit", "--queue-dir", str(queue_root), "--", "true"),
        ("execsvc", "cancel", "--queue-dir", str(queue_root), "no-such-job"),
        ("queue-view", "--queue-dir", str(queue_root), "list", "--json"),
        ("queue-view", "--queue-dir", str(tmp_path / "not-a-queue" / "x"), "list", "--json"),
    ):
        code, frozen = frozen_at_exit(tmp_path, program, *args)
        assert code in (0, 1), (program, args)
        assert frozen > 10_000, (program, args, frozen)  # the objects of typer, pydantic and the models
