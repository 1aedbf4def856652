"""The closures a compiled ``where`` runs per event, and the strings each one requires.

The compiler resolves and type-checks the operands (a column, constants) and comes here to
build the :class:`Condition`: its closure over one decoded event and its prefilter strings.

Closures follow KQL's three-valued logic: they return ``True``, ``False`` or ``None`` (null),
and ``where`` keeps a row only on ``True``. Strings are never null in KQL, so a missing string
is ``""`` and string operators are total; an ordering comparison with a null operand is null.
``and``/``or`` are n-ary: a chain of thousands of terms is one loop, not nested closures.

``required`` is a set of strings one of which every match contains: ``None`` when nothing can
be said, empty when the condition can never be true (see docs/architecture.md, prefilter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rmmwatch.kql.compiled import Condition, Event, Predicate
from rmmwatch.kql.operators import ListOperator, StringOperator
from rmmwatch.kql.strings import fold
from rmmwatch.kql.syntax import Pos

# -- operators on one column -------------------------------------------------------------------


def string_condition(row: StringOperator, negated: bool, name: str, needle: str, pos: Pos) -> Condition:
    """``name <row> needle`` (or its negation) through the table row's prepared needle."""
    test = row.needle(needle)
    if negated:

        def evaluate(event: Event) -> bool:
            return not test(event.get(name) or "")

        return Condition(evaluate, None, pos)

    def positive(event: Event) -> bool:
        return test(event.get(name) or "")

    return Condition(positive, row.required(needle), pos)


def ordered_condition(name: str, op: str, target: Any, pos: Pos) -> Condition:
    """A comparison of a non-string column with a constant (``==``, ``!=``, ``<``, ...)."""
    if target is None:
        # Comparing with a null literal: KQL yields null for every row.
        return Condition(lambda e: None, frozenset(), pos)

    def evaluate(event: Event) -> bool | None:
        value = event.get(name)
        if op == "==":
            return value is not None and value == target
        if op == "!=":
            return value is None or value != target
        if value is None:
            return None
        if op == "<":
            return bool(value < target)
        if op == "<=":
            return bool(value <= target)
        if op == ">":
            return bool(value > target)
        return bool(value >= target)

    return Condition(evaluate, None, pos)


def between_condition(name: str, low: Any, high: Any, negated: bool, pos: Pos) -> Condition:
    """``name between (low .. high)``, inclusive at both ends (or ``!between``)."""

    def evaluate(event: Event) -> bool | None:
        value = event.get(name)
        if value is None:
            return None
        inside = low <= value <= high
        return not inside if negated else inside

    return Condition(evaluate, None, pos)


def list_condition(row: ListOperator, name: str, text: bool, values: Sequence[Any], pos: Pos) -> Condition:
    """``name <row> (values...)``: membership (``in``, ``in~``) or term tests (``has_any``, ``has_all``)."""
    if row.is_membership:
        member = _membership(name, text, values, fold_case=not row.item.case_sensitive)
    else:
        tests = [row.item.needle(v) for v in values]
        quantifier = all if row.every else any

        def member(event: Event) -> bool:
            value = event.get(name) or ""
            return quantifier(test(value) for test in tests)

    if row.negated:
        return Condition(lambda e: not member(e), None, pos)
    return Condition(member, _list_required(row, text, values), pos)


def _membership(name: str, text: bool, values: Sequence[Any], *, fold_case: bool) -> Predicate:
    if fold_case:
        folded = frozenset(fold(v) for v in values)

        def member(event: Event) -> bool:
            return fold(event.get(name) or "") in folded

    elif text:
        exact = frozenset(values)

        def member(event: Event) -> bool:
            return (event.get(name) or "") in exact

    else:
        present = frozenset(v for v in values if v is not None)

        def member(event: Event) -> bool:
            value = event.get(name)
            return value is not None and value in present

    return member


def _list_required(row: ListOperator, text: bool, values: Sequence[Any]) -> frozenset[str] | None:
    if row.every:
        # Every item must match: the longest non-empty one is the most selective requirement.
        nonempty = [v for v in values if v]
        return frozenset({max(nonempty, key=len)}) if nonempty and row.item.requires_needle else None
    if not values:
        return frozenset()  # no item to match: never true
    if text and row.item.requires_needle and all(values):
        return frozenset(values)
    return None


def emptiness_condition(func: str, name: str, text: bool, pos: Pos) -> Condition:
    """``isempty``/``isnotempty``/``isnull``/``isnotnull`` of a column (strings are never null)."""
    if func in ("isempty", "isnull"):
        if text and func == "isnull":
            return Condition(lambda e: False, frozenset(), pos)

        def empty(event: Event) -> bool:
            value = event.get(name)
            return value is None or (text and value == "")

        return Condition(empty, None, pos)
    if text and func == "isnotnull":
        return Condition(lambda e: True, None, pos)

    def not_empty(event: Event) -> bool:
        value = event.get(name)
        return value is not None and not (text and value == "")

    return Condition(not_empty, None, pos)


def constant_condition(flag: bool, pos: Pos) -> Condition:
    """``true`` or ``false``: a false condition requires the impossible (the empty set)."""
    return Condition(lambda e: flag, None if flag else frozenset(), pos)


def bool_column_condition(name: str, pos: Pos) -> Condition:
    """A bool column used as a condition: its value (null stays null)."""
    return Condition(lambda e: e.get(name), None, pos)


# -- logic -------------------------------------------------------------------------------------


def negation(condition: Condition, pos: Pos) -> Condition:
    """``not(c)``: null stays null; nothing can be required of a negation."""
    evaluate = condition.evaluate

    def negate(event: Event) -> bool | None:
        result = evaluate(event)
        return None if result is None else not result

    return Condition(negate, None, pos)


def all_of(conditions: Sequence[Condition], pos: Pos) -> Condition:
    """``a and b and ...``: false if any is false, else null if any is null, else true."""
    required: frozenset[str] | None = None
    for condition in conditions:
        required = required_and(required, condition.required)
    return Condition(_every([c.evaluate for c in conditions]), required, pos)


def any_of(conditions: Sequence[Condition], pos: Pos) -> Condition:
    """``a or b or ...``: true if any is true, else null if any is null, else false.

    One term must hold, so only the union of all the terms' requirements is sound, and a term
    without one leaves the whole without one.
    """
    requirements = [c.required for c in conditions if c.required is not None]
    required = frozenset().union(*requirements) if len(requirements) == len(conditions) else None
    return Condition(_decided_by(tuple(c.evaluate for c in conditions), True), required, pos)


def _every(predicates: Sequence[Predicate]) -> Predicate:
    """The three-valued conjunction of predicates (true when there are none)."""
    if not predicates:
        return lambda e: True
    if len(predicates) == 1:
        return predicates[0]
    return _decided_by(tuple(predicates), False)


def _decided_by(predicates: tuple[Predicate, ...], decisive: bool) -> Predicate:
    """One loop for n-ary ``and`` (``decisive`` False) and ``or`` (True), in three-valued logic.

    The first term with the decisive value decides; otherwise any null term makes the result
    null; otherwise it is the other value.
    """
    otherwise = not decisive
    if len(predicates) == 2:
        # The common shape (an exclusion's ``a or b``): two direct calls beat the loop by a third.
        first, second = predicates

        def pair(event: Event) -> bool | None:
            a = first(event)
            if a is decisive:
                return decisive
            b = second(event)
            if b is decisive:
                return decisive
            return None if a is None or b is None else otherwise

        return pair

    def evaluate(event: Event) -> bool | None:
        result: bool | None = otherwise
        for predicate in predicates:
            value = predicate(event)
            if value is decisive:
                return decisive
            if value is None:
                result = None
        return result

    return evaluate


def required_and(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    """Both sides must hold: either side's requirement is sound; keep the more selective."""
    if a is None:
        return b
    if b is None:
        return a
    if not a or not b:
        return frozenset()
    return a if min(map(len, a)) >= min(map(len, b)) else b
