"""Searching jobs' output for lines matching a pattern, with line numbers and context.

The logs (``logs/<id>.stdout``, ``.stderr``) are read as regular files only, in
blocks of whole lines. The cost is bounded: a search stops after :data:`SEARCH_MAX_S`
seconds of matching (the ``regex`` module's timeout, so a pattern that backtracks
cannot hold the server), :data:`SEARCH_MAX_BYTES` of one log, or ``max_matches``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO

import regex

from execsvc.protocol.durable import NotRegularFile
from execsvc.protocol.queue import JobQueue

from .lines import BLOCK_BYTES, call, log_path, not_stdout
from .models import Match, SearchAnswer, Stream
from .output import open_for_reading

SEARCH_MAX_BYTES = 256 * 1024 * 1024
"""Bytes of one log a search reads at most."""
SEARCH_MAX_S = 5.0
"""Seconds of matching one search may take in all (a regular expression that backtracks is stopped)."""
LINE_MAX_CHARS = 500
"""Characters of one line shown in a search match or a context line (the rest is cut, with "…")."""


def search(
    queue: JobQueue,
    job_ids: list[str],
    pattern: str,
    *,
    fixed: bool = False,
    ignore_case: bool = False,
    context: int = 0,
    max_matches: int = 20,
    streams: tuple[Stream, ...] = ("stdout", "stderr"),
) -> SearchAnswer:
    """Lines matching ``pattern`` (a regular expression, or a fixed string with ``fixed``) in the
    given jobs' logs, with their line numbers and ``context`` lines either side.

    Stops at ``max_matches`` (the answer says so and how to go on), after
    :data:`SEARCH_MAX_BYTES` of one log or :data:`SEARCH_MAX_S` seconds of matching.
    Raises :class:`ValueError` for a pattern that is not a valid regular expression.
    """
    flags = regex.MULTILINE | regex.V0 | (regex.IGNORECASE if ignore_case else 0)
    try:
        compiled = regex.compile(regex.escape(pattern) if fixed else pattern, flags)
    except regex.error as exc:
        raise ValueError(
            f"the pattern is not a valid regular expression ({exc}); pass fixed=true to search for it as text"
        ) from exc
    answer = SearchAnswer(pattern=pattern, matches=[])
    deadline = time.monotonic() + SEARCH_MAX_S
    for job_id in job_ids:
        info = queue.get(job_id)
        for stream in streams:
            if len(answer.matches) >= max_matches or answer.cut:
                break
            _search_log(queue, info.job_id, stream, compiled, context, max_matches, deadline, answer)
        answer.jobs_searched += 1
    if len(answer.matches) >= max_matches and not answer.cut:
        last = answer.matches[-1]
        answer.cut = f"stopped at {max_matches} matches (max_matches)"
        answer.next = call(
            "get_job_output", job_id=last.job_id, stream=not_stdout(last.stream), from_line=last.line + 1
        )
    return answer


def _search_log(
    queue: JobQueue,
    job_id: str,
    stream: Stream,
    compiled: regex.Pattern[str],
    context: int,
    max_matches: int,
    deadline: float,
    answer: SearchAnswer,
) -> None:
    try:
        handle = open_for_reading(log_path(queue, job_id, stream))
    except (FileNotFoundError, NotRegularFile):
        return
    with handle:
        line_no = 0
        before: deque[str] = deque(maxlen=context)
        waiting: list[Match] = []  # matches still taking their after-context lines
        for block in _blocks(handle):
            text = block.decode("utf-8", errors="replace")
            hits = _hit_lines(compiled, text, deadline, answer)
            if hits is None:
                return
            lines = text.split("\n")
            if lines and lines[-1] == "":
                lines.pop()
            if not context:  # no context lines to carry: only the matching lines are looked at
                for index in sorted(hits)[: max_matches - len(answer.matches)]:
                    answer.matches.append(
                        Match(job_id=job_id, stream=stream, line=line_no + index + 1, text=_short(lines[index]))
                    )
                answer.lines_searched += len(lines)
                line_no += len(lines)
                if len(answer.matches) >= max_matches:
                    return
                continue
            for index, line in enumerate(lines):
                number = line_no + index + 1
                shown = _short(line)
                for match in waiting:
                    if number > match.line and len(match.after or []) < context:
                        match.after = [*(match.after or []), shown]
                waiting = [m for m in waiting if len(m.after or []) < context]
                if index in hits:
                    if len(answer.matches) >= max_matches:
                        return
                    match = Match(job_id=job_id, stream=stream, line=number, text=shown)
                    if context:
                        match.before = list(before) or None
                        waiting.append(match)
                    answer.matches.append(match)
                if context:
                    before.append(shown)
            answer.lines_searched += len(lines)
            line_no += len(lines)
            if len(answer.matches) >= max_matches and not waiting:
                return


def _hit_lines(compiled: regex.Pattern[str], text: str, deadline: float, answer: SearchAnswer) -> set[int] | None:
    """Indexes (in ``text``) of the lines with a match; ``None`` when the time ran out."""
    hits: set[int] = set()
    counted, line = 0, 0
    try:
        for found in compiled.finditer(text, timeout=max(0.001, deadline - time.monotonic())):
            line += text.count("\n", counted, found.start())
            counted = found.start()
            hits.add(line)
    except TimeoutError:
        answer.cut = f"stopped after {SEARCH_MAX_S:g} s of matching; use a simpler pattern or fixed=true"
        return None
    return hits


def _blocks(handle: BinaryIO) -> Iterator[bytes]:
    """The log in blocks of whole lines (up to :data:`SEARCH_MAX_BYTES`)."""
    carry, read = b"", 0
    while read < SEARCH_MAX_BYTES:
        block = handle.read(BLOCK_BYTES)
        if not block:
            break
        read += len(block)
        data = carry + block
        cut = data.rfind(b"\n") + 1
        if cut == 0 and len(data) < 4 * BLOCK_BYTES:
            carry = data
            continue
        cut = cut or len(data)
        carry = data[cut:]
        yield data[:cut]
    if carry:
        yield carry


def _short(line: str) -> str:
    return line if len(line) <= LINE_MAX_CHARS else line[: LINE_MAX_CHARS - 1] + "…"
