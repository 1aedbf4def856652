"""The summarize semantics: a group's row from the distinct events in the window at ``now``.

This is the one place the aggregates are computed, for ``hunt`` (over a file, at a given
``now``) and for every store (over the events it holds). KQL's rules, kept exactly:

* ``count()`` counts rows: distinct events here (a row with a null ReportId counts);
* ``min``/``max`` ignore nulls (null when every value is null);
* ``make_set`` keeps distinct non-null values, capped at its size: KQL keeps an arbitrary
  subset when capping; rmmwatch keeps the smallest values, so output is deterministic, and
  renders the set sorted ascending;
* ``dcount`` counts distinct non-null values exactly (KQL estimates; it is exact at the
  small cardinalities of a device's week);
* ``countif`` counts rows whose condition is true;
* ``summarize ... by`` over no rows returns no rows;
* ``| extend Name = constant`` after ``summarize`` adds that value, last, to every row.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rmmwatch.kql.compiled import AggregateSpec, CompiledQuery, render_value


def aggregate(specs: Sequence[AggregateSpec], contributions: Iterable[Sequence[Any]]) -> list[Any]:
    """Aggregate per-event contributions (as made by ``CompiledQuery.contribution``)."""
    counts = [0] * len(specs)
    extremes: list[Any] = [None] * len(specs)
    sets: list[set[Any]] = [set() for _ in specs]
    kinds = [s.func for s in specs]
    rows = 0
    for contribution in contributions:
        rows += 1
        for i, kind in enumerate(kinds):
            value = contribution[i]
            if kind == "count":
                continue
            if kind == "countif":
                if value:
                    counts[i] += 1
            elif value is None:
                continue
            elif kind == "min":
                if extremes[i] is None or value < extremes[i]:
                    extremes[i] = value
            elif kind == "max":
                if extremes[i] is None or value > extremes[i]:
                    extremes[i] = value
            else:  # make_set, dcount
                sets[i].add(value)
    out: list[Any] = []
    for i, spec in enumerate(specs):
        kind = kinds[i]
        if kind == "count":
            out.append(rows)
        elif kind == "countif":
            out.append(counts[i])
        elif kind in ("min", "max"):
            out.append(extremes[i])
        elif kind == "dcount":
            out.append(len(sets[i]))
        else:
            values = sets[i]
            out.append(sorted(values) if len(values) <= spec.size else heapq.nsmallest(spec.size, values))
    return out


def render_row(query: CompiledQuery, group: Sequence[Any], values: Sequence[Any]) -> dict[str, Any]:
    """A JSON-ready output row: group columns, aggregates, then the constant columns that
    ``| extend`` adds after ``summarize`` (in that order, as KQL's row), datetimes as KQL text."""
    row: dict[str, Any] = {}
    for name, kind, value in zip(query.group_by, query.group_by_types, group, strict=True):
        row[name] = render_value(value, kind)
    for spec, value in zip(query.aggregates, values, strict=True):
        if spec.func in ("min", "max"):
            row[spec.name] = render_value(value, spec.column_type)
        elif spec.func == "make_set":
            row[spec.name] = [render_value(v, spec.column_type) for v in value]
        else:
            row[spec.name] = value
    for constant in query.row_constants:
        row[constant.name] = render_value(constant.value, constant.type)
    return row


def row_sort_key(row: Mapping[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    """Rows sort by their group columns (nulls first), as ``hunt`` prints them."""
    return tuple((row[c] is not None, row[c] if row[c] is not None else "") for c in columns)


@dataclass(frozen=True, slots=True)
class WindowEvent:
    """What the window needs of one matched event."""

    identity: str
    ticks: int
    group: tuple[Any, ...]
    contribution: tuple[Any, ...]


def summarize(query: CompiledQuery, events: Iterable[WindowEvent], now: int) -> list[dict[str, Any]]:
    """The KQL query's output at ``now`` over the distinct events given (the ``hunt`` answer)."""
    seen: set[str] = set()
    groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    window = query.window
    for event in events:
        if event.identity in seen:
            continue
        seen.add(event.identity)
        if window.contains(event.ticks, now):
            groups.setdefault(event.group, []).append(event.contribution)
    rows = [render_row(query, group, aggregate(query.aggregates, contribs)) for group, contribs in groups.items()]
    rows.sort(key=lambda r: row_sort_key(r, query.group_by))
    return rows
