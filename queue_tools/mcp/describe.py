"""The tool descriptions a model reads: plain text, with units, and the facts in force.

The facts (where jobs run, the default timeout, the wait cap, the slots, the
command policy) are read when the server starts, from ``worker.json``
(docs/protocol.md, "Layout") and the server's own settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .tools import MAX_WAIT_S


@dataclass(frozen=True)
class Facts:
    """What the descriptions state about this queue and server."""

    job_cwd: Path | None
    default_timeout_s: float
    max_timeout_s: float | None = None
    slots: int | None = None
    allowed_commands: list[str] | None = None
    allow_shell: bool = True
    serving: bool = False
    groups: dict[str, int] | None = None  # each declared group's slots (worker.json), "default" among them


def _where(facts: Facts) -> str:
    folder = str(facts.job_cwd) if facts.job_cwd is not None else "the worker's home folder"
    return f"Jobs run in {folder} unless cwd is given."


def _limits(facts: Facts) -> str:
    cap = f", at most {facts.max_timeout_s:g} s" if facts.max_timeout_s else ""
    slots = f"{facts.slots} job(s) run at once" if facts.slots else "no worker serves the queue yet"
    others = {name: count for name, count in (facts.groups or {}).items() if name != "default"}
    if facts.slots and others:
        listed = ", ".join(f"{name} {count}" for name, count in sorted(others.items())[:10])
        slots += f" in the default group; groups with slots of their own (argument group): {listed}"
    if facts.allowed_commands is not None:
        policy = "only these programs may run: " + ", ".join(facts.allowed_commands[:10])
    else:
        policy = "any command may run"
    shell = "" if facts.allow_shell else "; shell command lines are refused (pass args)"
    return f"Default timeout {facts.default_timeout_s:g} s{cap}; {slots}; {policy}{shell}."


def instructions(facts: Facts) -> str:
    """The server's instructions (sent once, at initialize)."""
    return (
        "Runs commands on this machine through the execsvc job queue. enqueue_job with wait_s returns "
        "a quick job's result in one call; wait_for_job waits for a slower one (it returns as soon as "
        "the job ends). Answers show the last lines of output; get_job_output reads any lines and "
        f"search_output finds lines by pattern. {_where(facts)} {_limits(facts)}"
    )


def descriptions(facts: Facts) -> dict[str, str]:
    """Each tool's description, by tool name (the order the tools are listed in)."""
    return {
        "enqueue_job": (
            "Run a shell command line (or a program with args) as a queued job on this machine. "
            f"{_where(facts)} {_limits(facts)} With wait_s (seconds, at most {MAX_WAIT_S:g}) the answer "
            "holds the result if the job ends in time: status, exit code, duration, error, and the last "
            "lines of stdout and stderr with their sizes and how to read more; else call wait_for_job."
        ),
        "wait_for_job": (
            f"Wait until a job finishes or timeout_s seconds pass (at most {MAX_WAIT_S:g}); returns its "
            "answer either way, at once when no worker serves the queue. Sends progress notifications."
        ),
        "get_job": (
            "Where a job stands: pending (why it waits), running (elapsed s, CPU s, memory MiB, last "
            "output lines) or finished (status, exit code, error, last output lines)."
        ),
        "get_job_output": (
            "Read a job's full stdout or stderr, while it runs or after, by lines (head, tail, or "
            "from_line with lines; numbered from 1) or by byte offset. Default: the last 16384 bytes; "
            "at most max_bytes (65536). Says the total lines and bytes, what was cut and the next call."
        ),
        "search_output": (
            "Find lines matching a regular expression (or fixed text) in a job's output, or in the "
            "recent jobs'; returns each with its line number and context lines."
        ),
        "list_jobs": "Jobs newest first, a page at a time, with counts per state; pass next_cursor for more.",
        "cancel_job": (
            "Cancel a job. A pending one never runs. A running one's process group gets SIGTERM (or "
            "signal), then SIGKILL after the kill grace; force=true sends SIGKILL at once."
        ),
        "hold_job": "Keep a pending job from starting until release_job.",
        "release_job": "Let a held job start again.",
        "retry_job": (
            "Run a finished job again (failed, timed out, cancelled, interrupted or completed) as a new "
            "job with the same fields; returns the new job."
        ),
        "queue_status": (
            "Counts per state, the worker (pid, slots, uptime, command policy) and the queue's root folder."
        ),
        "list_schedules": "Recurring jobs (schedules): cron or interval, zone, next due time, last run.",
    }
