"""The bad-input corpus: every kind of thing a foreign tool can put in ``pending/``.

One real worker serves the whole module, so every case also proves that
the worker kept serving after the cases before it. Each case drops one
entry and waits for its record; the record must say, in words a person
understands, what was wrong (or the job runs), and ``daemon.log`` must name
the entry.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import WorkerProcess, drop, wait_until

from execsvc import JobInfo, JobQueue, JobState, JobStatus
from execsvc.protocol.layout import readable_name

Setup = Callable[[Path, Path], None]
"""Puts one entry at its path in ``pending/`` (first argument); the second is a scratch folder."""


@dataclass(frozen=True)
class Case:
    name: str  # the entry's name in pending/
    setup: Setup
    status: JobStatus
    reason: str  # a piece of the record's error (or of stdout for a job that runs)


def json_bytes(data: bytes) -> Setup:
    def setup(target: Path, _scratch: Path) -> None:
        tmp = target.parent / ".corpus.tmp"
        tmp.write_bytes(data)
        os.rename(tmp, target)

    return setup


def job(content: dict[str, object]) -> Setup:
    return json_bytes(json.dumps(content).encode())


def in_place(data: bytes) -> Setup:
    """Open, write, close under the final name, as the original service's producer does."""

    def setup(target: Path, _scratch: Path) -> None:
        target.write_bytes(data)

    return setup


def _directory(target: Path, scratch: Path) -> None:
    built = scratch / "a-directory"  # made elsewhere, then moved in whole: the worker may claim it at once
    built.mkdir()
    (built / "inner.json").write_text('{"command": "true"}')
    os.rename(built, target)


def _symlink_to_valid_job(target: Path, scratch: Path) -> None:
    marker = scratch / "symlink-target-ran"
    linked = scratch / "target.json"
    linked.write_text(json.dumps({"command": f"touch {marker}"}))
    os.symlink(linked, target)


def _dangling_symlink(target: Path, scratch: Path) -> None:
    os.symlink(scratch / "nowhere.json", target)


def _fifo(target: Path, _scratch: Path) -> None:
    os.mkfifo(target)


def _socket(target: Path, _scratch: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(target))


def _hard_link(target: Path, scratch: Path) -> None:
    original = scratch / "hard.json"
    original.write_text(json.dumps({"command": "echo", "args": ["hard link ran"]}))
    os.link(original, target)


def _not_executable(target: Path, scratch: Path) -> None:
    program = scratch / "not-executable"
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(0o644)
    job({"command": str(program), "args": []})(target, scratch)


def _cwd_is_a_file(target: Path, scratch: Path) -> None:
    (scratch / "a-file").write_text("")
    job({"command": "pwd", "cwd": str(scratch / "a-file")})(target, scratch)


DEEP = b'{"command": "true", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

CASES = [
    # --- JSON that is not a job ------------------------------------------------------
    Case("empty.json", json_bytes(b""), JobStatus.INVALID, "the job file is empty"),
    Case("blank.json", json_bytes(b" \n\t \r\n"), JobStatus.INVALID, "only white space"),
    Case("truncated.json", json_bytes(b'{"command": "ec'), JobStatus.INVALID, "not valid JSON"),
    Case("array.json", json_bytes(b'["echo", "hi"]'), JobStatus.INVALID, "this file holds a list"),
    Case("number.json", json_bytes(b"42"), JobStatus.INVALID, "this file holds a number"),
    Case("string.json", json_bytes(b'"echo hi"'), JobStatus.INVALID, "this file holds a string"),
    Case("null.json", json_bytes(b"null"), JobStatus.INVALID, "this file holds null"),
    Case("args-not-list.json", job({"command": "echo", "args": "hi"}), JobStatus.INVALID, "'args'"),
    Case("args-numbers.json", job({"command": "echo", "args": [1, 2]}), JobStatus.INVALID, "'args.0'"),
    Case("command-number.json", job({"command": 5}), JobStatus.INVALID, "'command'"),
    Case("no-command.json", job({"description": "forgot it"}), JobStatus.INVALID, "'command' is missing"),
    Case("empty-command.json", job({"command": ""}), JobStatus.INVALID, "'command'"),
    Case("blank-command.json", job({"command": "   "}), JobStatus.INVALID, "'command'"),
    Case("huge.json", json_bytes(b" " * 100_000_000 + b'{"command": "true"}'), JobStatus.INVALID, "the limit is"),
    Case("deep.json", json_bytes(DEEP), JobStatus.INVALID, "nested too deeply"),
    Case("nul-raw.json", json_bytes(b'{"command": "echo\x00hi"}'), JobStatus.INVALID, "not valid JSON"),
    Case("nul-escaped.json", job({"command": "echo", "args": ["a\x00b"]}), JobStatus.INVALID, "NUL byte"),
    Case("latin1.json", json_bytes('{"command": "echo café"}'.encode("latin-1")), JobStatus.INVALID, "not UTF-8"),
    Case("result-field.json", job({"command": "true", "result": {}}), JobStatus.INVALID, "reserved"),
    Case("env-number.json", job({"command": "true", "env": {"A": 1}}), JobStatus.INVALID, "'env.A'"),
    Case("env-nul.json", job({"command": "true", "env": {"A": "x\x00y"}}), JobStatus.INVALID, "NUL"),
    Case("env-name-equals.json", job({"command": "true", "env": {"A=B": "x"}}), JobStatus.INVALID, "'env'"),
    Case("timeout-negative.json", job({"command": "true", "timeout_s": -1}), JobStatus.INVALID, "'timeout_s'"),
    Case("timeout-zero.json", job({"command": "true", "timeout_s": 0}), JobStatus.INVALID, "'timeout_s'"),
    Case("timeout-string.json", job({"command": "true", "timeout_s": "5"}), JobStatus.INVALID, "'timeout_s'"),
    Case("timeout-nan.json", json_bytes(b'{"command": "true", "timeout_s": NaN}'), JobStatus.INVALID, "'timeout_s'"),
    Case("timeout-inf.json", json_bytes(b'{"command": "true", "timeout_s": Infinity}'), JobStatus.INVALID, "timeout_s"),
    Case("stdin-list.json", job({"command": "cat", "stdin": ["a"]}), JobStatus.INVALID, "'stdin'"),
    Case("unsplittable.json", job({"command": 'echo "unclosed', "shell": False}), JobStatus.INVALID, "quote it"),
    # --- names and kinds of entry ----------------------------------------------------
    Case("unknown.yaml", json_bytes(b"command: true"), JobStatus.INVALID, "job files end in .json, .sh or .txt"),
    Case("no-extension", json_bytes(b"true"), JobStatus.INVALID, "job files end in .json, .sh or .txt"),
    Case("a-directory.json", _directory, JobStatus.INVALID, "this is a directory"),
    Case("link.json", _symlink_to_valid_job, JobStatus.INVALID, "links in pending/ are never followed"),
    Case("dangling.json", _dangling_symlink, JobStatus.INVALID, "links in pending/ are never followed"),
    Case("fifo.json", _fifo, JobStatus.INVALID, "not a regular file"),
    Case("socket.json", _socket, JobStatus.INVALID, "not a regular file"),
    Case("hard-link.json", _hard_link, JobStatus.COMPLETED, "hard link ran"),
    Case("with spaces.json", job({"command": "echo", "args": ["spaces ok"]}), JobStatus.COMPLETED, "spaces ok"),
    Case("new\nline.json", job({"command": "echo", "args": ["newline ok"]}), JobStatus.COMPLETED, "newline ok"),
    Case("ジョブ-ünï.json", job({"command": "echo", "args": ["unicode ok"]}), JobStatus.COMPLETED, "unicode ok"),
    Case("L" * 250 + ".json", job({"command": "echo", "args": ["long ok"]}), JobStatus.COMPLETED, "long ok"),
    Case("bytes-\udcff-name.json", job({"command": "echo", "args": ["bytes ok"]}), JobStatus.COMPLETED, "bytes ok"),
    Case("bom.json", json_bytes(b'\xef\xbb\xbf{"command": "echo bom ok"}'), JobStatus.COMPLETED, "bom ok"),
    Case("in-place.json", in_place(b'{"command": "echo in place ok"}'), JobStatus.COMPLETED, "in place ok"),
    # --- text jobs ---------------------------------------------------------------------
    Case("empty.sh", json_bytes(b""), JobStatus.INVALID, "the script is empty"),
    Case("blank.sh", json_bytes(b"\n \n"), JobStatus.INVALID, "only white space"),
    Case("crlf.sh", json_bytes(b"echo crlf\r\nfalse\r\n"), JobStatus.FAILED, "Windows line endings (CRLF)"),
    Case("bad-shebang.sh", json_bytes(b"#!/no/such/interpreter\necho hi\n"), JobStatus.FAILED, "command not found"),
    Case("latin1.sh", json_bytes("echo café\n".encode("latin-1")), JobStatus.COMPLETED, "caf"),
    # --- jobs that cannot start -----------------------------------------------------------
    Case("no-cwd.json", job({"command": "pwd", "cwd": "/no/such/folder"}), JobStatus.FAILED, "does not exist"),
    Case("cwd-file.json", _cwd_is_a_file, JobStatus.FAILED, "is not a directory"),
    Case("not-found.json", job({"command": "no-such-program-xyz", "args": []}), JobStatus.FAILED, "command not found"),
    Case("not-executable.json", _not_executable, JobStatus.FAILED, "permission denied"),
    Case(
        "arg-too-long.json",
        job({"command": "echo", "args": ["x" * 300_000]}),
        JobStatus.FAILED,
        "could not be started",
    ),
    Case(
        "result-file-folder.json",
        job({"command": "true", "result_file": "no/such/folder/out.txt"}),
        JobStatus.FAILED,
        "does not exist",
    ),
    # --- jobs that run, with awkward output or input --------------------------------------
    Case("binary-out.json", job({"command": "printf '\\377\\376bin\\000ary'"}), JobStatus.COMPLETED, "bin"),
    Case("no-newline.json", job({"command": "printf no-newline"}), JobStatus.COMPLETED, "no-newline"),
    Case(
        "closes-stdout.json",
        job({"command": "echo before; exec 1>&-; sleep 0.1; echo after-close >&2"}),
        JobStatus.COMPLETED,
        "before",
    ),
    Case("reads-stdin.json", job({"command": "cat; echo stdin-ended"}), JobStatus.COMPLETED, "stdin-ended"),
    Case("absurd-timeout.json", job({"command": "echo capped", "timeout_s": 1e300}), JobStatus.COMPLETED, "capped"),
    Case("exit-3.json", job({"command": "exit 3"}), JobStatus.FAILED, "exited with code 3"),
]


@pytest.fixture(scope="module")
def corpus_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    root = tmp_path_factory.mktemp("corpus") / "queue"
    worker = WorkerProcess(root).wait_ready()
    yield worker
    code = worker.stop()
    assert code == 0, "the worker did not stop cleanly after the corpus:\n" + "\n".join(worker.lines)


def test_the_corpus_has_at_least_forty_kinds() -> None:
    assert len({case.name for case in CASES}) == len(CASES) >= 40


def find_record(root: Path, name: str, timeout_s: float = 30.0) -> JobInfo:
    """The finished record of the entry submitted as ``name`` (its id may have been changed)."""
    queue = JobQueue(root)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for state in (JobState.COMPLETED, JobState.FAILED):
            for info in queue.jobs(state):
                if info.result is not None and info.result.job_file == readable_name(name):
                    return info
        time.sleep(0.02)
    pytest.fail(f"no record for {name!r}; pending/ holds {sorted(os.listdir(root / 'pending'))}")


@pytest.mark.parametrize("case", CASES, ids=[case.name.encode("ascii", "replace").decode()[:40] for case in CASES])
def test_bad_input_gets_a_reason_and_the_worker_keeps_serving(
    case: Case, corpus_worker: WorkerProcess, tmp_path: Path
) -> None:
    root = corpus_worker.queue_root
    case.setup(root / "pending" / case.name, tmp_path)
    info = find_record(root, case.name)
    assert info.result is not None
    result = info.result
    assert result.status is case.status, f"{case.name!r}: {result.status.value}: {result.error}"
    if case.status is JobStatus.COMPLETED:
        assert case.reason in result.stdout
    else:
        assert result.error is not None and case.reason in result.error, result.error
    assert not (root / "pending" / case.name).exists() and not os.path.lexists(root / "pending" / case.name)
    # the job leaves running/ just after its record appears (docs/protocol.md, "Finishing")
    wait_until(lambda: all(n.startswith(".") for n in os.listdir(root / "running")), what="running/ to empty")
    log = (root / "daemon.log").read_text(errors="replace")
    assert f"job={result.job_id}" in log or f"job={json.dumps(result.job_id)}" in log
    assert "internal_error" not in log, log
    assert corpus_worker.proc.poll() is None, "the worker died"


def test_symlinked_job_was_not_followed(corpus_worker: WorkerProcess, tmp_path: Path) -> None:
    root = corpus_worker.queue_root
    _symlink_to_valid_job(root / "pending" / "follow-me.json", tmp_path)
    written = (tmp_path / "target.json").read_text()
    find_record(root, "follow-me.json")
    assert not (tmp_path / "symlink-target-ran").exists()
    assert (tmp_path / "target.json").read_text() == written  # untouched
    assert (root / "failed" / "follow-me.json").is_symlink()


@pytest.mark.parametrize("name", [".hidden.json", "job.json.tmp", ".x.tmp"])
def test_hidden_and_temporary_files_are_left_alone(name: str, corpus_worker: WorkerProcess) -> None:
    root = corpus_worker.queue_root
    path = root / "pending" / name
    path.write_text('{"command": "true"}')
    sentinel = f"after-{name.strip('.').replace('.', '-')}"
    drop(root, f"{sentinel}.json", {"command": "true"})
    JobQueue(root).wait(sentinel, 30)
    assert path.exists() and stat.S_ISREG(path.lstat().st_mode)
    path.unlink()


def test_a_file_removed_while_half_written_is_forgotten(corpus_worker: WorkerProcess) -> None:
    root = corpus_worker.queue_root
    path = root / "pending" / "half.json"
    with path.open("w") as handle:  # open for writing: not ready
        handle.write('{"command": ')
        handle.flush()
        path.unlink()
    drop(root, "after-half.json", {"command": "true"})
    assert JobQueue(root).wait("after-half", 30).status is JobStatus.COMPLETED
    assert "file=half.json" not in (root / "daemon.log").read_text()


def test_non_utf8_file_name_bytes(corpus_worker: WorkerProcess) -> None:
    root = corpus_worker.queue_root
    name = b"raw-\xff\xfe.json"
    tmp = os.path.join(os.fsencode(root / "pending"), b".raw.tmp")
    with open(tmp, "wb") as handle:
        handle.write(b'{"command": "echo raw bytes ok"}')
    os.rename(tmp, os.path.join(os.fsencode(root / "pending"), name))
    info = find_record(root, os.fsdecode(name))
    assert info.result is not None and "raw bytes ok" in info.result.stdout
    assert info.result.job_file == "raw-\\xff\\xfe.json"
    log = (root / "daemon.log").read_text()
    assert f"renamed job={info.job_id} file=" in log and "raw-\\\\xff\\\\xfe" in log
