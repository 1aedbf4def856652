"""A hand-written lexer and recursive-descent parser for the KQL subset of RMM hunting queries.

The subset: ``let`` bindings, ``//`` comments, one table, ``| where``, ``| extend`` of
constants and a final ``| summarize``. Anything else is refused with a :class:`KqlError`
naming the construct and where it is, never skipped: a rule that silently means
something else than its text is worse than a rule that does not load.

Operators come from the table in :mod:`rmmwatch.kql.operators`. ``and``/``or`` chains are
read by loops into flat :class:`Logical` nodes (packs of RMM tools ``or`` hundreds of
names); nesting is what recurses, and it is bounded by :data:`MAX_NESTING`.
"""

from __future__ import annotations

from dataclasses import dataclass

from rmmwatch.kql.datetimes import TIMESPAN_UNITS, DatetimeError, parse_datetime, timespan_ticks
from rmmwatch.kql.errors import KqlError
from rmmwatch.kql.operators import COMPARISON_OPERATORS, LIST_OPERATORS, STRING_OPERATORS, UNSUPPORTED_OPERATORS
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
    Where,
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


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token."""

    kind: str  # ident, string, number, timespan, datetime, op, eof
    text: str
    value: object
    pos: Pos


_PUNCTUATION = (
    "..",
    "==",
    "!=",
    "=~",
    "!~",
    "<=",
    ">=",
    "<>",
    "|",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ";",
    "=",
    "<",
    ">",
    "+",
    "-",
    "*",
    "/",
    "%",
    ".",
    ":",
)


def _is_ident_start(char: str) -> bool:
    return char.isalpha() or char == "_"


def _is_ident_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.index = 0
        self.line = 1
        self.line_start = 0

    def pos(self, index: int | None = None) -> Pos:
        index = self.index if index is None else index
        # Only called for the current line, so line_start is the right base.
        return Pos(self.line, index - self.line_start + 1)

    def error(self, message: str, pos: Pos | None = None) -> KqlError:
        pos = pos or self.pos()
        return KqlError(message, pos.line, pos.column)

    def advance(self, count: int = 1) -> None:
        for _ in range(count):
            if self.text[self.index] == "\n":
                self.line += 1
                self.line_start = self.index + 1
            self.index += 1

    def tokens(self) -> list[Token]:
        out: list[Token] = []
        text = self.text
        while True:
            self.skip_space_and_comments()
            if self.index >= len(text):
                out.append(Token("eof", "", None, self.pos()))
                return out
            char = text[self.index]
            start = self.pos()
            if char in "'\"":
                out.append(self.string(start, verbatim=False))
            elif char == "@" and self.peek(1) in ("'", '"'):
                self.advance()
                out.append(self.string(start, verbatim=True))
            elif char in "hH" and self.peek(1) in ("'", '"'):
                # h'...': an "obfuscated" string literal, same value, hidden from logs.
                self.advance()
                out.append(self.string(start, verbatim=False))
            elif char == "`" and text.startswith("```", self.index):
                out.append(self.multiline_string(start))
            elif char.isdigit():
                out.append(self.number(start))
            elif _is_ident_start(char):
                out.append(self.identifier(start, out))
            elif char == "!" and _is_ident_start(self.peek(1)):
                self.advance()
                word = self.read_word()
                if word == "in" and self.peek(0) == "~":
                    self.advance()
                    word = "in~"
                out.append(Token("op", "!" + word, "!" + word, start))
            else:
                for punct in _PUNCTUATION:
                    if text.startswith(punct, self.index):
                        self.advance(len(punct))
                        out.append(Token("op", punct, punct, start))
                        break
                else:
                    raise self.error(f"unexpected character {char!r}", start)

    def peek(self, offset: int) -> str:
        index = self.index + offset
        return self.text[index] if index < len(self.text) else ""

    def skip_space_and_comments(self) -> None:
        text = self.text
        while self.index < len(text):
            char = text[self.index]
            if char.isspace():
                self.advance()
            elif text.startswith("//", self.index):
                while self.index < len(text) and text[self.index] != "\n":
                    self.advance()
            else:
                return

    def read_word(self) -> str:
        start = self.index
        while self.index < len(self.text) and _is_ident_char(self.text[self.index]):
            self.advance()
        return self.text[start : self.index]

    def string(self, start: Pos, *, verbatim: bool) -> Token:
        quote = self.text[self.index]
        self.advance()
        chars: list[str] = []
        while True:
            if self.index >= len(self.text) or self.text[self.index] == "\n":
                raise self.error("unterminated string literal", start)
            char = self.text[self.index]
            if char == quote:
                if verbatim and self.peek(1) == quote:
                    chars.append(quote)
                    self.advance(2)
                    continue
                self.advance()
                break
            if char == "\\" and not verbatim:
                escaped = self.peek(1)
                mapping = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
                if escaped not in mapping:
                    raise self.error(f"unsupported escape sequence \\{escaped} in string literal")
                chars.append(mapping[escaped])
                self.advance(2)
                continue
            chars.append(char)
            self.advance()
        value = "".join(chars)
        return Token("string", value, value, start)

    def multiline_string(self, start: Pos) -> Token:
        self.advance(3)
        end = self.text.find("```", self.index)
        if end < 0:
            raise self.error("unterminated ``` string literal", start)
        value = self.text[self.index : end]
        self.advance(end + 3 - self.index)
        return Token("string", value, value, start)

    def number(self, start: Pos) -> Token:
        text = self.text
        begin = self.index
        while self.index < len(text) and text[self.index].isdigit():
            self.advance()
        is_real = False
        if self.peek(0) == "." and self.peek(1).isdigit():
            is_real = True
            self.advance()
            while self.index < len(text) and text[self.index].isdigit():
                self.advance()
        if self.peek(0) in ("e", "E") and (self.peek(1).isdigit() or self.peek(1) in "+-"):
            is_real = True
            self.advance()
            if self.peek(0) in "+-":
                self.advance()
            while self.index < len(text) and text[self.index].isdigit():
                self.advance()
        number = text[begin : self.index]
        if self.index < len(text) and _is_ident_start(text[self.index]):
            unit = self.read_word()
            if unit not in TIMESPAN_UNITS:
                raise self.error(f"invalid timespan unit {unit!r} in {number}{unit}", start)
            try:
                ticks = timespan_ticks(number, unit)
            except (ValueError, ZeroDivisionError) as exc:
                raise self.error(f"invalid timespan literal {number}{unit}: {exc}", start) from None
            return Token("timespan", number + unit, ticks, start)
        if is_real:
            return Token("number", number, float(number), start)
        return Token("number", number, int(number), start)

    def identifier(self, start: Pos, previous: list[Token]) -> Token:
        word = self.read_word()
        if word == "in" and self.peek(0) == "~":
            self.advance()
            return Token("op", "in~", "in~", start)
        # Hyphenated tabular operators (project-away, mv-expand) right after a pipe.
        if previous and previous[-1].text == "|" and self.peek(0) == "-" and _is_ident_start(self.peek(1)):
            self.advance()
            word = word + "-" + self.read_word()
        if word in ("datetime", "timespan", "time") and self._next_non_space() == "(":
            return self.raw_literal(word, start)
        return Token("ident", word, word, start)

    def _next_non_space(self) -> str:
        index = self.index
        while index < len(self.text) and self.text[index] in " \t":
            index += 1
        return self.text[index] if index < len(self.text) else ""

    def raw_literal(self, word: str, start: Pos) -> Token:
        """``datetime(2026-11-20 10:00)`` and ``timespan(1d)``: the argument is raw text."""
        while self.text[self.index] != "(":
            self.advance()
        self.advance()
        end = self.text.find(")", self.index)
        if end < 0:
            raise self.error(f"unterminated {word}(...) literal", start)
        raw = self.text[self.index : end].strip()
        self.advance(end + 1 - self.index)
        if word == "datetime":
            if raw == "null":
                return Token("datetime", f"datetime({raw})", None, start)
            try:
                return Token("datetime", f"datetime({raw})", parse_datetime(raw), start)
            except DatetimeError as exc:
                raise self.error(f"invalid datetime literal: {exc}", start) from None
        inner = _Lexer(raw).tokens()
        if len(inner) != 2 or inner[0].kind != "timespan":
            raise self.error(f"invalid timespan literal {word}({raw})", start)
        return Token("timespan", f"{word}({raw})", inner[0].value, start)


def tokenize(text: str) -> list[Token]:
    """Split query text into tokens (exposed for tests)."""
    return _Lexer(text).tokens()


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0  # nesting levels open now (see MAX_NESTING)

    # -- token helpers -------------------------------------------------------------
    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def next(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def at(self, text: str) -> bool:
        return self.current.kind in ("op", "ident") and self.current.text == text

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

    @staticmethod
    def describe(token: Token) -> str:
        if token.kind == "eof":
            return "end of query"
        if token.kind == "string":
            return f"string {token.text!r}"
        return repr(token.text)

    # -- statements --------------------------------------------------------------------
    def query(self) -> Query:
        lets: list[Let] = []
        while self.at("let"):
            lets.append(self.let())
        if self.current.kind != "ident":
            raise self.error(f"expected a table name, found {self.describe(self.current)}")
        table = self.next()
        operators: list[Operator] = []
        while self.accept("|"):
            operators.append(self.operator())
        self.accept(";")
        if self.current.kind != "eof":
            raise self.error(f"unexpected {self.describe(self.current)} after the query")
        return Query(tuple(lets), Name(table.text, table.pos), tuple(operators))

    def let(self) -> Let:
        start = self.next().pos
        if self.current.kind != "ident":
            raise self.error(f"expected a name after 'let', found {self.describe(self.current)}")
        name = self.next().text
        self.expect("=", f"after 'let {name}'")
        value = self.expression()
        self.expect(";", f"at the end of 'let {name} = ...'")
        return Let(name, value, start)

    def operator(self) -> Operator:
        token = self.current
        if token.kind != "ident":
            raise self.error(f"expected a tabular operator after '|', found {self.describe(token)}")
        self.next()
        if token.text in ("where", "filter"):
            return Where(self.expression(), token.pos)
        if token.text == "extend":
            return self.extend(token.pos)
        if token.text == "summarize":
            return self.summarize(token.pos)
        if token.text in _TABULAR_OPERATORS:
            raise self.error(
                f"unsupported tabular operator {token.text!r}: rmmwatch runs where, extend and summarize",
                token.pos,
            )
        raise self.error(f"unknown tabular operator {token.text!r}", token.pos)

    def extend(self, pos: Pos) -> Extend:
        assignments: list[Assignment] = []
        while True:
            token = self.current
            if token.kind != "ident":
                raise self.error(f"expected 'Name = value' in extend, found {self.describe(token)}")
            self.next()
            self.expect("=", f"after {token.text!r} in extend")
            assignments.append(Assignment(token.text, self.expression(), token.pos))
            if not self.accept(","):
                return Extend(tuple(assignments), pos)

    def summarize(self, pos: Pos) -> Summarize:
        aggregates: list[Aggregate] = []
        while True:
            aggregates.append(self.aggregate())
            if not self.accept(","):
                break
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
                if not self.accept(","):
                    break
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
        args = self.arguments()
        return Aggregate(name, func.text, args, func.pos)

    # -- expressions -------------------------------------------------------------------
    def open_level(self, token: Token) -> None:
        """Enter one nesting level at ``token``: past :data:`MAX_NESTING`, refuse the query there."""
        if self.depth >= MAX_NESTING:
            raise self.error(
                f"nesting deeper than {MAX_NESTING} levels (parentheses, calls, dynamic arrays, unary minus)",
                token.pos,
            )
        self.depth += 1

    def arguments(self) -> tuple[Expr, ...]:
        self.open_level(self.expect("(", "to open the argument list"))
        args: list[Expr] = []
        if not self.at(")"):
            while True:
                args.append(self.expression())
                if not self.accept(","):
                    break
        self.expect(")", "to close the argument list")
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
        if op in COMPARISON_OPERATORS or op in STRING_OPERATORS:
            self.next()
            return Binary(op, left, self.additive(), token.pos)
        if op == "<>":
            self.next()
            return Binary("!=", left, self.additive(), token.pos)
        if op in ("between", "!between"):
            self.next()
            self.expect("(", f"after {op!r}")
            low = self.additive()
            self.expect("..", f"between the bounds of {op!r}")
            high = self.additive()
            self.expect(")", f"to close {op!r}")
            return Between(left, low, high, op == "!between", token.pos)
        if op in LIST_OPERATORS:
            self.next()
            return ListOp(op, left, self.arguments(), token.pos)
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
            self.next()
            return Literal(token.value, "string", token.pos)
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
            self.open_level(self.next())
            inner = self.expression()
            self.expect(")", "to close the parenthesis")
            self.depth -= 1
            return inner
        if token.kind == "ident":
            self.next()
            if token.text in ("true", "false"):
                return Literal(token.text == "true", "bool", token.pos)
            if token.text == "dynamic" and self.at("("):
                return self.dynamic(token)
            if self.at("("):
                args = self.arguments()
                if token.text == "pack_array":
                    return ArrayLiteral(args, token.pos)
                return Call(token.text, args, token.pos)
            return Name(token.text, token.pos)
        if token.kind == "op" and token.text == "[":
            raise self.error("unsupported bracketed identifier ['...']")
        raise self.error(f"expected a value, found {self.describe(token)}")

    def dynamic(self, keyword: Token) -> Expr:
        self.open_level(keyword)
        self.expect("(", "after 'dynamic'")
        if self.accept("null"):
            self.expect(")", "to close dynamic(null)")
            self.depth -= 1
            return Literal(None, "null", keyword.pos)
        self.expect("[", "in dynamic(...): rmmwatch supports dynamic arrays of literals only")
        items: list[Expr] = []
        if not self.at("]"):
            while True:
                items.append(self.primary())
                if not self.accept(","):
                    break
        self.expect("]", "to close the dynamic array")
        self.expect(")", "to close dynamic(...)")
        self.depth -= 1
        return ArrayLiteral(tuple(items), keyword.pos)


def _chain(op: str, terms: list[Expr], pos: Pos) -> Expr:
    """One flat ``and``/``or`` node at its first operator (a single term is itself)."""
    return terms[0] if len(terms) == 1 else Logical(op, tuple(terms), pos)


def parse(text: str) -> Query:
    """Parse query text into a :class:`Query`; raises :class:`KqlError` with its position."""
    return _Parser(text).query()
