"""The byte prefilter: skip messages that cannot match without parsing them.

Most messages cannot match any rule: a rule's predicate requires one of a few strings
(``netsupport`` for the bundled rule), and a message that contains none of them, in any
ASCII case, cannot satisfy it. Scanning bytes is an order of magnitude cheaper than
parsing JSON, so this is where the hot path's throughput comes from.

The required strings come from the operator table (:mod:`rmmwatch.kql.operators`): a row
that requires its needle promises that every matching value contains ``fold(needle)`` after
``fold`` (simple case folding, :mod:`rmmwatch.kql.strings`), for case-sensitive rows too. So
the search here is caseless, under that same ``fold``.

The prefilter must never change a result. It searches the *encoded* JSON, so it must
also say "maybe" wherever the encoding could hide a required string:

* only JSON-safe pieces of a required string are searched: characters an encoder may
  escape (``"``, ``\\``, ``/``, ``<>&'+```, controls, non-ASCII) split the string, and the
  longest safe piece is searched instead (the record must contain it verbatim);
* ``\\u00XX`` escapes of any character of a searched piece (in either case) mean "maybe";
* non-ASCII characters whose simple lowercase is ASCII (U+0130 -> i, U+212A -> k), raw or
  escaped, mean "maybe" when the folded character occurs in a searched piece.

Two engines give the same answers: Hyperscan (one vectorised pass for every pattern,
used when the ``hyperscan`` package imports) and a pure-Python fallback
(``bytes.lower()`` + ``in`` + one regular expression). Tests check they agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from rmmwatch.kql.strings import NON_ASCII_FOLDING_TO_ASCII, fold

#: Characters every JSON encoder writes verbatim inside a string. Excluded: the quote,
#: backslash and slash (escapable), and ``<>&'+``` (escaped by .NET's default encoder,
#: which is what Microsoft services tend to use), controls and non-ASCII.
_JSON_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !#$%()*,-.:;=?@[]^_{|}~")


def searchable_piece(required: str) -> str:
    """The longest JSON-safe piece of a (case-folded) required string; '' if none."""
    pieces = re.split(r"[^" + re.escape("".join(sorted(_JSON_SAFE))) + r"]+", fold(required))
    return max(pieces, key=len, default="")


class Prefilter:
    """Decides, per raw message, whether it may contain a match."""

    def __init__(self, required: frozenset[str] | None, *, engine: str = "auto") -> None:
        """``required``: strings one of which every match contains (None: no prefiltering).

        ``engine``: ``auto`` (hyperscan if it imports, else python), ``hyperscan``, ``python``, or
        ``off`` (parse every message: the reference the prefilter is tested against).
        """
        self.pieces: tuple[str, ...] | None = None
        self.engine = "none"
        self._test: Callable[[bytes], bool] = _always
        if required is None or engine == "off":
            return
        pieces = {searchable_piece(r) for r in required}
        if "" in pieces:
            return  # a required string with nothing searchable: every message is a candidate
        self.pieces = tuple(sorted(pieces))
        literals, escapes, utf8 = _patterns(self.pieces)
        if engine in ("auto", "hyperscan"):
            test = _hyperscan_test(literals, escapes, utf8)
            if test is not None:
                self._test, self.engine = test, "hyperscan"
                return
            if engine == "hyperscan":
                raise RuntimeError("the hyperscan prefilter engine was requested but hyperscan does not import")
        self._test, self.engine = _python_test(literals, escapes, utf8), "python"

    def __call__(self, raw: bytes) -> bool:
        return self._test(raw)

    def describe(self) -> str:
        if self.pieces is None:
            return "off (every message is parsed)"
        return f"{self.engine}: " + ", ".join(repr(p) for p in self.pieces)


def combined_requirements(requirements: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    """Union of several rules' requirements; any rule without one disables prefiltering."""
    out: set[str] = set()
    for required in requirements:
        if required is None:
            return None
        out |= required
    return frozenset(out)


def _always(raw: bytes) -> bool:
    return True


def _patterns(pieces: tuple[str, ...]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Literal pieces (caseless), escape prefixes and raw UTF-8 sequences (both exact).

    An escape of an ASCII character of a piece, in either case, starts with ``\\u00`` and the
    code's high hex digit (``\\u004e`` and ``\\u006e`` for n/N): searching those short prefixes
    as plain literals over-approximates a little (any character of the same 16-code column)
    and keeps the scan a literal scan, three times faster than an exact regular expression.
    """
    chars = set("".join(pieces))
    codes: set[int] = set()
    for char in chars:
        codes.update({ord(char.lower()), ord(char.upper())})
    escapes = {f"\\u00{code >> 4:x}".encode() for code in codes if code < 0x80}
    utf8: set[bytes] = set()
    for special, folded in NON_ASCII_FOLDING_TO_ASCII.items():
        if folded in chars:
            hex_code = f"{ord(special):04x}"
            escapes.add(f"\\u{hex_code}".encode())
            escapes.add(f"\\u{hex_code.upper()}".encode())
            utf8.add(special.encode())
    return [p.encode() for p in pieces], sorted(escapes), sorted(utf8)


def _hex_escape(data: bytes) -> str:
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"\\x{b:02x}" for b in data)


def _hyperscan_test(literals: list[bytes], escapes: list[bytes], utf8: list[bytes]) -> Callable[[bytes], bool] | None:
    try:
        import hyperscan  # noqa: PLC0415  (optional accelerator)
    except ImportError:
        return None
    expressions = [_hex_escape(p).encode() for p in (*literals, *escapes, *utf8)]
    single = hyperscan.HS_FLAG_SINGLEMATCH
    flags = [single | hyperscan.HS_FLAG_CASELESS] * len(literals) + [single] * (len(escapes) + len(utf8))
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=expressions, ids=list(range(len(expressions))), elements=len(expressions), flags=flags)
    database.scratch = hyperscan.Scratch(database)
    terminated = hyperscan.ScanTerminated

    def on_match(pattern_id: int, start: int, end: int, match_flags: int, context: object) -> bool:
        return True  # stop scanning at the first hit: hs_scan then reports "terminated"

    scan = database.scan

    def test(raw: bytes) -> bool:
        try:
            scan(raw, match_event_handler=on_match)
        except terminated:
            return True
        return False

    return test


def _python_test(literals: list[bytes], escapes: list[bytes], utf8: list[bytes]) -> Callable[[bytes], bool]:
    exact = re.compile(b"|".join(re.escape(e) for e in (*escapes, *utf8))).search
    literal_list = tuple(literals)

    def test(raw: bytes) -> bool:
        low = raw.lower()
        for literal in literal_list:
            if literal in low:
                return True
        return exact(raw) is not None

    return test
