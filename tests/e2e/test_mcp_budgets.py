"""Issue 19's byte budgets, asserted: the installed ``execsvc mcp`` over real stdio (behind the
wire tap) against a real worker. Sizes are deterministic (not timings)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import anyio
from conftest import WorkerProcess
from mcp_calls import structured
from mcp_stdio import mcp_over_stdio

Start = Callable[..., WorkerProcess]
MARKUP = re.compile(r"``|:mod:|:func:|:class:|:data:|PROTOCOL\.md|README|\.py\b|self\.|docs/")


def test_a_quick_job_in_one_call_fits_the_budget(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    start_worker()

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            done = await client.call("enqueue_job", {"command": "python3 -c 'print(6*7)'", "wait_s": 10})
            answer = structured(done.result)
            assert answer["status"] == "completed" and answer["exit_code"] == 0
            assert answer["stdout"]["text"] == "42\n"
            assert "result" not in answer and "spec" not in answer  # the full record only with verbose
            assert done.text_bytes <= 400, done.result.content
            assert done.wire_bytes <= 1200

    anyio.run(session)


def test_five_megabytes_of_output_cost_a_status_check_two_kilobytes(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    start_worker()

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            done = structured((await client.call("enqueue_job", {"command": "seq 1 700000", "wait_s": 30})).result)
            assert done["status"] == "completed"
            status = await client.call("get_job", {"job_id": done["job_id"]})
            answer = structured(status.result)
            assert status.text_bytes <= 2048 and status.wire_bytes <= 5 * 1024, status.result.content
            stdout = answer["stdout"]
            assert stdout["text"].endswith("699999\n700000\n") and stdout["lines"] == 700_000
            assert stdout["bytes"] == (queue_root / "logs" / f"{done['job_id']}.stdout").stat().st_size
            assert f'get_job_output {{"job_id": "{done["job_id"]}", "head": 100}}' in stdout["more"]  # the next call
            verbose = structured((await client.call("get_job", {"job_id": done["job_id"], "verbose": True})).result)
            assert verbose["result"]["stdout_bytes"] == stdout["bytes"] and "stdout" not in verbose["result"]

    anyio.run(session)


def test_the_tool_list_is_small_and_plain(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    start_worker()

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            listed = await client.list_tools()
            # 12 tools; issue 23 added restart, timeout_s "none", group and list_schedules
            assert listed.wire_bytes <= 21_500
            assert listed.text_bytes <= 8_500  # names, descriptions and input schemas
            for tool in listed.result.tools:
                described = " ".join([tool.description or "", str(tool.input_schema)])
                assert not MARKUP.search(described), (tool.name, MARKUP.search(described))
            enqueue = next(tool for tool in listed.result.tools if tool.name == "enqueue_job")
            assert f"Jobs run in {tmp_path} unless cwd is given" in (enqueue.description or "")
            assert "Default timeout 300 s" in (enqueue.description or "") and "1 job(s) run at once" in (
                enqueue.description or ""
            )
            assert enqueue.annotations is not None and enqueue.annotations.destructive_hint is True
            assert enqueue.annotations.open_world_hint is True
            for name in ("get_job", "get_job_output", "search_output", "list_jobs", "queue_status"):
                tool = next(tool for tool in listed.result.tools if tool.name == name)
                assert tool.annotations is not None and tool.annotations.read_only_hint is True, name

    anyio.run(session)


def test_a_model_finds_one_line_in_five_megabytes_in_one_call_and_pages_by_lines(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    start_worker()

    async def session() -> None:
        async with mcp_over_stdio(queue_root, tmp_path, "--no-auto-start") as client:
            done = structured((await client.call("enqueue_job", {"command": "seq 1 700000", "wait_s": 30})).result)
            job_id = done["job_id"]
            found = structured(
                (await client.call("search_output", {"job_id": job_id, "pattern": "^4242[0-9][0-9]$"})).result
            )
            first = found["matches"][0]
            assert (first["line"], first["text"], first["stream"]) == (424200, "424200", "stdout")
            assert len(found["matches"]) == 20 and "max_matches" in found["cut"]
            exact = structured(
                (await client.call("search_output", {"pattern": "4242", "fixed": True, "context": 1})).result
            )  # the most recent jobs: this one
            assert exact["matches"][0]["line"] == 4242 and exact["matches"][0]["before"] == ["4241"]
            assert exact["matches"][0]["after"] == ["4243"]
            page = structured(
                (await client.call("get_job_output", {"job_id": job_id, "from_line": 100, "lines": 41})).result
            )
            assert page["text"] == "".join(f"{n}\n" for n in range(100, 141))
            assert (page["first_line"], page["last_line"], page["total_lines"]) == (100, 140, 700_000)
            assert page["next"] == f'get_job_output {{"job_id": "{job_id}", "from_line": 141}}'
            head = structured((await client.call("get_job_output", {"job_id": job_id, "head": 3})).result)
            assert head["text"] == "1\n2\n3\n"
            default = await client.call("get_job_output", {"job_id": job_id})
            page = structured(default.result)
            assert len(page["text"].encode()) <= 16 * 1024 and page["text"].endswith("700000\n")
            assert page["last_line"] == 700_000 and page["first_line"] > 1 and "lines" in page["cut"]
            tail = structured((await client.call("get_job_output", {"job_id": job_id, "tail": 20_000})).result)
            assert tail["first_line"] == 680_001 and "max_bytes" in tail["cut"]  # said, not silent
            assert tail["next"] == f'get_job_output {{"job_id": "{job_id}", "from_line": {tail["last_line"] + 1}}}'
            too_much = await client.client.call_tool("get_job_output", {"job_id": job_id, "max_bytes": 1_000_000})
            assert too_much.is_error and "max_bytes is at most 65536" in too_much.content[0].text  # type: ignore[union-attr]
            assert "pydantic" not in too_much.content[0].text  # type: ignore[union-attr]

    anyio.run(session)
