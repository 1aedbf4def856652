"""The byte prefilter: skip messages that cannot match without parsing them.

Most messages cannot match any rule: a rule's predicate requires one of a few strings
(``netsupport`` for the bundled rule), and a message that contains none of them, in any
ASCII case, cannot satisfy it. Scanning bytes is an order of magnitude cheaper than
parsing JSON, so this is where the hot path's throughput comes from.

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


def _patterns(pieces: tuple[str, ...]) -> tuple[list[bytes], bytes, list[bytes]]:
    """Literal pieces, one regex for the ``\\uXXXX`` escapes that matter, raw UTF-8 sequences."""
    chars = set("".join(pieces))
    codes: set[int] = set()
    for char in chars:
        codes.update({ord(char.lower()), ord(char.upper())})
    escapes = {f"{code:04x}" for code in codes if code < 0x80}
    utf8: set[bytes] = set()
    for special, folded in NON_ASCII_FOLDING_TO_ASCII.items():
        if folded in chars:
            escapes.add(f"{ord(special):04x}")
            utf8.add(special.encode())
    # Case-sensitive "\\u" (JSON allows no "\\U", and "C:\\\\Users" must not hit), any-case hex.
    alternatives = ("".join(f"[{c}{c.upper()}]" if c.isalpha() else c for c in e) for e in sorted(escapes))
    escape_regex = rb"\\u(?:" + "|".join(alternatives).encode() + b")"
    return [p.encode() for p in pieces], escape_regex, sorted(utf8)


def _hex_escape(data: bytes) -> str:
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"\\x{b:02x}" for b in data)


def _hyperscan_test(literals: list[bytes], escape_regex: bytes, utf8: list[bytes]) -> Callable[[bytes], bool] | None:
    try:
        import hyperscan  # noqa: PLC0415  (optional accelerator)
    except ImportError:
        return None
    expressions = [_hex_escape(p).encode() for p in literals] + [escape_regex]
    expressions += [_hex_escape(p).encode() for p in utf8]
    single = hyperscan.HS_FLAG_SINGLEMATCH
    caseless = single | hyperscan.HS_FLAG_CASELESS
    flags = [caseless] * len(literals) + [single] * (1 + len(utf8))
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


def _python_test(literals: list[bytes], escape_regex: bytes, utf8: list[bytes]) -> Callable[[bytes], bool]:
    # Searched in the lowercased message: JSON's "\u" is lowercase and the hex digits fold.
    escape_search = re.compile(escape_regex).search
    literal_list = tuple(literals)
    utf8_list = tuple(utf8)

    def test(raw: bytes) -> bool:
        low = raw.lower()
        for literal in literal_list:
            if literal in low:
                return True
        if escape_search(raw) is not None:
            return True
        return any(seq in raw for seq in utf8_list)

    return test
