"""docs/options.md, the table of what tests each ``rmmwatch run`` option and security mode, stays complete and true:
one row per option of RUN_OPTIONS, every test it names exists, and a row without a test says why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rmmwatch.config import RUN_OPTIONS

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "docs" / "options.md"
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
NOT_HERE = "**not tested here"


def _rows(section: str) -> list[str]:
    """The table rows under a ``## section`` heading (header and separator lines dropped)."""
    text = TABLE.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    header = ("| option ", "| mode ")
    return [line for line in body.splitlines() if line.startswith("| ") and not line.startswith(header)]


def _option_rows() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in _rows("Options"):
        match = re.match(r"\| `(--[a-z0-9-]+)` \|", line)
        assert match, f"an options row must start with the option in backquotes: {line[:80]}"
        assert match.group(1) not in rows, f"{match.group(1)} has two rows"
        rows[match.group(1)] = line
    return rows


def test_every_run_option_has_exactly_one_row() -> None:
    """Adding an option to RUN_OPTIONS without saying how it is tested fails here; so does a row for a gone option."""
    rows = _option_rows()
    assert sorted(rows) == sorted(option.flag for option in RUN_OPTIONS)


@pytest.mark.parametrize("section", ["Options", "Security modes"])
def test_every_row_names_a_test_or_says_why_not(section: str) -> None:
    """A row names at least one test (file::function), or is marked not tested here with the reason."""
    for line in _rows(section):
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert len(cells) == 3, f"three columns expected: {line[:80]}"
        if NOT_HERE in cells[1]:
            reason = cells[1].split(NOT_HERE, 1)[1]
            assert len(reason.split()) >= 5, f"say why it cannot be tested here: {line[:80]}"
        else:
            assert TEST_REF.search(cells[1]), f"no test named: {line[:80]}"
        assert cells[2], f"say what it ran against: {line[:80]}"


def test_every_named_test_exists() -> None:
    """Each ``tests/...py::name`` in the table is a test function defined in that file."""
    named = TEST_REF.findall(TABLE.read_text())
    assert named
    missing = []
    for path, name in sorted(set(named)):
        source = REPO / path
        text = source.read_text() if source.exists() else ""
        if not re.search(rf"^(async )?def {name}\(", text, re.MULTILINE):
            missing.append(f"{path}::{name}")
    assert not missing, missing
