"""The one table of KQL's operators: the parser, the compiler, the prefilter and the tests read it.

Each string operator is a row: its name and its negation, its case rule, the needle factory
(the compiler prepares the right side once per rule and calls the returned test per event)
and its prefilter requirement (whether a match implies that the value contains the needle,
up to simple case folding: then the needle is a string the byte prefilter may look for).
Adding a string operator is one row here plus its vectors in tests/unit/test_kql_strings.py.

Semantics: learn.microsoft.com/kusto/query/datatypes-string-operators and the operator pages,
summarised in docs/semantics.md; case folding and terms are in :mod:`rmmwatch.kql.strings`.
The list operators (``in``, ``has_any``, ...) compare a value with each item through a row
of the string table; the comparison operators are here with their swapped forms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rmmwatch.kql.strings import TermNeedle, fold

#: The test of one string value against a prepared right side.
Test = Callable[[str], bool]
#: Prepares a right side under a case rule: ``(needle, case_sensitive) -> test``.
NeedleFactory = Callable[[str, bool], Test]


@dataclass(frozen=True, slots=True)
class StringOperator:
    """One row of the table: a KQL string operator and everything that depends on it."""

    name: str
    negation: str
    case_sensitive: bool
    factory: NeedleFactory
    #: A match implies fold(needle) occurs in fold(value), so the needle may be required.
    requires_needle: bool = True

    def needle(self, needle: str) -> Test:
        """The right side prepared once: the test compiled conditions call for every event."""
        return self.factory(needle, self.case_sensitive)

    def test(self, value: str, needle: str) -> bool:
        """``value <operator> needle``, preparing the needle for this one call."""
        return self.needle(needle)(value)

    def required(self, needle: str) -> frozenset[str] | None:
        """The strings one of which a value matching ``<operator> needle`` contains (None: cannot say)."""
        return frozenset({needle}) if self.requires_needle and needle else None


# -- needle factories: one per kind of match, each under both case rules -----------------------


def _terms(*, start: bool, end: bool) -> NeedleFactory:
    """A term match needing a boundary at the needle's ``start`` and/or ``end``."""

    def prepare(needle: str, case_sensitive: bool) -> Test:
        return TermNeedle(needle, case_sensitive=case_sensitive, start=start, end=end).found_in

    return prepare


def _substring(needle: str, case_sensitive: bool) -> Test:
    if case_sensitive:
        return lambda value: needle in value
    folded = fold(needle)
    return lambda value: folded in fold(value)


def _prefix(needle: str, case_sensitive: bool) -> Test:
    if case_sensitive:
        return lambda value: value.startswith(needle)
    folded = fold(needle)
    return lambda value: fold(value).startswith(folded)


def _suffix(needle: str, case_sensitive: bool) -> Test:
    if case_sensitive:
        return lambda value: value.endswith(needle)
    folded = fold(needle)
    return lambda value: fold(value).endswith(folded)


def _equal(needle: str, case_sensitive: bool) -> Test:
    if case_sensitive:
        return lambda value: value == needle
    folded = fold(needle)
    return lambda value: fold(value) == folded


_WHOLE_TERM = _terms(start=True, end=True)
_TERM_PREFIX = _terms(start=True, end=False)
_TERM_SUFFIX = _terms(start=False, end=True)

# -- the table -------------------------------------------------------------------------------

HAS = StringOperator("has", "!has", case_sensitive=False, factory=_WHOLE_TERM)
EQUAL_CI = StringOperator("=~", "!~", case_sensitive=False, factory=_equal)
#: ``==``/``!=`` on strings; the parser and compiler take them as comparisons first (they also
#: compare numbers and datetimes) and come here for string columns.
EQUAL = StringOperator("==", "!=", case_sensitive=True, factory=_equal)

STRING_OPERATOR_TABLE: tuple[StringOperator, ...] = (
    HAS,
    StringOperator("has_cs", "!has_cs", case_sensitive=True, factory=_WHOLE_TERM),
    StringOperator("hasprefix", "!hasprefix", case_sensitive=False, factory=_TERM_PREFIX),
    StringOperator("hasprefix_cs", "!hasprefix_cs", case_sensitive=True, factory=_TERM_PREFIX),
    StringOperator("hassuffix", "!hassuffix", case_sensitive=False, factory=_TERM_SUFFIX),
    StringOperator("hassuffix_cs", "!hassuffix_cs", case_sensitive=True, factory=_TERM_SUFFIX),
    StringOperator("contains", "!contains", case_sensitive=False, factory=_substring),
    StringOperator("contains_cs", "!contains_cs", case_sensitive=True, factory=_substring),
    StringOperator("startswith", "!startswith", case_sensitive=False, factory=_prefix),
    StringOperator("startswith_cs", "!startswith_cs", case_sensitive=True, factory=_prefix),
    StringOperator("endswith", "!endswith", case_sensitive=False, factory=_suffix),
    StringOperator("endswith_cs", "!endswith_cs", case_sensitive=True, factory=_suffix),
    EQUAL_CI,
    EQUAL,
)

#: Every spelling, positive or negated: name -> (row, negated).
STRING_OPERATORS: Mapping[str, tuple[StringOperator, bool]] = {
    spelling: (row, negated)
    for row in STRING_OPERATOR_TABLE
    for spelling, negated in ((row.name, False), (row.negation, True))
}


@dataclass(frozen=True, slots=True)
class ListOperator:
    """An operator between a value and a list of constants, through one string row per item."""

    name: str
    item: StringOperator  # how a string value is compared with one item
    every: bool = False  # every item must match (has_all); else any item
    negated: bool = False

    @property
    def is_membership(self) -> bool:
        """Equality with any item: a set lookup under the item's case rule (also for non-strings)."""
        return (self.item is EQUAL or self.item is EQUAL_CI) and not self.every


LIST_OPERATORS: Mapping[str, ListOperator] = {
    op.name: op
    for op in (
        ListOperator("in", EQUAL),
        ListOperator("!in", EQUAL, negated=True),
        ListOperator("in~", EQUAL_CI),
        ListOperator("!in~", EQUAL_CI, negated=True),
        ListOperator("has_any", HAS),
        ListOperator("has_all", HAS, every=True),
    )
}

#: Each comparison and the one that means the same with its sides swapped (``5 < X`` is ``X > 5``).
SWAPPED_COMPARISONS: Mapping[str, str] = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
COMPARISON_OPERATORS = frozenset(SWAPPED_COMPARISONS)

#: Operators KQL has (or that look like KQL) and rmmwatch refuses, so the error names them.
UNSUPPORTED_OPERATORS = frozenset(
    {
        "matches",
        "like",
        "notlike",
        "has_any_cs",
        "has_all_cs",
        "!has_any",
        "!has_all",
        "in_cs",
        "contains_any",
        "!contains_any",
    }
)
