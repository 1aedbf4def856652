"""A hand-written lexer and recursive-descent parser for the KQL subset of RMM hunting queries.

The subset: ``let`` bindings (scalars, and tabular ``let``s bound to a pipeline, the form of
the pack's AHQ blocks), ``//`` comments, one table, ``| where``, ``| extend`` of constants and
a ``| summarize`` (followed only by ``| extend`` of constants). Anything else is refused with a
:class:`KqlError` naming the construct, where it is and, for the mistakes the RMM pack makes,
a hint; never skipped: a rule that silently means something else than its text is worse than
a rule that does not load. A syntax error (which KQL itself rejects) is reported in preference
to an unsupported construct found earlier, so a query is refused for its real defect.
Adjacent string literals are one literal, as in KQL, with a :class:`KqlWarning`.

Operators come from the table in :mod:`rmmwatch.kql.operators`. ``and``/``or`` chains are
read by loops into flat :class:`Logical` nodes (packs of RMM tools ``or`` hundreds of
names); nesting is what recurses, and it is bounded by :data:`MAX_NESTING`.
"""

from __future__ import annotations

from rmmwatch.kql.errors import KqlError, KqlWarning, closest_name
from rmmwatch.kql.lexer import Token, tokenize
from rmmwatch.kql.operators import COMPARISON_OPERATORS, LIST_OPERATORS, STRING_OPERATORS, UNSUPPORTED_OPERATORS
from rmmwatch.kql.schema import TABLES
from rmmwatch.kql.syntax import (
    Aggregate,
    ArrayLiteral,
    Assignment,
    Between,
    Binary,
    Call,
    Expr,
    Extend,
    Let,
    ListOp,
    Literal,
    Logical,
    Name,
    Negate,
    Operator,
    Pos,
    Query,
    Summarize,
    TabularLet,
    Where,
    unparse,
)

#: How deeply groups may nest: parentheses, argument lists, dynamic arrays and unary minus
#: each open a level. The parser and the compiler recurse once per level, so a deeper query
#: is refused at the construct that passes the limit instead of exhausting Python's stack;
#: a long ``and``/``or`` chain is not nesting (it is parsed and compiled by loops).
MAX_NESTING = 100

_TABULAR_OPERATORS = frozenset(
    {
        "project",
        "project-away",
        "project-keep",
        "project-rename",
        "project-reorder",
        "distinct",
        "join",
        "lookup",
        "union",
        "take",
        "limit",
        "top",
        "sort",
        "order",
        "count",
        "parse",
        "parse-where",
        "mv-expand",
        "mv-apply",
        "evaluate",
        "invoke",
        "render",
        "as",
        "serialize",
        "make-series",
        "sample",
        "getschema",
        "search",
        "find",
        "facet",
        "fork",
        "partition",
        "scan",
        "range",
        "print",
        "datatable",
        "externaldata",
        "top-nested",
        "summarize",
        "where",
        "extend",
        "filter",
    }
)


#: Words that start a tabular expression other than a table: inline data, other sources.
_TABULAR_SOURCES = frozenset({"datatable", "externaldata", "materialize", "union", "range", "print", "view"})

#: Every word or symbol that is a binary operator between two operands (for "two operators in a
#: row" and for "a condition after '|'").
_OPERATOR_WORDS = (
    frozenset(COMPARISON_OPERATORS)
    | frozenset(STRING_OPERATORS)
    | frozenset(LIST_OPERATORS)
    | frozenset({"between", "!between", "<>"})
    | UNSUPPORTED_OPERATORS
)


class _Cursor:
    """Token navigation and the errors a parser reports (with positions and deferred refusals)."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0  # nesting levels open now (see MAX_NESTING)
        self.warnings: list[KqlWarning] = []
        #: The first construct rmmwatch does not run, held until the whole query has parsed:
        #: a syntax error anywhere (which KQL itself rejects) is the better report.
        self.pending: KqlError | None = None
        #: Tabular ``let`` names bound so far -> the table their pipeline reads.
        self.tabular: dict[str, str] = {}
        #: The table of the pipeline being read (for hints about its columns).
        self.table: str | None = None
        #: What is being read, for messages that would otherwise name no construct.
        self.constructs: list[str] = []

    # -- token helpers -------------------------------------------------------------
    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def at(self, text: str) -> bool:
        return self.current.kind in ("op", "ident") and self.current.text == text

    def at_boundary(self) -> bool:
        """At the end of a pipeline stage or statement: ``|``, ``;`` or the end of the query."""
        return self.current.kind == "eof" or self.at("|") or self.at(";")

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.next()
            return True
        return False

    def expect(self, text: str, context: str) -> Token:
        if not self.at(text):
            raise self.error(f"expected {text!r} {context}, found {self.describe(self.current)}")
        return self.next()

    def error(self, message: str, pos: Pos | None = None) -> KqlError:
        pos = pos or self.current.pos
        return KqlError(message, pos.line, pos.column)

    def defer(self, message: str, pos: Pos) -> None:
        """Refuse an unsupported construct once the rest of the query has been read."""
        if self.pending is None:
            self.pending = KqlError(message, pos.line, pos.column)

    @property
    def construct(self) -> str:
        return self.constructs[-1] if self.constructs else "the query"

    @staticmethod
    def describe(token: Token) -> str:
        if token.kind == "eof":
            return "end of query"
        if token.kind == "string":
            return f"string {token.text!r}"
        return repr(token.text)

    def skip_stage(self) -> None:
        """Skip the tokens of a refused construct up to the next ``|`` or ``;`` outside brackets."""
        depth = 0
        while self.current.kind != "eof":
            if depth == 0 and (self.at("|") or self.at(";")):
                return
            if self.current.kind == "op" and self.current.text in "([{":
                depth += 1
            elif self.current.kind == "op" and self.current.text in ")]}" and depth > 0:
                depth -= 1
            self.next()

    def skip_group(self, opening: Token, what: str) -> None:
        """Skip to the bracket closing ``opening`` (already read), which must exist."""
        depth = 1
        while depth:
            token = self.current
            if token.kind == "eof":
                raise self.unclosed(opening, what, token)
            if token.kind == "op" and token.text in "([{":
                depth += 1
            elif token.kind == "op" and token.text in ")]}":
                depth -= 1
            self.next()

    def unclosed(self, opening: Token, what: str, found: Token) -> KqlError:
        """The error for a missing ``)``: at the unclosed ``(`` when a stage or the query ends first.

        Positions inside the message are relative ("3 lines below"): the error's own position
        is moved into the rule file, the text of the message is not.
        """
        lines = found.pos.line - opening.pos.line
        if found.kind == "eof" or found.text in ("|", ";"):
            distance = "on the same line" if lines == 0 else f"{lines} line{'s' if lines > 1 else ''} below"
            return self.error(
                f"unclosed {opening.text!r} of {what}, opened here: no ')' before {self.describe(found)} {distance}",
                opening.pos,
            )
        distance = "on this line" if lines == 0 else f"{lines} line{'s' if lines > 1 else ''} above"
        return self.error(f"expected ')' to close {what} (opened {distance}), found {self.describe(found)}", found.pos)

    def close(self, opening: Token, what: str) -> None:
        if not self.at(")"):
            raise self.unclosed(opening, what, self.current)
        self.next()

    # -- statements --------------------------------------------------------------------


class _Expressions(_Cursor):
    """Expressions: predicates, arithmetic, calls, literals, nesting (bounded by MAX_NESTING)."""

    def open_level(self, token: Token) -> None:
        """Enter one nesting level at ``token``: past :data:`MAX_NESTING`, refuse the query there."""
        if self.depth >= MAX_NESTING:
            raise self.error(
                f"nesting deeper than {MAX_NESTING} levels (parentheses, calls, dynamic arrays, unary minus)",
                token.pos,
            )
        self.depth += 1

    def subquery_ahead(self) -> bool:
        """``(T | ...)`` or ``(datatable(...)...)``: a table inside parentheses."""
        token = self.current
        if token.kind != "ident":
            return False
        follow = self.peek()
        if follow.kind == "op" and follow.text == "|":
            return True
        return token.text in _TABULAR_SOURCES and follow.text in ("(", "[")

    def subquery(self, opening: Token, what: str) -> None:
        """Refuse a tabular subquery (later, see :meth:`defer`) and skip it with its closing parenthesis."""
        self.defer(
            f"unsupported tabular subquery in {what} ('({self.current.text} | ...)'): rmmwatch runs a rule over "
            "one table, without subqueries",
            self.current.pos,
        )
        self.skip_group(opening, what)

    def arguments(self, what: str) -> tuple[Expr, ...]:
        opening = self.expect("(", f"to open {what}")
        self.open_level(opening)
        if self.subquery_ahead():
            self.subquery(opening, what)
            self.depth -= 1
            return ()
        self.constructs.append(what)
        args: list[Expr] = []
        if not self.at(")"):
            while True:
                args.append(self.expression())
                comma = self.current
                if not self.accept(","):
                    break
                if self.at(")"):
                    raise self.error(
                        f"trailing comma in {what}: KQL does not allow an empty item; remove the ',' after "
                        f"{unparse(args[-1])}",
                        comma.pos,
                    )
        if not self.at(")") and not self.at_boundary():
            raise self.error(f"expected ',' or ')' in {what}, found {self.describe(self.current)}")
        self.close(opening, what)
        self.constructs.pop()
        self.depth -= 1
        return tuple(args)

    def expression(self) -> Expr:
        """``a or b and c ...``: ``or`` over ``and`` over predicates, each chain read by a loop.

        Both levels are one method so that a nesting level costs few Python frames.
        """
        disjuncts: list[Expr] = []
        or_pos = self.current.pos
        while True:
            conjuncts = [self.predicate()]
            and_pos = self.current.pos
            while self.accept("and"):
                conjuncts.append(self.predicate())
            disjuncts.append(_chain("and", conjuncts, and_pos))
            if not self.at("or"):
                return _chain("or", disjuncts, or_pos)
            if len(disjuncts) == 1:
                or_pos = self.current.pos
            self.next()

    def predicate(self) -> Expr:
        left = self.additive()
        token = self.current
        if token.kind not in ("op", "ident"):
            return left
        op = token.text
        if op in _OPERATOR_WORDS and op not in UNSUPPORTED_OPERATORS:
            follow = self.peek()
            if follow.kind in ("op", "ident") and follow.text in _OPERATOR_WORDS:
                left_text = unparse(left)
                rest = _operand(follow.text)
                raise self.error(
                    f"two operators in a row: {op!r} then {follow.text!r} in "
                    f"'{left_text} {op} {follow.text} {rest}'; KQL takes one operator between two operands: write "
                    f"`{left_text} {follow.text} {rest}` or `{left_text} {op} {rest}`",
                    follow.pos,
                )
        if op in COMPARISON_OPERATORS or op in STRING_OPERATORS:
            self.next()
            return Binary(op, left, self.additive(), token.pos)
        if op == "<>":
            self.next()
            return Binary("!=", left, self.additive(), token.pos)
        if op in ("between", "!between"):
            self.next()
            opening = self.expect("(", f"after {op!r}")
            low = self.additive()
            self.expect("..", f"between the bounds of {op!r}")
            high = self.additive()
            self.close(opening, f"the range of {op!r}")
            return Between(left, low, high, op == "!between", token.pos)
        if op in LIST_OPERATORS:
            self.next()
            return ListOp(op, left, self.arguments(f"the list of {op!r}"), token.pos)
        if op in UNSUPPORTED_OPERATORS:
            raise self.error(f"unsupported operator {op!r}", token.pos)
        return left

    def additive(self) -> Expr:
        left = self.unary()
        while self.at("+") or self.at("-"):
            token = self.next()
            left = Binary(token.text, left, self.unary(), token.pos)
        if self.at("*") or self.at("/") or self.at("%"):
            raise self.error(f"unsupported arithmetic operator {self.current.text!r}")
        return left

    def unary(self) -> Expr:
        """Unary minus signs, each a nesting level (read by a loop), then a primary."""
        signs: list[Pos] = []
        while self.at("-"):
            token = self.next()
            self.open_level(token)
            signs.append(token.pos)
        expr = self.primary()
        self.depth -= len(signs)
        for pos in reversed(signs):
            expr = Negate(expr, pos)
        return expr

    def primary(self) -> Expr:
        token = self.current
        if token.kind == "string":
            return self.string()
        if token.kind == "number":
            self.next()
            return Literal(token.value, "real" if isinstance(token.value, float) else "long", token.pos)
        if token.kind == "timespan":
            self.next()
            return Literal(token.value, "timespan", token.pos)
        if token.kind == "datetime":
            self.next()
            return Literal(token.value, "datetime", token.pos)
        if token.kind == "op" and token.text == "(":
            opening = self.next()
            self.open_level(opening)
            if self.subquery_ahead():
                name = self.current
                self.subquery(opening, "parentheses")
                self.depth -= 1
                return Name(name.text, name.pos)
            what = f"the parenthesis in {self.construct}"
            inner = self.expression()
            self.close(opening, what)
            self.depth -= 1
            return inner
        if token.kind == "ident":
            self.next()
            if token.text in ("true", "false"):
                return Literal(token.text == "true", "bool", token.pos)
            if token.text == "dynamic" and self.at("("):
                return self.dynamic(token)
            value: Expr = Name(token.text, token.pos)
            if self.at("("):
                args = self.arguments(f"the arguments of {token.text!r}")
                value = (
                    ArrayLiteral(args, token.pos) if token.text == "pack_array" else Call(token.text, args, token.pos)
                )
            self.accessors(token)
            return value
        if token.kind == "op" and token.text == "[":
            raise self.error("unsupported bracketed identifier ['...']")
        raise self.error(f"expected a value, found {self.describe(token)} (in {self.construct})")

    def accessors(self, token: Token) -> None:
        """``x[0]``, ``x['key']``, ``x.key``: valid KQL over dynamic values, refused (see :meth:`defer`)."""
        while True:
            if self.at("["):
                opening = self.next()
                self.defer(f"unsupported indexing {token.text}[...]: rmmwatch compares columns directly", opening.pos)
                self.skip_group(opening, f"the index of {token.text!r}")
            elif self.at(".") and self.peek().kind == "ident":
                dot = self.next()
                self.defer(
                    f"unsupported member access {token.text}.{self.current.text}: rmmwatch compares columns directly",
                    dot.pos,
                )
                self.next()
            else:
                return

    def string(self) -> Literal:
        """A string literal; adjacent literals are one literal, as in KQL (with a warning)."""
        first = self.next()
        parts = [str(first.value)]
        second = self.current
        while self.current.kind == "string":
            parts.append(str(self.next().value))
        value = "".join(parts)
        if len(parts) > 1:
            quoted = " ".join(_quote(part) for part in parts)
            self.warnings.append(
                KqlWarning(
                    f"adjacent string literals {quoted} are one literal, {_quote(value)} (KQL concatenates them); "
                    "if they were meant as two items, a comma is missing",
                    second.pos.line,
                    second.pos.column,
                )
            )
        return Literal(value, "string", first.pos)

    def dynamic(self, keyword: Token) -> Expr:
        self.open_level(keyword)
        opening = self.expect("(", "after 'dynamic'")
        if self.accept("null"):
            self.close(opening, "dynamic(null)")
            self.depth -= 1
            return Literal(None, "null", keyword.pos)
        self.expect("[", "in dynamic(...): rmmwatch supports dynamic arrays of literals only")
        self.constructs.append("dynamic([...])")
        items: list[Expr] = []
        if not self.at("]"):
            while True:
                items.append(self.primary())
                if not self.accept(","):
                    break
        self.expect("]", "to close the dynamic array")
        self.close(opening, "dynamic(...)")
        self.constructs.pop()
        self.depth -= 1
        return ArrayLiteral(tuple(items), keyword.pos)


class _Parser(_Expressions):
    """Statements: lets, the table or tabular let, the pipeline's operators, summarize."""

    def query(self) -> Query:
        try:
            lets: list[Let | TabularLet] = []
            while self.at("let"):
                lets.append(self.let())
            self.constructs = ["the query"]
            table = self.source("the query")
            operators = self.stages()
            self.accept(";")
            if self.current.kind != "eof":
                raise self.error(f"unexpected {self.describe(self.current)} after the query")
            if self.pending is not None:
                raise self.pending
            return Query(tuple(lets), table, tuple(operators), tuple(self.warnings))
        except KqlError as exc:
            exc.warnings = tuple(self.warnings)
            raise

    def source(self, statement: str) -> Name:
        """The start of a pipeline: a table or a tabular ``let`` name (inline data is refused)."""
        token = self.current
        if token.kind != "ident":
            raise self.error(f"expected a table name, found {self.describe(token)}")
        self.next()
        if token.text in _TABULAR_SOURCES and (self.at("(") or self.at("[")):
            self.defer(
                f"unsupported tabular expression {token.text!r} in {statement}: rmmwatch runs a rule over one "
                "Defender table (no inline or external data, no unions)",
                token.pos,
            )
            self.skip_stage()
        self.table = self.tabular.get(token.text, token.text)
        return Name(token.text, token.pos)

    def stages(self) -> list[Operator]:
        operators: list[Operator] = []
        while self.accept("|"):
            operator = self.operator()
            if operator is not None:
                operators.append(operator)
        return operators

    def let(self) -> Let | TabularLet:
        start = self.next().pos
        if self.current.kind != "ident":
            raise self.error(f"expected a name after 'let', found {self.describe(self.current)}")
        name = self.next().text
        self.expect("=", f"after 'let {name}'")
        statement = f"'let {name} = ...'"
        self.constructs = [statement]
        if self.tabular_ahead():
            source = self.source(statement)
            operators = self.stages()
            self.expect(";", f"at the end of {statement}")
            self.tabular[name] = self.table or source.name
            return TabularLet(name, source, tuple(operators), start)
        value = self.expression()
        self.expect(";", f"at the end of {statement}")
        self.tabular.pop(name, None)
        return Let(name, value, start)

    def tabular_ahead(self) -> bool:
        """Whether a ``let`` value is a tabular expression (a table, a tabular let, inline data, a pipeline)."""
        token = self.current
        if token.kind != "ident":
            return False
        if token.text in TABLES or token.text in self.tabular:
            return True
        follow = self.peek()
        if token.text in _TABULAR_SOURCES and follow.text in ("(", "["):
            return True
        return follow.kind == "op" and follow.text == "|"

    def operator(self) -> Operator | None:
        token = self.current
        if token.kind != "ident":
            raise self.error(f"expected a tabular operator after '|', found {self.describe(token)}")
        self.next()
        if token.text in ("where", "filter"):
            self.constructs.append(f"the condition of {token.text!r}")
            where = Where(self.expression(), token.pos)
            self.constructs.pop()
            return where
        if token.text == "extend":
            return self.extend(token.pos)
        if token.text == "summarize":
            return self.summarize(token.pos)
        if token.text in _TABULAR_OPERATORS:
            self.defer(
                f"unsupported tabular operator {token.text!r}: rmmwatch runs where, extend and summarize",
                token.pos,
            )
            self.skip_stage()
            return None
        follow = self.current
        if follow.kind in ("op", "ident") and follow.text in _OPERATOR_WORDS:
            raise self.error(self.missing_where(token, follow), token.pos)
        raise self.error(f"unknown tabular operator {token.text!r}", token.pos)

    def missing_where(self, name: Token, op: Token) -> str:
        """``| Sha1 in (...)``: a condition where a tabular operator must be."""
        rest = _operand(op.text)
        message = (
            f"unknown tabular operator {name.text!r}: '| {name.text} {op.text} {rest}' is a condition, and a "
            f"condition needs 'where' after the '|'; did you mean `| where {name.text} {op.text} {rest}`?"
        )
        columns = TABLES[self.table][1] if self.table in TABLES else None
        if columns is not None and name.text not in columns:
            hint = closest_name(name.text, columns)
            column = f" the column is {hint!r}" if hint else " no column has a close name"
            message += f" Also, {self.table} has no column {name.text!r}:{column}."
        return message

    def extend(self, pos: Pos) -> Extend:
        assignments: list[Assignment] = []
        self.constructs.append("'extend'")
        while True:
            token = self.current
            if token.kind != "ident":
                raise self.error(f"expected 'Name = value' in extend, found {self.describe(token)}")
            self.next()
            self.expect("=", f"after {token.text!r} in extend")
            assignments.append(Assignment(token.text, self.expression(), token.pos))
            comma = self.current
            if not self.accept(","):
                self.constructs.pop()
                return Extend(tuple(assignments), pos)
            if self.at_boundary():
                raise self.error("trailing comma after the last assignment of 'extend': remove it", comma.pos)

    def summarize(self, pos: Pos) -> Summarize:
        aggregates: list[Aggregate] = []
        self.constructs.append("'summarize'")
        while True:
            aggregates.append(self.aggregate())
            comma = self.current
            if not self.accept(","):
                break
            if self.at("by") or self.at_boundary():
                raise self.error("trailing comma after the last aggregation of 'summarize': remove it", comma.pos)
        by: list[Name] = []
        if self.accept("by"):
            while True:
                token = self.current
                if token.kind != "ident":
                    raise self.error(f"expected a column after 'by', found {self.describe(token)}")
                self.next()
                if self.at("(") or self.at("="):
                    raise self.error(
                        f"unsupported summarize 'by' expression starting at {token.text!r}: "
                        "only plain columns are supported",
                        token.pos,
                    )
                by.append(Name(token.text, token.pos))
                comma = self.current
                if not self.accept(","):
                    break
                if self.at_boundary():
                    raise self.error("trailing comma after the last column of 'summarize ... by': remove it", comma.pos)
        self.constructs.pop()
        return Summarize(tuple(aggregates), tuple(by), pos)

    def aggregate(self) -> Aggregate:
        first = self.current
        if first.kind != "ident":
            raise self.error(f"expected an aggregation in summarize, found {self.describe(first)}")
        self.next()
        name: str | None = None
        func = first
        if self.accept("="):
            name = first.text
            func = self.current
            if func.kind != "ident":
                raise self.error(f"expected an aggregation function, found {self.describe(func)}")
            self.next()
        if not self.at("("):
            raise self.error(f"expected '(' after aggregation {func.text!r}, found {self.describe(self.current)}")
        args = self.arguments(f"the arguments of {func.text!r}")
        return Aggregate(name, func.text, args, func.pos)

    # -- expressions -------------------------------------------------------------------


def _operand(op: str) -> str:
    """How a message shows the right side of ``op``: ``(...)`` for a list or a range, else ``...``."""
    return "(...)" if op in LIST_OPERATORS or op in ("between", "!between") else "..."


def _quote(text: str) -> str:
    return unparse(Literal(text, "string", Pos(1, 1)))


def _chain(op: str, terms: list[Expr], pos: Pos) -> Expr:
    """One flat ``and``/``or`` node at its first operator (a single term is itself)."""
    return terms[0] if len(terms) == 1 else Logical(op, tuple(terms), pos)


def parse(text: str) -> Query:
    """Parse query text into a :class:`Query`; raises :class:`KqlError` with its position.

    A syntax error anywhere is reported before an unsupported construct (KQL itself rejects
    the former; the latter is rmmwatch's limit), so a query is refused for its worst problem.
    """
    return _Parser(text).query()
