"""The syntax tree of the KQL subset rmmwatch runs.

Every node carries a 1-based line and column (where it starts, or its operator), so that
the compiler can say exactly which construct it refuses. ``and``/``or`` chains are one flat
:class:`Logical` node however many terms they have, so nothing walks them recursively.
A query is its ``let`` statements (scalar :class:`Let` and tabular :class:`TabularLet`, in
order), the name its pipeline starts from (a table, or a name bound by a tabular ``let``)
and that pipeline's operators (docs/semantics.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from rmmwatch.kql.datetimes import format_datetime, timespan_literal
from rmmwatch.kql.errors import KqlWarning


@dataclass(frozen=True, slots=True)
class Pos:
    """A position in the query text (1-based)."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Literal:
    """A literal: string, long, real, bool, datetime (ticks), timespan (ticks) or null."""

    value: object
    type: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Name:
    """An identifier: a column, or a name bound by ``let``."""

    name: str
    pos: Pos


@dataclass(frozen=True, slots=True)
class Call:
    """A function call such as ``now(-5d)``, ``ago(1h)``, ``isempty(x)``, ``not(...)``."""

    name: str
    args: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Binary:
    """A binary operator: comparisons, string operators, ``+``/``-`` (a chain nests to the left)."""

    op: str
    left: Expr
    right: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Logical:
    """``a and b and ...`` or ``a or b or ...``: the terms of one chain, at its first operator."""

    op: str
    terms: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Between:
    """``expr between (low .. high)`` or ``!between``."""

    expr: Expr
    low: Expr
    high: Expr
    negated: bool
    pos: Pos


@dataclass(frozen=True, slots=True)
class ListOp:
    """``in``, ``!in``, ``in~``, ``!in~``, ``has_any``, ``has_all`` with their list."""

    op: str
    expr: Expr
    items: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Negate:
    """Unary minus."""

    expr: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class ArrayLiteral:
    """``dynamic([...])`` or ``pack_array(...)``: a list usable with ``in`` and ``has_any``."""

    items: tuple[Expr, ...]
    pos: Pos


Expr: TypeAlias = Literal | Name | Call | Binary | Logical | Between | ListOp | Negate | ArrayLiteral


@dataclass(frozen=True, slots=True)
class Let:
    """``let name = expr;``"""

    name: str
    value: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Where:
    """``| where predicate``"""

    predicate: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Assignment:
    """``name = expr`` inside ``extend``."""

    name: str
    value: Expr
    pos: Pos


@dataclass(frozen=True, slots=True)
class Extend:
    """``| extend a = literal, ...``"""

    assignments: tuple[Assignment, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One ``[Name =] func(args)`` of ``summarize``."""

    name: str | None
    func: str
    args: tuple[Expr, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Summarize:
    """``| summarize aggregates by columns``"""

    aggregates: tuple[Aggregate, ...]
    by: tuple[Name, ...]
    pos: Pos


Operator: TypeAlias = Where | Extend | Summarize


@dataclass(frozen=True, slots=True)
class TabularLet:
    """``let name = Source | op | ...;``: a name bound to a pipeline.

    ``source`` is a table or the name of an earlier tabular ``let``; the pipeline sees the
    ``let`` names bound before it (KQL's scoping).
    """

    name: str
    source: Name
    operators: tuple[Operator, ...]
    pos: Pos


@dataclass(frozen=True, slots=True)
class Query:
    """A whole query: ``let`` statements in order, the pipeline's source and its operators.

    ``table`` is the name the query's pipeline starts from: a table, or a tabular ``let``
    (the AHQ form ``let rmmX = T | ...; rmmX``). ``warnings`` are what the parser found
    valid but suspicious (adjacent string literals).
    """

    lets: tuple[Let | TabularLet, ...]
    table: Name
    operators: tuple[Operator, ...]
    warnings: tuple[KqlWarning, ...] = ()


def unparse(expr: Expr) -> str:
    """Render an expression back to KQL text (used by ``rmmwatch rules check``)."""
    if isinstance(expr, Literal):
        return _unparse_literal(expr)
    if isinstance(expr, Name):
        return expr.name
    if isinstance(expr, Call):
        return f"{expr.name}({', '.join(unparse(a) for a in expr.args)})"
    if isinstance(expr, Logical):
        return "(" + f" {expr.op} ".join(unparse(term) for term in expr.terms) + ")"
    if isinstance(expr, Binary):
        # Walk a left-nested chain (a + b - c) down its spine: no recursion per link.
        rights: list[str] = []
        node: Expr = expr
        while isinstance(node, Binary):
            rights.append(f" {node.op} {unparse(node.right)}")
            node = node.left
        return unparse(node) + "".join(reversed(rights))
    if isinstance(expr, Between):
        op = "!between" if expr.negated else "between"
        return f"{unparse(expr.expr)} {op} ({unparse(expr.low)} .. {unparse(expr.high)})"
    if isinstance(expr, ListOp):
        return f"{unparse(expr.expr)} {expr.op} ({', '.join(unparse(i) for i in expr.items)})"
    if isinstance(expr, Negate):
        return f"-{unparse(expr.expr)}"
    return f"dynamic([{', '.join(unparse(i) for i in expr.items)}])"


def _unparse_literal(literal: Literal) -> str:
    value = literal.value
    if value is None:
        return f"{literal.type}(null)" if literal.type != "null" else "dynamic(null)"
    if literal.type == "string":
        escaped = str(value).replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
        return f"'{escaped}'"
    if literal.type == "datetime":
        assert isinstance(value, int)
        return f"datetime({format_datetime(value)})"
    if literal.type == "timespan":
        assert isinstance(value, int)
        return timespan_literal(value)
    if literal.type == "bool":
        return "true" if value else "false"
    return str(value)
