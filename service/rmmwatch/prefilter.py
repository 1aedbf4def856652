"""The byte prefilter: one scan per message says which rules may match it, without parsing it.

Most messages cannot match any rule: a rule's predicate requires one of a few strings
(``netsupport`` for the bundled NetSupport rule, a vendor's names or domains for the others),
and a message that contains none of them, in any ASCII case, cannot satisfy it. Scanning
bytes is an order of magnitude cheaper than parsing JSON, so this is where the hot path's
throughput comes from. With many rules loaded (a whole RMM pack: about 200 rules over three
tables), the scan is still one pass over the message for the literals of every rule, and it
answers with the *set* of rules whose literal was seen (a bit mask over the rules, in load
order), so that decoding evaluates only those (docs/architecture.md §1).

The required strings come from the operator table (:mod:`rmmwatch.kql.operators`): a row
that requires its needle promises that every matching value contains ``fold(needle)`` after
``fold`` (simple case folding, :mod:`rmmwatch.kql.strings`), for case-sensitive rows too. So
the search here is caseless, under that same ``fold``. A rule without a requirement is always
evaluated; a rule whose requirement is empty (its condition can never be true) never is.

The prefilter must never change a result. It searches the *encoded* JSON, so it must
also say "maybe" wherever the encoding could hide a required string:

* only JSON-safe pieces of a required string are searched: characters an encoder may
  escape (``"``, ``\\``, ``/``, ``<>&'+```, controls, non-ASCII) split the string, and the
  longest safe piece is searched instead (the record must contain it verbatim);
* a ``\\u00XX`` escape of a character of a rule's pieces (in either case) wakes that rule;
* non-ASCII characters whose simple lowercase is ASCII (U+0130 -> i, U+212A -> k), raw or
  escaped, wake the rules whose pieces hold the folded character.

Two things keep the scan cheap with hundreds of literals. A piece that contains another
piece is not searched: the shorter one is, and it wakes both rules (every occurrence of the
longer contains the shorter). And escapes are found in two steps: the scan looks for the
``\\u00`` they all start with, and only a message that has one is searched again for the
exact escaped characters (most encoders write none; .NET's writes a few, and escapes of
characters no rule needs, such as ``\\u0027``, then wake nothing).

Three engines give the same answers: Hyperscan (one vectorised pass for every pattern, x86-64
only: its wheel is); Aho-Corasick (``ahocorasick-rs``, a Rust automaton with wheels for x86-64
and arm64: one pass over ``bytes.lower()`` for every pattern, overlapping matches included);
and a pure-Python fallback over ``bytes.lower()``: one ``in`` per literal for up to
:data:`FEW_LITERALS` literals (cheaper than one regular expression at that size, measured),
else one pass of one regular expression over every literal. ``auto`` takes the first that
imports, in that order. Tests check they agree with each other and with ``off``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from rmmwatch.kql.strings import NON_ASCII_FOLDING_TO_ASCII, fold

#: Characters every JSON encoder writes verbatim inside a string. Excluded: the quote,
#: backslash and slash (escapable), and ``<>&'+``` (escaped by .NET's default encoder,
#: which is what Microsoft services tend to use), controls and non-ASCII.
_JSON_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 !#$%()*,-.:;=?@[]^_{|}~")

#: Up to this many literals the Python engine tests each with ``in`` (one C-speed search
#: each); above it, one regular expression over all of them is cheaper (measured on
#: Defender-sized messages: the two cost the same at about 32 literals).
FEW_LITERALS = 24

#: The start of every escape of an ASCII character; the scan looks for this, then decodes.
_ESCAPE_START = b"\\u00"
_ESCAPED_ASCII = re.compile(rb"\\u00([0-7][0-9a-fA-F])")

#: A set of rules, as a bit mask over the rules in load order (bit i: rule i).
Mask = int


def searchable_piece(required: str) -> str:
    """The longest JSON-safe piece of a (case-folded) required string; '' if none."""
    pieces = re.split(r"[^" + re.escape("".join(sorted(_JSON_SAFE))) + r"]+", fold(required))
    return max(pieces, key=len, default="")


class Prefilter:
    """Decides, per raw message, which rules may match it (a :data:`Mask`)."""

    def __init__(self, requirements: Sequence[frozenset[str] | None], *, engine: str = "auto") -> None:
        """``requirements``: per rule, strings one of which every match contains (None: cannot say).

        ``engine``: ``auto`` (hyperscan if it imports, else python), ``hyperscan``, ``python``, or
        ``off`` (every rule on every message: the reference the prefilter is tested against).
        """
        self.rules = len(requirements)
        self.everything: Mask = (1 << self.rules) - 1
        self.engine = "none"
        #: Rules evaluated on every message (no requirement, or nothing searchable in it).
        self.always: Mask = 0
        #: The literals searched (after dropping those that contain another); None: no scan.
        self.pieces: tuple[str, ...] | None = None
        by_piece: dict[str, Mask] = {}
        if engine == "off":
            self.always = self.everything
        else:
            for index, required in enumerate(requirements):
                bit = 1 << index
                pieces = None if required is None else {searchable_piece(r) for r in required}
                if pieces is None or "" in pieces:
                    self.always |= bit
                    continue
                for piece in pieces:  # an empty requirement adds nothing: the rule can never match
                    by_piece[piece] = by_piece.get(piece, 0) | bit
        self._scan: Callable[[bytes], Mask] = self._constant
        self._escaped: dict[bytes, Mask] = {}
        if not by_piece or self.always == self.everything:
            return
        literals = _shortest_cover(by_piece)
        self.pieces = tuple(sorted(p.decode() for p in literals))
        escapes, specials = _escape_masks(by_piece)
        # Scanning can stop early once every rule it may wake is awake (one rule: its first literal).
        wakeable = 0
        for mask in by_piece.values():
            wakeable |= mask
        self._escaped = escapes
        if engine in ("auto", "hyperscan"):
            scan = _hyperscan_scan(literals, specials, self.always, wakeable, self._escaped_mask)
            if scan is not None:
                self._scan, self.engine = scan, "hyperscan"
                return
            if engine == "hyperscan":
                raise RuntimeError("the hyperscan prefilter engine was requested but hyperscan does not import")
        if engine in ("auto", "ahocorasick"):
            scan = _ahocorasick_scan(literals, specials, self.always, wakeable, self._escaped_mask)
            if scan is not None:
                self._scan, self.engine = scan, "ahocorasick"
                return
            if engine == "ahocorasick":
                raise RuntimeError("the ahocorasick prefilter engine was requested but ahocorasick_rs does not import")
        self._scan, self.engine = _python_scan(literals, escapes, specials, self.always, wakeable), "python"

    def scan(self, raw: bytes) -> Mask:
        """The rules that may match ``raw`` (always-evaluated ones included); 0: none can."""
        return self._scan(raw)

    def __call__(self, raw: bytes) -> bool:
        """Whether any rule may match ``raw``."""
        return self._scan(raw) != 0

    def describe(self) -> str:
        if self.pieces is None:
            if self.always:
                return "off (every message is parsed)"
            return "nothing to search (no rule can match)"
        shown = ", ".join(repr(p) for p in self.pieces[:8]) + (", ..." if len(self.pieces) > 8 else "")
        always = bin(self.always).count("1")
        extra = f"; {always} rule(s) without a literal, evaluated on every message" if always else ""
        return f"{self.engine}: {len(self.pieces)} literal(s) for {self.rules} rule(s) ({shown}){extra}"

    # -- internals -------------------------------------------------------------------------
    def _constant(self, raw: bytes) -> Mask:
        return self.always

    def _escaped_mask(self, raw: bytes) -> Mask:
        """The rules woken by ``\\u00XX`` escapes in ``raw`` (called when the scan saw one)."""
        escaped = self._escaped
        mask = 0
        for code in _ESCAPED_ASCII.findall(raw):
            mask |= escaped.get(code.lower(), 0)
        return mask


def _shortest_cover(by_piece: dict[str, Mask]) -> dict[bytes, Mask]:
    """The literals to search, each with the rules it wakes.

    A piece that contains another piece is dropped and its rules join the shorter one's: every
    occurrence of the longer contains the shorter, so nothing can be missed, and fewer literals
    scan faster. No two literals left contain each other, so at one position at most one starts.
    """
    order = sorted(by_piece, key=lambda p: (len(p), p))
    kept: list[str] = []
    masks: dict[str, Mask] = {}
    for piece in order:
        container = next((k for k in kept if k in piece), None)
        if container is None:
            kept.append(piece)
            masks[piece] = by_piece[piece]
        else:
            masks[container] |= by_piece[piece]
    return {piece.encode(): mask for piece, mask in masks.items()}


def _escape_masks(by_piece: dict[str, Mask]) -> tuple[dict[bytes, Mask], dict[bytes, Mask]]:
    """Which rules an escape can hide a character of.

    Returns the ``\\u00XX`` codes (two lowercase hex digits) of the ASCII characters of every piece,
    in both cases, each with the rules whose pieces hold that character; and the non-ASCII characters
    whose lowercase is ASCII, raw (UTF-8) and escaped (lowercase ``\\uXXXX``), with the rules whose
    pieces hold the character they fold to.
    """
    by_char: dict[str, Mask] = {}
    for piece, mask in by_piece.items():
        for char in set(piece):
            by_char[char] = by_char.get(char, 0) | mask
    escapes: dict[bytes, Mask] = {}
    for char, mask in by_char.items():
        for code in {ord(char.lower()), ord(char.upper())}:
            if code < 0x80:
                key = f"{code:02x}".encode()
                escapes[key] = escapes.get(key, 0) | mask
    specials: dict[bytes, Mask] = {}
    for special, folded in NON_ASCII_FOLDING_TO_ASCII.items():
        if folded in by_char:
            specials[special.encode()] = by_char[folded]
            specials[f"\\u{ord(special):04x}".encode()] = by_char[folded]
    return escapes, specials


def _hex_escape(data: bytes) -> str:
    return "".join(chr(b) if chr(b).isascii() and chr(b).isalnum() else f"\\x{b:02x}" for b in data)


def _hyperscan_scan(
    literals: dict[bytes, Mask],
    specials: dict[bytes, Mask],
    always: Mask,
    wakeable: Mask,
    escaped_mask: Callable[[bytes], Mask],
) -> Callable[[bytes], Mask] | None:
    try:
        import hyperscan  # noqa: PLC0415  (optional accelerator)
    except ImportError:
        return None
    # Pattern ids: the literals (caseless), then the escape start, then the special characters
    # (raw UTF-8 exact; their escapes caseless, for the hex digits' case).
    patterns = list(literals)
    masks = [literals[p] for p in patterns]
    flags = [hyperscan.HS_FLAG_CASELESS] * len(patterns)
    escape_id = len(patterns)
    patterns.append(_ESCAPE_START)
    masks.append(0)
    flags.append(0)
    for special, mask in specials.items():
        patterns.append(special)
        masks.append(mask)
        flags.append(hyperscan.HS_FLAG_CASELESS if special.startswith(b"\\") else 0)
    single = hyperscan.HS_FLAG_SINGLEMATCH  # each pattern reported at most once per scan
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=[_hex_escape(p).encode() for p in patterns],
        ids=list(range(len(patterns))),
        elements=len(patterns),
        flags=[f | single for f in flags],
    )
    database.scratch = hyperscan.Scratch(database)
    terminated = hyperscan.ScanTerminated
    scan = database.scan
    # The callback's state: [woken so far, whether an escape start was seen]. A list, not
    # nonlocal cells: one closure for the database's life, reset per message.
    state: list[int] = [0, 0]

    def on_match(pattern_id: int, start: int, end: int, match_flags: int, context: object) -> bool:
        if pattern_id == escape_id:
            state[1] = 1
            return False
        woken = state[0] | masks[pattern_id]
        state[0] = woken
        return woken == wakeable  # every rule awake: hs_scan stops and reports "terminated"

    def test(raw: bytes) -> Mask:
        state[0] = state[1] = 0
        try:
            scan(raw, match_event_handler=on_match)
        except terminated:
            return always | state[0]
        woken = state[0]
        if state[1]:
            woken |= escaped_mask(raw)
        return always | woken

    return test


def _ahocorasick_scan(
    literals: dict[bytes, Mask],
    specials: dict[bytes, Mask],
    always: Mask,
    wakeable: Mask,
    escaped_mask: Callable[[bytes], Mask],
) -> Callable[[bytes], Mask] | None:
    try:
        import ahocorasick_rs  # noqa: PLC0415  (optional accelerator)
    except ImportError:
        return None
    # The same patterns as Hyperscan's, searched in the lowercased message: the literals (lowercase
    # already), the escape start, and the special characters (their raw UTF-8, which lowercasing leaves
    # as it is, and their escapes, lowercase like the message). Overlapping matches: a literal that
    # overlaps another's occurrence is still found.
    patterns = [*literals, _ESCAPE_START, *(special.lower() for special in specials)]
    masks = [*literals.values(), 0, *specials.values()]
    escape_id = len(literals)
    find = ahocorasick_rs.BytesAhoCorasick(patterns).find_matches_as_indexes

    def test(raw: bytes) -> Mask:
        found = {index for index, _, _ in find(raw.lower(), overlapping=True)}
        woken = 0
        for index in found:
            woken |= masks[index]
        if escape_id in found and woken != wakeable:
            woken |= escaped_mask(raw)
        return always | woken

    return test


def _python_scan(
    literals: dict[bytes, Mask],
    escapes: dict[bytes, Mask],
    specials: dict[bytes, Mask],
    always: Mask,
    wakeable: Mask,
) -> Callable[[bytes], Mask]:
    # One regular expression over the lowercased message finds escapes of ASCII characters
    # (with their code) and the special characters; lowercasing only touches ASCII, so the
    # raw UTF-8 of a special character is found as it is, and hex digits are found lowercase.
    alternatives = [rb"\\u00([0-7][0-9a-f])"] + [re.escape(s) for s in sorted(specials)]
    exact = re.compile(b"|".join(alternatives)).finditer

    def escaped(low: bytes) -> Mask:
        mask = 0
        for found in exact(low):
            code = found.group(1)
            mask |= escapes.get(code, 0) if code is not None else specials[found.group()]
        return mask

    if len(literals) <= FEW_LITERALS:
        pairs = tuple(literals.items())

        def few(raw: bytes) -> Mask:
            low = raw.lower()
            woken = 0
            for literal, mask in pairs:
                if literal in low:
                    woken |= mask
                    if woken == wakeable:
                        return always | woken
            return always | woken | escaped(low)

        return few

    search = _trie(literals).search

    def many(raw: bytes) -> Mask:
        low = raw.lower()
        woken = 0
        found = search(low)
        # At most one literal starts at a position (none contains another), so restarting one
        # byte after each hit's start finds every literal present, overlapping ones included.
        while found is not None:
            woken |= literals[found.group()]
            if woken == wakeable:
                return always | woken
            found = search(low, found.start() + 1)
        return always | woken | escaped(low)

    return many


def _trie(literals: Iterable[bytes]) -> re.Pattern[bytes]:
    """One regular expression for a set of literals, factored by common prefixes.

    A flat alternation tries every literal at every position; the trie tries only those that
    share the bytes seen so far, several times faster with hundreds of literals. A set whose
    trie would nest deeper than :data:`_TRIE_DEPTH` branch points (only contrived sets do) is
    compiled as a flat alternation, longest first.
    """
    ordered = sorted(set(literals))
    try:
        return re.compile(_alternation(ordered, 0))
    except _TooDeep:
        return re.compile(b"|".join(re.escape(lit) for lit in sorted(ordered, key=len, reverse=True)))


_TRIE_DEPTH = 200


class _TooDeep(Exception):
    pass


def _alternation(literals: list[bytes], depth: int) -> bytes:
    """The trie of ``literals`` (non-empty, sorted) as a regular expression."""
    if len(literals) == 1:
        return re.escape(literals[0])
    if depth > _TRIE_DEPTH:
        raise _TooDeep
    groups: dict[int, list[bytes]] = {}
    for literal in literals:
        groups.setdefault(literal[0], []).append(literal[1:])
    branches: list[bytes] = []
    for byte, rests in groups.items():
        tails = [rest for rest in rests if rest]
        tail = _alternation(tails, depth + 1) if tails else b""
        if tails and len(tails) < len(rests):  # one literal ends here, others go on
            tail = b"(?:" + tail + b")?"
        branches.append(re.escape(bytes([byte])) + tail)
    return branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"
