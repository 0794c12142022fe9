"""The docs tell the truth about the tests and the code about the docs.

Every test that docs/*.md names exists; every heading of docs/protocol.md that a docstring
(or a doc) cites exists word for word; every link to a section of a page finds it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PROTOCOL = ROOT / "docs" / "protocol.md"
CODE = sorted([*(ROOT / "execsvc").rglob("*.py"), *(ROOT / "queue_tools").rglob("*.py")])
# `docs/protocol.md, "Layout"` or `protocol.md, "JSON jobs", "Text jobs"`: the headings cited.
CITATION = re.compile(r'protocol\.md,\s+((?:"[^"]+"(?:,\s*)?)+)')
LINK = re.compile(r"\]\(((?:\.\./)?(?:docs/)?[\w.-]+\.md)#([\w-]+)\)")
# `tests/x.py::test_a` names a test of x.py; a later `::test_b` in the same cell is of x.py too.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(test_\w+))?(?:\[[^\]`]*\])?`")


def named_tests(text: str) -> list[tuple[str, str]]:
    named, current = [], None
    for match in REFERENCE.finditer(text):
        path, test = match.groups()
        current = path or current
        if test is not None:
            assert current is not None, f"::{test} names no file before it"
            named.append((current, test))
    return named


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: doc.name)
def test_every_test_a_doc_names_exists(doc: Path) -> None:
    named = named_tests(doc.read_text())
    missing = [f"{path}::{test}" for path, test in named if f"def {test}(" not in (ROOT / path).read_text()]
    assert not missing, f"{doc.name} names tests that do not exist: {missing}"


def test_the_reliability_page_names_the_tests_of_each_condition() -> None:
    assert len(named_tests((ROOT / "docs" / "reliability.md").read_text())) >= 40


def headings(page: Path) -> list[str]:
    """The page's Markdown headings (``#`` to ``######``), outside fenced blocks, as written."""
    found, fenced = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            found.append(match.group(1).strip())
    return found


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def cited_headings(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", text)  # a citation may be wrapped over lines
    return [title for match in CITATION.finditer(text) for title in re.findall(r'"([^"]+)"', match.group(1))]


def test_the_protocol_headings_the_code_cites_exist() -> None:
    """Each ``docs/protocol.md, "<heading>"`` in a docstring of execsvc/ or queue_tools/ names a
    heading of docs/protocol.md word for word, and nothing cites the old names (PROTOCOL.md, the README)."""
    titles = set(headings(PROTOCOL))
    cited = {(path.name, title) for path in CODE for title in cited_headings(path.read_text())}
    assert len(cited) >= 12, "the modules cite the protocol's sections"
    missing = sorted(f"{name}: {title!r}" for name, title in cited if title not in titles)
    assert not missing, f"docstrings cite headings docs/protocol.md does not have: {missing}"
    stale = [path.name for path in CODE if re.search(r'PROTOCOL\.md|README, "|in the README', path.read_text())]
    assert not stale, f"these cite PROTOCOL.md or the README instead of docs/protocol.md: {stale}"


@pytest.mark.parametrize("doc", [ROOT / "README.md", *DOCS], ids=lambda doc: doc.name)
def test_the_sections_a_doc_cites_or_links_exist(doc: Path) -> None:
    text = doc.read_text()
    missing = [title for title in cited_headings(text) if title not in headings(PROTOCOL)]
    for target, fragment in LINK.findall(text):
        page = (doc.parent / target).resolve()
        if not page.exists() or fragment not in {anchor(title) for title in headings(page)}:
            missing.append(f"{target}#{fragment}")
    assert not missing, f"{doc.name} cites or links sections that do not exist: {missing}"
