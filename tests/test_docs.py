"""The docs tell the truth about the tests: every test that docs/*.md names exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted((ROOT / "docs").glob("*.md"))
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
