"""The KQL forms of rule packs: tabular ``let``, ``extend`` after ``summarize``, adjacent literals, located refusals.

It proves (docs/semantics.md §1): the AHQ form ``let rmmX = T | ... | summarize ... | extend
rmmXName = 'X'; rmmX`` compiles to the same query as the plain form plus a constant column; a
tabular ``let`` pipeline sees only the ``let``s bound before it; what the subset does not run is
refused with the construct named (datatable, subqueries, unused tabular lets, indexing, ...);
a syntax error is reported before an unsupported construct found earlier; adjacent string
literals are one literal, with a warning at the second; and the hints name the right column.
"""

from __future__ import annotations

import pytest

from rmmwatch.kql.compiled import CompiledQuery
from rmmwatch.kql.compiler import compile_query
from rmmwatch.kql.datetimes import TICKS_PER_DAY, parse_datetime
from rmmwatch.kql.errors import KqlError, closest_name
from rmmwatch.kql.parser import parse
from rmmwatch.kql.schema import DEVICE_NETWORK_EVENTS, DEVICE_PROCESS_EVENTS
from rmmwatch.kql.syntax import Binary, Let, Literal, Name, TabularLet, Where

TABLE = "DeviceProcessEvents"
PLAIN = """let Time_start = now(-5d);
let Time_end = now();
DeviceProcessEvents
| where Timestamp between (Time_start..Time_end)
| where ProcessVersionInfoCompanyName has 'acme'
| summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp),
    Report=make_set(ReportId), Count=count() by DeviceId, DeviceName"""
AHQ = """let Time_start = now(-5d);
let Time_end = now();
//
let rmmProcess =
DeviceProcessEvents
| where Timestamp between (Time_start..Time_end)
| where ProcessVersionInfoCompanyName has 'acme'
| summarize FirstSeen=min(Timestamp), LastSeen=max(Timestamp),
    Report=make_set(ReportId), Count=count() by DeviceId, DeviceName
| extend rmmProcessName = 'Acme'
;
rmmProcess"""


def at(text: str, marker: str, nth: int = 1) -> tuple[int, int]:
    """The (line, column) where the ``nth`` occurrence of ``marker`` starts in ``text`` (1-based)."""
    index = -1
    for _ in range(nth):
        index = text.index(marker, index + 1)
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _same_query(a: CompiledQuery, b: CompiledQuery) -> None:
    assert (a.table, a.window, a.condition_texts, a.group_by, a.group_by_types, a.required) == (
        b.table,
        b.window,
        b.condition_texts,
        b.group_by,
        b.group_by_types,
        b.required,
    )
    assert [(s.name, s.func, s.column) for s in a.aggregates] == [(s.name, s.func, s.column) for s in b.aggregates]


# -- the AHQ form ----------------------------------------------------------------------------------


def test_the_ahq_form_parses_into_scalar_lets_a_tabular_let_and_its_name() -> None:
    """Two scalar lets, a tabular let holding the pipeline, and the query being that name."""
    query = parse(AHQ)
    assert [(let.name, type(let)) for let in query.lets] == [
        ("Time_start", Let),
        ("Time_end", Let),
        ("rmmProcess", TabularLet),
    ]
    tabular = query.lets[2]
    assert isinstance(tabular, TabularLet)
    assert tabular.source == Name("DeviceProcessEvents", tabular.source.pos)
    assert [type(op).__name__ for op in tabular.operators] == ["Where", "Where", "Summarize", "Extend"]
    assert query.table.name == "rmmProcess"
    assert query.operators == ()


def test_the_ahq_form_is_the_plain_query_plus_a_constant_column() -> None:
    """Same window, conditions, group, aggregates and prefilter; the extend is a row constant, last."""
    ahq, plain = compile_query(AHQ), compile_query(PLAIN)
    _same_query(ahq, plain)
    assert plain.row_constants == ()
    assert [(c.name, c.value, c.type) for c in ahq.row_constants] == [("rmmProcessName", "Acme", "string")]
    assert ahq.output_columns() == (*plain.output_columns(), "rmmProcessName")
    assert ahq.constants == plain.constants


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(f"let t = {TABLE};\nt | where FileName has 'x' | summarize count() by DeviceId", id="an alias"),
        pytest.param(
            f"let a = {TABLE} | where FileName has 'x';\nlet b = a | summarize count() by DeviceId;\nb",
            id="a chain of two lets",
        ),
        pytest.param(
            f"let a = {TABLE} | where FileName has 'x';\na | summarize count() by DeviceId",
            id="operators after the name",
        ),
        pytest.param(
            f"let a = {TABLE} | where FileName has 'x' | summarize count() by DeviceId;\na | extend K = 'k'",
            id="the extend after the name",
        ),
    ],
)
def test_tabular_lets_chain_and_continue(text: str) -> None:
    """A tabular let may start from another, and the query may continue its pipeline."""
    query = compile_query(text)
    assert query.table == TABLE
    assert query.condition_texts == ("FileName has 'x'",)
    assert query.group_by == ("DeviceId",)


def test_a_tabular_let_sees_the_lets_bound_before_it() -> None:
    """KQL's scoping: rebinding a scalar after the tabular let does not change its pipeline."""
    text = f"let n = 1;\nlet t = {TABLE} | where ProcessId == n;\nlet n = 2;\nt | summarize count() by DeviceId"
    query = compile_query(text)
    assert query.matches({"ProcessId": 1})
    assert not query.matches({"ProcessId": 2})


def test_a_tabular_let_does_not_see_lets_bound_after_it() -> None:
    """A name bound later is unknown inside the earlier pipeline, as in KQL."""
    text = f"let t = {TABLE} | where ProcessId == n;\nlet n = 2;\nt | summarize count() by DeviceId"
    with pytest.raises(KqlError) as caught:
        compile_query(text)
    assert "unknown column or name 'n'" in caught.value.message
    assert (caught.value.line, caught.value.column) == at(text, "n;")


# -- extend after summarize ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extend", "expected"),
    [
        pytest.param("K = 'x'", [("K", "x", "string")], id="a string"),
        pytest.param("K = 42, B = true", [("K", 42, "long"), ("B", True, "bool")], id="a long and a bool"),
        pytest.param("K = 1.5", [("K", 1.5, "real")], id="a real"),
        pytest.param(
            "K = datetime(2026-01-02)",
            [("K", parse_datetime("2026-01-02T00:00:00Z"), "datetime")],
            id="a datetime",
        ),
        pytest.param("K = 1d", [("K", TICKS_PER_DAY, "timespan")], id="a timespan"),
        pytest.param("K = Tool", [("K", "acme", "string")], id="a scalar let"),
        pytest.param("K = dynamic(null)", [("K", None, None)], id="a null"),
    ],
)
def test_extend_after_summarize_adds_constant_columns(extend: str, expected: list[tuple[str, object, str]]) -> None:
    """Each assignment is one constant column, in order, with its KQL type."""
    query = compile_query(f"let Tool = 'acme';\n{TABLE} | summarize count() by DeviceId | extend {extend}")
    assert [(c.name, c.value, c.type) for c in query.row_constants] == expected
    assert query.output_columns() == ("DeviceId", "count_", *(name for name, _, _ in expected))


@pytest.mark.parametrize(
    ("tail", "message", "marker"),
    [
        pytest.param(
            "| extend K = DeviceId",
            "'DeviceId' is a column of the summarized rows (in 'extend' after summarize)",
            "DeviceId",
            id="a column of the rows",
        ),
        pytest.param("| extend K = FileName", "unknown column or name 'FileName'", "FileName", id="a dropped column"),
        pytest.param(
            "| extend DeviceId = 'x'",
            "extend 'DeviceId' after summarize would replace the column 'DeviceId'",
            "DeviceId",
            id="replacing the group column",
        ),
        pytest.param(
            "| extend K = 'a' | extend K = 'b'",
            "extend 'K' after summarize would replace the column 'K'",
            "K = 'b'",
            id="replacing an earlier constant",
        ),
        pytest.param(
            "| extend K = now()", "extend K after summarize: only scalar constants are supported", "K", id="now()"
        ),
        pytest.param(
            "| where count_ > 1",
            "operators after summarize are not supported: only '| extend Name = constant' may follow it",
            "where",
            id="a where",
        ),
    ],
)
def test_what_may_follow_summarize_is_a_constant_extend(tail: str, message: str, marker: str) -> None:
    """After summarize only ``extend Name = constant`` is run; the rest is refused where it is."""
    head = f"{TABLE} | summarize count() by DeviceId "
    with pytest.raises(KqlError) as caught:
        compile_query(head + tail)
    assert message in caught.value.message
    line, column = at(tail, marker)
    assert (caught.value.line, caught.value.column) == (line, column + len(head))


# -- refusals that name their construct -----------------------------------------------------------------

BY = " | summarize count() by DeviceId"


@pytest.mark.parametrize(
    ("text", "message", "marker"),
    [
        pytest.param(
            f"let t = datatable(A:string)['x'];\n{TABLE}{BY}",
            "unsupported tabular expression 'datatable' in 'let t = ...'",
            "datatable",
            id="datatable",
        ),
        pytest.param(
            f"{TABLE} | where FileName in ('a', 'b',){BY}",
            "trailing comma in the list of 'in': KQL does not allow an empty item; remove the ',' after 'b'",
            ",)",
            id="a trailing comma (at the comma)",
        ),
        pytest.param(
            f"let t = {TABLE} | where FileName has 'x';\n{TABLE}{BY}",
            "let 't' binds a tabular expression the query does not use",
            "let t",
            id="an unused tabular let",
        ),
        pytest.param(
            f"let t = {TABLE} | where FileName has 'x';\n{TABLE} | where SHA1 in (t){BY}",
            "'t' is a tabular let (a table), used as a value (in the condition of 'where')",
            "t)",
            id="a tabular let as a list",
        ),
        pytest.param(
            f"{TABLE} | where FileName in ((T | distinct X)){BY}",
            "unsupported tabular subquery in parentheses ('(T | ...)')",
            "T |",
            id="a subquery in parentheses",
        ),
        pytest.param(
            f"{TABLE} | where SHA1 in (T | project X){BY}",
            "unsupported tabular subquery in the list of 'in'",
            "T |",
            id="a subquery as a list",
        ),
        pytest.param("let n = 5;\nn" + BY, "'n' is a scalar let, not a table", "n |", id="a scalar let as the query"),
        pytest.param(
            "let t = DeviceRegistryEvents | where X == 1;\nt" + BY,
            "unsupported table 'DeviceRegistryEvents'",
            "DeviceRegistryEvents",
            id="an unsupported table through a let",
        ),
        pytest.param(
            f"{TABLE} | where tostring(split(FileName, '.')[0]) == 'a'{BY}",
            "unsupported indexing split[...]",
            "[0]",
            id="indexing",
        ),
        pytest.param(
            f"{TABLE} | where AdditionalFields.Foo == 'a'{BY}",
            "unsupported member access AdditionalFields.Foo",
            ".Foo",
            id="member access",
        ),
        pytest.param(
            f"{TABLE} | summarize count() by DeviceId, | extend K = 'x'",
            "trailing comma after the last column of 'summarize ... by'",
            ", |",
            id="a trailing comma after by",
        ),
        pytest.param(
            f"{TABLE} | where FileName in ('a'{BY}",
            "unclosed '(' of the list of 'in', opened here: no ')' before '|' on the same line",
            "('a'",
            id="an unclosed list (at its opening)",
        ),
        pytest.param(
            f"{TABLE} | where (FileName has 'a' FileName){BY}",
            "expected ')' to close the parenthesis in the condition of 'where' (opened on this line), found 'FileName'",
            "FileName)",
            id="something else where ) belongs",
        ),
        pytest.param(
            f"{TABLE} | where FileName == has 'a'{BY}",
            "two operators in a row: '==' then 'has'",
            "has 'a'",
            id="== has (at the second operator)",
        ),
        pytest.param(
            f"{TABLE}\n| where FileName has 'a'\n| FileName == 'b'\n{BY}",
            "did you mean `| where FileName == ...`?",
            "FileName == 'b'",
            id="a condition after a pipe",
        ),
    ],
)
def test_refusals_name_the_construct_at_its_position(text: str, message: str, marker: str) -> None:
    """Every refusal says what it refuses, and where (line and column in the query)."""
    with pytest.raises(KqlError) as caught:
        compile_query(text)
    assert message in caught.value.message
    assert (caught.value.line, caught.value.column) == at(text, marker)


def test_a_condition_after_a_pipe_on_a_real_column_has_no_column_hint() -> None:
    """The ``SHA1`` hint is given only when the name is not a column of the pipeline's table."""
    with pytest.raises(KqlError) as caught:
        compile_query(f"{TABLE} | SHA1 in ('a') | summarize count() by DeviceId")
    assert "did you mean `| where SHA1 in (...)`?" in caught.value.message
    assert "no column" not in caught.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            f"{TABLE} | project FileName | where FileName has_all has_any ('a') | summarize count() by DeviceId",
            "two operators in a row",
            id="two operators after a project",
        ),
        pytest.param(
            f"let t = datatable(A:string)['x'];\n{TABLE} | where (FileName has 'a' | summarize count() by DeviceId",
            "unclosed '('",
            id="an unclosed ( after a datatable",
        ),
        pytest.param(
            f"{TABLE} | distinct Sha1 | Sha1 in ('a') | summarize count() by DeviceId",
            "did you mean `| where Sha1 in (...)`?",
            id="a missing where after a distinct",
        ),
    ],
)
def test_a_syntax_error_is_reported_before_an_earlier_unsupported_construct(text: str, message: str) -> None:
    """KQL itself rejects a syntax error; rmmwatch says that rather than the first construct it does not run."""
    with pytest.raises(KqlError) as caught:
        compile_query(text)
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(f"{TABLE} | take 5 | summarize count() by DeviceId", "unsupported tabular operator 'take'"),
        pytest.param(
            f"{TABLE} | project X | join (T | where a == 1) on DeviceId | summarize count() by DeviceId",
            "unsupported tabular operator 'project'",
        ),
    ],
)
def test_without_a_syntax_error_the_first_unsupported_construct_is_refused(text: str, message: str) -> None:
    """Skipping an unsupported operator never hides it: the first one is the refusal."""
    with pytest.raises(KqlError) as caught:
        compile_query(text)
    assert message in caught.value.message


# -- adjacent string literals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("literals", "value", "second"),
    [
        pytest.param("'a' 'b'", "ab", "'b'", id="two"),
        pytest.param("'a'\n    'b' \"c\"", "abc", "'b'", id="three over two lines"),
        pytest.param("@'C:\\x' 'y'", "C:\\xy", "'y'", id="a verbatim and a plain literal"),
    ],
)
def test_adjacent_string_literals_are_one_literal_with_one_warning(literals: str, value: str, second: str) -> None:
    """KQL concatenates adjacent string literals; rmmwatch does too and warns once, at the second one."""
    text = f"{TABLE} | where FileName in ('z', {literals}){BY}"
    query = compile_query(text)
    (warning,) = query.warnings
    assert (warning.line, warning.column) == at(text, second)
    assert "are one literal, " in warning.message
    assert query.matches({"FileName": value})
    assert not query.matches({"FileName": "a"})


def test_adjacent_literals_in_a_dynamic_array_concatenate_too() -> None:
    """``dynamic(['a' 'b'])`` holds one item."""
    query = compile_query(f"{TABLE} | where FileName in (dynamic(['a' 'b', 'c'])) | summarize count() by DeviceId")
    assert len(query.warnings) == 1
    assert query.matches({"FileName": "ab"})
    assert not query.matches({"FileName": "b"})


def test_a_refused_query_keeps_its_warnings() -> None:
    """The warning found before a refusal travels with the error (rules check prints both)."""
    text = f"{TABLE} | where FileName in ('a' 'b') | summarize count() by Nope"
    with pytest.raises(KqlError) as caught:
        compile_query(text)
    assert [(w.line, w.column) for w in caught.value.warnings] == [at(text, "'b'")]
    assert "unknown column or name 'Nope'" in caught.value.message


def test_the_literal_node_holds_the_concatenation() -> None:
    """The parser produces one Literal at the first literal's position."""
    text = f"{TABLE} | where FileName == 'a' 'b'"
    where = parse(text).operators[0]
    assert isinstance(where, Where)
    assert isinstance(where.predicate, Binary)
    right = where.predicate.right
    assert isinstance(right, Literal)
    assert (right.value, right.pos.line, right.pos.column) == ("ab", *at(text, "'a'"))


# -- hints -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "columns", "hint"),
    [
        pytest.param("Sha1", DEVICE_PROCESS_EVENTS, "SHA1", id="another case"),
        pytest.param(
            "AccountUpn", DEVICE_NETWORK_EVENTS, "InitiatingProcessAccountUpn", id="a longer column ending so"
        ),
        pytest.param("FileNme", DEVICE_PROCESS_EVENTS, "FileName", id="a misspelling"),
        pytest.param("Zq", DEVICE_PROCESS_EVENTS, None, id="nothing close"),
    ],
)
def test_the_hint_names_the_closest_column(name: str, columns: dict[str, str], hint: str | None) -> None:
    """Case first, then a column ending with the name, then spelling."""
    assert closest_name(name, columns) == hint
