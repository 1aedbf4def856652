"""What the KQL front end reports: an error (a query rmmwatch will not run) or a warning, each located.

Both carry a 1-based line and column in the query text; ``rules.py`` turns them into positions
in the rule file. An error also carries the warnings found before it, so that ``rmmwatch rules
check`` can show them for a refused rule too.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KqlWarning:
    """Valid KQL that probably does not say what its author meant (it is run as KQL reads it)."""

    message: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.message} (query line {self.line}, column {self.column})"


class KqlError(Exception):
    """A query rmmwatch cannot run, located in the query text (1-based line and column)."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        #: Warnings found before the error (set by the parser and the compiler).
        self.warnings: tuple[KqlWarning, ...] = ()

    def __str__(self) -> str:
        return f"{self.message} (query line {self.line}, column {self.column})"


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The name a hint should suggest for an unknown ``name``, if one is close enough.

    In order: the same name in another case (``Sha1`` -> ``SHA1``), the shortest name ending
    with it (``AccountUpn`` -> ``InitiatingProcessAccountUpn`` on a table without
    ``AccountUpn``), then the closest spelling (``FileNme`` -> ``FileName``).
    """
    candidates = list(known)
    folded = name.casefold()
    same = [c for c in candidates if c.casefold() == folded]
    if same:
        return same[0]
    suffixed = sorted((c for c in candidates if c.casefold().endswith(folded)), key=len)
    if suffixed and len(name) >= 3:
        return suffixed[0]
    close = difflib.get_close_matches(name, candidates, n=1)
    return close[0] if close else None
