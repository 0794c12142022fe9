"""Independent hostile review of the claim-path and command-policy fixes: what still got through.

Each test drives a real worker process (``execsvc run``) on a queue under ``tmp_path``.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import WorkerProcess, build_marker_library, daemon_log, drop, wait_finished

from execsvc import JobStatus

Start = Callable[..., WorkerProcess]


def write_config(path: Path, policy: dict[str, object], **worker: float) -> Path:
    lines = ["[worker]", "kill_grace_s = 0.5", *(f"{key} = {value}" for key, value in worker.items()), "[policy]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in policy.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# ----- the claim: a hard-linked job file too big to be a job ----------------------------------


def test_a_hard_linked_file_too_big_to_be_a_job_is_refused_without_being_copied(
    queue_root: Path, tmp_path: Path, start_worker: Start
) -> None:
    """``ln /data/huge.img pending/x.json``: the claim makes a private copy of a job file with
    other names, but one above max_job_file_bytes is refused unread, so copying it first only
    fills the disk and holds the worker's loop (gigabytes, for any file a local user can
    link). Refused at once, as invalid, and kept as it is (the same inode)."""
    huge = tmp_path / "huge.img"
    with open(huge, "wb") as out:
        out.truncate(256 * 1024 * 1024)  # sparse: 256 MiB that take no room, until copied
    worker = start_worker("--config", str(write_config(tmp_path / "config.toml", {})))
    os.link(huge, queue_root / "pending" / "x.json")
    info = wait_finished(queue_root, "x")
    assert worker.stop() == 0
    assert info.result is not None and info.status is JobStatus.INVALID, info.result
    assert "the limit is" in (info.result.error or ""), info.result.error
    kept = queue_root / "failed" / "x.json"
    assert os.path.samefile(kept, huge), "the worker copied a file it was going to refuse unread"
    allocated = sum(path.stat().st_blocks * 512 for path in queue_root.rglob("*") if path.is_file())
    assert allocated < 16 * 1024 * 1024, f"the queue holds {allocated} bytes on disk"


# ----- result_file: the queue's own folders under another name ----------------------------------


@pytest.mark.parametrize("alias", ["symlinked-folder", "folder-inside-the-queue"])
def test_result_file_never_lands_in_the_queues_own_folders_under_another_name(
    tmp_path: Path, start_worker: Start, alias: str
) -> None:
    """The queue's own folders (pending/, completed/ ...) are refused as a result_file's folder
    by what they are, not by how the path is spelled: through a result_file_folders entry that
    is a symbolic link to the folder holding the queue (``/data -> /srv``, queue in /srv/q), or
    an entry that lies inside the queue. A job's stdout there would become a job or a record."""
    real = tmp_path / "srv"
    queue_root = real / "q"
    if alias == "symlinked-folder":
        folder = tmp_path / "data"
        folder.symlink_to(real)
        spelled = folder / "q"
    else:
        folder = queue_root / "completed"
        spelled = queue_root
    config = write_config(tmp_path / "config.toml", {"result_file_folders": [str(folder)]})
    worker = start_worker("--config", str(config), root=queue_root)
    evil = {"command": "/bin/sh", "args": ["-c", "echo 'echo owned'"]}
    targets = {"job": spelled / "pending" / "evil.sh", "record": spelled / "completed" / "forged.result.json"}
    for job_id, target in targets.items():
        drop(queue_root, f"{job_id}.json", {**evil, "result_file": str(target)})
    results = {job_id: wait_finished(queue_root, job_id).result for job_id in targets}
    assert worker.stop() == 0
    written = sorted(str(path.relative_to(queue_root)) for path in queue_root.glob("*/*") if "evil" in path.name)
    assert written == [], "a job's stdout became a job (and ran)"
    assert not (queue_root / "completed" / "forged.result.json").exists(), "a job's stdout became a record"
    for job_id, result in results.items():
        assert result is not None and result.status is JobStatus.INVALID, (job_id, result)
        assert "refused by the worker's policy (result_file)" in (result.error or ""), result.error
        assert "the queue's own" in (result.error or ""), result.error


def test_a_result_file_with_the_longest_name_a_folder_allows_is_written(queue_root: Path, start_worker: Start) -> None:
    """A result_file name of 255 bytes (the most a Linux folder allows) is a name like any other:
    the file written beside and renamed into place must not need a longer one."""
    name = "r" * 251 + ".txt"
    worker = start_worker()
    (queue_root / "out").mkdir()
    drop(queue_root, "long.json", {"command": "echo", "args": ["hello"], "result_file": f"out/{name}"})
    info = wait_finished(queue_root, "long")
    assert worker.stop() == 0
    assert info.result is not None and info.status is JobStatus.COMPLETED, info.result
    assert (queue_root / "out" / name).read_text() == "hello\n"
    assert os.listdir(queue_root / "out") == [name]


def test_a_result_folder_swapped_for_a_link_into_the_queue_while_the_job_runs_is_not_written(
    queue_root: Path, tmp_path: Path, start_worker: Start
) -> None:
    """result_file_folders = [results]; the job replaces ``results`` with a link to pending/ while
    it runs. The copy at the end opens the configured folder as it is then, and finds pending/:
    the job fails, saying so, and no new job appears."""
    results = tmp_path / "results"
    results.mkdir()
    config = write_config(tmp_path / "config.toml", {"result_file_folders": [str(results)]})
    worker = start_worker("--config", str(config))
    swap = f"rmdir {results} && ln -s {queue_root / 'pending'} {results} && echo 'echo owned'"
    drop(queue_root, "swap.json", {"command": swap, "result_file": str(results / "evil.sh")})
    info = wait_finished(queue_root, "swap")
    assert worker.stop() == 0
    assert sorted(path.name for path in (queue_root / "pending").iterdir()) == []
    assert not (queue_root / "completed" / "evil.sh").exists(), "the job's stdout ran as a job"
    assert info.result is not None and info.status is JobStatus.FAILED, info.result
    assert "the queue's own 'pending'" in (info.result.error or ""), info.result.error


# ----- the environment rule: loaders outside the dynamic loader and the interpreters -------------


def test_variables_that_make_openssl_or_zsh_load_other_code_are_refused(
    queue_root: Path, tmp_path: Path, start_worker: Start
) -> None:
    """OPENSSL_CONF names a config whose provider or engine section makes libcrypto dlopen any
    shared object: in ``openssl``, and in an allowed Python tool that only imports hashlib
    (no PYTHON* variable needed). ZDOTDIR makes every zsh, scripts too, source
    ``$ZDOTDIR/.zshenv``, as BASH_ENV does for bash. With allowed_commands set, refused."""
    marker = tmp_path / "pwned"
    evil_so = build_marker_library(tmp_path, marker)
    conf = tmp_path / "evil.cnf"
    conf.write_text(
        "openssl_conf = init\n[init]\nproviders = providers\n[providers]\nevil = evil\n"
        f"[evil]\nmodule = {evil_so}\nactivate = 1\n"
    )
    (tmp_path / ".zshenv").write_text(f"touch {marker}\n")
    tools = tmp_path / "allowed"
    tools.mkdir()
    shutil.copy("/usr/bin/openssl", tools / "openssl")
    (tools / "hashy").write_text("#!/usr/bin/python3\nimport hashlib\nprint(hashlib.sha256(b'').hexdigest()[:8])\n")
    (tools / "hashy").chmod(0o755)
    (tools / "zshy").write_text("#!/bin/zsh\necho zshy\n")
    (tools / "zshy").chmod(0o755)
    config = write_config(tmp_path / "config.toml", {"allowed_commands": [str(tools)], "allow_shell": False})
    worker = start_worker("--config", str(config))
    refused = {
        "openssl": (tools / "openssl", ["version"], {"OPENSSL_CONF": str(conf)}),
        "python": (tools / "hashy", [], {"OPENSSL_CONF": str(conf)}),
        "modules": (tools / "hashy", [], {"OPENSSL_MODULES": str(tmp_path)}),
        "engines": (tools / "openssl", ["version"], {"OPENSSL_ENGINES": str(tmp_path)}),
        "zsh": (tools / "zshy", [], {"ZDOTDIR": str(tmp_path)}),
    }
    for job_id, (program, args, env) in refused.items():
        drop(queue_root, f"{job_id}.json", {"command": str(program), "args": args, "env": env})
    drop(queue_root, "harmless.json", {"command": str(tools / "hashy"), "args": [], "env": {"GREETING": "hi"}})
    results = {job_id: wait_finished(queue_root, job_id).result for job_id in [*refused, "harmless"]}
    assert worker.stop() == 0
    assert not marker.exists(), "a job's library or start-up file ran inside an allowed program"
    harmless = results.pop("harmless")
    assert harmless is not None and harmless.status is JobStatus.COMPLETED, harmless
    for job_id, result in results.items():
        name = next(iter(refused[job_id][2]))
        assert result is not None and result.status is JobStatus.INVALID, (job_id, result)
        assert f"(allowed_commands): the job sets {name}" in (result.error or ""), result.error


# ----- webhooks: what the worker reads of the answer -------------------------------------------


class EndlessAnswer(http.server.BaseHTTPRequestHandler):
    """``/body``: 200, then a chunked body that never ends (1 KiB every 10 ms). ``/headers``:
    the status line, then a header one byte every 50 ms, never finished. Until the client
    goes away or the server stops."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server = self.server
        assert isinstance(server, EndlessServer)
        try:
            if self.path == "/body":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
                while not server.done.wait(0.01):
                    self.wfile.write(chunk)
                    self.wfile.flush()
            else:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not server.done.wait(0.05):
                    self.wfile.write(b"z")
                    self.wfile.flush()
        except OSError:
            pass  # the client hung up: what it should do

    def log_message(self, format: str, *args: object) -> None:
        pass


class EndlessServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EndlessAnswer)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.done.set()
        self.shutdown()
        self.server_close()


def test_a_webhook_answer_that_never_ends_does_not_hold_the_hook_thread(
    queue_root: Path, tmp_path: Path, start_worker: Start
) -> None:
    """The webhook's server answers 200 and then streams a body without end. The status is the
    answer: the worker logs webhook_sent and hangs up, instead of reading (and keeping in
    memory) whatever the server sends, for ever, while its hook threads and its shutdown wait."""
    server = EndlessServer()
    try:
        config = write_config(tmp_path / "config.toml", {"webhook_hosts": ["127.0.0.1"]})
        worker = start_worker("--config", str(config))
        port = server.server_address[1]
        drop(queue_root, "hooked.json", {"command": "true", "webhook": f"http://127.0.0.1:{port}/body"})
        assert wait_finished(queue_root, "hooked").status is JobStatus.COMPLETED
        worker.wait_for_line("webhook_sent job=hooked", timeout_s=10)
        assert worker.stop(timeout_s=10) == 0
        assert "webhook_sent job=hooked" in daemon_log(queue_root)
    finally:
        server.close()


def test_a_webhook_try_is_cut_after_webhook_timeout_s_even_by_a_server_that_trickles(
    queue_root: Path, tmp_path: Path, start_worker: Start
) -> None:
    """A server that never finishes its headers but sends a byte every 50 ms never lets a
    per-read timeout expire. The try is cut after webhook_timeout_s (1 s here), the webhook
    fails saying so, and the worker stops at once."""
    server = EndlessServer()
    try:
        config = write_config(tmp_path / "config.toml", {"webhook_hosts": ["127.0.0.1"]}, webhook_timeout_s=1)
        worker = start_worker("--config", str(config))
        port = server.server_address[1]
        drop(queue_root, "slow.json", {"command": "true", "webhook": f"http://127.0.0.1:{port}/headers"})
        assert wait_finished(queue_root, "slow").status is JobStatus.COMPLETED
        line = worker.wait_for_line("webhook_failed job=slow", timeout_s=10)
        assert "within 1 s" in line, line
        assert worker.stop(timeout_s=10) == 0
    finally:
        server.close()


# ----- the folder checks: what the worker creates itself -----------------------------------------


@pytest.fixture
def group_umask() -> Iterator[None]:
    """umask 002, the default of a user with a group of their own on Debian and Ubuntu; the
    workers started meanwhile inherit it."""
    old = os.umask(0o002)
    yield
    os.umask(old)


def test_a_worker_serves_a_queue_whose_parent_folders_it_created_under_umask_002(
    tmp_path: Path, start_worker: Start, group_umask: None
) -> None:
    """``execsvc run --queue-dir ~/a/b/queue`` where a/ and b/ do not exist yet: the worker makes
    them, and must not then refuse them as writable by its group (mode 775 under umask 002)."""
    queue_root = tmp_path / "a" / "b" / "queue"
    worker = start_worker(root=queue_root)
    drop(queue_root, "ok.json", {"command": "true"})
    assert wait_finished(queue_root, "ok").status is JobStatus.COMPLETED
    assert worker.stop() == 0
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
