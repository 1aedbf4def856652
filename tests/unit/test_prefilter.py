"""The byte prefilter over many rules: which rules one scan wakes, for both engines.

Proves that a scan wakes every rule one of whose literals occurs (in any ASCII case), including
literals that overlap or contain one another; that an escape wakes exactly the rules holding the
escaped character, and that characters folding to ASCII (U+0130, U+212A) wake the rules holding
their folded letter; that rules without a literal are always awake and rules that can never
match never are; and that the Python engine (both its few-literal and its many-literal paths) and
Hyperscan give the same masks.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmmwatch.prefilter import FEW_LITERALS, Prefilter

ENGINES = ["python", "hyperscan", "ahocorasick"]

# A: anydesk, B: anydesk.com (contains A's literal), C: teamviewer, D: no literal, E: never true.
RULES = [frozenset({"AnyDesk"}), frozenset({"anydesk.com"}), frozenset({"TeamViewer"}), None, frozenset()]
A, B, C, D, E = (1 << i for i in range(5))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("message", "awake"),
    [
        pytest.param(b'{"x": "nothing here"}', D, id="no literal: only the rule without one"),
        pytest.param(b'{"x": "ANYDESK"}', A | B | D, id="a literal wakes the rules of the literals containing it"),
        pytest.param(b'{"x": "boot.net.AnyDesk.com"}', A | B | D, id="the longer literal"),
        pytest.param(b'{"x": "teamviewer"}', C | D, id="another vendor"),
        pytest.param(b'{"x": "anydesk teamviewer"}', A | B | C | D, id="two vendors in one message"),
        pytest.param(b'{"x": "\\u0027quoted\\u0027"}', D, id="an escape of a character no literal holds"),
        pytest.param(b'{"x": "x\\u002ey"}', B | D, id="an escaped dot: the rule whose literal has a dot"),
        pytest.param(b'{"x": "\\u0059"}', A | B | D, id="an escaped Y: the rules with a y, either case"),
        pytest.param(b'{"x": "\\u004E"}', A | B | D, id="an escaped N, upper-case hex digit"),
        pytest.param('{"x": "\u0130"}'.encode(), C | D, id="raw U+0130: the rules with an i"),
        pytest.param(b'{"x": "\\u212A"}', A | B | D, id="escaped KELVIN SIGN: the rules with a k"),
        pytest.param('{"x": "\u212a"}'.encode(), A | B | D, id="raw KELVIN SIGN"),
    ],
)
def test_which_rules_a_message_wakes(engine: str, message: bytes, awake: int) -> None:
    """The mask of one scan, case by case (rule E, whose condition can never hold, is never awake)."""
    prefilter = Prefilter(RULES, engine=engine)
    assert prefilter.scan(message) == awake
    assert prefilter.scan(message) & E == 0


def test_off_wakes_every_rule() -> None:
    """``off`` is the reference: every rule on every message."""
    assert Prefilter(RULES, engine="off").scan(b"{}") == A | B | C | D | E


def test_literals_that_contain_others_are_not_searched() -> None:
    """Only the shortest literal of a chain is searched; describe() names the engine and the counts."""
    prefilter = Prefilter([frozenset({"anydesk.com"}), frozenset({"anydesk"}), frozenset({"x anydesk y"})])
    assert prefilter.pieces == ("anydesk",)
    assert prefilter.describe().endswith("1 literal(s) for 3 rule(s) ('anydesk')")


def test_a_rule_without_a_searchable_piece_is_always_awake() -> None:
    """A literal made only of characters an encoder may escape cannot be searched: its rule is always awake."""
    prefilter = Prefilter([frozenset({"<>"}), frozenset({"anydesk"})], engine="python")
    assert prefilter.scan(b"{}") == 1
    assert "1 rule(s) without a literal" in prefilter.describe()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("count", [3, FEW_LITERALS + 10])
def test_overlapping_literals_are_all_found(engine: str, count: int) -> None:
    """'abc' and 'bcd' overlap in 'abcd': both rules wake, with few literals and with many."""
    filler = [frozenset({f"zz{i:03d}q"}) for i in range(count - 2)]
    prefilter = Prefilter([frozenset({"abc"}), frozenset({"bcd"}), *filler], engine=engine)
    assert prefilter.scan(b'{"x": "xABCDx"}') == 0b11
    assert prefilter.scan(b'{"x": "zz000q abcd"}') == 0b111


def test_a_trie_too_deep_falls_back_to_an_alternation() -> None:
    """Literals sharing a 300-byte prefix still compile (flat alternation) and are still found."""
    prefix = "x" * 300
    rules = [frozenset({prefix + c}) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    prefilter = Prefilter(rules, engine="python")
    assert prefilter.scan(f'{{"x": "{prefix}7"}}'.encode()) == 1 << 33


_ALPHABET = "ab.-kq"
_TEXT = ["a", "b", ".", "-", "k", "q", "A", "B", "K", "Q", "x", "\\u0041", "\\u002E", "\\u0027", "\u212a"]


@pytest.mark.parametrize("shortest", [1, 3], ids=["short literals (few, once covered)", "longer (many: the trie)"])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_engines_agree_and_never_miss_a_literal(shortest: int, data: st.DataObject) -> None:
    """Random literal sets (overlapping, containing one another) over random text: both engines wake the same
    rules, and every rule one of whose literals occurs (in any case) is awake."""
    literal = st.text(_ALPHABET, min_size=shortest, max_size=shortest + 2)
    rules = data.draw(st.lists(st.frozensets(literal, min_size=1, max_size=3), min_size=1, max_size=40))
    text = data.draw(st.lists(st.sampled_from(_TEXT), max_size=60))
    message = ('{"x": "' + "".join(text) + '"}').encode()
    prefilter = Prefilter(rules, engine="python")
    python = prefilter.scan(message)
    assert Prefilter(rules, engine="hyperscan").scan(message) == python
    assert Prefilter(rules, engine="ahocorasick").scan(message) == python
    low = message.lower()
    for index, required in enumerate(rules):
        if any(piece.encode() in low for piece in required):
            assert python >> index & 1, (required, message)
