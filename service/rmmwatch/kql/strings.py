"""KQL string operators with their exact semantics.

Case-insensitive operators compare *simple-case-folded* text: each character is mapped
to its one-character lowercase form (Unicode simple case mapping, as .NET and RE2 do).
Python's ``str.lower`` uses the full mapping and one context rule, which differ in two
places: U+0130 (LATIN CAPITAL LETTER I WITH DOT ABOVE) becomes ``"i\u0307"`` (two
characters) instead of ``"i"``, and a word-final capital sigma becomes the final sigma.
:func:`fold` fixes both, so folding is per character, never changes a string's length, and
term boundaries computed on folded text are the boundaries of the original.

``has`` is a *term* match (learn.microsoft.com/kusto/query/datatypes-string-operators).
A term is a maximal run of Unicode letters and digits (``\\pL\\pN``); every other
character, ``_`` included, delimits terms. The boundary rule at the edges of the right
side was measured against the Kusto emulator by duckdb-kql's differential sweep: a
boundary is required at an end of the needle only where that end is a term character;
a needle made only of delimiters is a plain substring test, and ``has ""`` is true.
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
    """A prepared right side of ``has``/``has_cs``: folded once, edges classified once."""

    __slots__ = ("case_sensitive", "lead", "text", "trail")

    def __init__(self, needle: str, *, case_sensitive: bool) -> None:
        self.case_sensitive = case_sensitive
        self.text = needle if case_sensitive else fold(needle)
        self.lead = bool(self.text) and is_term_char(self.text[0])
        self.trail = bool(self.text) and is_term_char(self.text[-1])

    def found_in(self, haystack: str) -> bool:
        """``haystack has needle`` (or ``has_cs``)."""
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


def has(haystack: str, needle: str) -> bool:
    """KQL ``haystack has needle`` (case-insensitive term match)."""
    return TermNeedle(needle, case_sensitive=False).found_in(haystack)


def has_cs(haystack: str, needle: str) -> bool:
    """KQL ``haystack has_cs needle`` (case-sensitive term match)."""
    return TermNeedle(needle, case_sensitive=True).found_in(haystack)


def contains(haystack: str, needle: str) -> bool:
    """KQL ``contains``: case-insensitive substring."""
    return fold(needle) in fold(haystack)


def startswith(haystack: str, needle: str) -> bool:
    """KQL ``startswith``: case-insensitive prefix (not term-based)."""
    return fold(haystack).startswith(fold(needle))


def endswith(haystack: str, needle: str) -> bool:
    """KQL ``endswith``: case-insensitive suffix (not term-based)."""
    return fold(haystack).endswith(fold(needle))


def equals_ci(left: str, right: str) -> bool:
    """KQL ``=~``."""
    return fold(left) == fold(right)


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
