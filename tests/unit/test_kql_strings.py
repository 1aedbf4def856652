"""The operator table (``rmmwatch.kql.operators``) reproduces KQL's string operators exactly (docs/semantics.md §5).

Every vector is checked through the functions compiled rules call: the table row's prepared
needle, and a compiled ``where`` condition with the operator and with its negation. It proves:
every ``has`` example of the specification, the edges the documentation leaves open (term
characters are Unicode letters and digits, combining marks delimit, a boundary is needed only
where the needle's end is a term character), ``has_cs``, ``hasprefix``/``hassuffix`` (a term
prefix / suffix, with the documentation's examples), ``contains``, ``startswith``, ``endswith``,
``=~`` and ``==`` vectors, each row both ways; that each row's prefilter requirement is sound
(a match contains the needle, up to case); that ``fold`` is length-preserving for every code
point and that ``NON_ASCII_FOLDING_TO_ASCII`` lists exactly the non-ASCII characters that fold to
ASCII; and, with hypothesis, that ``has`` equals a reference written from the definition.
"""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmmwatch.kql import strings
from rmmwatch.kql.compiler import compile_condition
from rmmwatch.kql.operators import HAS, STRING_OPERATOR_TABLE, STRING_OPERATORS, StringOperator
from rmmwatch.kql.schema import DEVICE_PROCESS_EVENTS
from rmmwatch.kql.syntax import Literal, Pos, unparse

DOTTED_CAPITAL_I = "\u0130"  # İ: simple lowercase is "i", Python's str.lower gives "i\u0307"
KELVIN = "\u212a"  # KELVIN SIGN: simple lowercase is ASCII "k"
ACUTE = "\u0301"  # COMBINING ACUTE ACCENT: category Mn, neither letter nor digit
CAPITAL_OMICRON = "\u039f"
CAPITAL_DELTA = "\u0394"
CAPITAL_SIGMA = "\u03a3"
SMALL_OMICRON = "\u03bf"
SMALL_DELTA = "\u03b4"
SMALL_SIGMA = "\u03c3"
ODOS_UPPER = CAPITAL_OMICRON + CAPITAL_DELTA + CAPITAL_OMICRON + CAPITAL_SIGMA  # "ΟΔΟΣ"
ODOS_LOWER = SMALL_OMICRON + SMALL_DELTA + SMALL_OMICRON + SMALL_SIGMA  # "οδοσ", medial sigma


Vector = tuple[str, str, str, bool]  # (operator, haystack, needle, expected)


def _vectors(operator: str, *cases: tuple[str, str, bool]) -> list[Vector]:
    """The vectors of one operator, each ``(haystack, needle, expected)``."""
    return [(operator, haystack, needle, expected) for haystack, needle, expected in cases]


def _case(haystack: str, needle: str, expected: bool) -> tuple[str, str, bool]:
    return haystack, needle, expected


def _param(vector: Vector) -> object:
    """One vector as a readable pytest case: ``'hay' has 'needle' -> True``."""
    operator, haystack, needle, expected = vector
    return pytest.param(*vector, id=f"{haystack!r} {operator} {needle!r} -> {expected}")


# -- has -----------------------------------------------------------------------------------

#: Every ``has`` example of the specification (docs/semantics.md).
SPEC_HAS_VECTORS = _vectors(
    "has",
    _case("North America", "america", True),
    _case("KustoExplorerQueryRun", "Explorer", False),
    _case("NetSupport Ltd", "netsupport", True),
    _case("NETSUPPORT LTD.", "netsupport", True),
    _case("NetSupport-Ltd", "netsupport", True),
    _case("netsupport_ltd", "netsupport", True),
    _case("NetSupportLtd", "netsupport", False),
    _case("MyNetSupport", "netsupport", False),
    _case("NetSupport1", "netsupport", False),
    _case("NetSupport\u00c4", "netsupport", False),
    _case("xa b", "a ", False),
    _case("a b", "a ", True),
    _case("x ab y", " a", False),
    _case("b .b-", " ", True),
    _case("anything", "", True),
)

#: The edges the documentation leaves open.
EDGE_HAS_VECTORS = _vectors(
    "has",
    # digits are term characters
    _case("abc123", "abc", False),
    _case("abc 123", "123", True),
    _case("client32.exe", "client32", True),
    _case("client32.exe", "client", False),
    _case("v1.2.3", "2", True),
    _case("x\u00b2", "x", False),  # superscript two is a number (No): part of the term
    _case("x\u0663", "x", False),  # ARABIC-INDIC DIGIT THREE (Nd)
    _case("x\u216b y", "x", False),  # ROMAN NUMERAL TWELVE (Nl)
    # Unicode letters are term characters
    _case("caf\u00e9 au lait", "cafe", False),
    _case("caf\u00e9-bar", "caf\u00e9", True),
    _case("caf\u00e9bar", "caf\u00e9", False),
    _case("\u00c9COLE normale", "\u00e9cole", True),
    _case("NetSupport\u00c4", "netsupport\u00e4", True),
    # CJK ideographs are letters (Lo): a run of them is one term
    _case("\u65e5\u672c\u8a9e", "\u65e5\u672c", False),
    _case("\u65e5\u672c \u8a9e", "\u65e5\u672c", True),
    _case("\u6771\u4eac-\u5927\u962a", "\u5927\u962a", True),
    # combining marks are not letters, so they delimit terms
    _case("cafe" + ACUTE, "cafe", True),
    _case("e" + ACUTE + "x", "x", True),
    _case("ab" + ACUTE + "c", "ab", True),
    # other non-alphanumerics delimit: symbols, emoji, punctuation, controls
    _case("a\u20acb", "b", True),
    _case("x\U0001f600netsupport", "netsupport", True),
    _case("tab\tnetsupport\n", "netsupport", True),
    _case('"NetSupport"', "netsupport", True),
    # simple case folding: U+0130 -> i and KELVIN SIGN -> k, both ways
    _case(DOTTED_CAPITAL_I + "stanbul", "istanbul", True),
    _case("ISTANBUL", DOTTED_CAPITAL_I + "stanbul", True),
    _case(KELVIN + "elvin", "kelvin", True),
    _case("KELVIN", KELVIN + "elvin", True),
    _case("x" + DOTTED_CAPITAL_I, "i", False),  # still a letter: "xi" is one term
    # empty haystack and needle longer than the haystack
    _case("", "", True),
    _case("", "x", False),
    _case("", " ", False),
    _case("net", "netsupport", False),
    _case("netsupport", "netsupport ltd", False),
    # only a later occurrence is at a boundary; occurrences overlap
    _case("netsupportx netsupport", "netsupport", True),
    _case("xnetsupport netsupportx", "netsupport", False),
    _case("aaa aa", "aa", True),
    _case("aaa", "aa", False),
    # needles with delimiters inside or at one end
    _case("NetSupport Ltd", "netsupport ltd", True),
    _case("NetSupport  Ltd", "netsupport ltd", False),
    _case("netsupport-ltd", "-ltd", True),
    _case("netsupport-ltdx", "-ltd", False),
    _case("a_b", "_", True),
    _case("ab", "_", False),
    _case("C:\\Program Files\\NetSupport\\client32.exe", "\\netsupport\\", True),
)


#: ``has_cs`` is the same term match, but case-sensitive (no folding at all).
HAS_CS_VECTORS = _vectors(
    "has_cs",
    _case("NetSupport Ltd", "NetSupport", True),
    _case("NetSupport Ltd", "netsupport", False),
    _case("NETSUPPORT LTD.", "NETSUPPORT", True),
    _case("NetSupportLtd", "NetSupport", False),
    _case("netsupport_ltd", "netsupport", True),
    _case(DOTTED_CAPITAL_I + "stanbul", "istanbul", False),
    _case(KELVIN + "elvin", "kelvin", False),
    _case(KELVIN + "elvin", KELVIN + "elvin", True),
    _case("\u00c9cole", "\u00e9cole", False),
    _case("xa b", "a ", False),
    _case("a b", "a ", True),
    _case("b .b-", " ", True),
    _case("", "", True),
)

#: ``contains`` is a case-insensitive substring test (never term-based).
CONTAINS_VECTORS = _vectors(
    "contains",
    _case("KustoExplorerQueryRun", "explorer", True),
    _case("NetSupportLtd", "NETSUPPORT", True),
    _case("MyNetSupport", "netsupport", True),
    _case("abc", "abcd", False),
    _case("abc", "", True),
    _case("", "", True),
    _case("", "a", False),
    _case(DOTTED_CAPITAL_I + "STANBUL", "ist", True),
    _case("ISTANBUL", DOTTED_CAPITAL_I + "st", True),
    _case(KELVIN + "ELVIN", "kel", True),
    _case("\u00c9COLE", "\u00e9co", True),
    _case("\u00c9COLE", "eco", False),
    _case("stra\u00dfe", "STRASSE", False),  # simple folding: no ß -> ss expansion
    _case("user_id=7", "_id", True),
    _case("100%", "0%", True),
)

#: ``startswith`` is a case-insensitive prefix test (not term-based).
STARTSWITH_VECTORS = _vectors(
    "startswith",
    _case("NetSupport Ltd", "netsup", True),
    _case("NETSUPPORT", "netsupport", True),
    _case("x NetSupport", "netsupport", False),
    _case(" NetSupport", "netsupport", False),
    _case("abc", "", True),
    _case("", "", True),
    _case("", "a", False),
    _case("ab", "abc", False),
    _case(DOTTED_CAPITAL_I + "stanbul", "is", True),
    _case(KELVIN + "elvin", "K", True),
)

#: ``endswith`` is a case-insensitive suffix test (not term-based).
ENDSWITH_VECTORS = _vectors(
    "endswith",
    _case("client32.exe", ".EXE", True),
    _case("CLIENT32.EXE", "32.exe", True),
    _case("exe.bak", "exe", False),
    _case("abc", "", True),
    _case("", "", True),
    _case("", "a", False),
    _case("bc", "abc", False),
    _case("x" + DOTTED_CAPITAL_I, "i", True),
    _case("WOR" + KELVIN, "ork", True),
)

#: ``=~`` compares simple-case-folded text for equality.
EQUALS_CI_VECTORS = _vectors(
    "=~",
    _case("SchTasks.exe", "schtasks.exe", True),
    _case("gpupdate.exe", "GPUPDATE.EXE", True),
    _case("a", "a ", False),
    _case(" a", "a", False),
    _case("", "", True),
    _case("", " ", False),
    _case(DOTTED_CAPITAL_I, "i", True),
    _case(DOTTED_CAPITAL_I, "I", True),
    _case(KELVIN, "k", True),
    _case("\u00c4", "\u00e4", True),
    _case("\u00c4", "a", False),
    _case("\u00df", "ss", False),
)

# -- hasprefix, hassuffix: learn.microsoft.com/kusto/query/hasprefix-operator, hassuffix-operator --

#: ``hasprefix``: the needle starts a term (a boundary before it, none after), case-insensitive.
HASPREFIX_VECTORS = _vectors(
    "hasprefix",
    _case("North America", "ame", True),
    _case("North America", "mer", False),
    _case("North America", "north am", True),
    _case("x-error", "err", True),
    _case("err or", "r o", False),
    _case("err or", "or", True),
    _case("NetSupportLtd", "netsupport", True),
    _case("MyNetSupport", "netsupport", False),
    _case("netsupport_ltd", "NETSUP", True),
    _case("client32.exe", "client", True),
    _case("client32.exe", "32", False),
    _case("client32.exe", ".ex", True),
    _case("caf\u00e9bar", "caf\u00e9", True),
    _case("x\u00e9cole", "\u00e9cole", False),
    _case("xa b", "a ", False),
    _case("a b", "a ", True),
    _case("b .b-", " ", True),
    _case(DOTTED_CAPITAL_I + "stanbul", "ist", True),
    _case(KELVIN + "elvin", "kel", True),
    _case("anything", "", True),
    _case("", "", True),
    _case("", "a", False),
)

#: ``hasprefix_cs``: the same term prefix, case-sensitive.
HASPREFIX_CS_VECTORS = _vectors(
    "hasprefix_cs",
    _case("North America", "Ame", True),
    _case("North America", "ame", False),
    _case("North America", "CA", False),
    _case("NetSupport Ltd", "Net", True),
    _case("MyNetSupport", "Net", False),
    _case(KELVIN + "elvin", "kel", False),
    _case("", "", True),
)

#: ``hassuffix``: the needle ends a term (a boundary after it, none before), case-insensitive.
HASSUFFIX_VECTORS = _vectors(
    "hassuffix",
    _case("North America", "ica", True),
    _case("North America", "americ", False),
    _case("x-error", "err", False),
    _case("x-error", "ROR", True),
    _case("err or", "r o", False),
    _case("err o", "r o", True),
    _case("MyNetSupport", "netsupport", True),
    _case("NetSupportLtd", "netsupport", False),
    _case("client32.exe", "32", True),
    _case("client32.exe", "client", False),
    _case("client32.exe", "EXE", True),
    _case("a_b", "_", True),
    _case("ab", "_", False),
    _case("x" + DOTTED_CAPITAL_I, "i", True),
    _case("WOR" + KELVIN, "ork", True),
    _case("anything", "", True),
    _case("", "x", False),
)

#: ``hassuffix_cs``: the same term suffix, case-sensitive.
HASSUFFIX_CS_VECTORS = _vectors(
    "hassuffix_cs",
    _case("North America", "ica", True),
    _case("North America", "icA", False),
    _case("MyNetSupport", "NetSupport", True),
    _case("MyNetSupport", "netsupport", False),
    _case("WOR" + KELVIN, "ork", False),
    _case("", "", True),
)

#: ``contains_cs``, ``startswith_cs``, ``endswith_cs``: the same tests without folding.
CASE_SENSITIVE_SUBSTRING_VECTORS = [
    *_vectors(
        "contains_cs",
        _case("KustoExplorerQueryRun", "Explorer", True),
        _case("KustoExplorerQueryRun", "explorer", False),
        _case("abc", "", True),
        _case(DOTTED_CAPITAL_I + "STANBUL", "ist", False),
        _case("\u00c9COLE", "\u00c9CO", True),
    ),
    *_vectors(
        "startswith_cs",
        _case("NetSupport Ltd", "NetSup", True),
        _case("NetSupport Ltd", "netsup", False),
        _case("", "", True),
        _case(KELVIN + "elvin", "K", False),
    ),
    *_vectors(
        "endswith_cs",
        _case("client32.exe", ".exe", True),
        _case("client32.exe", ".EXE", False),
        _case("bc", "abc", False),
        _case("WOR" + KELVIN, KELVIN, True),
    ),
]

#: ``==`` on strings: exact, case-sensitive equality (no folding).
EQUALS_VECTORS = _vectors(
    "==",
    _case("client32.exe", "client32.exe", True),
    _case("client32.exe", "Client32.exe", False),
    _case("a", "a ", False),
    _case("", "", True),
    _case("", " ", False),
    _case(DOTTED_CAPITAL_I, "i", False),
    _case(KELVIN, "k", False),
    _case("\u00c4", "\u00c4", True),
)

# -- every operator against every other ------------------------------------------------------

#: The operators of the matrix below, in pairs: each family caseless then case-sensitive.
MATRIX_OPERATORS = [
    *("has", "has_cs", "hasprefix", "hasprefix_cs", "hassuffix", "hassuffix_cs", "contains", "contains_cs"),
    *("startswith", "startswith_cs", "endswith", "endswith_cs", "=~", "=="),
]

#: For each (haystack, needle), every operator's answer (1 true, 0 false) in MATRIX_OPERATORS
#: order. Rows are chosen so that every operator's column differs from every other's in at
#: least two rows (checked below): a mutation turning one operator into another, or dropping
#: its case rule, fails many vectors.
MATRIX = [
    #                                     has  hasprefix hassuffix contains startswith endswith =~/==
    ("NetSupport Ltd", "netsupport", "10 10 10 10 10 00 00"),
    ("NetSupport Ltd", "Ltd", "11 11 11 11 00 11 00"),
    ("MyNetSupport", "netsupport", "00 00 10 10 00 10 00"),
    ("MyNetSupport", "NetSupport", "00 00 11 11 00 11 00"),
    ("NetSupportLtd", "NetSupport", "00 11 00 11 11 00 00"),
    ("client32.exe", "CLIENT32.EXE", "10 10 10 10 10 10 10"),
    ("client32.exe", "client32.exe", "11 11 11 11 11 11 11"),
    ("exe.bak", "exe", "11 11 11 11 11 00 00"),
    ("x-error", "rro", "00 00 00 11 00 00 00"),
    ("x-error", "ror", "00 00 11 11 00 11 00"),
    ("x-error", "x-err", "00 11 00 11 11 00 00"),
    ("x-error.log", "error", "11 11 11 11 00 00 00"),
    ("North America", "ame", "00 10 00 10 00 00 00"),
    ("North America", "Ame", "00 11 00 11 00 00 00"),
    ("ABC", "abc", "10 10 10 10 10 10 10"),
    (DOTTED_CAPITAL_I + "stanbul", "ist", "00 10 00 10 10 00 00"),
    ("WOR" + KELVIN, "ork", "00 00 10 10 00 10 00"),
    ("", "", "11 11 11 11 11 11 11"),
    ("abc", "", "11 11 11 11 11 11 00"),
]


def _matrix_vectors() -> list[Vector]:
    vectors: list[Vector] = []
    for haystack, needle, answers in MATRIX:
        bits = answers.replace(" ", "")
        assert len(bits) == len(MATRIX_OPERATORS)
        vectors += [(op, haystack, needle, bit == "1") for op, bit in zip(MATRIX_OPERATORS, bits, strict=True)]
    return vectors


MATRIX_VECTORS = _matrix_vectors()


def test_the_matrix_tells_every_operator_from_every_other() -> None:
    """The matrix covers every row of the table, and any two operators disagree on at least two of its rows."""
    assert sorted(MATRIX_OPERATORS) == sorted(row.name for row in STRING_OPERATOR_TABLE)
    columns = {op: [answers.replace(" ", "")[k] for _, _, answers in MATRIX] for k, op in enumerate(MATRIX_OPERATORS)}
    for a, b in itertools.combinations(MATRIX_OPERATORS, 2):
        assert sum(x != y for x, y in zip(columns[a], columns[b], strict=True)) >= 2, (a, b)


VECTORS: list[Vector] = [
    *SPEC_HAS_VECTORS,
    *EDGE_HAS_VECTORS,
    *HAS_CS_VECTORS,
    *HASPREFIX_VECTORS,
    *HASPREFIX_CS_VECTORS,
    *HASSUFFIX_VECTORS,
    *HASSUFFIX_CS_VECTORS,
    *CONTAINS_VECTORS,
    *STARTSWITH_VECTORS,
    *ENDSWITH_VECTORS,
    *CASE_SENSITIVE_SUBSTRING_VECTORS,
    *EQUALS_CI_VECTORS,
    *EQUALS_VECTORS,
    *MATRIX_VECTORS,
]


def _row(operator: str) -> StringOperator:
    row, negated = STRING_OPERATORS[operator]
    assert not negated
    return row


@pytest.mark.parametrize(("operator", "haystack", "needle", "expected"), [_param(v) for v in VECTORS])
def test_table_row_answers_its_vectors(operator: str, haystack: str, needle: str, expected: bool) -> None:
    """The row's prepared needle (the test compiled conditions call) answers each vector."""
    assert _row(operator).test(haystack, needle) is expected


def _kql_condition(operator: str, needle: str) -> str:
    return f"FileName {operator} {unparse(Literal(needle, 'string', Pos(1, 1)))}"


@pytest.mark.parametrize(("operator", "haystack", "needle", "expected"), [_param(v) for v in VECTORS])
def test_compiled_condition_and_its_negation_answer_each_vector(
    operator: str, haystack: str, needle: str, expected: bool
) -> None:
    """``where FileName <op> 'needle'`` keeps the row as the vector says, and the negated spelling does not."""
    row = _row(operator)
    positive, _ = compile_condition(_kql_condition(row.name, needle), DEVICE_PROCESS_EVENTS)
    negative, _ = compile_condition(_kql_condition(row.negation, needle), DEVICE_PROCESS_EVENTS)
    assert positive.evaluate({"FileName": haystack}) is expected
    assert negative.evaluate({"FileName": haystack}) is (not expected)
    assert positive.required == (frozenset({needle}) if needle else None)
    assert negative.required is None


@pytest.mark.parametrize("row", [pytest.param(row, id=row.name) for row in STRING_OPERATOR_TABLE])
def test_every_row_has_vectors_both_ways(row: StringOperator) -> None:
    """Each operator of the table has at least two vectors that hold and two that do not."""
    answers = [expected for operator, _, _, expected in VECTORS if operator == row.name]
    assert answers.count(True) >= 2
    assert answers.count(False) >= 2


def test_the_table_spells_each_operator_once() -> None:
    """No two rows share a spelling, and every row's negation maps back to it."""
    spellings = [name for row in STRING_OPERATOR_TABLE for name in (row.name, row.negation)]
    assert len(spellings) == len(set(spellings)) == len(STRING_OPERATORS)
    for row in STRING_OPERATOR_TABLE:
        assert STRING_OPERATORS[row.negation] == (row, True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("NetSupport-Ltd_x 1.2", ["NetSupport", "Ltd", "x", "1", "2"], id="delimiters split terms"),
        pytest.param("cafe\u0301x", ["cafe", "x"], id="a combining mark splits a term"),
        pytest.param("  ", [], id="only delimiters: no term"),
        pytest.param("", [], id="empty: no term"),
        pytest.param("NetSupport\u00c4", ["NetSupport\u00c4"], id="a non-ASCII letter joins the term"),
    ],
)
def test_terms(text: str, expected: list[str]) -> None:
    """``terms`` yields the maximal runs of letters and digits, in order."""
    assert list(strings.terms(text)) == expected


# -- folding over every code point -------------------------------------------------------------


@functools.cache
def _fold_table() -> tuple[tuple[int, ...], dict[str, str]]:
    """One pass over every code point: those whose fold is not one char, and non-ASCII -> ASCII folds."""
    not_one_char: list[int] = []
    to_ascii: dict[str, str] = {}
    for code in range(0x110000):
        char = chr(code)
        folded = strings.fold(char)
        if len(folded) != 1:
            not_one_char.append(code)
        elif code >= 0x80 and folded.isascii():
            to_ascii[char] = folded
    return tuple(not_one_char), to_ascii


def test_fold_is_length_preserving_for_every_code_point() -> None:
    """``fold`` maps every one of the 0x110000 code points to exactly one character."""
    not_one_char, _ = _fold_table()
    assert not_one_char == ()


def test_non_ascii_folding_to_ascii_is_exact() -> None:
    """``NON_ASCII_FOLDING_TO_ASCII`` is exactly the non-ASCII characters whose fold is ASCII."""
    _, to_ascii = _fold_table()
    assert to_ascii == strings.NON_ASCII_FOLDING_TO_ASCII
    assert to_ascii == {DOTTED_CAPITAL_I: "i", KELVIN: "k"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(DOTTED_CAPITAL_I + "STANBUL", "istanbul", id="U+0130 folds to plain i"),
        pytest.param("WOR" + KELVIN, "work", id="KELVIN SIGN folds to k"),
        pytest.param("NETSUPPORT LTD.", "netsupport ltd.", id="ASCII fast path"),
        pytest.param("\u00c9COLE", "\u00e9cole", id="Latin-1 letter"),
        pytest.param(CAPITAL_SIGMA, SMALL_SIGMA, id="a lone capital sigma"),
    ],
)
def test_fold(text: str, expected: str) -> None:
    """``fold`` is the simple one-to-one lowercase mapping."""
    assert strings.fold(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(ODOS_UPPER, id="word-final capital sigma"),
        pytest.param(ODOS_UPPER + " " + CAPITAL_OMICRON, id="word-final capital sigma before a space"),
    ],
)
def test_fold_is_per_character(text: str) -> None:
    """Folding a text folds each character on its own: no context-dependent mapping."""
    assert strings.fold(text) == "".join(strings.fold(char) for char in text)


@pytest.mark.parametrize(
    ("operator", "haystack", "needle"),
    [
        pytest.param("has", ODOS_UPPER + " " + CAPITAL_OMICRON, ODOS_LOWER, id="ODOS-greek has odos-greek"),
        pytest.param("contains", ODOS_UPPER, SMALL_OMICRON + SMALL_SIGMA, id="ODOS-greek contains os-greek"),
        pytest.param("endswith", ODOS_UPPER, SMALL_SIGMA, id="ODOS-greek endswith small sigma"),
        pytest.param("=~", ODOS_UPPER, ODOS_LOWER, id="ODOS-greek =~ odos-greek"),
    ],
)
def test_final_capital_sigma_matches_small_sigma(operator: str, haystack: str, needle: str) -> None:
    """A word-final capital sigma matches a small sigma case-insensitively, as anywhere else in a word."""
    assert _row(operator).test(haystack, needle) is True


# -- has against a reference written from the definition ------------------------------------

#: ASCII letters and digits, the delimiters ``_ - . space``, and the interesting non-ASCII:
#: é and Ä (letters), İ and KELVIN SIGN (fold to ASCII), a combining mark (a delimiter).
ALPHABET = ["a", "b", "A", "B", "i", "I", "k", "K", "1", "2", "_", "-", ".", " "]
ALPHABET += ["\u00e9", "\u00c9", "\u00c4", "\u00e4", DOTTED_CAPITAL_I, KELVIN, ACUTE]

texts = st.text(alphabet=st.sampled_from(ALPHABET), max_size=12)


def _swap_case(text: str) -> str:
    """Swap the case of each character that has a one-character opposite case (İ would become two)."""
    return "".join(char.swapcase() if len(char.swapcase()) == 1 else char for char in text)


@st.composite
def haystack_and_needle(draw: st.DrawFn) -> tuple[str, str]:
    """A haystack and a needle: random, or a slice of the haystack, possibly with its case swapped."""
    haystack = draw(texts)
    if haystack and draw(st.booleans()):
        start = draw(st.integers(0, len(haystack) - 1))
        end = draw(st.integers(start, len(haystack)))
        needle = haystack[start:end]
        if draw(st.booleans()):
            needle = _swap_case(needle)
    else:
        needle = draw(st.text(alphabet=st.sampled_from(ALPHABET), max_size=4))
    return haystack, needle


def _reference_fold(text: str) -> str:
    """Per-character simple lowercase: ``str.lower`` of one char, except U+0130 -> ``i``."""
    return "".join("i" if char == DOTTED_CAPITAL_I else char.lower() for char in text)


def _reference_is_term(char: str) -> bool:
    return char.isalpha() or char.isnumeric()


def _reference_has(haystack: str, needle: str, *, fold: bool) -> bool:
    """The definition, scanned position by position: boundaries only where the needle's end is a term char."""
    if fold:
        haystack, needle = _reference_fold(haystack), _reference_fold(needle)
    if not needle:
        return True
    size = len(needle)
    for start in range(len(haystack) - size + 1):
        end = start + size
        if haystack[start:end] != needle:
            continue
        if _reference_is_term(needle[0]) and start > 0 and _reference_is_term(haystack[start - 1]):
            continue
        if _reference_is_term(needle[-1]) and end < len(haystack) and _reference_is_term(haystack[end]):
            continue
        return True
    return False


def _reference_terms(text: str) -> list[str]:
    """Maximal runs of term characters."""
    return ["".join(run) for is_term, run in itertools.groupby(text, _reference_is_term) if is_term]


@settings(max_examples=600)
@given(haystack_and_needle())
def test_has_matches_the_reference(pair: tuple[str, str]) -> None:
    """``has`` answers like a position-by-position scan of the definition on folded text."""
    haystack, needle = pair
    assert HAS.test(haystack, needle) is _reference_has(haystack, needle, fold=True)


@settings(max_examples=600)
@given(haystack_and_needle())
def test_has_cs_matches_the_reference(pair: tuple[str, str]) -> None:
    """``has_cs`` answers like the same scan without folding."""
    haystack, needle = pair
    assert _row("has_cs").test(haystack, needle) is _reference_has(haystack, needle, fold=False)


TERM_ALPHABET = [c for c in ALPHABET if _reference_is_term(c)]


@st.composite
def haystack_and_term(draw: st.DrawFn) -> tuple[str, str]:
    """A haystack and a one-term needle: one of the haystack's terms (case swapped or not), or random."""
    haystack = draw(texts)
    present = _reference_terms(haystack)
    if bool(present) and draw(st.booleans()):
        needle = draw(st.sampled_from(present))
        if draw(st.booleans()):
            needle = _swap_case(needle)
    else:
        needle = draw(st.text(alphabet=st.sampled_from(TERM_ALPHABET), min_size=1, max_size=4))
    return haystack, needle


@settings(max_examples=600)
@given(haystack_and_term())
def test_has_of_a_single_term_is_term_membership(pair: tuple[str, str]) -> None:
    """For a one-term needle, ``has`` is exactly "the folded needle is a term of the folded haystack"."""
    haystack, needle = pair
    folded = _reference_fold(needle)
    assert _reference_terms(folded) == [folded]  # folding keeps a term one term
    assert HAS.test(haystack, needle) is (folded in _reference_terms(_reference_fold(haystack)))


@settings(max_examples=600)
@given(row=st.sampled_from(STRING_OPERATOR_TABLE), pair=haystack_and_needle())
def test_prefilter_requirement_of_every_row_is_sound(row: StringOperator, pair: tuple[str, str]) -> None:
    """Where a row requires its needle, every match contains it up to case: what the byte prefilter searches."""
    haystack, needle = pair
    required = row.required(needle)
    if row.test(haystack, needle) and required is not None:
        assert any(strings.fold(text) in strings.fold(haystack) for text in required)
