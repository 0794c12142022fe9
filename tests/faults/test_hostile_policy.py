"""Hostile jobs against the command policy (issue 17, items 1-5): nothing a job file, a CLI call or
an MCP call says lifts the policy in the worker's config file, and the queue cannot be taken over.

Every webhook that must be refused is tried by a worker in an empty network namespace
(``unshare --net``), where nothing but loopback exists, so that a refusal that fails still
sends nothing off this machine.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import WorkerProcess, build_marker_library, console_script, daemon_log, drop, wait_finished
from mcp import Client
from mcp_calls import run, structured

from execsvc import JobStatus

Start = Callable[..., WorkerProcess]


def write_config(path: Path, policy: dict[str, object]) -> Path:
    lines = ["[worker]", "kill_grace_s = 0.5", "hook_timeout_s = 10", "webhook_attempts = 1", "[policy]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in policy.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """A folder of allowed programs: a copy of ``true`` (dynamically linked), a bash script, and
    a script that runs ``helper`` by its bare name."""
    folder = tmp_path / "allowed"
    folder.mkdir()
    shutil.copy("/bin/true", folder / "true")
    (folder / "bashy").write_text("#!/bin/bash\necho bashy\n")
    (folder / "calls-helper").write_text("#!/bin/sh\nhelper\n")
    for name in ("bashy", "calls-helper"):
        (folder / name).chmod(0o755)
    return folder


def stopped(worker: WorkerProcess) -> str:
    """Stop the worker (its shutdown waits for every hook thread) and return daemon.log."""
    assert worker.stop() == 0
    return daemon_log(worker.queue_root)


# ----- 1. nothing of a refused job runs ----------------------------------------------------


def test_a_refused_jobs_on_finish_never_runs(queue_root: Path, start_worker: Start, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {"allow_shell": False})
    worker = start_worker("--config", str(config))
    pwned = tmp_path / "pwned"
    hook = f"id > {pwned}.$EXECSVC_JOB_ID"
    drop(queue_root, "hook.json", {"command": "/bin/true", "args": [], "on_finish": hook})
    # Refusals that used to come before the policy's: a job whose dependency failed, a missing folder.
    drop(queue_root, "dep.json", {"command": "/bin/false", "args": []})
    wait_finished(queue_root, "dep")
    drop(queue_root, "doomed.json", {"command": "/bin/true", "args": [], "after": ["dep"], "on_finish": hook})
    drop(
        queue_root,
        "no-folder.json",
        {"command": "/bin/true", "args": [], "result_file": "nowhere/out.txt", "on_finish": hook},
    )

    async def session(client: Client) -> None:
        arguments = {"command": "/bin/true", "args": [], "on_finish": hook, "wait_s": 10}
        refused = await client.call_tool("enqueue_job", arguments)  # the server knows the policy: not enqueued
        assert refused.is_error and "on_finish is a shell command line" in refused.content[0].text  # type: ignore[union-attr]

    run(session, queue_root)
    results = {job_id: wait_finished(queue_root, job_id).result for job_id in ("hook", "doomed", "no-folder")}
    log = stopped(worker)
    assert sorted(path.name for path in tmp_path.glob("pwned*")) == []
    assert "on_finish_done" not in log and "on_finish_failed" not in log
    for job_id, result in results.items():
        assert result is not None and result.status is JobStatus.INVALID, job_id
        assert "on_finish is a shell command line" in (result.error or "")


# ----- 2. the loader and interpreters run no code the policy never saw --------------------


def test_variables_that_load_other_code_are_refused(
    queue_root: Path, start_worker: Start, tmp_path: Path, tools: Path
) -> None:
    marker = tmp_path / "pwned"
    evil_so = build_marker_library(tmp_path, marker.with_name(marker.name + ".so"))
    evil_sh = tmp_path / "evil.sh"
    evil_sh.write_text(f"touch {marker}.sh\n")
    evil_bin = tmp_path / "evil-bin"
    evil_bin.mkdir()
    (evil_bin / "helper").write_text(f"#!/bin/sh\n/usr/bin/touch {marker}.path\n")
    (evil_bin / "helper").chmod(0o755)
    config = write_config(tmp_path / "config.toml", {"allowed_commands": [str(tools)], "allow_shell": False})
    start_worker("--config", str(config))
    true = str(tools / "true")
    refused = {
        "preload": (true, {"LD_PRELOAD": str(evil_so)}),
        "library-path": (true, {"LD_LIBRARY_PATH": str(tmp_path)}),
        "audit": (true, {"LD_AUDIT": str(evil_so)}),
        "dyld": (true, {"DYLD_INSERT_LIBRARIES": str(evil_so)}),
        "bash-env": (str(tools / "bashy"), {"BASH_ENV": str(evil_sh)}),
        "env": (true, {"ENV": str(evil_sh)}),
        "python": (true, {"PYTHONSTARTUP": str(evil_sh)}),
        "perl": (true, {"PERL5OPT": "-Mevil"}),
        "node": (true, {"NODE_OPTIONS": "--require /tmp/evil.js"}),
        "bash-func": (true, {"BASH_FUNC_helper%%": "() { id; }"}),
        "path": ("calls-helper", {"PATH": f"{tools}:{evil_bin}"}),
        "path-relative": ("calls-helper", {"PATH": f"{tools}:bin"}),
    }
    for job_id, (command, env) in refused.items():
        drop(queue_root, f"{job_id}.json", {"command": command, "args": [], "env": env})
    drop(queue_root, "harmless.json", {"command": true, "args": [], "env": {"GREETING": "hi", "PATH": str(tools)}})

    over_mcp: dict[str, object] = {}

    async def session(client: Client) -> None:
        arguments = {"command": true, "args": [], "env": {"LD_PRELOAD": str(evil_so)}, "wait_s": 10}
        over_mcp.update(structured(await client.call_tool("enqueue_job", arguments)))

    results = {job_id: wait_finished(queue_root, job_id).result for job_id in [*refused, "harmless"]}
    run(session, queue_root)
    assert sorted(path.name for path in tmp_path.glob("pwned*")) == []
    assert over_mcp["status"] == "invalid" and "LD_PRELOAD" in str(over_mcp["error"])
    harmless = results.pop("harmless")
    assert harmless is not None and harmless.status is JobStatus.COMPLETED
    for job_id, result in results.items():
        assert result is not None and result.status is JobStatus.INVALID, job_id
        name = next(iter(refused[job_id][1]))
        assert f"refused by the worker's policy (allowed_commands): the job sets {name}" in (result.error or ""), (
            result.error
        )


# ----- 3. result_file writes only where the policy allows -----------------------------------


def test_result_file_is_confined_to_the_queue_and_allowed_folders(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f"[policy]\nresult_file_folders = [{json.dumps(str(results_dir))}]\n")
    worker = start_worker("--config", str(config))
    ssh = tmp_path / "home" / ".ssh"
    ssh.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (queue_root / "out").mkdir()
    (queue_root / "link").symlink_to(outside)
    (queue_root / "out" / "keys").symlink_to(ssh / "authorized_keys")
    key = {"command": "echo", "args": ["ssh-ed25519 AAAA attacker"]}
    refused = {
        "keys": str(ssh / "authorized_keys"),
        "dotdot": "../outside/keys",
        "through-link": "link/keys",
        "final-link": "out/keys",
        "records": "completed/forged.json",
        "jobs": "pending/evil.json",
    }
    for job_id, target in refused.items():
        drop(queue_root, f"{job_id}.json", {**key, "result_file": target})
    drop(queue_root, "in-queue.json", {**key, "result_file": "out/r.txt"})
    drop(queue_root, "allowed.json", {**key, "result_file": str(results_dir / "r.txt")})
    # The job itself swaps its result folder for a link out while it runs: the copy follows no link.
    swap = f"mv {queue_root}/out {queue_root}/out.old && ln -s {outside} {queue_root}/out && echo swapped"
    drop(queue_root, "swap.json", {"command": swap, "result_file": "out/swapped.txt"})
    results = {job_id: wait_finished(queue_root, job_id).result for job_id in [*refused, "in-queue", "allowed", "swap"]}
    stopped(worker)
    assert sorted(path.name for path in [*ssh.iterdir(), *outside.iterdir()]) == []
    assert (queue_root / "out.old" / "r.txt").read_text() == "ssh-ed25519 AAAA attacker\n"
    assert (results_dir / "r.txt").read_text() == "ssh-ed25519 AAAA attacker\n"
    assert list((queue_root / "pending").glob("*.json")) == []
    for job_id in refused:
        result = results[job_id]
        assert result is not None and result.status is JobStatus.INVALID, (job_id, result)
        assert "refused by the worker's policy (result_file)" in (result.error or ""), result.error
    swapped = results["swap"]
    assert swapped is not None and swapped.status is JobStatus.FAILED
    assert "symbolic link" in (swapped.error or ""), swapped.error


# ----- 4. webhooks go only where the policy allows ------------------------------------------


def isolated_worker(queue_root: Path, *args: str, hosts: Path | None = None) -> WorkerProcess:
    """``execsvc run`` in an empty network namespace: nothing but a loopback that is down, so no
    webhook can leave this machine, whatever the worker decides; with ``hosts``, in a private
    mount namespace too, where /etc/hosts is that file."""
    prefix: tuple[str, ...] = ("unshare", "--net", "--")
    if hosts is not None:
        bind = f'mount --bind "{hosts}" /etc/hosts && exec "$@"'
        prefix = ("unshare", "--net", "--mount", "--", "sh", "-c", bind, "-")
    return WorkerProcess(queue_root, *args, prefix=prefix)


@pytest.fixture
def start_isolated(queue_root: Path) -> Iterator[Callable[..., WorkerProcess]]:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--net", "true"], check=False).returncode:
        pytest.skip("unshare --net is not available here; webhook refusals are only tried in an empty netns")
    started: list[WorkerProcess] = []

    def start(*args: str, hosts: Path | None = None) -> WorkerProcess:
        worker = isolated_worker(queue_root, *args, hosts=hosts)
        started.append(worker)
        return worker.wait_ready()

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()


REFUSED_BY_DEFAULT = {
    "metadata": "http://169.254.169.254/latest/meta-data/",
    "metadata-v6": "http://[fd00:ec2::254]/latest/",
    "metadata-name": "http://metadata.google.internal/computeMetadata/v1/",
    "metadata-name-dot": "http://METADATA.google.internal./computeMetadata/v1/",
    "hex": "http://0xa9fea9fe/",
    "decimal": "http://2852039166/",
    "short": "http://169.254.43518/",
    "mapped": "http://[::ffff:169.254.169.254]/",
    "link-local-v6": "http://[fe80::1]/",
    "alibaba": "http://100.100.100.200/latest/",
    "link-local": "https://169.254.1.1:8443/",
}


def test_webhooks_to_link_local_and_metadata_addresses_are_refused(
    queue_root: Path, start_isolated: Start, tmp_path: Path
) -> None:
    worker = start_isolated("--config", str(write_config(tmp_path / "config.toml", {})))
    marker = tmp_path / "ran"
    for job_id, url in REFUSED_BY_DEFAULT.items():
        drop(
            queue_root, f"{job_id}.json", {"command": "/usr/bin/touch", "args": [f"{marker}.{job_id}"], "webhook": url}
        )
    # An address the default allows (TEST-NET-1): the job runs; its webhook cannot get out of the netns.
    drop(
        queue_root,
        "allowed.json",
        {"command": "/usr/bin/touch", "args": [f"{marker}.ok"], "webhook": "http://192.0.2.1/"},
    )
    over_mcp: dict[str, object] = {}

    async def session(client: Client) -> None:
        arguments = {"command": "true", "webhook": "http://169.254.169.254/latest/", "wait_s": 10}
        over_mcp.update(structured(await client.call_tool("enqueue_job", arguments)))

    results = {job_id: wait_finished(queue_root, job_id).result for job_id in [*REFUSED_BY_DEFAULT, "allowed"]}
    run(session, queue_root)
    log = stopped(worker)
    assert sorted(path.name for path in tmp_path.glob("ran.*")) == ["ran.ok"]
    assert over_mcp["status"] == "invalid" and "(webhook)" in str(over_mcp["error"])
    allowed = results.pop("allowed")
    assert allowed is not None and allowed.status is JobStatus.COMPLETED
    assert "webhook_failed job=allowed" in log
    for job_id, result in results.items():
        assert result is not None and result.status is JobStatus.INVALID, (job_id, result)
        assert "refused by the worker's policy (webhook)" in (result.error or ""), result.error
        assert f"webhook_failed job={job_id}" not in log


def test_webhook_hosts_lists_where_webhooks_may_go(queue_root: Path, start_isolated: Start, tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", {"webhook_hosts": ["127.0.0.1", "*.example.com"]})
    worker = start_isolated("--config", str(config))
    jobs = {
        "private": ("http://10.1.2.3/", JobStatus.INVALID),
        "test-net": ("http://192.0.2.1/", JobStatus.INVALID),
        "other-name": ("http://hooks.example.org/", JobStatus.INVALID),
        "metadata": ("http://169.254.169.254/", JobStatus.INVALID),
        "listed-name": ("https://hooks.example.com/x", JobStatus.COMPLETED),
        "listed-address": ("http://127.0.0.1:9/", JobStatus.COMPLETED),
    }
    for job_id, (url, _status) in jobs.items():
        drop(queue_root, f"{job_id}.json", {"command": "true", "webhook": url})
    results = {job_id: wait_finished(queue_root, job_id).result for job_id in jobs}
    log = stopped(worker)
    for job_id, (_url, status) in jobs.items():
        result = results[job_id]
        assert result is not None and result.status is status, (job_id, result)
        if status is JobStatus.INVALID:
            assert "webhook_hosts" in (result.error or ""), result.error
        else:
            assert f"webhook_failed job={job_id}" in log  # allowed, and nothing to reach in the netns


class Hooks(http.server.BaseHTTPRequestHandler):
    """Records each request; ``/redirect`` answers 302 to the server's ``target``."""

    def do_POST(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        server = self.server
        assert isinstance(server, HookServer)
        server.seen.append((self.command, self.path, self.rfile.read(length)))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", server.target)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class HookServer(http.server.ThreadingHTTPServer):
    def __init__(self, target: str = "") -> None:
        super().__init__(("127.0.0.1", 0), Hooks)
        self.seen: list[tuple[str, str, bytes]] = []
        self.target = target
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def hook_servers() -> Iterator[Callable[..., HookServer]]:
    servers: list[HookServer] = []

    def open_server(target: str = "") -> HookServer:
        servers.append(HookServer(target))
        return servers[-1]

    yield open_server
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_webhook_reaches_an_allowed_loopback_server_and_follows_no_redirect(
    queue_root: Path, start_worker: Start, tmp_path: Path, hook_servers: Callable[..., HookServer]
) -> None:
    """Loopback only: the test's own two servers on 127.0.0.1, the redirect pointing at the second."""
    elsewhere = hook_servers()
    server = hook_servers(f"{elsewhere.url}/elsewhere")
    worker = start_worker("--config", str(write_config(tmp_path / "config.toml", {"webhook_hosts": ["127.0.0.1"]})))
    drop(queue_root, "ok.json", {"command": "true", "webhook": f"{server.url}/ok"})
    drop(queue_root, "moved.json", {"command": "true", "webhook": f"{server.url}/redirect"})
    for job_id in ("ok", "moved"):
        wait_finished(queue_root, job_id)
    log = stopped(worker)
    assert sorted((method, path) for method, path, _body in server.seen) == [("POST", "/ok"), ("POST", "/redirect")]
    assert json.loads(next(body for _m, path, body in server.seen if path == "/ok"))["result"]["job_id"] == "ok"
    assert elsewhere.seen == []
    assert "webhook_sent job=ok" in log
    assert "webhook_failed job=moved" in log and "redirects are not followed" in log


def test_a_webhook_host_name_is_checked_again_by_its_addresses_when_sent(
    queue_root: Path, start_isolated: Start, tmp_path: Path
) -> None:
    """A name that passes at the claim but resolves to a refused address when sent (as DNS
    rebinding does) is not contacted. The isolated worker gets a hosts file of its own."""
    hosts = tmp_path / "hosts"
    hosts.write_text("169.254.169.254 rebound.test\nfd00:ec2::254 rebound6.test\n")
    worker = start_isolated("--config", str(write_config(tmp_path / "config.toml", {})), hosts=hosts)
    for job_id in ("rebound", "rebound6"):
        drop(queue_root, f"{job_id}.json", {"command": "true", "webhook": f"http://{job_id}.test/latest/"})
    results = [wait_finished(queue_root, job_id).result for job_id in ("rebound", "rebound6")]
    log = stopped(worker)
    assert all(result is not None and result.status is JobStatus.COMPLETED for result in results)
    for job_id in ("rebound", "rebound6"):
        line = next(line for line in log.splitlines() if f"webhook_failed job={job_id} " in line)
        assert "refused by the worker's policy (webhook)" in line and "not sent" in line, line


# ----- 5. no queue under a folder another user can write -----------------------------------

OTHER_UID = 4242


def run_worker_once(queue_root: Path) -> subprocess.CompletedProcess[str]:
    """``execsvc run`` that is expected to refuse the queue and exit (killed after 15 s if it serves)."""
    try:
        return subprocess.run(
            [console_script("execsvc"), "run", "--queue-dir", str(queue_root)],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the worker served the queue at {queue_root}: {exc.stderr!r}")


@pytest.mark.parametrize(
    ("mode", "owner", "why"),
    [
        (0o777, None, "can be written by other users"),  # another user renames the queue away
        (0o775, None, "can be written by other users"),
        (0o755, OTHER_UID, f"belongs to user id {OTHER_UID}"),  # its owner can do the same
        (0o1777, OTHER_UID, f"belongs to user id {OTHER_UID}"),  # the owner of a sticky folder too
    ],
)
def test_a_queue_under_a_folder_others_can_write_is_refused(
    tmp_path: Path, mode: int, owner: int | None, why: str
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "deeper").mkdir()
    shared.chmod(mode)
    if owner is not None:
        os.chown(shared, owner, -1)
    queue_root = shared / "deeper" / "queue"
    done = run_worker_once(queue_root)
    assert done.returncode != 0 and "watching" not in done.stderr
    assert f"{shared} {why}" in done.stderr, done.stderr
    assert "a queue's parent folders" in done.stderr, done.stderr


def test_a_queue_under_sticky_folders_of_root_or_its_user_is_served(
    queue_root: Path, start_worker: Start, tmp_path: Path
) -> None:
    """tmp_path lies under /tmp (1777, root's); a sticky shared folder of the worker's user is fine too."""
    shared = tmp_path / "sticky"
    shared.mkdir()
    shared.chmod(0o1777)
    worker = start_worker(root=shared / "queue")
    drop(shared / "queue", "ok.json", {"command": "true"})
    result = wait_finished(shared / "queue", "ok").result
    assert result is not None and result.status is JobStatus.COMPLETED
    stopped(worker)
