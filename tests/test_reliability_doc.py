"""docs/reliability.md: at least 16 bad inputs, and every test the table names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
#: ``tests/<path>.py::<name>`` or ``::<name>[params]`` inside backquotes.
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)(?:\[([^`\]…-]*)[^`]*\])?`")


def _table_rows(text: str) -> list[str]:
    section = text.split("## Bad inputs", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if re.match(r"\| \d+[a-z]? \|", line)]


def test_table_has_the_issue_rows_each_with_a_test():
    rows = _table_rows(DOC.read_text(encoding="utf-8"))
    numbered = {re.match(r"\| (\d+)", row).group(1) for row in rows}
    assert len(numbered) >= 16
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 6, row
        assert cells[4] and TEST_REF.search(cells[5]), row


def test_every_named_test_exists():
    text = DOC.read_text(encoding="utf-8")
    refs = TEST_REF.findall(text)
    assert len(refs) >= 20
    for path, name, case in refs:
        source = (ROOT / path).read_text(encoding="utf-8")
        assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{path}::{name} is not defined"
        if case:  # the parametrised case: its first parameter is a string of the test file
            assert f'"{case}"' in source, f"{path}::{name}[{case}] is not a case of the test"
