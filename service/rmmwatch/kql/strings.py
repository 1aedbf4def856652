"""The text rules under KQL's string operators: simple case folding and terms.

The operators themselves (``has``, ``contains``, ``=~``, ...) are rows of the table in
:mod:`rmmwatch.kql.operators`, built from the two rules here.

Case-insensitive operators compare *simple-case-folded* text: each character is mapped
to its one-character lowercase form (Unicode simple case mapping, as .NET and RE2 do).
Python's ``str.lower`` uses the full mapping and one context rule, which differ in two
places: U+0130 (LATIN CAPITAL LETTER I WITH DOT ABOVE) becomes ``"i\u0307"`` (two
characters) instead of ``"i"``, and a word-final capital sigma becomes the final sigma.
:func:`fold` fixes both, so folding is per character, never changes a string's length, and
term boundaries computed on folded text are the boundaries of the original.

``has``, ``hasprefix`` and ``hassuffix`` are *term* matches
(learn.microsoft.com/kusto/query/datatypes-string-operators). A term is a maximal run of
Unicode letters and digits (``\\pL\\pN``); every other character, ``_`` included, delimits
terms. ``has`` needs a term boundary at both ends of the right side, ``hasprefix`` at its
start only, ``hassuffix`` at its end only. The boundary rule at an edge was measured
against the Kusto emulator by duckdb-kql's differential sweep: a boundary is required at
an end of the needle only where that end is a term character; a needle made only of
delimiters is a plain substring test, and ``has ""`` is true.
"""

from __future__ import annotations

from collections.abc import Iterable

_DOTTED_CAPITAL_I = "\u0130"
_CAPITAL_SIGMA = "\u03a3"

#: Non-ASCII characters whose simple lowercase is ASCII. The byte prefilter, which folds
#: ASCII only, must treat their presence as "cannot vouch". Verified over every code
#: point by tests/unit/test_kql_strings.py.
NON_ASCII_FOLDING_TO_ASCII: dict[str, str] = {"\u0130": "i", "\u212a": "k"}


def fold(text: str) -> str:
    """Simple (1:1, per character) lowercase mapping: length-preserving case folding.

    ``str.lower`` departs from the per-character simple mapping in exactly two places: U+0130
    (full mapping to two characters) and the capital sigma, which it lowers to the final
    sigma U+03C2 at the end of a word (a context rule). Both are mapped first.
    """
    if text.isascii():
        return text.lower()
    if _DOTTED_CAPITAL_I in text:
        text = text.replace(_DOTTED_CAPITAL_I, "i")
    if _CAPITAL_SIGMA in text:
        text = text.replace(_CAPITAL_SIGMA, "\u03c3")
    return text.lower()


def is_term_char(char: str) -> bool:
    """Whether ``char`` belongs to a term: a Unicode letter (L*) or number (N*)."""
    if char.isascii():
        return char.isalnum()
    return char.isalpha() or char.isnumeric()


class TermNeedle:
    """A prepared right side of a term operator: folded once, edges classified once.

    ``start``/``end``: whether the operator needs a term boundary before/after the needle
    (``has`` both, ``hasprefix`` the start, ``hassuffix`` the end); an edge needs one only
    where the needle's own character there is a term character.
    """

    __slots__ = ("case_sensitive", "lead", "text", "trail")

    def __init__(self, needle: str, *, case_sensitive: bool, start: bool = True, end: bool = True) -> None:
        self.case_sensitive = case_sensitive
        self.text = needle if case_sensitive else fold(needle)
        self.lead = start and bool(self.text) and is_term_char(self.text[0])
        self.trail = end and bool(self.text) and is_term_char(self.text[-1])

    def found_in(self, haystack: str) -> bool:
        """Whether the needle occurs in ``haystack`` with the boundaries its operator needs."""
        needle = self.text
        if not needle:
            return True
        if not self.case_sensitive:
            haystack = fold(haystack)
        size = len(needle)
        end_of_haystack = len(haystack)
        start = haystack.find(needle)
        while start >= 0:
            end = start + size
            if (not self.lead or start == 0 or not is_term_char(haystack[start - 1])) and (
                not self.trail or end == end_of_haystack or not is_term_char(haystack[end])
            ):
                return True
            start = haystack.find(needle, start + 1)
        return False


def terms(text: str) -> Iterable[str]:
    """The terms of ``text`` in order (maximal runs of term characters)."""
    current: list[str] = []
    for char in text:
        if is_term_char(char):
            current.append(char)
        elif current:
            yield "".join(current)
            current = []
    if current:
        yield "".join(current)
