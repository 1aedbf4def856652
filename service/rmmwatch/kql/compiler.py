"""Compile a parsed query into what the streaming path runs per event (the types: :mod:`.compiled`).

A hunting query becomes four things:

* a **time window** relative to ``now()`` (from the top-level conditions on ``Timestamp``
  that use ``now()``/``ago()``), which the store applies as time passes;
* a **predicate**: every other ``where`` condition, a closure over one decoded event;
* a **group key** and per-event **contributions** to the ``summarize`` aggregates;
* the **required strings** of the predicate: texts of which at least one must occur in
  a record for the predicate to be true, the input of the byte prefilter.

The compiler resolves names, folds constants and type-checks operands, and refuses what it
cannot run with a :class:`KqlError` at the construct's position; the closures themselves are
built in :mod:`rmmwatch.kql.conditions` from the operator table in :mod:`rmmwatch.kql.operators`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from rmmwatch.kql import conditions, syntax
from rmmwatch.kql.compiled import (
    MAKE_SET_MAX,
    AggregateSpec,
    Column,
    CompiledQuery,
    Condition,
    Const,
    ConstList,
    RowConstant,
    TimeWindow,
    Value,
)
from rmmwatch.kql.errors import KqlError, KqlWarning, closest_name
from rmmwatch.kql.operators import COMPARISON_OPERATORS, LIST_OPERATORS, STRING_OPERATORS, SWAPPED_COMPARISONS
from rmmwatch.kql.parser import parse
from rmmwatch.kql.schema import TABLES, KqlType

_NUMERIC = frozenset({"long", "real"})
_ORDERED = frozenset({"long", "real", "datetime", "timespan"})
_TEXT = frozenset({"string", "dynamic"})
_SCALAR_CONSTANT = ("string", "long", "real", "bool")


def _error(message: str, pos: syntax.Pos) -> KqlError:
    return KqlError(message, pos.line, pos.column)


class _Scope:
    def __init__(self, schema: Mapping[str, KqlType], table: str = "") -> None:
        self.schema = schema
        self.table = table
        self.lets: dict[str, Const | ConstList] = {}
        self.constants: dict[str, Const] = {}
        self.used: set[str] = set()
        #: Tabular ``let`` names: a name that is a table, not a value.
        self.tables: frozenset[str] = frozenset()
        #: After summarize: the columns of the summarized rows (not constants).
        self.outputs: frozenset[str] = frozenset()
        #: The construct being compiled, for messages.
        self.context = ""

    def resolve(self, name: syntax.Name) -> Value:
        if name.name in self.lets:
            return self.lets[name.name]
        if name.name in self.constants:
            return self.constants[name.name]
        if name.name in self.schema:
            self.used.add(name.name)
            return Column(name.name, self.schema[name.name], name.pos)
        if name.name in ("now", "ago"):
            raise _error(f"{name.name} is a function: write {name.name}()", name.pos)
        if name.name in self.tables:
            raise _error(
                f"{name.name!r} is a tabular let (a table), used as a value{self.where()}: rmmwatch does not run "
                "subqueries (a rule reads one table)",
                name.pos,
            )
        if name.name in self.outputs:
            raise _error(
                f"{name.name!r} is a column of the summarized rows{self.where()}: after summarize, extend adds "
                "constants only",
                name.pos,
            )
        hint = closest_name(name.name, list(self.schema) + list(self.lets) + list(self.constants))
        suffix = f"; did you mean {hint!r}?" if hint else ""
        table = f"; {self.table} has no column {name.name!r}" if self.table else ""
        raise _error(
            f"unknown column or name {name.name!r}{suffix} ({self.context or 'in the query'}{table})", name.pos
        )

    def where(self) -> str:
        return f" ({self.context})" if self.context else ""


class _Compiler:
    """Turns expressions into values: constants folded, columns resolved, conditions built."""

    def __init__(self, scope: _Scope) -> None:
        self.scope = scope

    # -- constants -----------------------------------------------------------------------
    def constant(self, expr: syntax.Expr, context: str) -> Const | ConstList:
        value = self.value(expr)
        if isinstance(value, Column):
            raise _error(f"{context} must be a constant, not the column {value.name!r}", value.pos)
        if isinstance(value, Condition):
            raise _error(f"{context} must be a constant, not a condition", value.pos)
        return value

    def value(self, expr: syntax.Expr) -> Value:
        if isinstance(expr, syntax.Literal):
            return Const(expr.type, expr.value, expr.pos)
        if isinstance(expr, syntax.Name):
            return self.scope.resolve(expr)
        if isinstance(expr, syntax.ArrayLiteral):
            items: list[Const] = []
            for item in expr.items:
                value = self.value(item)
                if not isinstance(value, Const):
                    raise _error("array items must be constants", item.pos)
                items.append(value)
            return ConstList(tuple(items), expr.pos)
        if isinstance(expr, syntax.Negate):
            inner = self.value(expr.expr)
            if isinstance(inner, Const) and inner.type in ("long", "real", "timespan"):
                return Const(inner.type, -inner.value, expr.pos)
            raise _error("unary minus applies to a numeric or timespan constant only", expr.pos)
        if isinstance(expr, syntax.Call):
            return self.call(expr)
        if isinstance(expr, syntax.Binary) and expr.op in ("+", "-"):
            return self.arithmetic(expr)
        return self.condition(expr)

    def arithmetic(self, expr: syntax.Binary) -> Const:
        # A chain ``a + b - c`` is left-nested: walk down its left spine, then fold upwards,
        # so a long chain costs no recursion.
        steps: list[syntax.Binary] = []
        node: syntax.Expr = expr
        while isinstance(node, syntax.Binary) and node.op in ("+", "-"):
            steps.append(node)
            node = node.left
        left = self.value(node)
        for step in reversed(steps):
            left = self.add(step, left, self.value(step.right))
        assert isinstance(left, Const)
        return left

    @staticmethod
    def add(expr: syntax.Binary, left: Value, right: Value) -> Const:
        if not (isinstance(left, Const) and isinstance(right, Const)):
            raise _error(f"arithmetic '{expr.op}' is supported on constants only (e.g. now() - 5d)", expr.pos)
        sign = 1 if expr.op == "+" else -1
        if left.type in ("datetime", "now") and right.type == "timespan":
            return Const(left.type, left.value + sign * right.value, expr.pos)
        if left.type == "timespan" and right.type in ("datetime", "now") and sign == 1:
            return Const(right.type, right.value + left.value, expr.pos)
        if left.type == right.type and left.type in ("timespan", "long", "real"):
            return Const(left.type, left.value + sign * right.value, expr.pos)
        if left.type in _NUMERIC and right.type in _NUMERIC:
            return Const("real", left.value + sign * right.value, expr.pos)
        raise _error(f"cannot apply '{expr.op}' to {left.type} and {right.type}", expr.pos)

    def call(self, expr: syntax.Call) -> Value:
        name, args = expr.name, expr.args
        if name == "now":
            if not args:
                return Const("now", 0, expr.pos)
            offset = self.constant(args[0], "the argument of now()")
            if len(args) != 1 or not isinstance(offset, Const) or offset.type != "timespan":
                raise _error("now() takes one optional timespan argument, e.g. now(-5d)", expr.pos)
            return Const("now", offset.value, expr.pos)
        if name == "ago":
            span = self.constant(args[0], "the argument of ago()") if len(args) == 1 else None
            if not isinstance(span, Const) or span.type != "timespan":
                raise _error("ago() takes one timespan argument, e.g. ago(5d)", expr.pos)
            return Const("now", -span.value, expr.pos)
        if name in ("isempty", "isnotempty", "isnull", "isnotnull"):
            if len(args) != 1:
                raise _error(f"{name}() takes one argument", expr.pos)
            column = self.value(args[0])
            if not isinstance(column, Column):
                raise _error(f"{name}() applies to a column", expr.pos)
            return conditions.emptiness_condition(name, column.name, column.type in _TEXT, expr.pos)
        if name == "not":
            if len(args) != 1:
                raise _error("not() takes one argument", expr.pos)
            return conditions.negation(self.as_condition(self.value(args[0]), "the argument of not()"), expr.pos)
        if name in ("tolower", "toupper", "strlen", "tostring", "trim", "split", "extract", "strcat"):
            raise _error(f"unsupported function {name!r}: rmmwatch compares columns directly", expr.pos)
        raise _error(f"unsupported function {name!r}", expr.pos)

    # -- conditions ----------------------------------------------------------------------
    def as_condition(self, value: Value, context: str) -> Condition:
        if isinstance(value, Condition):
            return value
        if isinstance(value, Const) and value.type == "bool":
            return conditions.constant_condition(bool(value.value), value.pos)
        if isinstance(value, Column) and value.type == "bool":
            return conditions.bool_column_condition(value.name, value.pos)
        raise _error(f"{context} must be a boolean condition", value.pos)

    def condition(self, expr: syntax.Expr) -> Condition:
        if isinstance(expr, syntax.Logical):
            return self.logical(expr)
        if isinstance(expr, syntax.Binary):
            if expr.op in COMPARISON_OPERATORS:
                return self.comparison(expr)
            if expr.op in STRING_OPERATORS:
                return self.string_operator(expr)
            raise _error(f"unsupported operator {expr.op!r}", expr.pos)
        if isinstance(expr, syntax.Between):
            return self.between(expr)
        if isinstance(expr, syntax.ListOp):
            return self.list_operator(expr)
        return self.as_condition(self.value(expr), "this expression")

    def logical(self, expr: syntax.Logical) -> Condition:
        terms = [
            self.as_condition(self.value(term), f"the {'left' if k == 0 else 'right'} side of '{expr.op}'")
            for k, term in enumerate(expr.terms)
        ]
        if expr.op == "and":
            return conditions.all_of(terms, expr.pos)
        return conditions.any_of(terms, expr.pos)

    def string_operator(self, expr: syntax.Binary) -> Condition:
        op = expr.op
        left = self.value(expr.left)
        right = self.value(expr.right)
        if not isinstance(left, Column):
            raise _error(f"the left side of {op!r} must be a column", expr.pos)
        if left.type not in _TEXT:
            raise _error(f"{op!r} needs a string column; {left.name!r} is {left.type}", expr.pos)
        if not isinstance(right, Const) or right.type != "string":
            raise _error(f"the right side of {op!r} must be a string constant", expr.pos)
        row, negated = STRING_OPERATORS[op]
        return conditions.string_condition(row, negated, left.name, right.value, expr.pos)

    def comparison(self, expr: syntax.Binary) -> Condition:
        op = expr.op
        left = self.value(expr.left)
        right = self.value(expr.right)
        if isinstance(left, Const) and isinstance(right, Column):
            left, right = right, left
            op = SWAPPED_COMPARISONS[op]
        if not isinstance(left, Column):
            raise _error(f"comparison {op!r} needs a column on one side", expr.pos)
        if isinstance(right, Column):
            raise _error("comparing two columns is not supported", expr.pos)
        if not isinstance(right, Const):
            raise _error(f"the right side of {op!r} must be a constant", expr.pos)
        if right.type == "now":
            raise _error(
                "now()/ago() may only bound Timestamp in a top-level where condition "
                "(e.g. Timestamp between (ago(5d) .. now()))",
                right.pos,
            )
        _check_comparable(left, right, op, expr.pos)
        if left.type in _TEXT:
            if op not in ("==", "!="):
                raise _error(f"ordering comparison {op!r} on string column {left.name!r} is not supported", expr.pos)
            row, negated = STRING_OPERATORS[op]
            return conditions.string_condition(row, negated, left.name, right.value, expr.pos)
        return conditions.ordered_condition(left.name, op, right.value, expr.pos)

    def between(self, expr: syntax.Between) -> Condition:
        column = self.value(expr.expr)
        if not isinstance(column, Column) or column.type not in _ORDERED:
            raise _error("between applies to a numeric or datetime column", expr.pos)
        low = self.constant(expr.low, "the low bound of between")
        high = self.constant(expr.high, "the high bound of between")
        if not isinstance(low, Const) or not isinstance(high, Const):
            raise _error("between bounds must be scalar constants", expr.pos)
        if "now" in (low.type, high.type):
            raise _error("now()/ago() may only bound Timestamp in a top-level where condition", expr.pos)
        if column.type == "datetime" and high.type == "timespan" and low.type == "datetime":
            high = Const("datetime", low.value + high.value, high.pos)
        _check_comparable(column, low, "between", expr.pos)
        _check_comparable(column, high, "between", expr.pos)
        return conditions.between_condition(column.name, low.value, high.value, expr.negated, expr.pos)

    def list_operator(self, expr: syntax.ListOp) -> Condition:
        column = self.value(expr.expr)
        if not isinstance(column, Column):
            raise _error(f"the left side of {expr.op!r} must be a column", expr.pos)
        items: list[Const] = []
        for item in expr.items:
            value = self.constant(item, f"items of {expr.op!r}")
            items.extend(value.items if isinstance(value, ConstList) else (value,))
        for const in items:
            _check_comparable(column, const, expr.op, const.pos)
        row = LIST_OPERATORS[expr.op]
        text = column.type in _TEXT
        if not row.is_membership and (not text or any(i.type != "string" for i in items)):
            raise _error(f"{expr.op!r} needs a string column and string items", expr.pos)
        if not row.item.case_sensitive and not text:
            raise _error(f"{expr.op!r} needs a string column", expr.pos)
        return conditions.list_condition(row, column.name, text, [i.value for i in items], expr.pos)


def _check_comparable(column: Column, const: Const, op: str, pos: syntax.Pos) -> None:
    kinds = {
        "string": {"string"},
        "dynamic": {"string"},
        "long": {"long", "real"},
        "real": {"long", "real"},
        "datetime": {"datetime"},
        "timespan": {"timespan"},
        "bool": {"bool"},
    }
    if const.type == "null" or const.value is None:
        return
    if const.type not in kinds[column.type]:
        raise _error(f"cannot compare {column.type} column {column.name!r} with a {const.type} using {op!r}", pos)


# -- the entry points ------------------------------------------------------------------


def _conjuncts(expr: syntax.Expr) -> Iterable[syntax.Expr]:
    """The terms of a top-level ``and``, nested ``and``s (parenthesised) flattened, in order."""
    pending = [expr]
    while pending:
        node = pending.pop()
        if isinstance(node, syntax.Logical) and node.op == "and":
            pending.extend(reversed(node.terms))
        else:
            yield node


def _uses_now(value: Const | ConstList) -> bool:
    return isinstance(value, Const) and value.type == "now"


class _WindowBuilder:
    """Collects top-level ``Timestamp`` conditions that use now() into a TimeWindow."""

    def __init__(self) -> None:
        self.low: int | None = None
        self.high: int | None = None

    def bound_low(self, ticks: int) -> None:
        self.low = ticks if self.low is None else max(self.low, ticks)

    def bound_high(self, ticks: int) -> None:
        self.high = ticks if self.high is None else min(self.high, ticks)

    def take(self, compiler: _Compiler, expr: syntax.Expr) -> bool:
        """Absorb ``expr`` if it is a now()-relative bound on Timestamp; False if it is not one."""
        if isinstance(expr, syntax.Between) and _is_timestamp(expr.expr):
            low = compiler.constant(expr.low, "the low bound of between")
            high = compiler.constant(expr.high, "the high bound of between")
            if not (_uses_now(low) or _uses_now(high)):
                return False
            if expr.negated:
                raise _error("!between with now()/ago() is not supported in a streaming rule", expr.pos)
            if not isinstance(low, Const) or not isinstance(high, Const):
                raise _error("between bounds must be scalar constants", expr.pos)
            if high.type == "timespan":
                high = Const(low.type, low.value + high.value, high.pos)
            for bound, setter in ((low, self.bound_low), (high, self.bound_high)):
                if bound.type != "now":
                    raise _error(
                        "mixing an absolute datetime and now() in one between is not supported; write two conditions",
                        bound.pos,
                    )
                setter(bound.value)
            return True
        if isinstance(expr, syntax.Binary) and expr.op in ("<", "<=", ">", ">=", "=="):
            left, right, op = expr.left, expr.right, expr.op
            if not _is_timestamp(left) and _is_timestamp(right):
                left, right = right, left
                op = SWAPPED_COMPARISONS[op]
            if not _is_timestamp(left):
                return False
            limit = compiler.constant(right, f"the right side of {op!r}")
            if not _uses_now(limit):
                return False
            assert isinstance(limit, Const)
            if op == "==":
                raise _error("Timestamp == now() is not a window; use between", expr.pos)
            value = limit.value
            if op == ">":
                self.bound_low(value + 1)
            elif op == ">=":
                self.bound_low(value)
            elif op == "<":
                self.bound_high(value - 1)
            else:
                self.bound_high(value)
            return True
        return False

    def window(self) -> TimeWindow:
        return TimeWindow(self.low, self.high)


def _is_timestamp(expr: syntax.Expr) -> bool:
    return isinstance(expr, syntax.Name) and expr.name == "Timestamp"


def compile_query(text: str) -> CompiledQuery:
    """Parse and compile a hunting query. Raises :class:`KqlError` with a position.

    The compiled query carries the parser's warnings; so does the error of a refused one.
    """
    query = parse(text)
    try:
        return _compile(query, text)
    except KqlError as exc:
        exc.warnings = query.warnings
        raise


#: One stage of the query's pipeline and the scalar ``let`` bindings it sees (KQL's scoping:
#: a tabular let's pipeline sees the lets bound before it).
_Stage = tuple[syntax.Operator, dict[str, Const | ConstList]]


def _base_table(query: syntax.Query) -> syntax.Name:
    """The table the query's pipeline reads, through the tabular ``let``s it starts from."""
    bases: dict[str, syntax.Name] = {}
    for let in query.lets:
        if isinstance(let, syntax.TabularLet):
            bases[let.name] = bases.get(let.source.name, let.source)
        else:
            bases.pop(let.name, None)
    return bases.get(query.table.name, query.table)


def _compile(query: syntax.Query, text: str) -> CompiledQuery:
    table = _base_table(query)
    scalar_lets = {let.name for let in query.lets if isinstance(let, syntax.Let)}
    if table.name not in TABLES:
        if table.name in scalar_lets:
            raise _error(f"{table.name!r} is a scalar let, not a table: a query reads a table", table.pos)
        supported = ", ".join(TABLES)
        raise _error(f"unsupported table {table.name!r} (supported: {supported})", table.pos)
    category, schema = TABLES[table.name]
    scope = _Scope(schema, table.name)
    compiler = _Compiler(scope)
    stages, unused = _pipeline(query, compiler, schema)

    window = _WindowBuilder()
    compiled: list[Condition] = []
    condition_texts: list[str] = []
    summarized: _Summarized | None = None
    row_constants: list[RowConstant] = []
    for operator, lets in stages:
        scope.lets = lets
        if summarized is not None:
            if not isinstance(operator, syntax.Extend):
                raise _error(
                    "operators after summarize are not supported: only '| extend Name = constant' may follow it",
                    operator.pos,
                )
            added = _row_constants(operator, lets, summarized.names)
            row_constants.extend(added)
            summarized.names.extend(constant.name for constant in added)
            continue
        if isinstance(operator, syntax.Where):
            scope.context = "in the condition of 'where'"
            for conjunct in _conjuncts(operator.predicate):
                if window.take(compiler, conjunct):
                    continue
                compiled.append(compiler.condition(conjunct))
                condition_texts.append(syntax.unparse(conjunct))
        elif isinstance(operator, syntax.Extend):
            scope.context = "in 'extend'"
            for assignment in operator.assignments:
                value = compiler.constant(assignment.value, f"extend {assignment.name}")
                if not isinstance(value, Const) or value.type == "now":
                    raise _error(f"extend {assignment.name}: only scalar literals are supported", assignment.pos)
                if assignment.name in schema:
                    raise _error(f"extend {assignment.name!r} would replace a column", assignment.pos)
                scope.constants[assignment.name] = value
        else:
            condition_columns = frozenset(scope.used)
            summarized = _summarize(compiler, scope, operator, condition_columns)
    if summarized is None:
        last = stages[-1][0].pos if stages else query.table.pos
        raise _error("the query must end with '| summarize ... by ...'", last)
    if unused:
        let = unused[0]
        raise _error(
            f"let {let.name!r} binds a tabular expression the query does not use: rmmwatch runs one pipeline "
            "per rule; remove it",
            let.pos,
        )

    where = conditions.all_of(compiled, table.pos)
    used = set(scope.used) | {"Timestamp"}
    return CompiledQuery(
        text=text,
        table=table.name,
        category=category,
        schema=schema,
        columns=frozenset(used),
        condition_columns=summarized.condition_columns,
        window=window.window(),
        conditions=tuple(compiled),
        condition_texts=tuple(condition_texts),
        required=where.required,
        group_by=summarized.group_by,
        group_by_types=summarized.group_by_types,
        constants=summarized.constants,
        aggregates=summarized.aggregates,
        row_constants=tuple(row_constants),
        warnings=query.warnings,
        _evaluate=where.evaluate,
    )


def _pipeline(
    query: syntax.Query, compiler: _Compiler, schema: Mapping[str, KqlType]
) -> tuple[list[_Stage], list[syntax.TabularLet]]:
    """Bind the ``let``s in order and unfold the query's pipeline through its tabular ``let``s.

    Returns the stages (each with the scalar lets it sees) and the tabular lets left unused.
    """
    scope = compiler.scope
    pipelines: dict[str, list[_Stage]] = {}
    unused: dict[str, syntax.TabularLet] = {}
    for let in query.lets:
        if let.name in schema:
            raise _error(f"let {let.name!r} shadows a column of {scope.table}", let.pos)
        if isinstance(let, syntax.TabularLet):
            stages = list(pipelines.get(let.source.name, ()))
            unused.pop(let.source.name, None)
            snapshot = dict(scope.lets)
            pipelines[let.name] = stages + [(operator, snapshot) for operator in let.operators]
            unused[let.name] = let
        else:
            scope.context = f"in 'let {let.name} = ...'"
            scope.lets[let.name] = compiler.constant(let.value, f"let {let.name}")
            pipelines.pop(let.name, None)
            unused.pop(let.name, None)
        scope.tables = frozenset(pipelines)
    stages = list(pipelines.get(query.table.name, ()))
    unused.pop(query.table.name, None)
    final = dict(scope.lets)
    stages.extend((operator, final) for operator in query.operators)
    return stages, list(unused.values())


@dataclass(slots=True)
class _Summarized:
    """What ``summarize`` compiled to, and the names of the summarized rows' columns so far."""

    group_by: tuple[str, ...]
    group_by_types: tuple[KqlType, ...]
    aggregates: tuple[AggregateSpec, ...]
    constants: dict[str, Any]
    condition_columns: frozenset[str]
    names: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = [*self.group_by, *(a.name for a in self.aggregates)]


def _summarize(
    compiler: _Compiler, scope: _Scope, summarize: syntax.Summarize, condition_columns: frozenset[str]
) -> _Summarized:
    scope.context = "in 'summarize ... by'"
    group_by: list[str] = []
    group_by_types: list[KqlType] = []
    for column in summarize.by:
        resolved = scope.resolve(column)
        if isinstance(resolved, Column):
            group_by_types.append(resolved.type)
        elif isinstance(resolved, Const) and resolved.type in _SCALAR_CONSTANT:
            group_by_types.append(cast("KqlType", resolved.type))
        else:
            raise _error(f"cannot group by {column.name!r}", column.pos)
        if column.name in group_by:
            raise _error(f"{column.name!r} appears twice after 'by'", column.pos)
        group_by.append(column.name)
    scope.context = "in an aggregation of 'summarize'"
    aggregates = tuple(_aggregate(compiler, scope, a) for a in summarize.aggregates)
    names = list(group_by)
    for agg, node in zip(aggregates, summarize.aggregates, strict=True):
        if agg.name in names:
            raise _error(f"duplicate output column {agg.name!r}", node.pos)
        names.append(agg.name)
    return _Summarized(tuple(group_by), tuple(group_by_types), aggregates, _constants(scope), condition_columns)


def _row_constants(
    extend: syntax.Extend, lets: dict[str, Const | ConstList], columns: Sequence[str]
) -> list[RowConstant]:
    """``| extend Name = constant`` after summarize: a constant column of every row (docs/semantics.md §1)."""
    scope = _Scope({})
    scope.lets = lets
    scope.outputs = frozenset(columns)
    scope.context = "in 'extend' after summarize"
    compiler = _Compiler(scope)
    names = list(columns)
    out: list[RowConstant] = []
    for assignment in extend.assignments:
        value = compiler.constant(assignment.value, f"extend {assignment.name}")
        if not isinstance(value, Const) or value.type == "now":
            raise _error(
                f"extend {assignment.name} after summarize: only scalar constants are supported", assignment.pos
            )
        if assignment.name in names:
            raise _error(
                f"extend {assignment.name!r} after summarize would replace the column {assignment.name!r} of the "
                "summarized rows",
                assignment.pos,
            )
        names.append(assignment.name)
        kind = None if value.type == "null" else cast("KqlType", value.type)
        out.append(RowConstant(assignment.name, value.value, kind))
    return out


def _constants(scope: _Scope) -> dict[str, Any]:
    """Constant columns a row may read: ``extend`` literals and scalar ``let`` bindings."""
    out: dict[str, Any] = {
        name: value.value
        for name, value in scope.lets.items()
        if isinstance(value, Const) and value.type in _SCALAR_CONSTANT
    }
    out.update((name, value.value) for name, value in scope.constants.items())
    return out


_AGGREGATE_PREFIX = {"min": "min", "max": "max", "make_set": "set", "dcount": "dcount"}


def _aggregate(compiler: _Compiler, scope: _Scope, node: syntax.Aggregate) -> AggregateSpec:
    func, args = node.func, node.args
    text = f"{func}({', '.join(syntax.unparse(a) for a in args)})"
    if func == "count":
        if args:
            raise _error("count() takes no arguments (count(expr) is not supported)", node.pos)
        return AggregateSpec(node.name or "count_", "count", None, None, text=text)
    if func == "countif":
        if len(args) != 1:
            raise _error("countif() takes one condition", node.pos)
        condition = compiler.as_condition(compiler.value(args[0]), "the argument of countif()")
        return AggregateSpec(node.name or "countif_", "countif", None, None, condition.evaluate, text=text)
    if func in ("min", "max", "make_set", "dcount"):
        max_args = 1 if func in ("min", "max") else 2
        if not 1 <= len(args) <= max_args:
            raise _error(
                f"{func}() takes {'one column' if max_args == 1 else 'a column and an optional number'}",
                node.pos,
            )
        if not isinstance(args[0], syntax.Name):
            raise _error(f"{func}() is supported over a plain column only", args[0].pos)
        target = scope.resolve(args[0])
        if isinstance(target, Column):
            column_type: KqlType = target.type
        elif isinstance(target, Const) and target.type in _SCALAR_CONSTANT:
            column_type = cast("KqlType", target.type)
        else:
            raise _error(f"{func}() needs a column", args[0].pos)
        if func in ("min", "max") and column_type not in _ORDERED:
            raise _error(f"{func}() over a {column_type} column is not supported", args[0].pos)
        size = MAKE_SET_MAX
        if func == "make_set" and len(args) == 2:
            limit = compiler.constant(args[1], "the size of make_set")
            if not isinstance(limit, Const) or limit.type != "long" or limit.value < 1:
                raise _error("make_set size must be a positive integer", args[1].pos)
            size = min(int(limit.value), MAKE_SET_MAX)
        if func == "dcount" and len(args) == 2:
            accuracy = compiler.constant(args[1], "the accuracy of dcount")
            if not isinstance(accuracy, Const) or accuracy.type != "long" or not 0 <= accuracy.value <= 4:
                raise _error("dcount accuracy must be an integer from 0 to 4", args[1].pos)
        name = node.name or f"{_AGGREGATE_PREFIX[func]}_{args[0].name}"
        return AggregateSpec(name, func, args[0].name, column_type, size=size, text=text)
    if func in (
        "make_list",
        "sum",
        "avg",
        "any",
        "take_any",
        "arg_max",
        "arg_min",
        "percentile",
        "dcountif",
        "make_set_if",
        "make_list_if",
        "sumif",
        "stdev",
        "variance",
        "make_bag",
    ):
        raise _error(
            f"unsupported aggregation {func!r}: supported are count, countif, dcount, make_set, max, min",
            node.pos,
        )
    raise _error(f"unknown aggregation {func!r}", node.pos)


def compile_condition(
    text: str, schema: Mapping[str, KqlType], warnings: list[KqlWarning] | None = None
) -> tuple[Condition, frozenset[str]]:
    """Compile a standalone predicate (an exclusion's ``where``): the condition and its columns.

    The parser's warnings (positions in ``text``) are appended to ``warnings`` when given.
    """
    try:
        query = parse(f"T | where {text}")
    except KqlError as exc:
        raise _shift(exc) from None
    if warnings is not None:
        warnings.extend(_shift_warning(w) for w in query.warnings)
    if len(query.operators) != 1 or not isinstance(query.operators[0], syntax.Where):
        raise KqlError("an exclusion is one predicate, not a pipeline", 1, 1)
    scope = _Scope(schema)
    scope.context = "in an exclusion"
    try:
        condition = _Compiler(scope).condition(query.operators[0].predicate)
    except KqlError as exc:
        raise _shift(exc) from None
    return condition, frozenset(scope.used)


_PREFIX = len("T | where ")


def _shift_warning(warning: KqlWarning) -> KqlWarning:
    column = warning.column - _PREFIX if warning.line == 1 else warning.column
    return KqlWarning(warning.message, warning.line, max(column, 1))


def _shift(exc: KqlError) -> KqlError:
    """Map a position in ``T | where <text>`` back to ``<text>`` (first line only is shifted)."""
    offset = len("T | where ")
    column = exc.column - offset if exc.line == 1 else exc.column
    return KqlError(exc.message, exc.line, max(column, 1))
