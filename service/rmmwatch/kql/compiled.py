"""What a compiled hunting query is: the types the compiler produces and the streaming path runs.

A :class:`CompiledQuery` is a time window relative to ``now()``, a predicate over one decoded
event (KQL's three-valued logic: ``True``, ``False`` or ``None`` for null), a group key, the
per-event contributions to the ``summarize`` aggregates, the constant columns ``extend`` adds
after ``summarize`` (:class:`RowConstant`), and the strings one of which every match contains
(the byte prefilter's input). The operands the compiler folds on the way
(:class:`Const`, :class:`Column`, :class:`Condition`, :class:`ConstList`) are here too, so the
condition builders and the compiler share them without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rmmwatch.kql.datetimes import format_datetime, timespan_literal
from rmmwatch.kql.errors import KqlWarning
from rmmwatch.kql.schema import KqlType
from rmmwatch.kql.syntax import Pos

Event = Mapping[str, Any]
Predicate = Callable[[Event], bool | None]

#: make_set's default and maximum size (learn.microsoft.com/kusto/query/make-set-aggregation-function).
MAKE_SET_MAX = 1_048_576


# -- operands ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    """A value known at compile time. ``type == "now"`` is ``now() + value`` (ticks)."""

    type: str
    value: Any
    pos: Pos


@dataclass(frozen=True, slots=True)
class Column:
    """A reference to an event column."""

    name: str
    type: KqlType
    pos: Pos


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled boolean: its closure and the strings one of which it requires.

    ``required`` is None when nothing can be said, and empty when the condition is never true.
    """

    evaluate: Predicate
    required: frozenset[str] | None
    pos: Pos


@dataclass(frozen=True, slots=True)
class ConstList:
    """A list of constants (``dynamic([...])``, ``pack_array``, a let-bound array)."""

    items: tuple[Const, ...]
    pos: Pos


Value = Const | Column | Condition | ConstList


# -- the result ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Inclusive bounds on ``Timestamp`` relative to now: ``now+low <= Timestamp <= now+high``.

    ``None`` means unbounded on that side. Exclusive KQL bounds are made inclusive by one
    tick (KQL datetimes are integer ticks), so every edge is exact.
    """

    low: int | None
    high: int | None

    def contains(self, ticks: int, now: int) -> bool:
        """Whether an event at ``ticks`` counts when the query runs at ``now``."""
        return (self.low is None or ticks >= now + self.low) and (self.high is None or ticks <= now + self.high)

    def active_from(self, ticks: int) -> int | None:
        """The first ``now`` at which an event at ``ticks`` counts (None: always has)."""
        return None if self.high is None else ticks - self.high

    def active_until(self, ticks: int) -> int | None:
        """The last ``now`` at which an event at ``ticks`` counts (None: forever)."""
        return None if self.low is None else ticks - self.low

    def describe(self) -> str:
        low = "-inf" if self.low is None else f"now(){_signed(self.low)}"
        high = "+inf" if self.high is None else f"now(){_signed(self.high)}"
        return f"Timestamp between ({low} .. {high}), inclusive"


def _signed(ticks: int) -> str:
    if ticks == 0:
        return ""
    return f"+{timespan_literal(ticks)}" if ticks > 0 else f"-{timespan_literal(-ticks)}"


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    """One output column of ``summarize``."""

    name: str
    func: str  # count, countif, min, max, make_set, dcount
    column: str | None
    column_type: KqlType | None
    predicate: Predicate | None = None
    size: int = MAKE_SET_MAX
    text: str = ""


@dataclass(frozen=True, slots=True)
class RowConstant:
    """``| extend Name = constant`` after ``summarize``: a column with one value in every row."""

    name: str
    value: Any
    type: KqlType | None  # None: a null


@dataclass(frozen=True, slots=True)
class CompiledQuery:
    """A hunting query ready to run per event."""

    text: str
    table: str
    category: str
    schema: Mapping[str, KqlType]
    columns: frozenset[str]
    condition_columns: frozenset[str]
    window: TimeWindow
    conditions: tuple[Condition, ...]
    condition_texts: tuple[str, ...]
    required: frozenset[str] | None
    group_by: tuple[str, ...]
    group_by_types: tuple[KqlType, ...]
    constants: Mapping[str, Any]
    aggregates: tuple[AggregateSpec, ...]
    #: Constant columns added after summarize, last in every row (docs/semantics.md §1).
    row_constants: tuple[RowConstant, ...]
    #: Valid KQL the parser found suspicious (adjacent string literals).
    warnings: tuple[KqlWarning, ...]
    _evaluate: Predicate = field(repr=False, compare=False)

    def matches(self, event: Event) -> bool:
        """Whether the ``where`` conditions (not the time window) keep this event."""
        return self._evaluate(event) is True

    def group_key(self, event: Event) -> tuple[Any, ...]:
        """The ``by`` values of an event (constants from ``extend`` included)."""
        constants = self.constants
        return tuple(constants[c] if c in constants else event.get(c) for c in self.group_by)

    def contribution(self, event: Event) -> tuple[Any, ...]:
        """What this event brings to each aggregate (a column value, a countif flag, or None)."""
        out: list[Any] = []
        constants = self.constants
        for spec in self.aggregates:
            if spec.func == "count":
                out.append(None)
            elif spec.func == "countif":
                assert spec.predicate is not None
                out.append(spec.predicate(event) is True)
            else:
                assert spec.column is not None
                out.append(constants[spec.column] if spec.column in constants else event.get(spec.column))
        return tuple(out)

    def output_columns(self) -> tuple[str, ...]:
        """The columns of a row: the group, the aggregates, then the constants added after summarize."""
        return self.group_by + tuple(a.name for a in self.aggregates) + tuple(c.name for c in self.row_constants)


def render_value(value: Any, kql_type: KqlType | None) -> Any:
    """A JSON-ready rendering of a KQL value (datetimes as KQL text)."""
    if value is None:
        return None
    if kql_type == "datetime":
        return format_datetime(value)
    if kql_type == "timespan":
        return timespan_literal(value)
    return value
