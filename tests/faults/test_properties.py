"""Property tests (hypothesis): the job parser on any input, and the protocol's state machine.

The state machine drives the real :class:`JobQueue` on real folders with
any interleaving of submit (API and foreign files), claim, finish, cancel
and crashes (a claim or a finish cut short, then the start-up recovery the
worker runs), and checks after every step that each submitted job is in
exactly one place and that a finished job never comes back.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from unittest import mock

from conftest import silent_event_log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from execsvc import JobQueue, WorkerConfig
from execsvc.protocol import ClaimedJob
from execsvc.protocol.errors import InvalidJob, JobIdTaken
from execsvc.protocol.jobfile import parse_json_job, spec_if_valid
from execsvc.protocol.layout import SIDECAR_SUFFIX, is_ignored_name, split_job_name
from execsvc.protocol.models import JobStatus
from execsvc.recovery import settle_running
from execsvc.results import unstarted_result
from execsvc.run_request import read_job

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["command", "args", "shell", "cwd", "env", "stdin", "timeout_s", "result_file", "task_id", "result", "x"]


@given(st.binary(max_size=300))
def test_any_bytes_parse_to_a_job_or_a_reason(data: bytes) -> None:
    try:
        parse_json_job(data)
    except InvalidJob as exc:
        assert exc.reason and exc.reason[0].islower()


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=6))
def test_any_json_object_is_a_job_or_a_reason(fields: dict[str, Any]) -> None:
    try:
        spec = parse_json_job(json.dumps(fields).encode())
    except InvalidJob as exc:
        assert exc.reason
    else:
        assert spec.command.strip()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(data=st.binary(max_size=200), kind=st.sampled_from(["json", "text"]))
def test_read_job_gives_a_run_request_or_invalid_job(tmp_path: Path, data: bytes, kind: str) -> None:
    path = tmp_path / ("job.json" if kind == "json" else "job.sh")
    path.write_bytes(data)
    try:
        request = read_job(path, kind, job_id="job", queue_root=tmp_path, config=WorkerConfig())  # type: ignore[arg-type]
    except InvalidJob as exc:
        assert exc.reason
    else:
        assert request.argv and all("\x00" not in arg for arg in request.argv)


class _Crash(Exception):
    """A kill -9 at one point inside a protocol call."""


@contextmanager
def _crash_on_unlink_in(folder: Path) -> Any:
    """Fail the first unlink of a file in ``folder``: the call stops there, as under kill -9."""
    real = os.unlink

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(os.fsdecode(path)).parent == folder:
            raise _Crash
        real(path, *args, **kwargs)

    with mock.patch("execsvc.protocol.store.os.unlink", unlink):
        yield


class QueueMachine(RuleBasedStateMachine):
    """Every job is tagged with a token it carries in its content, so it is found whatever its id became."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp())
        self.queue = JobQueue(self.tmp / "queue")
        self.layout = self.queue.layout
        self.tokens: list[str] = []
        self.finished: set[str] = set()
        self.running: list[ClaimedJob] = []
        self.log = silent_event_log()

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _token(self) -> str:
        token = f"token{len(self.tokens)}"
        self.tokens.append(token)
        return token

    def _pending_names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.layout.pending) if not is_ignored_name(n))

    # ----- submitting -----------------------------------------------------------------

    @rule(job_id=st.sampled_from([None, "a", "b", "c"]))
    def submit(self, job_id: str | None) -> None:
        token = self._token()
        try:
            self.queue.submit({"command": "true", "token": token}, job_id=job_id)
        except JobIdTaken:
            self.tokens.remove(token)

    @rule(stem=st.sampled_from(["a", "b", "c", "d", "with space", "ü"]), suffix=st.sampled_from([".json", ".sh"]))
    def drop_foreign(self, stem: str, suffix: str) -> None:
        target = self.layout.pending / f"{stem}{suffix}"
        if os.path.lexists(target):
            return
        token = self._token()
        content = json.dumps({"command": "true", "token": token}) if suffix == ".json" else f"# {token}\ntrue\n"
        target.write_text(content)

    # ----- the worker's moves -------------------------------------------------------------

    @precondition(lambda self: bool(self._pending_names()))
    @rule(pick=st.integers(min_value=0, max_value=5))
    def claim(self, pick: int) -> None:
        names = self._pending_names()
        self.running.append(self.queue.claim(names[pick % len(names)]))

    @precondition(lambda self: bool(self.running))
    @rule(pick=st.integers(min_value=0, max_value=5), status=st.sampled_from(list(JobStatus)[:6]))
    def finish(self, pick: int, status: JobStatus) -> None:
        if status in (JobStatus.PENDING, JobStatus.RUNNING):
            status = JobStatus.COMPLETED
        claimed = self.running.pop(pick % len(self.running))
        spec = spec_if_valid(claimed.path) if claimed.kind == "json" else None
        self.queue.finish(claimed, unstarted_result(claimed, status, "test", None), spec)

    @precondition(lambda self: bool(self._pending_names()))
    @rule(pick=st.integers(min_value=0, max_value=5))
    def cancel_pending(self, pick: int) -> None:
        names = self._pending_names()
        stem = split_job_name(names[pick % len(names)])[0]
        try:
            self.queue.cancel(stem)
        except Exception as exc:  # an unusable id (a name the claim would rename) cannot be named
            assert type(exc).__name__ in ("InvalidJobId", "JobNotFound"), repr(exc)

    # ----- crashes: a move cut short, then the recovery a starting worker runs -------------

    @precondition(lambda self: bool(self._pending_names()))
    @rule(pick=st.integers(min_value=0, max_value=5))
    def crash_mid_claim(self, pick: int) -> None:
        names = self._pending_names()
        with _crash_on_unlink_in(self.layout.pending), suppress(_Crash):
            self.queue.claim(names[pick % len(names)])
        self._restart()

    @precondition(lambda self: bool(self.running))
    @rule(pick=st.integers(min_value=0, max_value=5))
    def crash_mid_finish(self, pick: int) -> None:
        claimed = self.running.pop(pick % len(self.running))
        spec = spec_if_valid(claimed.path) if claimed.kind == "json" else None
        with _crash_on_unlink_in(self.layout.running), suppress(_Crash):
            self.queue.finish(claimed, unstarted_result(claimed, JobStatus.COMPLETED, "test", None), spec)
        self._restart()

    @rule()
    def crash_while_running(self) -> None:
        self._restart()

    def _restart(self) -> None:
        self.running.clear()  # the dead worker's jobs are settled, never resumed
        settle_running(self.queue, self.log, previous=None, kill_grace_s=0.1, tail_bytes=100)

    # ----- the invariant ------------------------------------------------------------------

    @invariant()
    def every_job_is_in_exactly_one_place(self) -> None:
        places: dict[str, set[tuple[int, str]]] = collections.defaultdict(set)
        for state in ("pending", "running", "completed", "failed"):
            folder = self.layout.root / state
            for name in os.listdir(folder):
                if name.endswith(SIDECAR_SUFFIX) or is_ignored_name(name):
                    continue
                text = (folder / name).read_text()
                for token in self.tokens:
                    if f'"{token}"' in text or f"# {token}\n" in text:
                        places[token].add(((folder / name).stat().st_ino, state))
        for token in self.tokens:
            inodes = {inode for inode, _state in places[token]}
            states = {state for _inode, state in places[token]}
            assert len(inodes) == 1, f"{token} is in {sorted(places[token])}"
            if token in self.finished:
                assert states <= {"completed", "failed"}, f"{token} came back: {states}"
            if states & {"completed", "failed"}:
                self.finished.add(token)


QueueMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
test_protocol_state_machine = QueueMachine.TestCase
