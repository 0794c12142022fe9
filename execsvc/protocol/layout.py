"""The queue directory's layout, job file names and job ids (docs/protocol.md, "Layout").

Pure path logic: which folder is which, which names are jobs, which are
ignored, how a file name maps to a job id and to its record names. The only
file-system work is :meth:`QueueLayout.ensure`, which creates the folders
private to the user and refuses folders that other users can write to, or
that sit under a folder another user could swap the queue out of.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InvalidJobId, UnsafeQueue

if TYPE_CHECKING:  # imported where used: `execsvc queue-dir` (status.sh) needs a queue's paths, not pydantic
    from .models import JobKind, JobState

JOB_SUFFIXES: dict[str, JobKind] = {".json": "json", ".sh": "text", ".txt": "text"}
"""File name endings that make a job, and the kind of job each makes."""

SIDECAR_SUFFIX = ".result.json"
"""Ending of the record that sits beside a finished text job or invalid entry."""

_ENTRY_ENDINGS = ("", *JOB_SUFFIXES)
_FINISHED_ENDINGS = (".json", SIDECAR_SUFFIX, "", *(suffix for suffix in JOB_SUFFIXES if suffix != ".json"))

CANCEL_PREFIX = ".cancel."
"""``running/.cancel.<id>``: a client's request that the worker stop a running job (hidden: never a job)."""
READY_PREFIX = ".ready."
"""``running/.ready.<id>``: the worker's mark that a running job's ``ready_when`` was met (hidden: never a job)."""

PAUSED_PREFIX = ".paused."
"""``pending/.paused.<group>``: while it exists, no job of that group is claimed (docs/protocol.md, "Groups")."""

GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
"""A group's name (docs/protocol.md, "Groups"): 1 to 64 ASCII letters, digits, ``_``, ``.``, ``-``,
not starting with ``.`` or ``-``; so it is also a file name and a word in ``daemon.log``."""


def group_problem(name: str) -> str | None:
    """Why ``name`` is not a valid group name (:data:`GROUP_NAME`), or ``None`` when it is."""
    if GROUP_NAME.fullmatch(name):
        return None
    return f"{name!r} is not a group name: 1 to 64 ASCII letters, digits, '_', '.' or '-', not starting with '.' or '-'"


HELD_FOLDER = ".held"
"""``pending/.held/``: where ``execsvc hold`` moves a pending job; ``release`` moves it back."""
MAX_JOB_ID_BYTES = 200
"""Longest job id, in UTF-8 bytes (leaves room for ``.result.json`` in a 255-byte name)."""

_RESERVED_ID_ENDING = re.compile(r"\.(?:result|on_finish|attempt-[0-9]+)\Z")
"""Endings no id may have: ``<id>.result`` would name records (``<id>.result.json``), and
``<id>.on_finish``, ``<id>.attempt-<n>`` the hook and earlier-attempt logs of job ``<id>``."""

UNUSABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})
"""Unicode categories a job id cannot hold: controls, format characters (bidirectional
controls, zero-width characters), lone surrogates (bytes that are not UTF-8), private use,
line and paragraph separators. A file named with one gets a cleaned-up id (:func:`sanitize_job_id`)."""


def is_ignored_name(name: str) -> bool:
    """True for names the worker never touches: hidden (``.x``) or temporary (``x.tmp``)."""
    return name.startswith(".") or name.endswith(".tmp")


def split_job_name(name: str) -> tuple[str, str, JobKind]:
    """Split a ``pending/`` entry name into (stem, suffix, kind).

    ``build.json`` gives ``("build", ".json", "json")``; a name with any other
    ending is kind ``"other"`` with the whole name as its stem (it is invalid,
    and its record is ``<name>.result.json``).
    """
    for suffix, kind in JOB_SUFFIXES.items():
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], suffix, kind
    return name, "", "other"


def readable_name(name: str) -> str:
    """A file name as UTF-8 text for records and logs.

    Names from the file system that are not valid UTF-8 come to Python with
    their stray bytes as surrogates, which no UTF-8 file can hold; those
    bytes are shown as ``\\xff`` escapes instead. A valid name is returned as it is.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def job_id_problem(job_id: str) -> str | None:
    """Why ``job_id`` is not a valid id, or ``None`` when it is.

    A valid id is non-empty text of at most 200 UTF-8 bytes, with no ``/``, no
    A valid id is non-empty text of at most 200 UTF-8 bytes, with no ``/``, no
    character of :data:`UNUSABLE_CATEGORIES` (controls such as NUL and newline,
    format characters such as U+202E RIGHT-TO-LEFT OVERRIDE or a zero-width
    space, which make a listing show a name that is not the id; private-use and
    line or paragraph separators), no leading ``.``, no trailing whitespace, and
    not ending in ``.result``, ``.on_finish`` or ``.attempt-<n>`` (those endings
    would give it the names of another job's record, ``on_finish`` logs or earlier
    attempts' logs: ``logs/b.on_finish.stdout`` is job ``b``'s hook output).
    """
    if not job_id:
        return "a job id cannot be empty"
    if job_id.startswith("."):
        return "a job id cannot start with '.' (such files are hidden and ignored)"
    if "/" in job_id:
        return "a job id cannot contain '/'"
    if not job_id.isprintable() and any(unicodedata.category(ch) in UNUSABLE_CATEGORIES for ch in job_id):
        return (
            "a job id cannot contain control or invisible format characters (such as U+202E), "
            "private-use characters, line separators, or bytes that are not UTF-8"
        )
    if job_id != job_id.rstrip():
        return "a job id cannot end in white space"
    if _RESERVED_ID_ENDING.search(job_id):
        return (
            "a job id cannot end in '.result', '.on_finish' or '.attempt-<n>' (those endings name the records "
            "and logs of other jobs)"
        )
    if len(job_id.encode("utf-8")) > MAX_JOB_ID_BYTES:
        return f"a job id can be at most {MAX_JOB_ID_BYTES} bytes long"
    return None


def check_job_id(job_id: str) -> str:
    """Return ``job_id`` unchanged if valid; raise :class:`InvalidJobId` saying why if not."""
    problem = job_id_problem(job_id)
    if problem is not None:
        raise InvalidJobId(f"{problem}: {job_id!r}")
    return job_id


def sanitize_job_id(stem: str) -> str:
    """Turn any file stem into a valid job id (used when a dropped name is not one).

    Characters of :data:`UNUSABLE_CATEGORIES` (undecodable bytes among them), and
    ``/``, become ``_``; leading dots are dropped; the result is cut to the byte
    limit (less room for :func:`numbered_job_id`'s ending) and never ends in a
    reserved ending (``-job`` is added).
    """
    cleaned = "".join("_" if ch == "/" or unicodedata.category(ch) in UNUSABLE_CATEGORIES else ch for ch in stem)
    text = cleaned.lstrip(".").rstrip() or "job"
    while len(text.encode("utf-8")) > MAX_JOB_ID_BYTES - 8:
        text = text[:-1].rstrip()
    if _RESERVED_ID_ENDING.search(text):
        text += "-job"
    return text


def numbered_job_id(base: str, n: int) -> str:
    """``<base>-<n>``, the ``n``-th id tried for a job whose id is in use; always a valid id.

    ``base`` is a valid id. It is cut short when the ending would pass the byte limit, and
    ``-job`` goes between when ``<base>-<n>`` would end in a reserved ending (``c.attempt``
    gives ``c.attempt-job-2``, never ``c.attempt-2``: job ``c``'s second attempt).
    """
    ending = f"-{n}"
    if _RESERVED_ID_ENDING.search(base + ending):
        ending = f"-job-{n}"
    text = base
    while len((text + ending).encode("utf-8")) > MAX_JOB_ID_BYTES or (text and text != text.rstrip()):
        text = text[:-1]
    return (text or "job") + ending


def kept_name(name: str, n: int) -> str:
    """``.<stem>.kept-<n><suffix>``: the name a finished job's file is kept under beside its record
    when another file already has its own name there (hidden: never any job's name, never a record)."""
    stem, suffix, _kind = split_job_name(name)
    return f".{stem}.kept-{n}{suffix}"


def is_kept_name_of(kept: str, name: str) -> bool:
    """Whether ``kept`` is one of :func:`kept_name`'s names for the job file ``name``."""
    stem, suffix, _kind = split_job_name(name)
    prefix = f".{stem}.kept-"
    if not (kept.startswith(prefix) and kept.endswith(suffix)):
        return False
    number = kept[len(prefix) : len(kept) - len(suffix)]
    return number.isascii() and number.isdigit()


@dataclass(frozen=True)
class QueueLayout:
    """Paths of one queue root.

    ``root/pending``, ``running``, ``completed``, ``failed``, ``logs``, plus
    ``daemon.log``, ``worker.lock`` (held by the serving worker) and
    ``worker.json`` (who holds it). Each path is built once (they are asked
    for several times per job on the worker's hot path).
    """

    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike[str]) -> QueueLayout:
        """Layout of the queue rooted at ``root`` (symbolic links in the path resolved)."""
        return cls(Path(os.path.realpath(root)))

    @cached_property
    def pending(self) -> Path:
        return self.root / "pending"

    @cached_property
    def held(self) -> Path:
        """``pending/.held``: pending jobs put on hold (hidden, so the worker never takes them)."""
        return self.root / "pending" / HELD_FOLDER

    @cached_property
    def running(self) -> Path:
        return self.root / "running"

    @cached_property
    def completed(self) -> Path:
        return self.root / "completed"

    @cached_property
    def failed(self) -> Path:
        return self.root / "failed"

    @cached_property
    def logs(self) -> Path:
        return self.root / "logs"

    @cached_property
    def daemon_log(self) -> Path:
        return self.root / "daemon.log"

    @cached_property
    def lock_file(self) -> Path:
        return self.root / "worker.lock"

    @cached_property
    def worker_file(self) -> Path:
        return self.root / "worker.json"

    def folder(self, state: JobState) -> Path:
        """The folder that holds jobs in ``state``."""
        return self.root / state.value

    def stdout_log(self, job_id: str) -> Path:
        return self.stream_log(job_id, "stdout")

    def stderr_log(self, job_id: str) -> Path:
        return self.stream_log(job_id, "stderr")

    def ensure_held(self) -> Path:
        """Create ``pending/.held`` (mode 0700, as :meth:`ensure` makes the others) if missing; return it."""
        _make_private_dir(self.held)
        return self.held

    @cached_property
    def schedules(self) -> Path:
        """``schedules/``: the schedule files of recurring jobs (docs/protocol.md, "Schedules")."""
        return self.root / "schedules"

    def ensure_schedules(self) -> Path:
        """Create ``schedules/`` (mode 0700) if missing and check it is private, as :meth:`ensure`
        checks the others (whoever can write a schedule can run commands as this user); return it.
        Raises :class:`UnsafeQueue` as :meth:`ensure` does."""
        _make_private_dir(self.schedules)
        _check_private(self.schedules)
        return self.schedules

    def attempt_record(self, job_id: str, attempt: int) -> Path:
        """``logs/<id>.attempt-<n>.result.json``: the result of an attempt that was retried."""
        return self.logs / f"{job_id}.attempt-{attempt}.result.json"

    def stream_log(self, job_id: str, stream: str) -> Path:
        """``logs/<id>.stdout`` or ``logs/<id>.stderr``."""
        return self.logs / f"{job_id}.{stream}"

    def hook_log(self, job_id: str, stream: str) -> Path:
        """``logs/<id>.on_finish.<stream>``: the output of the job's ``on_finish`` command."""
        return self.logs / f"{job_id}.on_finish.{stream}"

    def attempt_log(self, job_id: str, attempt: int, stream: str) -> Path:
        """``logs/<id>.attempt-<n>.<stream>``: an earlier attempt's output, moved aside for the next."""
        return self.logs / f"{job_id}.attempt-{attempt}.{stream}"

    def ready_mark(self, job_id: str) -> Path:
        """``running/.ready.<id>``: there while the running job is ready (its ``ready_when`` met)."""
        return self.running / f"{READY_PREFIX}{job_id}"

    def cancel_request(self, job_id: str) -> Path:
        """Where a client drops the request to cancel a running job: ``running/.cancel.<id>``."""
        return self.running / f"{CANCEL_PREFIX}{job_id}"

    def record_names(self, job_id: str) -> tuple[str, ...]:
        """Every name a job with this id can have in a queue folder."""
        return (job_id + SIDECAR_SUFFIX, job_id, *(job_id + suffix for suffix in JOB_SUFFIXES))

    def id_in_use(self, job_id: str) -> bool:
        """True if running/, completed/ or failed/ holds a job, a record or a job file with this id.

        On the claim's hot path: plain string paths, one ``lstat`` per name,
        fourteen names: every name of the id (:meth:`record_names`) in
        ``completed/`` and ``failed/``, not only the records (``<id>.json``,
        ``<id>.result.json``), so that a file left there without its record
        (a stray ``failed/<id>.sh``) makes the next job of that id take
        another id instead of a name it cannot be recorded under.
        """
        running = str(self.running)
        if any(os.path.lexists(f"{running}/{job_id}{ending}") for ending in _ENTRY_ENDINGS):
            return True
        finished = (str(self.completed), str(self.failed))
        return any(os.path.lexists(f"{folder}/{job_id}{ending}") for folder in finished for ending in _FINISHED_ENDINGS)

    def ensure(self) -> None:
        """Create the root, its folders and any missing folder above it (mode 0700, whatever the
        umask) and check that they are private.

        Raises :class:`UnsafeQueue` when a queue folder is not a real
        directory, belongs to another user, or can be written by other users:
        whoever can write to ``pending/`` can run commands as this user, and
        whoever can write to the others can forge results. Raises it too
        when a folder above the root could let another user move the queue
        away and put one of their own in its place (:func:`_check_ancestors`).
        """
        missing = [folder for folder in self.root.parents if not os.path.lexists(folder)]
        for folder in reversed(missing):  # private, as _check_ancestors wants them, not as the umask says
            _make_private_dir(folder)
        self.root.mkdir(mode=0o700, exist_ok=True)
        _check_ancestors(self.root)
        from .models import JobState

        folders = [self.folder(state) for state in JobState] + [self.logs]
        for folder in folders:
            _make_private_dir(folder)
        for path in (self.root, *folders):
            _check_private(path)


def _make_private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return
    path.chmod(0o700)  # mkdir's mode is masked by the umask; make it exact


def _check_ancestors(root: Path) -> None:
    """Check every folder above ``root`` (resolved), as ``sshd``'s StrictModes checks a home.

    Each must belong to root (user id 0) or to this user, and must not be writable by
    group or others unless it is sticky (``/tmp``, mode 1777): in a folder others can
    write, or one another user owns, that user can rename the queue away and put a
    queue of their own in its place, and its jobs would run as this user. Raises
    :class:`UnsafeQueue` naming the folder and the fix.
    """
    if not hasattr(os, "getuid"):
        return
    uid = os.getuid()
    for folder in Path(os.path.realpath(root)).parents:
        info = folder.stat()
        if info.st_uid not in (0, uid):
            raise UnsafeQueue(
                f"{folder} belongs to user id {info.st_uid}, not to root or to you (user id {uid}); a queue's "
                "parent folders must, since their owner could move the queue away and put one of their own in "
                "its place. Put the queue elsewhere (--queue-dir)"
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            raise UnsafeQueue(
                f"{folder} can be written by other users (mode {stat.S_IMODE(info.st_mode):o}) and is not sticky; "
                "a queue's parent folders must not be, since anyone who can write there could move the queue away "
                f"and put one of their own in its place. Fix it with: chmod go-w '{folder}' (or chmod +t), or put "
                "the queue elsewhere (--queue-dir)"
            )


def _check_private(path: Path) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeQueue(f"{path} is a symbolic link; the queue folders must be real directories")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeQueue(f"{path} is not a directory; move it away so the queue folder can be created")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise UnsafeQueue(
            f"{path} belongs to user id {info.st_uid}, not to you (user id {os.getuid()}); "
            "a worker only serves a queue that its own user owns"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeQueue(
            f"{path} can be written by other users (mode {stat.S_IMODE(info.st_mode):o}): anyone who "
            f"can write there can run commands as you. Fix it with: chmod 700 '{path}'"
        )
