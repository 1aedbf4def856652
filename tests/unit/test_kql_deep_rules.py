"""Deep rules load, or are refused at their spot: long ``or``/``and`` chains, deep nesting, deep YAML.

Packs of RMM tools list hundreds of names, so a rule may be a flat chain of thousands of
``or``-ed terms. It proves: a chain of 2000 ``has`` terms (``or``) or 2000 ``!has`` terms
(``and``) parses, compiles and evaluates (no recursion per term) with exactly the answers and
the prefilter strings of the equivalent ``has_any``; nesting within the parser's limit compiles,
and nesting beyond it (parentheses, calls, unary minus, dynamic arrays) is a ``KqlError`` that
names the limit and the line and column of the first construct past it, never a
``RecursionError``; a rule file nested deeper than the YAML limit is a ``RuleError`` with its
line and column, and ``rmmwatch rules check`` exits 2 on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from rmmwatch import cli
from rmmwatch.kql.compiler import compile_query
from rmmwatch.kql.errors import KqlError
from rmmwatch.kql.parser import MAX_NESTING
from rmmwatch.rules import MAX_YAML_DEPTH, RuleError, parse_rule

TABLE = "DeviceProcessEvents"
BY = " | summarize count() by DeviceId"
NAMES = [f"tool{k}" for k in range(2000)]

#: Values on which a 2000-name chain must answer as has_any does: each end and the middle of the
#: list, a name that is only a prefix or a longer term, case changes, and no name at all.
VALUES = [
    "tool0",
    "TOOL1999 agent",
    "x-tool1000-y",
    "tool2000",
    "tool10000",
    "mytool5",
    "tool",
    "",
    "netsupport client32.exe",
]


def _rule_yaml(query: str) -> str:
    return "id: deep\nname: deep\nquery: |\n" + "".join(f"  {line}\n" for line in query.splitlines())


LISTED = ", ".join(f"'{name}'" for name in NAMES)

#: (a chain over the 2000 names, the has_any form it equals, its answers on VALUES, its prefilter strings)
CHAINS = [
    pytest.param(
        " or ".join(f"FileName has '{name}'" for name in NAMES),
        f"FileName has_any ({LISTED})",
        [True, True, True, False, False, False, False, False, False],
        frozenset(NAMES),
        id="2000 or-ed has terms = has_any",
    ),
    pytest.param(
        "(" + " and ".join(f"FileName !has '{name}'" for name in NAMES) + ")",
        f"not(FileName has_any ({LISTED}))",
        [False, False, False, True, True, True, True, True, True],
        None,
        id="2000 and-ed !has terms = not(has_any)",
    ),
]


@pytest.mark.parametrize(("chain", "listed", "answers", "required"), CHAINS)
def test_a_two_thousand_term_chain_matches_exactly_as_its_has_any_form(
    chain: str, listed: str, answers: list[bool], required: frozenset[str] | None
) -> None:
    """A flat chain of 2000 terms compiles and answers, with the same prefilter strings, as ``has_any``."""
    chained = compile_query(f"{TABLE} | where {chain}{BY}")
    any_of = compile_query(f"{TABLE} | where {listed}{BY}")
    assert [chained.matches({"FileName": value}) for value in VALUES] == answers
    assert [any_of.matches({"FileName": value}) for value in VALUES] == answers
    assert chained.required == any_of.required == required


def test_a_rule_file_with_two_thousand_or_ed_terms_loads() -> None:
    """A rule file whose query ``or``s 2000 names loads, and its where matches the names."""
    chain = "\n  or ".join(f"FileName has '{name}'" for name in NAMES)
    rule = parse_rule(_rule_yaml(f"{TABLE}\n| where {chain}\n| summarize count() by DeviceId"), "deep.yaml")
    assert rule.query.matches({"FileName": "tool1234.exe"}) is True
    assert rule.query.matches({"FileName": "tool12345.exe"}) is False
    assert rule.query.required == frozenset(NAMES)


def _nested(opening: str, closing: str, depth: int) -> str:
    return opening * depth + "FileName has 'x'" + closing * depth


#: Nested constructs: how to build ``depth`` levels around a condition, the token that opens a
#: level, and how many levels the predicate opens before the first such token.
NESTINGS = [
    pytest.param(lambda depth: _nested("(", ")", depth), "(", 0, id="parentheses"),
    pytest.param(lambda depth: _nested("not(", ")", depth), "(", 0, id="not() calls"),
    pytest.param(lambda depth: "ProcessId == " + "-" * depth + "1", "-", 0, id="unary minus"),
    pytest.param(
        lambda depth: "FileName in (" + "dynamic([" * depth + "'x'" + "])" * depth + ")",
        "dynamic",
        1,
        id="dynamic arrays inside the in list",
    ),
]


@pytest.mark.parametrize(("build", "opening", "before"), NESTINGS)
def test_nesting_beyond_the_limit_is_refused_at_its_position(
    build: Callable[[int], str], opening: str, before: int
) -> None:
    """160 and 10000 levels raise ``KqlError`` 'nesting deeper than N' at the first construct past the limit."""
    for depth in (160, 10_000):
        predicate = build(depth)
        with pytest.raises(KqlError) as caught:
            compile_query(f"{TABLE}\n| where {predicate}{BY}")
        assert caught.value.message.startswith(f"nesting deeper than {MAX_NESTING} levels")
        index = -1
        for _ in range(MAX_NESTING + 1 - before):
            index = predicate.index(opening, index + 1)
        assert (caught.value.line, caught.value.column) == (2, len("| where ") + index + 1)


def test_nesting_at_the_limit_compiles() -> None:
    """Exactly ``MAX_NESTING`` levels of parentheses, ``not()`` or unary minus compile and evaluate."""
    parens = compile_query(f"{TABLE} | where {_nested('(', ')', MAX_NESTING)}{BY}")
    assert parens.matches({"FileName": "x"}) is True
    nots = compile_query(f"{TABLE} | where {_nested('not(', ')', MAX_NESTING)}{BY}")
    assert nots.matches({"FileName": "x"}) is (MAX_NESTING % 2 == 0)
    minus = compile_query(f"{TABLE} | where ProcessId == {'-' * MAX_NESTING}1{BY}")
    assert minus.matches({"ProcessId": (-1) ** MAX_NESTING}) is True


def test_deep_nesting_in_a_rule_file_names_the_file_line_and_column() -> None:
    """A rule whose query nests 160 parentheses on its third line is a ``RuleError`` at that spot."""
    query = f"{TABLE}\n| where FileName has 'a'\n| where {_nested('(', ')', 160)}{BY}"
    with pytest.raises(RuleError) as caught:
        parse_rule(_rule_yaml(query), "deep.yaml")
    assert f"nesting deeper than {MAX_NESTING} levels" in caught.value.message
    # the query starts on file line 4, indented by two; the 101st '(' is past "| where " plus 100
    assert (caught.value.line, caught.value.column) == (6, 2 + len("| where ") + MAX_NESTING + 1)


DEEP_YAML = "id: deep\nname: deep\nquery: " + "[" * 10_000 + "\n"


def test_deeply_nested_yaml_is_a_rule_error_with_line_and_column() -> None:
    """10000 nested ``[`` in a rule file raise ``RuleError`` at the first level past the limit."""
    with pytest.raises(RuleError) as caught:
        parse_rule(DEEP_YAML, "deep.yaml")
    assert f"nesting deeper than {MAX_YAML_DEPTH} levels" in caught.value.message
    # the document is level 1 and the query's sequences 2, 3, ...: level MAX+1 is the MAX-th '['
    assert (caught.value.line, caught.value.column) == (3, len("query: ") + MAX_YAML_DEPTH)


def test_yaml_nested_within_the_limit_is_composed() -> None:
    """Nesting exactly at the YAML limit reaches the rule checks (here: query must be a string)."""
    body = "id: deep\nname: deep\nquery: " + "[" * (MAX_YAML_DEPTH - 1) + "]" * (MAX_YAML_DEPTH - 1) + "\n"
    with pytest.raises(RuleError) as caught:
        parse_rule(body, "deep.yaml")
    assert caught.value.message == "query must be a string"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(DEEP_YAML, f"invalid YAML: nesting deeper than {MAX_YAML_DEPTH} levels", id="deep YAML"),
        pytest.param(
            _rule_yaml(f"{TABLE}\n| where {_nested('(', ')', 160)}{BY}"),
            f"KQL: nesting deeper than {MAX_NESTING} levels",
            id="deep KQL",
        ),
    ],
)
def test_rules_check_exits_2_on_a_too_deep_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    """``rmmwatch rules check`` on a too-deep rule prints file:line:column and the limit, and exits 2."""
    path = tmp_path / "deep.yaml"
    path.write_text(body)
    assert cli.main(["rules", "check", str(path)]) == 2
    stderr = capsys.readouterr().err
    assert f"{path}:" in stderr
    assert message in stderr
