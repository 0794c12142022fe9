"""What a sandboxed job may write and read: its project folder and a private /tmp, nothing else;
no planted secret; nothing of the queue but its own output, through the worker's descriptors.

Real worker (its HOME is the test's), real bwrap, real files. The test's home lies under
/tmp, which a sandbox replaces by a private tmpfs; so that the sandbox sees it where a real home
would be, on the read-only root, the worker's profile makes it ``readable_only``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import drop, wait_finished
from sandbox_support import Place, Workers, bwrap_help, make_place, needs_bwrap, record_of, run_job, workers_at

from execsvc import JobStatus

pytestmark = needs_bwrap


@pytest.fixture
def place(tmp_path: Path) -> Place:
    return make_place(tmp_path)


@pytest.fixture
def workers(place: Place) -> Iterator[Workers]:
    with workers_at(place) as started:
        yield started


def _profile(place: Place) -> str:
    """The ``[policy]`` line that shows the test's home read-only in the sandbox, as a real home is."""
    return f"sandbox_profile = {{ readable_only = ['{place.home}'] }}"


def _try(path: Path, what: str = "write") -> str:
    """A shell line that tries to write (or read) ``path`` and prints ``<what> ok`` or ``<what> refused``."""
    action = f"echo x > '{path}'" if what == "write" else f"cat '{path}'"
    return f"if ({action}) 2>/dev/null; then echo '{what} ok {path}'; else echo '{what} refused {path}'; fi"


def test_it_writes_in_its_cwd_and_tmp_and_nowhere_else(place: Place, workers: Workers, tmp_path: Path) -> None:
    workers.start(_profile(place))
    marker = f"execsvc-sandbox-{os.getpid()}-{tmp_path.name}"
    outside = [place.home / "outside.txt", Path("/var/tmp") / marker, Path("/etc") / marker, Path("/") / marker]
    lines = [_try(place.work / "built.txt"), _try(Path("/tmp") / marker), *(_try(path) for path in outside)]
    try:
        info = run_job(place, "writes", {"command": "; ".join(lines), "sandbox": True})
        leaked = [path for path in [Path("/tmp") / marker, *outside] if path.exists()]
    finally:  # if the sandbox failed, leave nothing on the host
        for path in [Path("/tmp") / marker, *outside]:
            path.unlink(missing_ok=True)
    assert info.result is not None and info.status is JobStatus.COMPLETED, info.result
    said = info.result.stdout.splitlines()
    assert said[:2] == [f"write ok {place.work / 'built.txt'}", f"write ok /tmp/{marker}"]
    assert said[2:] == [f"write refused {path}" for path in outside]
    assert (place.work / "built.txt").read_text() == "x\n"
    assert leaked == [], "the job's /tmp is its own (the host's is untouched), and nothing else was written"
    assert record_of(info)["result"]["sandbox"]["writable"] == [str(place.work.resolve())]


def test_planted_secrets_are_not_readable(place: Place, workers: Workers) -> None:
    key, credentials = place.home / ".ssh" / "id_test", place.home / ".aws" / "credentials"
    for secret in (key, credentials):
        secret.parent.mkdir()
        secret.write_text("SECRET\n")
    workers.start(_profile(place))
    line = f"cat ~/.ssh/id_* '{credentials}'; echo cat=$?; ls -a ~/.ssh ~/.aws"
    info = run_job(place, "secrets", {"command": line, "sandbox": True})
    assert info.result is not None and "SECRET" not in info.result.stdout + info.result.stderr
    assert "id_test" not in info.result.stdout and "credentials" not in info.result.stdout
    assert "cat=1" in info.result.stdout and "No such file" in info.result.stderr  # said in the record
    hidden = record_of(info)["result"]["sandbox"]["hidden"]
    assert str((place.home / ".ssh").resolve()) in hidden and str((place.home / ".aws").resolve()) in hidden


def test_the_queue_is_out_of_reach_but_its_own_output_lands(place: Place, workers: Workers) -> None:
    workers.start(_profile(place))
    other = run_job(place, "other", {"command": "echo other-secret"})
    assert other.status is JobStatus.COMPLETED
    queue = place.queue.resolve()
    lines = [
        "echo my-output; echo my-error >&2",
        f"echo '{{\"command\": \"id\"}}' > '{queue}/pending/x.json' || echo 'pending refused'",
        f"cat '{queue}/logs/other.stdout' || echo 'log refused'",
        f"ls '{queue}/completed' | grep -c json || echo 'records unseen'",
        f"echo forged > '{queue}/completed/other.json' || echo 'record refused'",
    ]
    info = run_job(place, "inside", {"command": "; ".join(lines), "sandbox": True})
    assert info.result is not None and info.status is JobStatus.COMPLETED, info.result
    out = info.result.stdout.splitlines()
    assert out == ["my-output", "pending refused", "log refused", "0", "records unseen", "record refused"]
    assert "my-error" in info.result.stderr
    assert (queue / "logs" / "inside.stdout").read_text().startswith("my-output\n")
    assert not (queue / "pending" / "x.json").exists() and not (queue / "failed" / "x.json").exists()
    assert record_of(other)["result"]["stdout"] == "other-secret\n"


def test_a_sandboxed_text_job_runs_its_script_from_the_hidden_queue(place: Place, workers: Workers) -> None:
    """A script in running/ is bound back read-only: it runs, the rest of the queue stays hidden.
    A text job runs in the home directory, which stays read-only: its header makes ~/project writable."""
    workers.start(_profile(place))
    header = '# execsvc: sandbox=\'{"writable": ["~/project"]}\''
    script = f"#!/bin/sh\n{header}\ncd '{place.work}'\necho ran > made.txt\nls '{place.queue}/pending'\n"
    drop(place.queue, "script.sh", script)
    info = wait_finished(place.queue, "script")
    assert info.result is not None and info.status is JobStatus.FAILED  # ls: pending/ is not there
    assert (place.work / "made.txt").read_text() == "ran\n"
    assert "No such file" in info.result.stderr
    assert info.result.sandbox is not None and info.result.sandbox.reason == "asked"
    assert info.result.sandbox.writable == [str(place.work.resolve())]


def test_what_git_runs_later_stays_read_only_in_a_writable_cwd(place: Place, workers: Workers) -> None:
    """A job may commit in its project, but not plant a hook or a config that git would run unconfined."""
    (place.work / ".git" / "hooks").mkdir(parents=True)
    (place.work / ".git" / "config").write_text("[core]\n")
    workers.start(_profile(place))
    git = place.work / ".git"
    lines = [_try(git / "hooks" / "pre-commit"), _try(git / "config"), _try(git / "index")]
    info = run_job(place, "git", {"command": "; ".join(lines), "sandbox": True})
    assert info.result is not None and info.status is JobStatus.COMPLETED, info.result
    assert info.result.stdout.splitlines() == [
        f"write refused {git / 'hooks' / 'pre-commit'}",
        f"write refused {git / 'config'}",
        f"write ok {git / 'index'}",
    ]
    assert (git / "config").read_text() == "[core]\n" and not (git / "hooks" / "pre-commit").exists()


@pytest.mark.skipif("--disable-userns" not in bwrap_help(), reason="no bwrap 0.8 or later (--disable-userns)")
def test_a_sandboxed_job_cannot_make_namespaces_of_its_own(place: Place, workers: Workers) -> None:
    """Where bwrap can (0.8 and later), the sandbox's user namespace allows no nested one."""
    workers.start()
    info = run_job(
        place, "nested", {"command": "unshare --user --mount true && echo made || echo refused", "sandbox": True}
    )
    assert info.result is not None and info.result.stdout == "refused\n", info.result
