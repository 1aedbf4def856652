"""The lexer of the KQL subset: tokens with their line and column (1-based), comments skipped.

Literals are read here (strings with escapes, verbatim and multi-line strings, numbers,
timespans such as ``5d``, ``datetime(...)`` and ``dynamic(...)`` forms); an error names the
position of the offending character.
"""

from __future__ import annotations

from dataclasses import dataclass

from rmmwatch.kql.datetimes import TIMESPAN_UNITS, DatetimeError, parse_datetime, timespan_ticks
from rmmwatch.kql.errors import KqlError
from rmmwatch.kql.syntax import Pos


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
