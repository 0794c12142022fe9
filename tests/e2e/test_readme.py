"""The README and docs/ tell the truth: their marked examples run as written, and CI runs the test command.

A block marked ``<!-- readme-test: KIND -->`` in README.md or any docs/*.md is run by the
test for its KIND, wherever it lives; a marker of a kind no test runs fails the suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from conftest import BIN, WorkerProcess, wait_finished

from execsvc import JobQueue, JobState, JobStatus

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KINDS = {"shell": "sh", "mcp-config": "json", "scheduling": "sh"}  # each run by a test below


def marked_blocks(kind: str) -> list[str]:
    """The fenced blocks marked `<!-- readme-test: KIND -->` in the README and docs/*.md, in that order."""
    fence = re.escape(KINDS[kind])
    pattern = rf"<!-- readme-test: {re.escape(kind)} -->\n```{fence}\n(.*?)```"
    return [block for page in PAGES for block in re.findall(pattern, page.read_text(), flags=re.DOTALL)]


def shell_blocks() -> list[str]:
    """The ```sh blocks marked `<!-- readme-test: shell -->`."""
    return marked_blocks("shell")


def test_every_marked_block_is_one_a_test_runs() -> None:
    """A marker of an unknown kind, or one not right above a fence of its kind's language, would
    be a tested-looking example that nothing runs."""
    for page in PAGES:
        text = page.read_text()
        for kind in re.findall(r"<!-- readme-test: ([\w-]+) -->", text):
            assert kind in KINDS, f"{page.name}: no test runs readme-test blocks of kind {kind!r}"
        markers = len(re.findall(r"<!-- readme-test: [\w-]+ -->", text))
        fenced = [rf"<!-- readme-test: {re.escape(k)} -->\n```{re.escape(lang)}\n" for k, lang in KINDS.items()]
        found = sum(len(re.findall(pattern, text)) for pattern in fenced)
        assert found == markers, f"{page.name}: a readme-test marker is not right above a fence of its language"


def run_block(block: str, queue_root: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = block.replace("/tmp/", f"{tmp_path}/").replace(".venv/bin/", f"{BIN}/")
    env = os.environ | {"EXECSVC_QUEUE_DIR": str(queue_root)}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_readme_has_the_two_quick_start_commands() -> None:
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quick, flags=re.DOTALL)
    assert commands == [
        "python3 -m venv .venv && .venv/bin/pip install -q . && .venv/bin/execsvc run --demo",
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/pytest",
    ]
    assert commands[1] in (ROOT / ".ci" / "run").read_text(), "CI must run the README's test command"


def test_the_shell_examples_run_as_written(
    queue_root: Path, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    blocks = shell_blocks()
    assert len(blocks) == 2
    start_worker()
    dropped = run_block(blocks[0], queue_root, tmp_path)
    assert dropped.returncode == 0, dropped.stderr
    assert '"status": "completed"' in dropped.stdout and "Hello, World!" in dropped.stdout
    assert f"running in {os.path.realpath('/tmp')}" in dropped.stdout
    assert wait_finished(queue_root, "greet").status is JobStatus.COMPLETED
    submitted = run_block(blocks[1], queue_root, tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    lines = submitted.stdout.splitlines()
    assert lines[0] == "42"
    assert "Linux" in lines[-1] or "Darwin" in lines[-1], "uname -a ran as a script from stdin"
    shell_job = lines[1]
    assert wait_finished(queue_root, shell_job).status is JobStatus.COMPLETED


def test_run_demo_puts_one_job_through(queue_root: Path, start_worker: Callable[..., WorkerProcess]) -> None:
    worker = start_worker("--demo")
    job_id = worker.wait_for_line("claimed job=").split("job=")[1].split()[0]
    info = wait_finished(queue_root, job_id)
    assert info.state is JobState.COMPLETED and info.result is not None
    assert info.result.stdout == "Hello, World!\n"
    assert JobQueue(queue_root).jobs("completed")[0].job_id == job_id


def test_the_mcp_client_configuration_works_verbatim(
    queue_root: Path, start_worker: Callable[..., WorkerProcess]
) -> None:
    """The README's JSON block, with only its two placeholder paths filled in, starts a server
    that an MCP client (the SDK's stdio client) can use."""
    import anyio
    from mcp import Client, StdioServerParameters

    block = marked_blocks("mcp-config")
    assert len(block) == 1
    text = block[0].replace("/path/to/execsvc/.venv/bin/execsvc", str(BIN / "execsvc"))
    server = json.loads(text.replace("/path/to/queue", str(queue_root)))["mcpServers"]["execsvc"]
    start_worker()

    async def session() -> None:
        params = StdioServerParameters(command=server["command"], args=server["args"], env=server["env"])
        async with Client(params) as client:
            result = await client.call_tool("enqueue_job", {"command": 'python3 -c "print(6*7)"', "wait_s": 10})
            assert result.structured_content is not None
            assert result.structured_content["stdout"]["text"] == "42\n"

    anyio.run(session)


def test_the_scheduling_example_runs_as_written(
    queue_root: Path, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    block = marked_blocks("scheduling")
    assert len(block) == 1
    start_worker("--slots", "2")
    done = run_block(block[0], queue_root, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "deployed" in done.stdout and "nightly" in done.stdout  # deploy's output; the waiting list
    queue = JobQueue(queue_root)
    deploy, test = wait_finished(queue_root, "deploy").result, wait_finished(queue_root, "test").result
    build = wait_finished(queue_root, "build").result
    assert deploy and test and build and deploy.started_at and test.started_at
    assert deploy.started_at >= max(build.completed_at, test.completed_at) and test.started_at >= build.completed_at
    flaky = wait_finished(queue_root, "flaky")
    assert flaky.status is JobStatus.COMPLETED and flaky.result and flaky.result.attempt == 2
    report = wait_finished(queue_root, "report")
    assert report.status is JobStatus.COMPLETED and report.result and report.result.limits
    assert wait_finished(queue_root, "nightly").status is JobStatus.COMPLETED  # released
    record = tmp_path / "report-record.json"
    for _ in range(200):
        if record.exists() and record.stat().st_size:
            break
        time.sleep(0.05)
    assert json.loads(record.read_text())["result"]["stdout"] == "report\n"
    assert queue.get("nightly").result.returncode == 0  # type: ignore[union-attr]
