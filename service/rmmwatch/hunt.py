"""The hunting query's answer: matches in, the rows KQL would print out.

``rmmwatch hunt`` (over files), the load generator's expected answer and the tests all
build the answer here, so there is one definition of "the query's output at ``now``":
each rule's matches are summarized by :func:`rmmwatch.window.summarize` (the same
aggregation every store uses), and with several rules each row is tagged with its
``RuleId``. The parity contract (docs/architecture.md) compares stores against this.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import orjson

from rmmwatch.model import Match
from rmmwatch.rules import Rule
from rmmwatch.window import WindowEvent, summarize

FORMATS = ("table", "json", "csv")


def rule_rows(rule: Rule, matches: Iterable[Match], now: int) -> list[dict[str, Any]]:
    """One rule's output rows at ``now`` over ``matches`` (duplicates count once, as in the stores)."""
    events = (WindowEvent(m.identity, m.ticks, m.group, m.contribution) for m in matches)
    return summarize(rule.query, events, now)


class Hunt:
    """Collects the matches of several rules and answers with their rows at any ``now``.

    Only what summarize needs is kept per match (identity, time, group, contribution), so a
    long stream costs memory per matched event, not per message.
    """

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = list(rules)
        self._events: dict[str, list[WindowEvent]] = {rule.id: [] for rule in self.rules}

    def add(self, matches: Iterable[Match]) -> None:
        """Keep ``matches`` (of any of the rules)."""
        for m in matches:
            self._events[m.rule.id].append(WindowEvent(m.identity, m.ticks, m.group, m.contribution))

    @property
    def matched(self) -> int:
        """How many matches were added (duplicates included)."""
        return sum(map(len, self._events.values()))

    def rows(self, now: int) -> list[dict[str, Any]]:
        """Every rule's rows at ``now``, tagged with ``RuleId`` when there are several rules."""
        several = len(self.rules) > 1
        rows: list[dict[str, Any]] = []
        for rule in self.rules:
            rows.extend(tag_rows(summarize(rule.query, self._events[rule.id], now), rule, several))
        return rows

    @property
    def columns(self) -> list[str]:
        return output_columns(self.rules)


def output_columns(rules: Sequence[Rule]) -> list[str]:
    """The columns of the rows of ``rules``: ``RuleId`` first when there are several."""
    columns: list[str] = ["RuleId"] if len(rules) > 1 else []
    for rule in rules:
        for name in rule.query.output_columns():
            if name not in columns:
                columns.append(name)
    return columns


def tag_rows(rows: list[dict[str, Any]], rule: Rule, several: bool) -> list[dict[str, Any]]:
    """``rows`` of ``rule``, with its ``RuleId`` first when several rules answer together."""
    return [{"RuleId": rule.id, **row} for row in rows] if several else rows


def print_rows(rows: list[dict[str, Any]], columns: Sequence[str], fmt: str, out: TextIO) -> None:
    """Rows as json (one array), csv or an aligned table."""
    if fmt == "json":
        out.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return

    def cell(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, (list, dict)):
            return orjson.dumps(value).decode()
        return str(value)

    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([cell(row.get(c)) for c in columns])
        out.write(buffer.getvalue())
        return
    table = [list(columns)] + [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(columns))]
    for index, line in enumerate(table):
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n")
        if index == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
