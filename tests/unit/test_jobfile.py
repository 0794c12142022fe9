"""Reading job files: the two JSON shapes, text jobs, and a reason for everything else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from execsvc import WorkerConfig
from execsvc.protocol.errors import InvalidJob
from execsvc.protocol.jobfile import parse_json_job
from execsvc.run_request import read_job

CONFIG = WorkerConfig(default_timeout_s=300, max_timeout_s=600)


def read(tmp_path: Path, name: str, content: bytes | str, config: WorkerConfig = CONFIG):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    kind = "json" if name.endswith(".json") else "text" if name.endswith((".sh", ".txt")) else "other"
    return read_job(path, kind, job_id="j", queue_root=tmp_path, config=config)  # type: ignore[arg-type]


def test_command_with_args_runs_directly(tmp_path: Path) -> None:
    request = read(tmp_path, "a.json", '{"command": "echo", "args": ["Hello, World!"], "description": "d"}')
    assert request.argv == ["echo", "Hello, World!"]
    assert request.timeout_s == 300 and request.cwd == Path.home() and request.stdin is None


def test_command_line_without_args_runs_in_the_shell(tmp_path: Path) -> None:
    request = read(tmp_path, "a.json", '{"task_id": "t", "command": "python3 /x.py | tee y", "purpose": "p"}')
    assert request.argv == ["/bin/sh", "-c", "python3 /x.py | tee y"]


def test_shell_flag_overrides(tmp_path: Path) -> None:
    quoted = read(tmp_path, "a.json", '{"command": "echo", "args": ["a b", "$HOME"], "shell": true}')
    assert quoted.argv == ["/bin/sh", "-c", "echo 'a b' '$HOME'"]
    split = read(tmp_path, "b.json", '{"command": "ls -l \'my dir\'", "shell": false}')
    assert split.argv == ["ls", "-l", "my dir"]


def test_env_is_merged_and_marked(tmp_path: Path) -> None:
    request = read(tmp_path, "a.json", '{"command": "env", "env": {"FOO": "bar"}}')
    assert request.env["FOO"] == "bar" and request.env["EXECSVC_JOB_ID"] == "j"
    assert request.env["EXECSVC_QUEUE_DIR"] == str(tmp_path)
    assert request.env.get("PATH") == os.environ.get("PATH")


def test_paths_are_relative_to_the_queue_root(tmp_path: Path) -> None:
    request = read(tmp_path, "a.json", '{"command": "true", "cwd": "work", "result_file": "out/r.txt"}')
    assert request.cwd == tmp_path / "work" and request.result_file == tmp_path / "out" / "r.txt"
    absolute = read(tmp_path, "b.json", '{"command": "true", "cwd": "/tmp"}')
    assert absolute.cwd == Path("/tmp")


def test_timeout_is_capped_by_the_worker(tmp_path: Path) -> None:
    request = read(tmp_path, "a.json", '{"command": "true", "timeout_s": 1e9}')
    assert (request.timeout_s, request.requested_timeout_s) == (600, 1e9)
    assert read(tmp_path, "b.json", '{"command": "true", "timeout_s": 2}').timeout_s == 2


def test_stdin_and_a_byte_order_mark(tmp_path: Path) -> None:
    request = read(tmp_path, "a.json", b'\xef\xbb\xbf{"command": "cat", "stdin": "caf\xc3\xa9"}')
    assert request.stdin == "café".encode()


def test_text_jobs_use_sh_or_their_interpreter(tmp_path: Path) -> None:
    assert read(tmp_path, "a.sh", "echo hi\n").argv == ["/bin/sh", str(tmp_path / "a.sh")]
    assert read(tmp_path, "b.txt", "#!/usr/bin/env python3\nprint(1)\n").argv == [
        "/usr/bin/env",
        "python3",
        str(tmp_path / "b.txt"),
    ]
    assert read(tmp_path, "c.sh", "#!/bin/bash -eu\r\necho\r\n").argv == ["/bin/bash", "-eu", str(tmp_path / "c.sh")]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "the job file is empty"),
        ("  \n\t", "holds only white space"),
        ('{"command": "echo"', "not valid JSON"),
        ("[1]", "holds a list"),
        ("42", "holds a number"),
        ('"echo hi"', "holds a string"),
        ("null", "holds null"),
        ('{"args": ["x"]}', "the required field 'command' is missing"),
        ('{"command": ""}', "'command'"),
        ('{"command": "   "}', "command is blank"),
        ('{"command": 5}', "'command': Input should be a valid string"),
        ('{"command": "echo", "args": "x"}', "'args'"),
        ('{"command": "echo", "args": [1]}', "'args.0'"),
        ('{"command": "env", "env": {"A": 1}}', "'env.A'"),
        ('{"command": "true", "env": {"A=B": "c"}}', "'env' has an unusable variable"),
        ('{"command": "true", "timeout_s": -1}', "'timeout_s'"),
        ('{"command": "true", "timeout_s": "5"}', "'timeout_s'"),
        ('{"command": "true", "shell": "yes"}', "'shell'"),
        ('{"command": "true", "result": {}}', "reserved"),
        ('{"command": "echo \'unclosed", "shell": false}', "cannot be split into words"),
        ('{"command": "echo", "args": ["a\\u0000b"]}', "NUL"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_bad_json_jobs_get_a_reason(tmp_path: Path, content: str | bytes, reason: str) -> None:
    with pytest.raises(InvalidJob) as caught:
        read(tmp_path, "bad.json", content)
    assert reason in caught.value.reason


def test_bad_text_jobs_and_other_entries_get_a_reason(tmp_path: Path) -> None:
    with pytest.raises(InvalidJob, match="the script is empty"):
        read(tmp_path, "a.sh", "")
    with pytest.raises(InvalidJob, match="only white space"):
        read(tmp_path, "b.sh", "\n\n")
    with pytest.raises(InvalidJob, match="names no interpreter"):
        read(tmp_path, "c.sh", "#!\necho\n")
    with pytest.raises(InvalidJob, match=r"end in \.json, \.sh or \.txt"):
        read(tmp_path, "d.yaml", "x")
    with pytest.raises(InvalidJob, match="limit is 10 bytes"):
        read(tmp_path, "e.json", '{"command": "true"}', WorkerConfig(max_job_file_bytes=10))
    (tmp_path / "f.json").mkdir()
    with pytest.raises(InvalidJob, match="a directory"):
        read_job(tmp_path / "f.json", "json", job_id="f", queue_root=tmp_path, config=CONFIG)
    os.mkfifo(tmp_path / "g.json")
    with pytest.raises(InvalidJob, match="not a regular file"):
        read_job(tmp_path / "g.json", "json", job_id="g", queue_root=tmp_path, config=CONFIG)


def test_parse_json_job_keeps_unknown_fields() -> None:
    spec = parse_json_job(b'{"command": "x", "priority_hint": 3}')
    assert spec.model_extra == {"priority_hint": 3}
