"""The KQL front end: ``tokenize``, ``parse`` and ``compile_query`` accept the subset and refuse the rest.

It proves: the seed hunting query (docs/semantics.md §1) parses into the expected tree and
compiles to a 5-day window, a DeviceId/DeviceName group, its four aggregates and the
prefilter string ``netsupport``; every construct of the subset parses and compiles (the
normalised text of each condition is checked, so precedence and operator spelling are
proved too); ``summarize`` names its outputs as KQL does; and every refused construct
raises a ``KqlError`` that names it and points at its exact line and column, on any line.
"""

from __future__ import annotations

import pytest

from rmmwatch.kql.compiled import MAKE_SET_MAX, CompiledQuery
from rmmwatch.kql.compiler import compile_query
from rmmwatch.kql.datetimes import (
    TICKS_PER_DAY,
    TICKS_PER_HOUR,
    TICKS_PER_MILLISECOND,
    TICKS_PER_MINUTE,
    TICKS_PER_SECOND,
    parse_datetime,
)
from rmmwatch.kql.errors import KqlError
from rmmwatch.kql.lexer import tokenize
from rmmwatch.kql.parser import parse
from rmmwatch.kql.syntax import Between, Let, Name, Summarize, Where

SEED_QUERY = """let Time_start = now(-5d);
let Time_end = now();
//
DeviceProcessEvents
| where Timestamp between (Time_start..Time_end)
| where ProcessVersionInfoCompanyName has 'netsupport'
| summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp),
  Report=make_set(ReportId), Count=count() by DeviceId, DeviceName"""

TABLE = "DeviceProcessEvents"
BY = " | summarize count() by DeviceId"


def where(predicate: str) -> CompiledQuery:
    """Compile ``DeviceProcessEvents | where <predicate> | summarize count() by DeviceId``."""
    return compile_query(f"{TABLE} | where {predicate}{BY}")


# -- the seed ------------------------------------------------------------------------------------


def test_seed_query_parses_into_lets_table_and_three_operators() -> None:
    """The seed parses: two lets, the table, two wheres and a final summarize."""
    query = parse(SEED_QUERY)
    assert [(let.name, type(let)) for let in query.lets] == [("Time_start", Let), ("Time_end", Let)]
    assert query.table == Name("DeviceProcessEvents", query.table.pos)
    assert (query.table.pos.line, query.table.pos.column) == (4, 1)
    assert [type(op) for op in query.operators] == [Where, Where, Summarize]
    first = query.operators[0]
    assert isinstance(first, Where)
    assert isinstance(first.predicate, Between)
    summarize = query.operators[2]
    assert isinstance(summarize, Summarize)
    assert [(a.name, a.func) for a in summarize.aggregates] == [
        ("FirstSeen", "min"),
        ("LastSeen", "max"),
        ("Report", "make_set"),
        ("Count", "count"),
    ]
    assert [name.name for name in summarize.by] == ["DeviceId", "DeviceName"]


def test_seed_query_compiles_to_window_group_aggregates_and_prefilter() -> None:
    """The seed compiles to now-5d..now, by DeviceId, DeviceName, min/max/make_set/count, requiring 'netsupport'."""
    query = compile_query(SEED_QUERY)
    assert query.table == "DeviceProcessEvents"
    assert query.category == "AdvancedHunting-DeviceProcessEvents"
    assert query.window.low == -5 * TICKS_PER_DAY == -4_320_000_000_000
    assert query.window.high == 0
    assert query.group_by == ("DeviceId", "DeviceName")
    assert query.group_by_types == ("string", "string")
    assert [(a.name, a.func, a.column) for a in query.aggregates] == [
        ("FirstSeen", "min", "Timestamp"),
        ("LastSeen", "max", "Timestamp"),
        ("Report", "make_set", "ReportId"),
        ("Count", "count", None),
    ]
    assert query.aggregates[2].size == MAKE_SET_MAX
    assert query.required == frozenset({"netsupport"})
    assert query.condition_texts == ("ProcessVersionInfoCompanyName has 'netsupport'",)
    assert query.output_columns() == ("DeviceId", "DeviceName", "FirstSeen", "LastSeen", "Report", "Count")
    assert query.condition_columns == {"ProcessVersionInfoCompanyName"}
    assert query.columns == {"Timestamp", "ProcessVersionInfoCompanyName", "DeviceId", "DeviceName", "ReportId"}


# -- the lexer -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        pytest.param("!has", "op", "!has", id="!has is one operator"),
        pytest.param("!has_cs", "op", "!has_cs", id="!has_cs is one operator"),
        pytest.param("in~", "op", "in~", id="in~ is one operator"),
        pytest.param("!in~", "op", "!in~", id="!in~ is one operator"),
        pytest.param("!in", "op", "!in", id="!in is one operator"),
        pytest.param("=~", "op", "=~", id="=~"),
        pytest.param("!~", "op", "!~", id="!~"),
        pytest.param("<>", "op", "<>", id="<>"),
        pytest.param("..", "op", "..", id="the between range"),
        pytest.param("5d", "timespan", 5 * TICKS_PER_DAY, id="5d"),
        pytest.param("2h", "timespan", 2 * TICKS_PER_HOUR, id="2h"),
        pytest.param("30m", "timespan", 30 * TICKS_PER_MINUTE, id="30m"),
        pytest.param("45s", "timespan", 45 * TICKS_PER_SECOND, id="45s"),
        pytest.param("10ms", "timespan", 10 * TICKS_PER_MILLISECOND, id="10ms"),
        pytest.param("1.5h", "timespan", 90 * TICKS_PER_MINUTE, id="1.5h"),
        pytest.param("timespan(1d)", "timespan", TICKS_PER_DAY, id="timespan(1d)"),
        pytest.param(
            "datetime(2026-01-01 10:00)", "datetime", parse_datetime("2026-01-01T10:00:00Z"), id="datetime(...) raw"
        ),
        pytest.param("datetime(null)", "datetime", None, id="datetime(null)"),
        pytest.param("42", "number", 42, id="a long"),
        pytest.param("2.5", "number", 2.5, id="a real"),
        pytest.param("1e3", "number", 1000.0, id="an exponent makes a real"),
        pytest.param("'it\\'s'", "string", "it's", id="single quotes with an escape"),
        pytest.param('"a\\\\b\\n"', "string", "a\\b\n", id="double quotes with escapes"),
        pytest.param('@"C:\\Temp"', "string", "C:\\Temp", id="verbatim string keeps backslashes"),
        pytest.param("@'it''s'", "string", "it's", id="verbatim string doubles its quote"),
        pytest.param("h'secret'", "string", "secret", id="obfuscated string"),
        pytest.param("```two\nlines```", "string", "two\nlines", id="multi-line string"),
        pytest.param('"http://x"', "string", "http://x", id="// inside a string is not a comment"),
        pytest.param("Process_Id2", "ident", "Process_Id2", id="an identifier"),
    ],
)
def test_tokenize_single_token(text: str, kind: str, value: object) -> None:
    """Each lexeme becomes one token of the right kind and value, then end of query."""
    tokens = tokenize(text)
    assert [(t.kind, t.value) for t in tokens] == [(kind, value), ("eof", None)]


def test_tokenize_positions_skip_comments_and_count_lines() -> None:
    """Comments are skipped; positions are 1-based (line, column), across lines."""
    tokens = tokenize("// header\nT\n  | project-away X // trailing\n| where")
    assert [(t.kind, t.text, t.pos.line, t.pos.column) for t in tokens] == [
        ("ident", "T", 2, 1),
        ("op", "|", 3, 3),
        ("ident", "project-away", 3, 5),
        ("ident", "X", 3, 18),
        ("op", "|", 4, 1),
        ("ident", "where", 4, 3),
        ("eof", "", 4, 8),
    ]


# -- constructs of the subset ---------------------------------------------------------------------


def _compiles(predicate: str, *texts: str) -> object:
    return pytest.param(predicate, texts, id=predicate)


@pytest.mark.parametrize(
    ("predicate", "condition_texts"),
    [
        _compiles("ProcessId between (1 .. 5)", "ProcessId between (1 .. 5)"),
        _compiles("ProcessId !between (1 .. 5)", "ProcessId !between (1 .. 5)"),
        _compiles("ProcessId < 5", "ProcessId < 5"),
        _compiles("ProcessId <= 5", "ProcessId <= 5"),
        _compiles("ProcessId > 5", "ProcessId > 5"),
        _compiles("ProcessId >= 5", "ProcessId >= 5"),
        _compiles("ProcessId == 5", "ProcessId == 5"),
        _compiles("ProcessId != 5", "ProcessId != 5"),
        _compiles("ProcessId <> 5", "ProcessId != 5"),
        _compiles("5 < ProcessId", "5 < ProcessId"),
        _compiles("FileSize > 1.5", "FileSize > 1.5"),
        _compiles('FileName has "x"', "FileName has 'x'"),
        _compiles('FileName !has "x"', "FileName !has 'x'"),
        _compiles('FileName has_cs "X"', "FileName has_cs 'X'"),
        _compiles('FileName !has_cs "X"', "FileName !has_cs 'X'"),
        _compiles('FileName has_any ("a", "b")', "FileName has_any ('a', 'b')"),
        _compiles('FileName has_all ("a", "b")', "FileName has_all ('a', 'b')"),
        _compiles('FileName has_any (dynamic(["a", "b"]))', "FileName has_any (dynamic(['a', 'b']))"),
        _compiles('FileName contains "x"', "FileName contains 'x'"),
        _compiles('FileName !contains "x"', "FileName !contains 'x'"),
        _compiles('FileName contains_cs "x"', "FileName contains_cs 'x'"),
        _compiles('FileName !contains_cs "x"', "FileName !contains_cs 'x'"),
        _compiles('FileName startswith "x"', "FileName startswith 'x'"),
        _compiles('FileName !startswith "x"', "FileName !startswith 'x'"),
        _compiles('FileName startswith_cs "x"', "FileName startswith_cs 'x'"),
        _compiles('FileName !startswith_cs "x"', "FileName !startswith_cs 'x'"),
        _compiles('FileName endswith "x"', "FileName endswith 'x'"),
        _compiles('FileName !endswith "x"', "FileName !endswith 'x'"),
        _compiles('FileName endswith_cs "x"', "FileName endswith_cs 'x'"),
        _compiles('FileName !endswith_cs "x"', "FileName !endswith_cs 'x'"),
        _compiles('FileName hasprefix "x"', "FileName hasprefix 'x'"),
        _compiles('FileName !hasprefix "x"', "FileName !hasprefix 'x'"),
        _compiles('FileName hasprefix_cs "x"', "FileName hasprefix_cs 'x'"),
        _compiles('FileName !hasprefix_cs "x"', "FileName !hasprefix_cs 'x'"),
        _compiles('FileName hassuffix "x"', "FileName hassuffix 'x'"),
        _compiles('FileName !hassuffix "x"', "FileName !hassuffix 'x'"),
        _compiles('FileName hassuffix_cs "x"', "FileName hassuffix_cs 'x'"),
        _compiles('FileName !hassuffix_cs "x"', "FileName !hassuffix_cs 'x'"),
        _compiles('FileName == "x"', "FileName == 'x'"),
        _compiles('FileName != "x"', "FileName != 'x'"),
        _compiles('FileName =~ "x"', "FileName =~ 'x'"),
        _compiles("ProcessId in (1, 2)", "ProcessId in (1, 2)"),
        _compiles("ProcessId in (-1, 2)", "ProcessId in (-1, 2)"),
        _compiles("ProcessId !in (1, 2)", "ProcessId !in (1, 2)"),
        _compiles('FileName in ("a", "b")', "FileName in ('a', 'b')"),
        _compiles('FileName !in ("a")', "FileName !in ('a')"),
        _compiles('FileName in~ ("A")', "FileName in~ ('A')"),
        _compiles('FileName !in~ ("A")', "FileName !in~ ('A')"),
        _compiles('FileName in (pack_array("a", "b"))', "FileName in (dynamic(['a', 'b']))"),
        _compiles("isempty(FileName)", "isempty(FileName)"),
        _compiles("isnotempty(FileName)", "isnotempty(FileName)"),
        _compiles("isnull(ProcessId)", "isnull(ProcessId)"),
        _compiles("isnotnull(ProcessId)", "isnotnull(ProcessId)"),
        _compiles("IsProcessRemoteSession", "IsProcessRemoteSession"),
        _compiles("IsProcessRemoteSession == true", "IsProcessRemoteSession == true"),
        _compiles('AdditionalFields has "x"', "AdditionalFields has 'x'"),
        _compiles('FileName has "a" and FileName has "b"', "FileName has 'a'", "FileName has 'b'"),
        _compiles('FileName has "a" or FileName has "b"', "(FileName has 'a' or FileName has 'b')"),
        _compiles(
            'FileName has "a" or FileName has "b" or FileName has "c"',
            "(FileName has 'a' or FileName has 'b' or FileName has 'c')",
        ),
        _compiles(
            '(FileName has "a" or FileName has "b") or FileName has "c"',
            "((FileName has 'a' or FileName has 'b') or FileName has 'c')",
        ),
        _compiles(
            'FileName has "a" and (FileName has "b" and FileName has "c")',
            "FileName has 'a'",
            "FileName has 'b'",
            "FileName has 'c'",
        ),
        _compiles('not(FileName has "a")', "not(FileName has 'a')"),
        _compiles(
            'FileName has "a" or FileName has "b" and ProcessId > 1',
            "(FileName has 'a' or (FileName has 'b' and ProcessId > 1))",
        ),
        _compiles(
            '(FileName has "a" or FileName has "b") and ProcessId > 1',
            "(FileName has 'a' or FileName has 'b')",
            "ProcessId > 1",
        ),
        _compiles("Timestamp > datetime(2026-01-01)", "Timestamp > datetime(2026-01-01T00:00:00.0000000Z)"),
        _compiles(
            "Timestamp between (datetime(2026-01-01) .. 1d)",
            "Timestamp between (datetime(2026-01-01T00:00:00.0000000Z) .. 1d)",
        ),
        _compiles("FileName has @'C:\\x'", "FileName has 'C:\\\\x'"),
        _compiles("FileName has 'it\\'s'", "FileName has 'it\\'s'"),
        _compiles('FileName has h"secret"', "FileName has 'secret'"),
        _compiles("true", "true"),
    ],
)
def test_where_construct_compiles(predicate: str, condition_texts: tuple[str, ...]) -> None:
    """Each supported where construct compiles; its normalised text shows how it was parsed."""
    assert where(predicate).condition_texts == condition_texts


def test_not_equals_ci_compiles() -> None:
    """``!~`` (case-insensitive inequality, docs/semantics.md §5) compiles like its ``=~`` counterpart."""
    assert where('FileName !~ "x"').condition_texts == ("FileName !~ 'x'",)


def test_filter_is_where() -> None:
    """``| filter`` is KQL's synonym of ``| where``."""
    assert compile_query(f'{TABLE} | filter FileName has "x"{BY}').condition_texts == ("FileName has 'x'",)


@pytest.mark.parametrize(
    ("lets", "condition", "low", "high"),
    [
        pytest.param("let a = now(-5d); let b = now();", "Timestamp between (a .. b)", -5 * TICKS_PER_DAY, 0, id="now"),
        pytest.param("let a = ago(5d);", "Timestamp between (a .. now())", -5 * TICKS_PER_DAY, 0, id="ago"),
        pytest.param("let a = now() - 5d;", "Timestamp >= a", -5 * TICKS_PER_DAY, None, id="now() - 5d"),
        pytest.param("let span = 2h;", "Timestamp >= ago(span)", -2 * TICKS_PER_HOUR, None, id="a timespan let"),
        pytest.param("", "Timestamp >= ago(1d)", -TICKS_PER_DAY, None, id="ago(1d)"),
        pytest.param("", "Timestamp >= ago(2h)", -2 * TICKS_PER_HOUR, None, id="ago(2h)"),
        pytest.param("", "Timestamp >= ago(30m)", -30 * TICKS_PER_MINUTE, None, id="ago(30m)"),
        pytest.param("", "Timestamp >= ago(45s)", -45 * TICKS_PER_SECOND, None, id="ago(45s)"),
        pytest.param("", "Timestamp >= ago(500ms)", -500 * TICKS_PER_MILLISECOND, None, id="ago(500ms)"),
        pytest.param("", "Timestamp <= now(1h)", None, TICKS_PER_HOUR, id="now(1h) in the future"),
        pytest.param(
            "", "Timestamp between (ago(5d) .. 1d)", -5 * TICKS_PER_DAY, -4 * TICKS_PER_DAY, id="between a..span"
        ),
    ],
)
def test_let_and_now_build_the_window(lets: str, condition: str, low: int | None, high: int | None) -> None:
    """``let`` with now()/ago()/timespans and the relative bounds on Timestamp become the window."""
    query = compile_query(f"{lets}\n{TABLE} | where {condition}{BY}")
    assert (query.window.low, query.window.high) == (low, high)
    assert query.conditions == ()


def test_let_datetime_is_an_absolute_condition() -> None:
    """A ``let`` bound to ``datetime(...)`` is a constant: an ordinary condition, not a window."""
    query = compile_query(f"let since = datetime(2026-01-01);\n{TABLE} | where Timestamp > since{BY}")
    assert (query.window.low, query.window.high) == (None, None)
    assert query.condition_texts == ("Timestamp > since",)


def test_extend_of_literals_becomes_constants() -> None:
    """``extend`` of string/long/bool/datetime/timespan literals binds constants usable after ``by``."""
    query = compile_query(
        f"{TABLE} | extend Source = 'rmm', Weight = 2, Flag = true, When = datetime(2026-01-01), Span = 1h"
        " | summarize count() by Source, DeviceId"
    )
    assert query.constants == {
        "Source": "rmm",
        "Weight": 2,
        "Flag": True,
        "When": parse_datetime("2026-01-01"),
        "Span": TICKS_PER_HOUR,
    }
    assert query.group_by == ("Source", "DeviceId")
    assert query.group_by_types == ("string", "string")
    assert query.group_key({"DeviceId": "d"}) == ("rmm", "d")


@pytest.mark.parametrize(
    ("aggregates", "outputs", "funcs"),
    [
        pytest.param("count()", ("count_",), ("count",), id="count() -> count_"),
        pytest.param("countif(FileName has 'x')", ("countif_",), ("countif",), id="countif() -> countif_"),
        pytest.param("min(Timestamp)", ("min_Timestamp",), ("min",), id="min(X) -> min_X"),
        pytest.param("max(ProcessId)", ("max_ProcessId",), ("max",), id="max(X) -> max_X"),
        pytest.param("make_set(ReportId)", ("set_ReportId",), ("make_set",), id="make_set(X) -> set_X"),
        pytest.param("make_set(FileName, 10)", ("set_FileName",), ("make_set",), id="make_set(X, size)"),
        pytest.param("dcount(DeviceName)", ("dcount_DeviceName",), ("dcount",), id="dcount(X) -> dcount_X"),
        pytest.param("dcount(FileName, 2)", ("dcount_FileName",), ("dcount",), id="dcount(X, accuracy)"),
        pytest.param("C = count(), F = min(ProcessCreationTime)", ("C", "F"), ("count", "min"), id="named outputs"),
    ],
)
def test_summarize_aggregates_and_default_names(
    aggregates: str, outputs: tuple[str, ...], funcs: tuple[str, ...]
) -> None:
    """``summarize`` supports count/countif/min/max/make_set/dcount and names outputs as KQL does."""
    query = compile_query(f"{TABLE} | summarize {aggregates} by DeviceId")
    assert query.output_columns() == ("DeviceId", *outputs)
    assert tuple(a.func for a in query.aggregates) == funcs


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        pytest.param("10", 10, id="an explicit size"),
        pytest.param(str(MAKE_SET_MAX + 1), MAKE_SET_MAX, id="capped at the maximum"),
    ],
)
def test_make_set_size(size: str, expected: int) -> None:
    """``make_set(X, size)`` keeps its size, capped at KQL's maximum 1,048,576."""
    query = compile_query(f"{TABLE} | summarize make_set(ReportId, {size}) by DeviceId")
    assert query.aggregates[0].size == expected


def test_summarize_without_by_is_one_group() -> None:
    """``summarize count()`` with no ``by`` has one group and an empty key."""
    query = compile_query(f"{TABLE} | summarize count()")
    assert query.group_by == ()
    assert query.group_key({}) == ()


# -- refused queries ------------------------------------------------------------------------------------


def _at(query: str, marker: str, occurrence: int = 1) -> tuple[int, int]:
    """(line, column), 1-based, of the n-th occurrence of ``marker`` in ``query``."""
    index = -1
    for _ in range(occurrence):
        index = query.index(marker, index + 1)
    line = query.count("\n", 0, index) + 1
    column = index - (query.rfind("\n", 0, index) + 1) + 1
    return line, column


def _refused(query: str, message: str, marker: str, occurrence: int = 1, *, name: str) -> object:
    return pytest.param(query, message, _at(query, marker, occurrence), id=name)


W = f"{TABLE} | where "

REFUSED = [
    _refused(f"{TABLE} | project FileName", "unsupported tabular operator 'project'", "project", name="| project"),
    _refused(f"{TABLE} | join (X) on DeviceId", "unsupported tabular operator 'join'", "join", name="| join"),
    _refused(f"{TABLE} | take 10", "unsupported tabular operator 'take'", "take", name="| take"),
    _refused(f"{TABLE} | foo", "unknown tabular operator 'foo'", "foo", name="| unknown operator"),
    _refused(W + 'FileName matches regex "a"' + BY, "unsupported operator 'matches'", "matches", name="matches regex"),
    _refused(W + 'FileName !has_any ("a")' + BY, "unsupported operator '!has_any'", "!has_any", name="!has_any"),
    _refused(W + 'tolower(FileName) == "a"' + BY, "unsupported function 'tolower'", "tolower", name="tolower(X)"),
    _refused(W + "strlen(FileName) > 3" + BY, "unsupported function 'strlen'", "strlen", name="strlen(X)"),
    _refused(
        W + 'ProcessVersionInfoCompanyNam has "x"' + BY,
        "unknown column or name 'ProcessVersionInfoCompanyNam'; did you mean 'ProcessVersionInfoCompanyName'?",
        "ProcessVersionInfoCompanyNam",
        name="unknown column suggests the close match",
    ),
    _refused(W + "ago > 1" + BY, "ago is a function: write ago()", "ago", name="ago without parentheses"),
    _refused(
        W + 'Timestamp > ago(1h) or FileName has "x"' + BY,
        "now()/ago() may only bound Timestamp in a top-level where condition",
        "ago",
        name="ago() inside an or",
    ),
    _refused(
        W + "not(Timestamp > ago(1h))" + BY,
        "now()/ago() may only bound Timestamp in a top-level where condition",
        "ago",
        name="ago() inside not()",
    ),
    _refused(
        W + "ProcessCreationTime > ago(1h)" + BY,
        "now()/ago() may only bound Timestamp in a top-level where condition",
        "ago",
        name="ago() on another datetime column",
    ),
    _refused(
        W + "Timestamp !between (ago(1d) .. now())" + BY,
        "!between with now()/ago() is not supported",
        "!between",
        name="!between with now()",
    ),
    _refused(W + "Timestamp == now()" + BY, "Timestamp == now() is not a window", "==", name="Timestamp == now()"),
    _refused(
        W + "Timestamp between (datetime(2026-01-01) .. now())" + BY,
        "mixing an absolute datetime and now() in one between is not supported",
        "datetime",
        name="between an absolute datetime and now()",
    ),
    _refused(
        f"{TABLE} | summarize count() by DeviceId | where count_ > 1",
        "operators after summarize are not supported",
        "where",
        name="where after summarize",
    ),
    _refused(
        f"{TABLE} | where FileName has 'x'",
        "the query must end with '| summarize ... by ...'",
        "where",
        name="no summarize",
    ),
    _refused(TABLE, "the query must end with '| summarize ... by ...'", TABLE, name="a bare table"),
    _refused(
        f"{TABLE} | summarize make_list(FileName) by DeviceId",
        "unsupported aggregation 'make_list'",
        "make_list",
        name="make_list(X)",
    ),
    _refused(
        f"{TABLE} | summarize min(ProcessCommandLine) by DeviceId",
        "min() over a string column is not supported",
        "ProcessCommandLine",
        name="min over strings",
    ),
    _refused(
        f"{TABLE} | summarize count(FileName) by DeviceId",
        "count() takes no arguments",
        "count",
        name="count(X)",
    ),
    _refused(f"{TABLE} | summarize foo(X) by DeviceId", "unknown aggregation 'foo'", "foo", name="unknown aggregation"),
    _refused(
        f"{TABLE} | summarize count() by bin(Timestamp, 1h)",
        "unsupported summarize 'by' expression starting at 'bin'",
        "bin",
        name="by an expression",
    ),
    _refused(
        f"{TABLE} | summarize count(), count() by DeviceId",
        "duplicate output column 'count_'",
        "count",
        2,
        name="duplicate output column",
    ),
    _refused(
        f"{TABLE} | summarize count() by DeviceId, DeviceId",
        "'DeviceId' appears twice after 'by'",
        "DeviceId",
        2,
        name="a by column twice",
    ),
    _refused(
        f"{TABLE} | summarize make_set(ReportId, 0) by DeviceId",
        "make_set size must be a positive integer",
        "0",
        name="make_set size 0",
    ),
    _refused(W + 'FileName has "x' + BY, "unterminated string literal", '"x', name="unterminated string"),
    _refused(W + 'FileName has "a\\qb"' + BY, "unsupported escape sequence \\q", "\\q", name="bad escape"),
    _refused(W + 'FileName has "x" # 1' + BY, "unexpected character '#'", "#", name="unexpected character"),
    _refused(W + "Timestamp > ago(5w)" + BY, "invalid timespan unit 'w' in 5w", "5w", name="unknown timespan unit"),
    _refused(
        W + "Timestamp > datetime(2021-02-30)" + BY,
        "invalid datetime literal",
        "datetime",
        name="invalid datetime literal",
    ),
    _refused(W + "ProcessId * 2 > 5" + BY, "unsupported arithmetic operator '*'", "*", name="multiplication"),
    _refused(
        W + 'ProcessId has "1"' + BY, "'has' needs a string column; 'ProcessId' is long", "has", name="has on a long"
    ),
    _refused(W + 'FileName > "a"' + BY, "ordering comparison '>' on string column 'FileName'", ">", name="string <"),
    _refused(W + "FileName == AccountName" + BY, "comparing two columns is not supported", "==", name="two columns"),
    _refused(W + "FileName" + BY, "this expression must be a boolean condition", "FileName", name="a bare string"),
    _refused(
        W + "FileName in~ (1)" + BY,
        "cannot compare string column 'FileName' with a long",
        "1",
        name="in~ with a long item points at the item",
    ),
    _refused(f"{TABLE} | where" + BY, "expected a value, found '|'", "|", 2, name="empty where"),
    _refused(
        f"{TABLE} | extend X = now()" + BY,
        "extend X: only scalar literals are supported",
        "X",
        name="extend now()",
    ),
    _refused(
        f"{TABLE} | extend DeviceId = 'x'" + BY,
        "extend 'DeviceId' would replace a column",
        "DeviceId",
        name="extend a column",
    ),
    _refused(f"let FileName = 5;\n{TABLE}" + BY, "let 'FileName' shadows a column", "let", name="let shadows a column"),
    _refused(
        "DeviceRegistryEvents" + BY,
        "unsupported table 'DeviceRegistryEvents'",
        "DeviceRegistryEvents",
        name="other table",
    ),
    _refused("| where x", "expected a table name, found '|'", "|", name="no table"),
    _refused(f"{TABLE}{BY};;", "unexpected ';' after the query", ";", 2, name="trailing garbage"),
]


@pytest.mark.parametrize(("query", "message", "position"), REFUSED)
def test_refused_query_names_the_construct_and_its_position(
    query: str, message: str, position: tuple[int, int]
) -> None:
    """An unsupported or wrong construct raises ``KqlError`` naming it, at its exact (line, column)."""
    with pytest.raises(KqlError) as caught:
        compile_query(query)
    assert message in caught.value.message
    assert (caught.value.line, caught.value.column) == position
    assert str(caught.value).endswith(f"(query line {position[0]}, column {position[1]})")


MULTI_LINE_REFUSED = [
    pytest.param(
        "DeviceProcessEvents\n| where FileName has 'x'\n| where Foo == 1\n| summarize count()",
        "unknown column or name 'Foo'",
        (3, 9),
        id="unknown column on line 3",
    ),
    pytest.param(
        'let a = 1;\nlet b = 2;\nDeviceProcessEvents\n| where FileName has "unterminated\n| summarize count()',
        "unterminated string literal",
        (4, 22),
        id="unterminated string on line 4",
    ),
    pytest.param(
        "DeviceProcessEvents\n| where FileName has 'x'\n| summarize\n"
        "    C = count(),\n    L = make_list(FileName) by DeviceId",
        "unsupported aggregation 'make_list'",
        (5, 9),
        id="make_list on line 5",
    ),
    pytest.param(
        "let Time_start = now(-5d);\n//\nDeviceProcessEvents\n| where Timestamp between (Time_start..now())\n"
        "| where ProcessVersionInfoCompanyName matches regex 'net'\n| summarize count() by DeviceId",
        "unsupported operator 'matches'",
        (5, 39),
        id="matches regex on line 5 after a comment",
    ),
    pytest.param(
        "DeviceProcessEvents\n| where FileName has 'x'\n| project FileName",
        "unsupported tabular operator 'project'",
        (3, 3),
        id="project on line 3",
    ),
    pytest.param(
        "let x = 5\nDeviceProcessEvents\n| summarize count()",
        "expected ';' at the end of 'let x = ...'",
        (2, 1),
        id="missing semicolon reported where the next statement starts",
    ),
    pytest.param(
        "DeviceProcessEvents\n| where FileName has 'x'\n"
        "\t| where Timestamp > ago(1h) or FileName has 'y'\n| summarize count()",
        "now()/ago() may only bound Timestamp",
        (3, 22),
        id="ago() in an or on line 3 after a tab",
    ),
]


@pytest.mark.parametrize(("query", "message", "position"), MULTI_LINE_REFUSED)
def test_multi_line_errors_report_their_own_line(query: str, message: str, position: tuple[int, int]) -> None:
    """On a multi-line query the error's line is the offending line and its column counts from that line."""
    with pytest.raises(KqlError) as caught:
        compile_query(query)
    assert message in caught.value.message
    assert (caught.value.line, caught.value.column) == position
