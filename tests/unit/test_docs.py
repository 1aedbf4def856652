"""The repository documents itself: code and tests cite only documents that are in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CITED = re.compile(r"docs/([a-z-]+\.md)")
OUTSIDE = re.compile(r"\b(DESIGN|DOMAIN|STYLE|INFRA)\.md\b|\.\./shared/|shared/(docs|samples)/")


def _tracked() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if n.endswith((".py", ".md", ".yaml", ".sh", ".toml")) or n == "Makefile"]


def test_every_cited_document_exists() -> None:
    """Each ``docs/<name>.md`` named in the code, the tests or the docs is a file of the repository."""
    missing = {
        (path.relative_to(REPO).as_posix(), name)
        for path in _tracked()
        if path.exists()
        for name in CITED.findall(path.read_text(errors="replace"))
        if not (REPO / "docs" / name).exists()
    }
    assert missing == set()


def test_nothing_cites_a_document_outside_the_repository() -> None:
    """A user who clones the project alone has every document its comments point to."""
    this = Path(__file__).resolve()
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in _tracked()
        if path.exists() and path.resolve() != this
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []
